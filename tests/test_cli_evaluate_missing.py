"""``icm evaluate`` scores every reference: a missing prediction is an empty (wrong) answer and is reported,
``--require-all`` makes it an error, and empty or misaligned prediction files are clear errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icm_cli.main import main
from modeling_icm import templates as T

REFS = [
    {"id": "a", "sentiment": "Fire", "segments": [[2, 6]], "cause": "orange flames rise", "duration": 10},
    {"id": "b", "sentiment": "Theft", "segments": [[1, 4]], "cause": "a box is stolen", "duration": 8},
]
RIGHT_A = {"id": "a", "answer": T.combined_answer("implicit", "Fire", [[2, 6]], "orange flames rise")}


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_reference_without_prediction_is_scored_as_wrong_and_reported(capsys, tmp_path):
    refs = write(tmp_path / "refs.jsonl", REFS)
    preds = write(tmp_path / "preds.jsonl", [RIGHT_A])
    code, out, err = run(capsys, "evaluate", "--predictions", preds, "--references", refs,
                         "--attribution-metrics", "sem_r", "--out", tmp_path / "m.json")  # fmt: skip
    assert code == 0, err
    document = json.loads((tmp_path / "m.json").read_text())
    metrics = document["metrics"]
    assert metrics["num_examples"] == 2 and metrics["num_missing"] == 1 and document["missing"] == ["b"]
    assert metrics["acc"] == 0.5  # not 1.0 over "1 example"
    assert metrics["map@0.1"] == pytest.approx(0.5)  # Theft has ground truth and no prediction: AP 0
    assert metrics["fnr"] == pytest.approx(3 / 7)  # Theft's 3 frames are missed
    assert "2 examples (1 without a prediction" in out and "'b'" not in out and "b" in err


def test_require_all_makes_a_missing_prediction_an_error(capsys, tmp_path):
    refs = write(tmp_path / "refs.jsonl", REFS)
    preds = write(tmp_path / "preds.jsonl", [RIGHT_A])
    code, _, err = run(capsys, "evaluate", "--predictions", preds, "--references", refs, "--require-all",
                       "--attribution-metrics", "none", "--out", tmp_path / "m.json")  # fmt: skip
    assert code == 2 and "1 of 2 references have no prediction" in err and "'b'" in err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([], "holds no prediction (2 references to score)"),
        ([RIGHT_A["answer"]], "1 predictions in"),  # by order, without ids: lengths must match
        ([RIGHT_A, RIGHT_A], "duplicate id 'a'"),
        ([{**RIGHT_A, "id": "z"}], "id 'z' has no reference"),
    ],
    ids=["empty file", "length mismatch", "duplicate id", "unknown id"],
)
def test_bad_prediction_files_are_one_clear_line(capsys, tmp_path, rows, expected):
    refs = write(tmp_path / "refs.jsonl", REFS)
    preds = write(tmp_path / "preds.jsonl", rows)
    code, out, err = run(capsys, "evaluate", "--predictions", preds, "--references", refs,
                         "--attribution-metrics", "none", "--out", tmp_path / "m.json")  # fmt: skip
    assert code == 2, out
    assert expected in err and len(err.strip().splitlines()) == 1

"""evaluate_metrics.files, the library behind ``icm evaluate``: files are scored without the command line, and a
file that cannot be read raises ``EvaluationInputError`` (a ValueError, so the CLI exits with code 2) naming the
file and the line."""

from __future__ import annotations

import json

import pytest

from evaluate_metrics.files import EvaluationInputError, evaluate_files, read_rows
from modeling_icm import templates as T


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_files_are_scored_by_id(tmp_path):
    refs = _write_jsonl(tmp_path / "refs.jsonl", [
        {"id": "a", "sentiment": "Fire", "segments": [[1, 3]], "cause": "flames", "duration": 10},
        {"id": "b", "sentiment": "Normal", "segments": [], "cause": "", "duration": 10},
    ])  # fmt: skip
    preds = _write_jsonl(tmp_path / "preds.jsonl", [  # in the other order: matched by id, not by position
        {"id": "b", "answer": T.combined_answer("implicit", "Fire", [[0, 2]], "smoke")},
        {"id": "a", "answer": T.combined_answer("implicit", "Fire", [[1, 3]], "flames")},
    ])  # fmt: skip
    document = evaluate_files(preds, refs, config_name="implicit", attribution_metrics=())
    assert document["matched_by"] == "id" and document["metrics"]["acc"] == pytest.approx(0.5)
    assert document["metrics"]["num_missing"] == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"id": "a", "answer": "x"}\n\xff\n', r"preds.jsonl, line 2: not UTF-8"),
        (b'{"id": "a", "answer": "x"}\n{"id": \n', r"preds.jsonl, line 2: not JSON"),
    ],
)  # fmt: skip
def test_an_unreadable_file_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "preds.jsonl"
    path.write_bytes(content)
    with pytest.raises(EvaluationInputError, match=message) as caught:
        read_rows(path, "predictions")
    assert isinstance(caught.value, ValueError)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(EvaluationInputError, match="references file not found: .*nowhere.jsonl"):
        read_rows(tmp_path / "nowhere.jsonl", "references")

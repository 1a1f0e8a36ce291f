"""``icm compare``: grids, scoring with the paired t-test against the reference row, the tables, failed entries
marked while the others complete, and (slow) the whole grid end to end on the mini set with a cached rerun."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from scipy import stats

from icm_cli.main import main
from modeling_icm import templates as T
from trainers.compare import GridError, _base_recipe, format_p, load_grid, score_grid, table_rows, write_outputs
from trainers.recipe import load_recipe

IDS = [f"clip-{i}" for i in range(6)]
LABELS = ["Fire", "Theft", "Fire", "Robbery", "Normal", "Fire"]
REFS = [{"sentiment": label, "segments": [[1.0, 5.0]], "cause": f"the {label.lower()} happens", "duration": 10.0}
        for label in LABELS]  # fmt: skip


def answer(label, segment=(1, 5), cause=None):
    return T.combined_answer("implicit", label, [list(segment)], cause or f"the {label.lower()} happens")


def write_predictions(path: Path, answers: dict) -> str:
    path.write_text("".join(json.dumps({"id": i, "answer": a}) + "\n" for i, a in answers.items()))
    return str(path)


GRID = {
    "name": "unit", "reference": "ICM", "attribution_metrics": ["sem_r"],
    "systems": [{"name": "ICM", "tables": [1, 2, 3]}, {"name": "weak"}, {"name": "broken"},
                {"name": "w/o Fac", "ablation": {"scenes": ["action", "object", "background"]}, "tables": [3]}],
}  # fmt: skip


@pytest.mark.parametrize("grid, message", [
    ({"systems": [{"name": "ICM"}], "colour": 1}, "unknown grid field"),
    ({"systems": []}, "non-empty list"),
    ({"systems": [{"name": "ICM"}, {"name": "ICM"}]}, "distinct"),
    ({"systems": [{"name": "A"}]}, "'reference'"),
    ({"systems": [{"name": "ICM", "zero_shot": "x", "recipe": "demo"}]}, "takes no recipe"),
    ({"systems": [{"name": "ICM", "tables": [4]}]}, "tables must be"),
    ({"systems": [{"name": "ICM", "epochs": 3}]}, "unknown field"),
    ({"systems": [{"name": "ICM"}], "seeds": [0, 0]}, "'seeds' must be a list of distinct"),
    ({"systems": [{"name": "ICM"}], "seeds": [-1]}, "'seeds' must be a list of distinct"),
    ({"systems": [{"name": "ICM"}], "seeds": 3}, "'seeds' must be a list of distinct"),
])  # fmt: skip
def test_bad_grids_are_named(grid, message):
    with pytest.raises(GridError, match=message):
        load_grid(grid)


def test_shipped_grids_load():
    study = load_grid("study")
    assert study["seeds"] == [0, 1, 2] and study["recipe"] == "study"
    assert {"Video-LLaVA", "ICM", "w/o IEC", "w/o Fac", "w/o Act", "w/o video"} <= {s["name"] for s in study["systems"]}
    for name in ("mini", "paper"):
        grid = load_grid(name)
        assert grid["reference"] == "ICM" and any(s.get("zero_shot") for s in grid["systems"])
        assert {3} <= {t for s in grid["systems"] for t in s.get("tables", [1, 2])}
        assert "w/o video" in {s["name"] for s in grid["systems"]}
    real = load_grid("study-real")  # the study on SmolLM2 and the real offline extractors
    recipe = load_recipe(_base_recipe(real))
    assert real["seeds"] == [0, 1, 2] and {"Video-LLaVA", "ICM", "w/o video"} == {s["name"] for s in real["systems"]}
    assert recipe["model"]["preset"] == "smollm2" and recipe["features"]["pipeline"] == "lite"
    assert recipe["data"]["mini_set"]["variant"] == "study" and recipe["data"]["configs"] == ["explicit"]
    with pytest.raises(GridError, match="grid file not found"):
        load_grid("no-such-grid")


def test_the_runner_and_the_baselines_are_library_code():
    """The library never imports the command line (``icm_cli``)."""
    import subprocess
    import sys

    code = ("import sys, trainers.compare, trainers.baselines, evaluate_metrics.charts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'icm_cli'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_format_p_as_the_paper_writes_it():
    assert [format_p(p) for p in (0.001, 0.02, 0.2345, float("nan"), None)] == ["<0.01", "<0.05", "0.23", "–", "–"]


def test_scores_t_tests_and_tables(tmp_path):
    good = {i: answer(label) for i, label in zip(IDS, LABELS)}
    weak = {i: answer("Fire", (6, 9), "nothing") for i in IDS[:-1]}  # the last clip has no answer
    runs = {
        "ICM": {"status": "done", "predictions": {"implicit": write_predictions(tmp_path / "icm.jsonl", good)},
                "scenes": list(T.SCENE_NAMES)},
        "weak": {"status": "done", "predictions": {"implicit": write_predictions(tmp_path / "weak.jsonl", weak)},
                 "scenes": list(T.SCENE_NAMES)},
        "broken": {"status": "failed", "error": "RuntimeError: out of memory"},
        "w/o Fac": {"status": "done", "predictions": {"implicit": write_predictions(tmp_path / "fac.jsonl", good)},
                    "scenes": ["action", "object", "background"]},
    }  # fmt: skip
    document = score_grid(load_grid(GRID), runs, {"implicit": (IDS, REFS)})
    icm, weak_entry = document["systems"]["ICM"], document["systems"]["weak"]
    assert icm["configs"]["implicit"]["metrics"]["acc"] == 1.0
    assert weak_entry["configs"]["implicit"]["missing"] == 1
    assert weak_entry["configs"]["implicit"]["metrics"]["acc"] == pytest.approx(2 / 6)  # 2 Fire of 6, one missing
    # the p-value of VSI is scipy's paired t-test of the per-clip accuracies
    weak_acc = [1.0 if label == "Fire" else 0.0 for label in LABELS[:-1]] + [0.0]
    expected = stats.ttest_rel(weak_acc, [1.0] * 6).pvalue
    assert weak_entry["configs"]["implicit"]["p"]["VSI"] == pytest.approx(expected)
    assert {row["metric"] for row in document["significance"] if row["system"] == "weak"} >= {"acc", "tiou", "sem_r"}

    files = write_outputs(document, tmp_path)
    head, rows = table_rows(document, 1)
    by_name = {row[0]: row for row in rows}
    assert set(by_name) == {"ICM", "weak", "broken"}  # w/o Fac is a Table 3 row
    assert by_name["broken"][1] == "failed" and by_name["weak"][-1] == "1" and by_name["ICM"][1] == "100.00"
    assert by_name["weak"][head.index("p VSI")] == format_p(expected)
    _, rows3 = table_rows(document, 3)
    assert [r[:5] for r in rows3] == [["ICM", "✓", "✓", "✓", "✓"], ["w/o Fac", "", "✓", "✓", "✓"]]
    text = Path(files["tables"]).read_text()
    assert "## Table 1" in text and "## Table 3" in text and "broken: RuntimeError: out of memory" in text
    with open(files["table1"], newline="") as handle:
        assert next(csv.reader(handle))[:3] == ["Approach", "Acc", "F2"]
    assert Path(files["figure3-implicit-fnr"]).read_bytes()[:4] == b"\x89PNG"
    # the same scores again (a cached rerun): no file is rewritten, the CSVs' \r\n line ends included
    written = {name: Path(path).stat().st_mtime_ns for name, path in files.items()}
    for path in files.values():
        os.utime(path, ns=(1, 1))  # an old time stamp: a rewrite shows even within the clock resolution
    assert write_outputs(document, tmp_path) == files
    assert {name: Path(path).stat().st_mtime_ns for name, path in files.items()} == dict.fromkeys(written, 1)


def test_seeds_give_mean_and_std_pooled_t_tests_and_the_conflict_column(tmp_path):
    """Three seeds per trained row: the table shows mean ± std, the t-test pairs every clip of every seed, a zero-shot
    row (one run) pairs with each seed, and a subset of clips (the study set's conflict clips) gets its column."""
    grid = load_grid({"name": "seeded", "seeds": [0, 1, 2], "reference": "ICM", "attribution_metrics": ["sem_r"],
                      "systems": [{"name": "ICM", "tables": [1, 3]}, {"name": "VL"}, {"name": "Z", "zero_shot": "x"}]})  # fmt: skip
    right = {i: answer(label) for i, label in zip(IDS, LABELS)}
    runs = {}
    for seed in (0, 1, 2):
        # ICM gets clip `seed` wrong; VL answers Fire everywhere (right on the 3 Fire clips)
        icm = dict(right, **{IDS[seed + 1]: answer("Normal")})
        runs[f"ICM [seed {seed}]"] = {"status": "done", "scenes": list(T.SCENE_NAMES),
                                      "predictions": {"implicit": write_predictions(tmp_path / f"i{seed}.jsonl", icm)}}
        runs[f"VL [seed {seed}]"] = {"status": "done", "scenes": list(T.SCENE_NAMES), "predictions": {
            "implicit": write_predictions(tmp_path / f"v{seed}.jsonl", {i: answer("Fire") for i in IDS})}}
    runs["Z"] = {"status": "done", "predictions": {"implicit": write_predictions(tmp_path / "z.jsonl", right)}}
    document = score_grid(grid, runs, {"implicit": (IDS, REFS)}, subsets={"conflict": {"clip-1", "clip-3"}})
    icm = document["systems"]["ICM"]["configs"]["implicit"]
    per_seed_acc = [m["acc"] for m in icm["per_seed"]]
    assert per_seed_acc == [5 / 6, 5 / 6, 5 / 6]  # clip-1, clip-2, clip-3 wrong in turn (clip-2 is Fire)
    assert icm["metrics"]["acc"] == pytest.approx(5 / 6) and icm["std"]["acc"] == pytest.approx(0.0)
    # conflict clips 1 and 3: seed 0 misses clip-1, seed 2 misses clip-3, seed 1 gets both
    assert [m["acc_conflict"] for m in icm["per_seed"]] == [0.5, 1.0, 0.5]
    vl = document["systems"]["VL"]["configs"]["implicit"]
    icm_pairs = [0.0 if i == seed + 1 else 1.0 for seed in range(3) for i in range(6)]
    vl_pairs = [1.0 if label == "Fire" else 0.0 for label in LABELS] * 3
    assert vl["p"]["VSI"] == pytest.approx(stats.ttest_rel(vl_pairs, icm_pairs).pvalue)
    assert document["systems"]["Z"]["configs"]["implicit"]["metrics"]["acc"] == 1.0  # one run, paired 3 times
    assert len(document["systems"]["Z"]["configs"]["implicit"]["per_seed"]) == 3
    head, rows = table_rows(document, 1)
    assert head[:3] == ["Approach", "Acc", "Acc conflict"]
    by_name = {row[0]: row for row in rows}
    assert by_name["ICM"][1] == "83.33 ± 0.00" and by_name["ICM"][2] == "66.67 ± 28.87"
    assert by_name["VL"][2] == "0.00 ± 0.00"  # answers Fire: the conflict clips are Theft and Robbery
    text = Path(write_outputs(document, tmp_path)["tables"]).read_text()
    assert "mean ± std over the seeds" in text


def test_a_seed_that_failed_marks_the_row_failed(tmp_path):
    grid = load_grid({"name": "s", "seeds": [0, 1], "systems": [{"name": "ICM"}]})
    ok = {"status": "done", "scenes": list(T.SCENE_NAMES),
          "predictions": {"implicit": write_predictions(tmp_path / "a.jsonl", {i: answer("Fire") for i in IDS})}}
    document = score_grid(grid, {"ICM [seed 0]": ok, "ICM [seed 1]": {"status": "failed", "error": "E: boom"}},
                          {"implicit": (IDS, REFS)})  # fmt: skip
    assert document["systems"]["ICM"]["status"] == "failed" and document["systems"]["ICM"]["error"] == "E: boom"
    assert table_rows(document, 1)[1][0][1] == "failed"


MICRO_GRID = """
name: micro
recipe: demo
override:
  data: {mini_set: {seed: 0, size: tiny}, configs: [implicit], max_train_clips: 6, max_eval_clips: 6, max_scene_items: 1}
  stages: {scene: {num_train_epochs: 1}, omnisila: {num_train_epochs: 1}}
  evaluate: {before_training: false, max_new_tokens: 16}
reference: ICM
attribution_metrics: [sem_r]
zero_shot: {batch_size: 6, max_new_tokens: 16}
systems:
  - {name: Qwen2-VL (zero-shot), zero_shot: "tiny:qwen2_vl"}
  - {name: Video-LLaVA, ablation: {scene_tokens: false}}
  - {name: ICM, tables: [1, 2, 3]}
  - {name: w/o Fac, ablation: {scenes: [action, object, background]}, tables: [3]}
  - {name: broken, override: {training: {learning_rate: -1.0}}}
"""


@pytest.mark.slow
def test_icm_compare_end_to_end_on_the_mini_set_then_rescored_from_the_cache(capsys, tmp_path):
    grid = tmp_path / "micro.yaml"
    grid.write_text(MICRO_GRID)
    out = tmp_path / "tables"
    code = main(["compare", "--grid", str(grid), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    scores = json.loads((out / "scores.json").read_text())
    status = {name: entry["status"] for name, entry in scores["systems"].items()}
    assert status == {"Qwen2-VL (zero-shot)": "done", "Video-LLaVA": "done", "ICM": "done", "w/o Fac": "done",
                      "broken": "failed"}  # fmt: skip
    assert "Invalid learning rate" in scores["systems"]["broken"]["error"]
    assert "| broken | failed |" in captured.out and "## Table 3" in captured.out
    for name in ("Qwen2-VL (zero-shot)", "Video-LLaVA", "w/o Fac"):
        assert scores["systems"][name]["configs"]["implicit"]["metrics"]["num_examples"] == 6
        assert "VSI" in scores["systems"][name]["configs"]["implicit"]["p"]
    assert (out / "figure3-implicit-fnr_per_label.png").is_file()
    # the scene-pathway diagnostics of the trained systems with scene tokens (not of the Video-LLaVA baseline)
    assert {n for n, e in scores["systems"].items() if e.get("diagnostics")} == {"ICM", "w/o Fac"}
    assert "scene_spread" in scores["systems"]["ICM"]["diagnostics"]["implicit"]
    assert "## The scene pathway of the trained systems" in (out / "tables.md").read_text()

    # a cached rerun: nothing is trained or asked again (except the failed entry), the scores are the same
    prediction_file = Path(json.loads((out / "runs" / "icm" / "run.json").read_text())["predictions"]["implicit"])
    lines = prediction_file.read_text().splitlines()
    prediction_file.write_text("\n".join(lines[:-1]) + "\n")  # as if the run had lost its last answer
    code = main(["compare", "--grid", str(grid), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    for name in ("Qwen2-VL (zero-shot)", "Video-LLaVA", "ICM", "w/o Fac"):
        assert f"[icm compare] {name}: cached" in captured.err
    assert "broken: running" in captured.err
    again = json.loads((out / "scores.json").read_text())
    assert again["systems"]["ICM"]["configs"]["implicit"]["missing"] == 1
    same = [json.dumps(d["systems"]["Video-LLaVA"]["configs"]["implicit"], sort_keys=True) for d in (again, scores)]
    assert same[0] == same[1]  # (as text: NaN per-label entries compare equal)


def test_every_system_keeps_the_grid_recipes_training_settings_and_the_grid_override(tmp_path):
    """A system without an override of its own trains with its recipe's settings (learning rate, schedule) and the
    grid's override (epochs), not the recipe defaults."""
    from trainers.compare import _base_recipe, _recipe_for
    from trainers.recipe import load_recipe

    for name in ("study", "mini"):
        grid = load_grid(name)
        base = load_recipe(_base_recipe(grid))
        for system in grid["systems"]:
            if system.get("zero_shot"):
                continue
            recipe = _recipe_for(grid, system, base, tmp_path / "data", tmp_path / "cache")
            assert recipe["training"]["learning_rate"] == 3.0e-3, (name, system["name"])
            assert recipe["training"]["icm_learning_rate"] == 3.0e-4, (name, system["name"])
            assert recipe["stages"]["omnisila"]["num_train_epochs"] == 20, (name, system["name"])
            for key, value in (system.get("ablation") or {}).items():
                assert recipe["ablation"][key] == value
    assert load_recipe({"base": "demo"})["training"] == load_recipe("demo")["training"]


def test_jobs_must_be_positive(tmp_path, capsys):
    assert main(["compare", "--grid", "mini", "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    from trainers.compare import run_grid

    with pytest.raises(GridError, match="jobs must be a positive integer"):
        run_grid(GRID, tmp_path, jobs=0)


SEEDED_GRID = """
name: seeded
recipe: study
seeds: [0, 1]
override:
  data: {mini_set: {seed: 0, size: tiny, variant: study}, max_scene_items: 1}
  stages: {scene: {num_train_epochs: 1}, omnisila: {num_train_epochs: 1}}
  evaluate: {before_training: false, max_new_tokens: 16}
  threads: 2                # overridden: each of the --jobs processes runs one thread
reference: ICM
attribution_metrics: [sem_r]
systems:
  - {name: Video-LLaVA, ablation: {scene_tokens: false}}
  - {name: ICM, tables: [1, 3]}
"""


@pytest.mark.slow
def test_seeds_on_two_processes_on_the_study_set_then_cached(capsys, tmp_path):
    grid = tmp_path / "seeded.yaml"
    grid.write_text(SEEDED_GRID)
    out = tmp_path / "out"
    assert main(["compare", "--grid", str(grid), "--out", str(out), "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert "4 runs on 2 processes" in captured.err
    for name in ("video-llava", "icm"):
        for seed in (0, 1):
            run = json.loads((out / "runs" / name / f"seed-{seed}" / "run.json").read_text())
            assert run["status"] == "done", run.get("traceback")
            assert (out / "runs" / name / f"seed-{seed}" / "log.txt").read_text()
            results = json.loads((out / "runs" / name / f"seed-{seed}" / "train" / "results.json").read_text())
            assert results["recipe"]["seed"] == seed
            # not the grid's 2: each process runs one thread
            assert results["threads"] == 1 and results["recipe"]["threads"] == 1
    scores = json.loads((out / "scores.json").read_text())
    icm = scores["systems"]["ICM"]["configs"]
    assert set(icm) == {"explicit", "implicit"} and len(icm["explicit"]["per_seed"]) == 2
    assert "acc_conflict" in icm["explicit"]["metrics"] and "acc_conflict" not in icm["implicit"]["metrics"]
    routers = scores["systems"]["ICM"]["diagnostics"]["implicit"]["router_weights_by_label"]
    assert set(routers) <= set(T.IMPLICIT_LABELS) and routers
    text = (out / "tables.md").read_text()
    assert "explicit Acc conflict" in text and "Router weights per label (ICM, implicit" in text
    assert main(["compare", "--grid", str(grid), "--out", str(out), "--jobs", "2"]) == 0
    assert captured.err.count("running") == 0 and "ICM [seed 1]: cached" in capsys.readouterr().err

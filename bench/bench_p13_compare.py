"""P13: the comparison runner's overhead beyond the runs themselves, against one evaluation pass.

Runs a grid once (trains / asks every system; not timed), then, side by side in this process:

* **overhead** — ``trainers.compare.run_grid`` again with every run cached: resolving the grid and recipes, reading
  the cached predictions, re-scoring every system (omnisila metrics, per-example scores, paired t-tests), writing
  the tables, the CSVs and the scores (charts are redrawn only when what they show changed);
* **one evaluation pass** — what every run does once per config: the trained ICM generates its answers for the
  evaluation clips and they are scored (``trainers.evaluation.evaluate_generation`` with the grid's settings).

Goal: overhead <= 5 % of one evaluation pass. Both are medians of ``--repeats``. The default grid is the mini grid's
shape with tiny models (an evaluation pass of a tiny model is short, so this is the hard case for the ratio; at the
paper's scale an evaluation pass takes hours and the overhead stays what it is here).

    python bench/bench_p13_compare.py [--out runs/bench-p13] [--repeats 3] [--eval-clips 12] [--max-new-tokens 64]
        [--before CHECKOUT]

``--before CHECKOUT`` (the files of an earlier commit, e.g. ``mkdir /tmp/before && git archive <commit> | tar -x -C /tmp/before``) also times
that commit's runner (its ``trainers/compare.py``, or ``icm_cli/compare.py`` before the runner moved) on the same
cached runs, interleaved with this one's, and prints both overheads side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def grid(eval_clips: int, max_new_tokens: int) -> dict:
    return {
        "name": "bench-p13",
        "recipe": "demo",
        "override": {
            "data": {"mini_set": {"seed": 0, "size": "tiny"}, "configs": ["implicit"], "max_train_clips": 6,
                     "max_eval_clips": eval_clips, "max_scene_items": 1},
            "stages": {"scene": {"num_train_epochs": 1}, "omnisila": {"num_train_epochs": 1}},
            "evaluate": {"before_training": False, "max_new_tokens": max_new_tokens, "batch_size": 12},
        },
        "reference": "ICM",
        "attribution_metrics": ["sem_r"],
        "zero_shot": {"batch_size": 6, "max_new_tokens": max_new_tokens},
        "systems": [
            {"name": "Qwen2-VL (zero-shot)", "zero_shot": "tiny:qwen2_vl"},
            {"name": "Video-LLaVA", "ablation": {"scene_tokens": False}},
            {"name": "ICM", "tables": [1, 2, 3]},
            {"name": "w/o SBM", "ablation": {"sbm": False}},
            {"name": "w/o Fac", "ablation": {"scenes": ["action", "object", "background"]}, "tables": [3]},
        ],
    }  # fmt: skip


def evaluation_pass(out: Path, spec: dict) -> float:
    """Seconds of the ICM run's evaluation: generation over the evaluation clips + scoring."""
    from inference.loading import load_model
    from processing.cache import FeatureCache
    from trainers.data import omnisila_examples
    from trainers.evaluation import evaluate_generation

    results = json.loads((out / "runs" / "icm" / "train" / "results.json").read_text())
    recipe, features = results["recipe"], results["features"]
    model, processor = load_model(results["model_dir"])
    ids = [json.loads(line)["id"] for line in (out / "references-implicit.jsonl").read_text().splitlines()]
    examples = omnisila_examples(features["data_dir"], "implicit", recipe["data"]["eval_split"],
                                 FeatureCache(features["cache_dir"]), features["pipeline_hash"],
                                 recipe["features"]["num_frames"], tasks=["combined"], clip_ids=ids)  # fmt: skip
    started = time.perf_counter()
    evaluate_generation(model, processor, examples, batch_size=recipe["evaluate"]["batch_size"],
                        max_new_tokens=recipe["evaluate"]["max_new_tokens"], attribution_metrics=["sem_r"],
                        config_name="implicit")  # fmt: skip
    return time.perf_counter() - started


def runner_of(checkout: str):
    """``run_grid`` of another checkout's runner file, imported under another name (its relative imports resolve in
    this checkout's package of the same folder, which re-exports the names they need)."""
    for package, path in (("trainers", "trainers/compare.py"), ("icm_cli", "icm_cli/compare.py")):
        file = Path(checkout) / path
        if file.is_file() and "def run_grid" in file.read_text(encoding="utf-8"):
            __import__(package)
            spec = importlib.util.spec_from_file_location(f"{package}._compare_before", file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return module.run_grid
    raise SystemExit(f"--before {checkout}: no run_grid in trainers/compare.py or icm_cli/compare.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-p13")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-clips", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--before", help="a checkout of an earlier commit whose runner is timed side by side")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from trainers.compare import run_grid

    out = Path(args.out)
    spec = grid(args.eval_clips, args.max_new_tokens)
    started = time.perf_counter()
    first = run_grid(spec, out)
    print(f"grid run (trains/asks what is not cached): {time.perf_counter() - started:.1f} s; "
          f"status {[e['status'] for e in first['systems'].values()]}")  # fmt: skip
    runners = {"this checkout": run_grid}
    if args.before:
        runners[f"before ({args.before})"] = runner_of(args.before)
    overheads: dict[str, list[float]] = {name: [] for name in runners}
    passes = []
    for repeat in range(args.repeats):
        order = list(runners.items()) if repeat % 2 == 0 else list(runners.items())[::-1]
        for name, runner in order:  # interleaved, alternating who goes first
            started = time.perf_counter()
            document = runner(spec, out)
            overheads[name].append(time.perf_counter() - started)
            assert all(e["status"] == "done" for e in document["systems"].values()), name
        passes.append(evaluation_pass(out, spec))
    one_pass = statistics.median(passes)
    clips = document["systems"]["ICM"]["configs"]["implicit"]["metrics"]["num_examples"]
    print(f"systems: {len(document['systems'])}, evaluation clips: {clips:.0f}, max_new_tokens: {args.max_new_tokens}")
    for name, times in overheads.items():
        overhead = statistics.median(times)
        print(f"runner overhead, all runs cached (re-score + tables), {name}: {overhead:.3f} s "
              f"= {overhead / one_pass:.3%} of one evaluation pass  (runs: {[round(x, 3) for x in times]})")  # fmt: skip
    print(f"one evaluation pass (ICM generation + scoring):        {one_pass:.3f} s  (runs: {[round(x, 3) for x in passes]})")
    overhead = statistics.median(overheads["this checkout"])
    print(f"overhead / evaluation pass: {overhead / one_pass:.3%}  (goal <= 5 %)")


if __name__ == "__main__":
    main()

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
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    from icm_cli.inference import load_model
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-p13")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-clips", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from trainers.compare import run_grid

    out = Path(args.out)
    spec = grid(args.eval_clips, args.max_new_tokens)
    started = time.perf_counter()
    first = run_grid(spec, out)
    print(f"grid run (trains/asks what is not cached): {time.perf_counter() - started:.1f} s; "
          f"status {[e['status'] for e in first['systems'].values()]}")  # fmt: skip
    overheads, passes = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        document = run_grid(spec, out)
        overheads.append(time.perf_counter() - started)
        passes.append(evaluation_pass(out, spec))
    assert all(e["status"] == "done" for e in document["systems"].values())
    overhead, one_pass = statistics.median(overheads), statistics.median(passes)
    clips = document["systems"]["ICM"]["configs"]["implicit"]["metrics"]["num_examples"]
    print(f"systems: {len(document['systems'])}, evaluation clips: {clips:.0f}, max_new_tokens: {args.max_new_tokens}")
    print(f"runner overhead, all runs cached (re-score + tables): {overhead:.3f} s  (runs: {[round(x, 3) for x in overheads]})")
    print(f"one evaluation pass (ICM generation + scoring):        {one_pass:.3f} s  (runs: {[round(x, 3) for x in passes]})")
    print(f"overhead / evaluation pass: {overhead / one_pass:.3%}  (goal <= 5 %)")


if __name__ == "__main__":
    main()

"""The study's hypotheses (docs/study-set.md) read off an ``icm compare --grid study`` output folder.

    python experiments/study_summary.py runs/compare-study

Prints, for each hypothesis, the figures it is decided on and whether it held under its rule: one-sided p-values are
the paired t-tests of ``significance.csv`` (every clip of every seed) halved in the direction of the hypothesis; the
conflict-clip test is recomputed here on the conflict clips alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_sided(test: dict, better: str) -> float | None:
    """The one-sided p of a ``paired_t_test`` row (``mean_difference`` = row − reference) for ``better``:
    ``"reference"`` (the reference, ICM, is higher) or ``"row"``."""
    if test is None or test.get("pvalue") is None:
        return None
    diff = float(test["mean_difference"])
    wanted = diff < 0 if better == "reference" else diff > 0
    p = float(test["pvalue"])
    return p / 2 if wanted else 1 - p / 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="runs/compare-study")
    args = parser.parse_args(argv)
    out = Path(args.out)
    scores = json.loads((out / "scores.json").read_text())
    systems = scores["systems"]
    tests = {(row["system"], row["config"], row["metric"]): row for row in scores["significance"]}

    def metric(name, config, key):
        entry = systems.get(name, {})
        if entry.get("status") != "done" or config not in entry.get("configs", {}):
            return None, None  # not run, or a grid with one config (experiments/study-large-explicit.yaml)
        found = entry["configs"][config]
        return found["metrics"].get(key), found["std"].get(key)

    def show(name, config, key):
        mean, std = metric(name, config, key)
        return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"

    verdicts = []
    print("H1: ICM > Video-LLaVA on accuracy and mAP@tIoU (p < 0.01, one-sided)")
    for config in scores["configs"] if "Video-LLaVA" in systems else []:  # a grid without the baseline: not tested
        for key, per_clip in (("acc", "acc"), ("map_avg", "tiou")):
            p = one_sided(tests.get(("Video-LLaVA", config, per_clip)), "reference")
            held = p is not None and p < 0.01 and (metric("ICM", config, key)[0] or 0) > (metric("Video-LLaVA", config, key)[0] or 0)
            verdicts.append(held)
            print(f"  {config} {key}: ICM {show('ICM', config, key)} vs {show('Video-LLaVA', config, key)}, "
                  f"p = {p if p is None else f'{p:.2g}'} -> {'held' if held else 'did not hold'}")  # fmt: skip

    print("H2: removing the carrying scene drops the accuracy on its labels (p < 0.05, one-sided)")
    for name, config in (("w/o Act", "implicit"), ("w/o Fac", "explicit"), ("w/o Back", "implicit")):
        if name not in systems or config not in scores["configs"]:
            continue
        p = one_sided(tests.get((name, config, "acc")), "reference")
        drop = p is not None and p < 0.05
        print(f"  {name} on {config}: {show(name, config, 'acc')} vs ICM {show('ICM', config, 'acc')}, p = "
              f"{p if p is None else f'{p:.2g}'} -> {'drops' if drop else 'no significant drop'}")  # fmt: skip

    print("H3: the router's weight follows the informative scene (ICM, mean over labels and seeds)")
    for config, carrier in (("explicit", "face"), ("implicit", "action")):
        if config not in scores["configs"]:
            continue
        by_label = (systems["ICM"].get("diagnostics") or {}).get(config, {}).get("router_weights_by_label") or {}
        if not by_label:
            print(f"  {config}: no router weights")
            continue
        scenes = list(next(iter(by_label.values())))
        mean = {s: sum(w[s] for w in by_label.values()) / len(by_label) for s in scenes}
        top = max(mean, key=mean.get)
        print(f"  {config}: " + ", ".join(f"{s} {v:.2f}" for s, v in mean.items())
              + f" -> top {top}: {'held' if top == carrier else 'did not hold'} (carrier: {carrier})")  # fmt: skip

    print("H4: ICM > w/o IEC on the conflict clips (paired over conflict clips and seeds)")
    icm_c, plain_c = metric("ICM", "explicit", "acc_conflict"), metric("w/o IEC", "explicit", "acc_conflict")
    test = _conflict_test(out, scores)
    print(f"  conflict acc: ICM {show('ICM', 'explicit', 'acc_conflict')} vs w/o IEC "
          f"{show('w/o IEC', 'explicit', 'acc_conflict')}; paired p (one-sided) = {test}")  # fmt: skip
    if icm_c[0] is not None and plain_c[0] is not None:
        print(f"  -> {'ICM ahead' if icm_c[0] > plain_c[0] else 'ICM not ahead'}")
    print(f"\nH1 held in {sum(verdicts)} of {len(verdicts)} comparisons.")
    return 0


def _conflict_test(out: Path, scores: dict):
    from datasets_scripts.mini_set import conflict_clip_ids
    from evaluate_metrics.functions import paired_t_test
    from trainers.baselines import read_answers
    from trainers.compare import score_system

    references = [json.loads(line) for line in (out / "references-explicit.jsonl").read_text().splitlines()]
    conflicts = conflict_clip_ids(out / "data")
    chosen = [r for r in references if r["id"] in conflicts]
    if not chosen:
        return None
    ids = [r["id"] for r in chosen]
    refs = [{k: r[k] for k in ("sentiment", "segments", "cause", "duration")} for r in chosen]
    pairs = {"ICM": [], "w/o IEC": []}
    for name, slug in (("ICM", "icm"), ("w/o IEC", "w-o-iec")):
        for seed in scores.get("seeds") or []:
            path = out / "runs" / slug / f"seed-{seed}" / "train" / "predictions-trained-explicit.jsonl"
            if not path.is_file():
                return None
            result, _ = score_system(read_answers(path), ids, refs, "explicit", ["sem_r"])
            pairs[name] += list(result.per_example["acc"])
    try:
        test = paired_t_test(pairs["w/o IEC"], pairs["ICM"])
    except ValueError:
        return None
    p = one_sided(test, "reference")
    return None if p is None or p != p else float(f"{p:.3g}")  # three significant digits: a small p stays readable


if __name__ == "__main__":
    raise SystemExit(main())

"""Summarise runs of ``experiments/scene_pathway.py``: mean ± std over seeds per variant, and paired t-tests of each
variant against a reference variant over the seeds both have (accuracy, spread, sensitivity; two-sided, and one-sided
for "greater than the reference"), and a one-sided binomial test of each variant's held-out answers pooled over its
seeds against chance (1 / number of labels).

    python experiments/scene_pathway_summary.py --out runs/scene-pathway --reference scene-only \\
        --variants scene-only,scene-only_icmlr

A variant is a run-folder prefix (``<variant>-seed<N>``, as ``scene_pathway.py`` names its folders with ``--tag``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

KEYS = ("acc", "map_avg", "scene_spread", "scene_sensitivity", "scene_norm_ratio")


def _runs(out: Path, variant: str) -> dict[int, Path]:
    found = {}
    for folder in sorted(out.glob(f"{variant}-seed*")):
        seed = folder.name.rsplit("-seed", 1)[1]
        if seed.isdigit() and (folder / "results.json").is_file():
            found[int(seed)] = folder
    return found


def _figures(folder: Path) -> dict:
    result = json.loads((folder / "results.json").read_text())
    config = next(iter(result["metrics"]["trained"]))
    metrics = result["metrics"]["trained"][config]["metrics"]
    diag = result.get("diagnostics", {})
    after = diag.get("trained", {}).get(config, {})
    before = diag.get("untrained", {}).get(config, {})
    probe = diag.get("scene_probe", {}).get(config, {})
    predictions = folder / f"predictions-trained-{config}.jsonl"
    clips = sum(1 for line in predictions.read_text().splitlines() if line.strip()) if predictions.is_file() else None
    return {
        "clips": clips, "chance": probe.get("chance"),
        "acc": metrics.get("acc"), "map_avg": metrics.get("map_avg"),
        "scene_spread": after.get("scene_spread"), "scene_spread_init": before.get("scene_spread"),
        "scene_sensitivity": after.get("scene_sensitivity"), "scene_norm_ratio": after.get("scene_norm_ratio"),
        "probe_acc": probe.get("probe_acc"), "config": config,
    }  # fmt: skip


def _mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4g} ± {std:.2g}"


def main(argv=None) -> int:
    from scipy.stats import binomtest, ttest_rel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/scene-pathway")
    parser.add_argument("--variants", required=True, help="comma-separated run-folder prefixes")
    parser.add_argument("--reference", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    figures = {v: {seed: _figures(f) for seed, f in _runs(out, v).items()} for v in args.variants.split(",")}
    head = ["variant", "seeds", *KEYS, "spread at init", "probe acc"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for variant, by_seed in figures.items():
        runs = list(by_seed.values())
        cells = [variant, ",".join(map(str, by_seed))] + [_mean_std([r[k] for r in runs]) for k in KEYS]
        cells += [_mean_std([r["scene_spread_init"] for r in runs]), _mean_std([r["probe_acc"] for r in runs])]
        print("| " + " | ".join(cells) + " |")
    print()
    for variant, by_seed in figures.items():
        runs = [r for r in by_seed.values() if r["clips"] and r["chance"] and r["acc"] is not None]
        if runs:
            correct = sum(round(r["acc"] * r["clips"]) for r in runs)
            total = sum(r["clips"] for r in runs)
            test = binomtest(correct, total, runs[0]["chance"], alternative="greater")
            print(f"{variant}: {correct} of {total} held-out answers right over its seeds (chance "
                  f"{runs[0]['chance']:.3f}): one-sided binomial p={test.pvalue:.3g}")  # fmt: skip
    reference = figures[args.reference]
    print()
    for variant, by_seed in figures.items():
        if variant == args.reference:
            continue
        seeds = sorted(set(by_seed) & set(reference))
        if len(seeds) < 2:
            continue
        for key in ("acc", "scene_spread", "scene_sensitivity"):
            mine, theirs = [by_seed[s][key] for s in seeds], [reference[s][key] for s in seeds]
            if None in mine or None in theirs:  # e.g. the spread of a system without scene tokens
                continue
            test = ttest_rel(mine, theirs)
            greater = ttest_rel(mine, theirs, alternative="greater")
            print(f"{variant} vs {args.reference}, {key}: paired t-test over seeds {seeds}: t={test.statistic:.3g} "
                  f"p={test.pvalue:.3g} (one-sided, greater: p={greater.pvalue:.3g})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

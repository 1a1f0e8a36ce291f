"""Scene-pathway experiments: does the clip reach the answer through ICM's scene tokens?

Runs the ``demo`` recipe (tiny ICM, embedded mini set, implicit config) in variants and seeds, with the scene
features extracted once into a shared cache, and prints one table: held-out accuracy, mAP@tIoU, and the scene
diagnostics (``trainers.diagnostics``) before and after training. Every run's ``results.json`` stays in its folder.

    python experiments/scene_pathway.py --variants scene-only,full,video-llava --seeds 0,1,2 --out runs/scene-pathway

A variant is a set of recipe overrides (``VARIANTS`` below); ``--set KEY=VALUE`` (dotted recipe keys, YAML values)
adds overrides to every variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Named recipe overrides on top of ``--base``.
VARIANTS: dict[str, dict] = {
    "full": {},
    "scene-only": {"ablation": {"video_tokens": False}},
    "video-llava": {"ablation": {"scene_tokens": False}},
}


def _set(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) and value else value
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="demo", help="the recipe the variants start from (default: demo)")
    parser.add_argument("--variants", default="scene-only", help="comma-separated names of VARIANTS")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE recipe override for every run")
    parser.add_argument("--tag", default="", help="suffix of the run folders (several override sets side by side)")
    parser.add_argument("--out", default="runs/scene-pathway")
    args = parser.parse_args(argv)

    from trainers.recipe import extract_features, run_recipe

    out = Path(args.out)
    shared = out / "shared"
    common: dict = {"base": args.base, "evaluate": {"before_training": False}}
    for item in args.set:
        key, _, value = item.partition("=")
        _set(common, key, yaml.safe_load(value))
    features = extract_features({**common, "name": "features"}, shared)
    common = _merge(common, {"data": {"data_dir": features["data_dir"]}, "features": {"cache_dir": features["cache_dir"]}})

    rows = []
    for variant in args.variants.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            name = f"{variant}{args.tag}-seed{seed}"
            recipe = _merge(_merge(common, VARIANTS[variant]), {"name": name, "seed": seed})
            started = time.perf_counter()
            result = run_recipe(recipe, out / name, log=lambda line: print(f"[{name}] {line}", flush=True))
            config = next(iter(result["metrics"]["trained"]))
            metrics = result["metrics"]["trained"][config]["metrics"]
            diag = result.get("diagnostics", {})
            before = diag.get("untrained", {}).get(config, {})
            after = diag.get("trained", {}).get(config, {})
            probe = diag.get("scene_probe", {}).get(config, {})
            rows.append(
                {
                    "run": name,
                    "acc": metrics.get("acc"),
                    "map_avg": metrics.get("map_avg"),
                    "probe_acc": probe.get("probe_acc"),
                    "spread_init": before.get("scene_spread"),
                    "spread": after.get("scene_spread"),
                    "norm_ratio": after.get("scene_norm_ratio"),
                    "sensitivity": after.get("scene_sensitivity"),
                    "minutes": (time.perf_counter() - started) / 60,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    (out / f"summary{args.tag}.json").write_text(json.dumps(rows, indent=1))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = [row[k] if isinstance(row[k], str) else ("–" if row[k] is None else f"{row[k]:.4g}") for k in keys]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

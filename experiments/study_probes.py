"""The study set's probes (docs/study-set.md, "What reads what"): a linear probe per scene, on all scenes, and on
three views of what the video tower receives, on the held-out clips of each config.

    python experiments/study_probes.py --size small --seed 0 --out runs/study-probes [--pipeline lite]

Generates the study set into ``--out`` (unless it is there), extracts the scene features with the tiny pipeline of
the demo (seed 0) or the real offline one (``--pipeline lite``) and prints a Markdown table per pooling;
``probes-<pipeline>-<statistics>.json`` keeps the numbers.

    python experiments/study_probes.py --curve 16 32 64 --statistics mean max [--pipeline lite] --out runs/study-probes-curve

The learning curve of the implicit probe (docs/study-set.md): for each count, a study set with that many implicit
training clips per label and 8 held-out ones (the ``large`` size's held-out count; 64 is ``large``), the implicit
config's scene probes only, one row each.

Each scene is pooled by its mean, max, min and std over the frames (``trainers.study.STUDY_POOLING``;
``--statistics`` picks others); when they begin with ``mean max``, the table of that pooling alone (the recipes'
scene probe's) follows, from the same extraction (docs/study-set.md, H-P).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--seed", type=int, default=0, help="the study set's seed")
    parser.add_argument("--out", default="runs/study-probes")
    parser.add_argument("--pipeline", default="tiny", choices=["tiny", "lite"],
                        help="the scene extractors: the demo's tiny ones, or the real offline ones")
    parser.add_argument("--curve", type=int, nargs="+", metavar="N",
                        help="the implicit probe's learning curve: N training clips per label, 8 held out")
    parser.add_argument("--statistics", nargs="+", default=["mean", "max", "min", "std"], metavar="STAT",
                        help="each scene's pooling over frames and items, of mean, max, min, std (default: all four, "
                        "the study probes'; the tables of the default mean and max follow)")
    args = parser.parse_args(argv)
    if args.curve:
        return _curve(args)

    import torch

    from datasets_scripts.mini_set import generate_study_set
    from processing.pipeline import ScenePipeline
    from trainers.study import probe_views, study_views, tiny_video_tower

    torch.set_num_threads(1)
    out = Path(args.out)
    manifest = out / "mini_set.json"
    wanted = {"variant": "study", "size": args.size, "seed": args.seed}
    if not manifest.is_file() or {k: json.loads(manifest.read_text()).get(k) for k in wanted} != wanted:
        generate_study_set(out, seed=args.seed, size=args.size)
    started = time.perf_counter()
    processor, tower = tiny_video_tower()
    pipeline = ScenePipeline.from_kind(args.pipeline, seed=0)
    views = study_views(out, pipeline, processor, tower, statistics=args.statistics)
    tables = {" ".join(args.statistics): {c: probe_views(v) for c, v in views.items()}}
    if len(args.statistics) > 2 and args.statistics[:2] == ["mean", "max"]:
        # each scene's vector is its statistics one after another: the first two are the default pooling
        share = 2 / len(args.statistics)
        tables["mean max"] = {
            c: probe_views([{**v, "scenes": {k: f[: round(len(f) * share)] for k, f in v["scenes"].items()}} for v in vs])
            for c, vs in views.items()
        }
    stem = f"probes-{args.pipeline}-" + "-".join(args.statistics)
    (out / f"{stem}.json").write_text(json.dumps(tables, indent=1))
    scenes = ["face", "action", "object", "background", "all"]
    for statistics, found in tables.items():
        print(f"\nsize {args.size}, seed {args.seed}, {args.pipeline} pipeline, pooling: {statistics}\n")
        print("| config (chance) | " + " | ".join(scenes) + " | tower pixels | tower colour histogram | tower tokens |")
        print("|---|" + "---:|" * (len(scenes) + 3))
        for config, probes in found.items():
            cells = [f"{probes['scene'].get(s, float('nan')):.3f}" for s in scenes]
            cells += [f"{probes[k]:.3f}" for k in ("tower_pixels", "tower_histogram", "tower_tokens")]
            print(f"| {config} ({probes['chance']:.3f}) | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s on {torch.get_num_threads()} thread(s)")
    return 0


def _curve(args) -> int:
    import torch

    from datasets_scripts import mini_set
    from processing.pipeline import ScenePipeline
    from trainers.study import study_probes

    torch.set_num_threads(1)
    pipeline = ScenePipeline.from_kind(args.pipeline, seed=0)
    scenes = ["face", "action", "object", "background", "all"]
    print(f"| implicit training clips per label (8 held out), {args.pipeline} | " + " | ".join(scenes) + " |")
    print("|---|" + "---:|" * len(scenes))
    rows = {}
    for n in args.curve:
        # a size of the generator's own tables, for this run only: the implicit clips' seeds depend on their index
        # within the label, so the first n training clips are those of every size with at least n
        size = f"curve-{n}"
        mini_set.STUDY_SIZES[size] = {**mini_set.STUDY_SIZES["large"], "implicit": {"train": n, "test": 8}}
        mini_set.SCENE_SIZES[size] = mini_set.SCENE_SIZES["large"]
        out = Path(args.out) / size
        started = time.perf_counter()
        mini_set.generate_study_set(out, seed=args.seed, size=size)
        found = study_probes(out, pipeline, configs=("implicit",), statistics=args.statistics)["implicit"]
        rows[n] = found
        cells = [f"{found['scene'].get(s, float('nan')):.3f}" for s in scenes]
        print(f"| {n} | " + " | ".join(cells) + f" |  ({time.perf_counter() - started:.0f} s)", flush=True)
    (Path(args.out) / f"curve-{args.pipeline}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m datasets_scripts``: generate the mini set, validate annotation files, export a built set.

python -m datasets_scripts mini OUT_DIR [--size tiny|small|default] [--seed 0] [--variant mini|study]
python -m datasets_scripts validate FILE.jsonl [--scene]
python -m datasets_scripts export DATA_DIR OUT_DIR [--configs explicit implicit] [--no-scene-tuning]
                                  [--no-copy-media] [--license other] [--cache-dir DIR] [--lenient]
"""

from __future__ import annotations

import argparse
import json
import sys


def _mini(args) -> int:
    from .mini_set import generate_mini_set

    try:
        manifest = generate_mini_set(args.out_dir, seed=args.seed, size=args.size, variant=args.variant)
    except ValueError as err:  # a bad size, seed or variant: one line naming it, nothing written
        print(f"python -m datasets_scripts mini: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("size", "seed", "num_clips", "scene_tuning", "wall_time_s")}))
    return 0


def _validate(args) -> int:
    from .scene_schema import read_scene_annotations
    from .schema import read_annotations

    reader = read_scene_annotations if args.scene else read_annotations
    _, report = reader(args.file, strict=False)
    print(report.summary())
    return 1 if report else 0


def _export(args) -> int:
    from .export import export_dataset

    readme, counts = export_dataset(
        args.data_dir, args.out_dir, configs=args.configs, scene_tuning=not args.no_scene_tuning,
        copy_media=not args.no_copy_media, license=args.license, cache_dir=args.cache_dir, lenient=args.lenient,
    )  # fmt: skip
    for name, splits in counts.items():
        print(f"{name}: " + ", ".join(f"{split} {n} rows" for split, n in splits.items()), file=sys.stderr)
    print(readme)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets_scripts", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mini = sub.add_parser("mini", help="generate the embedded mini set")
    mini.add_argument("out_dir")
    mini.add_argument("--size", default="default", choices=["tiny", "small", "default", "large"],
                      help="large: the study variant only")
    mini.add_argument("--seed", type=int, default=0)
    mini.add_argument("--variant", default="mini", choices=["mini", "study"], help="study: the scene-dependence study set")
    mini.set_defaults(run=_mini)
    validate = sub.add_parser("validate", help="validate an annotation file; exit 1 if a record is bad")
    validate.add_argument("file")
    validate.add_argument("--scene", action="store_true", help="the file is a scene-tuning jsonl")
    validate.set_defaults(run=_validate)
    export = sub.add_parser("export", help="build the configs and write Parquet + dataset card")
    export.add_argument("data_dir")
    export.add_argument("out_dir")
    export.add_argument("--configs", nargs="+", default=None, help="default: the configs DATA_DIR holds")
    export.add_argument("--no-scene-tuning", action="store_true", help="leave DATA_DIR/scene_tuning out")
    export.add_argument("--no-copy-media", action="store_true",
                        help="keep the media paths as they are instead of copying the media under OUT_DIR")
    export.add_argument("--license", default="other")
    export.add_argument("--cache-dir")
    export.add_argument("--lenient", action="store_true")
    export.set_defaults(run=_export)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Distributed scene-feature extraction on accelerate: shard the videos across processes, merge one cache.

Run (CPU, gloo; any accelerate launch configuration works the same on GPUs)::

    accelerate launch --cpu --num_processes 2 --num_cpu_threads_per_process 1 -m processing.distributed \\
        --cache-dir feats/ --num-frames 8 --pipeline pretrained --sam-checkpoint sam_vit_b_01ec64.pth \\
        --action-checkpoint pose_higher_hrnet_w32_512.pth --relation-checkpoint checkpoint0149.pth videos/*.mp4

Every process builds the pipeline, takes its share of the videos (``PartialState().split_between_processes``),
and writes its own shards plus its own index (``index.rank{r}.json``) into the shared cache directory — no two
processes write the same file. After a barrier, rank 0 merges the per-rank indexes into ``index.json`` and the
per-rank reports into one (``--report``). Videos already in the cache are read, not recomputed; bad videos are
skipped and reported. With one process (plain ``python -m processing.distributed``) it writes ``index.json``
directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cache import INDEX_NAME, ExtractionReport, FeatureCache, SkippedVideo, extract_videos
from .pipeline import PIPELINE_KINDS


def _rank_index(rank: int) -> str:
    return f"index.rank{rank}.json"


def _report_from_dict(data: dict[str, Any]) -> ExtractionReport:
    return ExtractionReport(
        computed=list(data["computed"]),
        cached=list(data["cached"]),
        recomputed=[SkippedVideo(**r) for r in data["recomputed"]],
        skipped=[SkippedVideo(**s) for s in data["skipped"]],
        entry_ids=dict(data["entry_ids"]),
        frames_extracted=int(data.get("frames_extracted", 0)),
    )


def distributed_extract(
    paths: Sequence[str],
    pipeline: Any,
    cache_dir: str | os.PathLike,
    *,
    num_frames: int = 8,
    max_side: int | None = None,
    backend: str | None = None,
    start: float | None = None,
    end: float | None = None,
    progress: bool = True,
    grid_fps: float | None = None,
    pixel_max_side: int | None = None,
) -> ExtractionReport | None:
    """Extract ``paths`` across the processes of the current accelerate launch into ``cache_dir``. Returns the
    merged report on rank 0 (the local report when run alone) and ``None`` on the other ranks.

    With ``grid_fps`` the work is frame-shared (``processing.grid.extract_source_grids``): ``paths`` may name the
    same source video many times (one per clip window); each source is decoded and extracted once, on one rank —
    the sources, not the clips, are sharded across processes."""
    from accelerate import PartialState

    state = PartialState()
    rank, world = state.process_index, state.num_processes
    root = Path(cache_dir)
    if world == 1:
        cache = FeatureCache(root)
    else:
        root.mkdir(parents=True, exist_ok=True)
        state.wait_for_everyone()
        cache = FeatureCache(root, index_name=_rank_index(rank), track_removals=True)
        # read what earlier runs cached (the merged index) without writing to it
        try:
            merged = json.loads((root / INDEX_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or unreadable: rank 0's merge rebuilds it
            merged = {}
        for entry_id, record in merged.get("entries", {}).items():
            cache.entries.setdefault(entry_id, record)
        cache.file_hashes.update(merged.get("file_hashes", {}))
    if grid_fps is not None:
        from .grid import _items, extract_source_grids

        paths = _items(paths, "video")  # one entry per source video: the sources are sharded, not the clips
        run, kwargs = extract_source_grids, {"grid_fps": grid_fps, "pixel_max_side": pixel_max_side}
    else:
        run, kwargs = extract_videos, {"num_frames": num_frames, "start": start, "end": end}
    with state.split_between_processes(list(paths)) as mine:
        report = run(
            mine,
            pipeline,
            cache,
            max_side=max_side,
            backend=backend,
            progress=progress and state.is_local_main_process,
            desc=f"scene features{', frame grid' if grid_fps is not None else ''} [rank {rank}/{world}]",
            **kwargs,
        )
    if world == 1:
        return report
    (root / f"report.rank{rank}.json").write_text(json.dumps(report.to_dict()), encoding="utf-8")
    state.wait_for_everyone()
    result = None
    if state.is_main_process:
        FeatureCache.merge(root, [_rank_index(r) for r in range(world)])
        result = ExtractionReport()
        for r in range(world):
            part = root / f"report.rank{r}.json"
            result = result.merge(_report_from_dict(json.loads(part.read_text(encoding="utf-8"))))
            part.unlink()
    state.wait_for_everyone()
    return result


def build_pipeline(args: argparse.Namespace):
    """The scene pipeline of the command line (:meth:`ScenePipeline.from_options`, as ``icm extract`` builds it)."""
    from .pipeline import ScenePipeline

    return ScenePipeline.from_options(
        args.pipeline, scenes=tuple(s for s in args.scenes.split(",") if s) or None, seed=args.seed,
        face_encoder=args.face_encoder, action_checkpoint=args.action_checkpoint,
        relation_checkpoint=args.relation_checkpoint, sam_checkpoint=args.sam_checkpoint, sam_type=args.sam_type,
        background_encoder=args.background_encoder,
    )  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="processing.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("videos", nargs="*", help="video files")
    p.add_argument("--video-list", help="a text file with one video path per line")
    p.add_argument("--cache-dir", required=True, help="the feature cache directory (shared by all processes)")
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled per video (paper: 8)")
    p.add_argument("--max-side", type=int, default=None, help="downscale frames to this longest side when decoding")
    p.add_argument("--backend", default=None, choices=[None, "decord", "av", "pyav"], help="video decoder")
    p.add_argument("--pipeline", default="pretrained", choices=list(PIPELINE_KINDS))
    p.add_argument("--scenes", default="", help="comma-separated subset of face,action,object,background")
    p.add_argument("--seed", type=int, default=0, help="seed of --pipeline tiny or lite")
    p.add_argument("--face-encoder", default="microsoft/resnet-18")
    p.add_argument("--action-checkpoint", default=None, help="official HigherHRNet-W32 .pth")
    p.add_argument("--relation-checkpoint", default=None, help="official RelTR .pth")
    p.add_argument("--sam-checkpoint", default=None, help="official SAM-V1 .pth")
    p.add_argument("--sam-type", default="vit_b", help="vit_h | vit_l | vit_b")
    p.add_argument("--background-encoder", default="google/vit-base-patch16-224-in21k")
    p.add_argument("--grid-fps", type=float, default=None,
                   help="frame-shared extraction: decode each source once on a grid of this many frames per second "
                   "(processing.grid; clip windows gather their frames from it)")  # fmt: skip
    p.add_argument("--pixel-max-side", type=int, default=None, help="with --grid-fps: downscale the stored grid frames")
    p.add_argument("--report", default=None, help="write the merged report (JSON) here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = list(args.videos)
    if args.video_list:
        with open(args.video_list, encoding="utf-8") as f:
            paths += [line.strip() for line in f if line.strip()]
    if not paths:
        print("processing.distributed: no videos given", file=sys.stderr)
        return 2
    pipeline = build_pipeline(args)
    report = distributed_extract(
        paths,
        pipeline,
        args.cache_dir,
        num_frames=args.num_frames,
        max_side=args.max_side,
        backend=args.backend,
        progress=not args.no_progress,
        grid_fps=args.grid_fps,
        pixel_max_side=args.pixel_max_side,
    )
    if report is not None:
        print(report)
        if args.report:
            Path(args.report).write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

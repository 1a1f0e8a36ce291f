"""Live analysis (``icm watch``): read a stream, keep a ring buffer of decoded frames, analyse the last ``window``
seconds every ``stride`` seconds, and raise alerts (:mod:`inference.alerts`) within seconds.

Sources (:func:`open_source`): a network stream PyAV/FFmpeg reads (``udp://``, ``rtp://``, ``http(s)://`` MPEG-TS,
``rtsp://``, ``tcp://``, ``srt://``), a file — followed while it grows, so it must be in a streamable container
(MPEG-TS, Matroska; an mp4 writes its index at the end) — or a camera device (``/dev/videoN``, V4L2).

Flow and choices:

* **Reader** (the calling thread): decodes frames, downscaled on decoding so the longer side is at most
  ``max_side`` and thinned to at most ``max_fps`` frames per second, into a :class:`FrameRing` holding the last
  ``window`` seconds (memory is bounded by ``window * max_fps`` frames whatever the stream's length).
  **Stream time** is the frames' presentation time, starting at 0 and kept monotonic across restarts and
  reconnections (after a reconnection it continues by the wall-clock time the stream was away); each frame also
  keeps its wall-clock arrival time. A file is read at ``pace`` × real time (1: as if it were live); a network
  stream or a device as fast as it comes.
* **Windows**: whenever the stream time passes the next window end (``window`` s after the first frame, then
  every ``stride`` s), ``num_frames`` frames are sampled uniformly from the ring's frames in ``[end - window, end)``
  and queued. A window needs frames covering at least half of it (after a gap, a restart or a change of resolution
  the first windows are skipped and counted as ``skipped``).
* **Event-driven** (``events``, :mod:`inference.events`): each window's frames get a cheap change score against
  the recent past; an uneventful window is not queued for the model (one JSON line with ``generated: false``, its
  ``reason`` and ``score``, counted as ``windows_uneventful``); at least one window is analysed every
  ``events.floor`` seconds. With the model's scene probe (:func:`model_analyzer` with ``event_probe``), an eventful
  window whose extracted scene features the probe calls normal is not generated either (``probe_normal``, counted as
  ``windows_probe_normal``); floor windows always are.
* **Never behind**: the queue holds ``queue_size`` windows; when it is full the *oldest* waiting window is dropped
  (the newest one is the one worth analysing) and counted, and the drop is logged (the 1st, 2nd, 4th, 8th ... drop,
  each in one line, and the total at the end).
* **Analyser** (a worker thread): any callable ``analyzer(frames [T, H, W, 3] uint8, timestamps) -> dict`` with
  ``sentiment``, ``confidence``, ``attribution``, ``scene_weights`` (and optionally ``segments``, window-relative,
  and ``answer``); :func:`model_analyzer` wraps an ICM model through the one adapter :func:`analyze_window`.
  Timestamps are seconds from the window start. A failing call is logged, counted and skipped.
* **Output**: one JSON line per finished window (``type: "window"``: ``index, start, end`` stream seconds,
  ``wall_start, wall_end`` arrival of the window's frames, ``analysed_at``, ``sentiment, confidence, attribution,
  scene_weights, segments``) and one per alert message (see :mod:`inference.alerts`).
* **Faults**, each logged in one line: the stream stalls (no frame for ``stall_timeout`` s) or ends → reconnect
  with back-off until ``give_up_after`` s without a frame; its timestamps jump (a restarted sender) → stream time
  continues; the frame size changes → the ring restarts at the new size.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .alerts import AlertDelivery, AlertRule, AlertTracker, Backoff, JsonLinesSink, Outbox, WebhookSender

logger = logging.getLogger("icm.watch")

Analyzer = Callable[[np.ndarray, Sequence[float]], Mapping[str, Any]]
NETWORK_SCHEMES = ("udp://", "rtp://", "rtsp://", "rtsps://", "http://", "https://", "tcp://", "srt://", "rtmp://")


# ----------------------------------------------------------------------------------------------------------------
# The model call: ONE adapter (frames + timestamps -> a window result)
# ----------------------------------------------------------------------------------------------------------------


def analyze_window(
    model, processor, frames: np.ndarray, timestamps: Sequence[float], *, config_name: str = "implicit",
    max_new_tokens: int = 64, event_probe=None, probe_threshold: float = 0.0, vet: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """What the model says about one window of already-decoded frames: ``{sentiment, confidence, attribution,
    scene_weights, segments (window-relative), answer}`` (and ``probe_score`` with a scene probe).

    The only place live analysis calls the model: :func:`inference.analysis.analyze_frames`, the ``icm analyze``
    code path (combined instruction, greedy decoding, confidence from the label tokens, router weights averaged over
    the frames). ``timestamps`` are window-relative (the window starts at 0 s), as the model was trained on clips.
    With ``event_probe`` (:class:`inference.events.SceneEventProbe`) the scene features are extracted first and
    scored; with ``vet`` (an eventful window, not a floor one) a score below ``probe_threshold`` ends there:
    ``{"skipped": "probe_normal", "probe_score"}``, no generation."""
    from .analysis import analyze_frames

    frames = np.ascontiguousarray(frames)
    features = masks = probe_score = None
    if event_probe is not None and processor.num_scene_tokens:
        import torch

        features, masks = processor.scene_pipeline.extract(torch.as_tensor(frames))
        probe_score = round(event_probe.score(features, masks), 4)
        if vet and probe_score < probe_threshold:
            return {"skipped": "probe_normal", "probe_score": probe_score}
    result = analyze_frames(
        model, processor, frames, [float(t) for t in timestamps], start=0.0, config_name=config_name,
        max_new_tokens=max_new_tokens, scene_features=features, scene_masks=masks,
    )  # fmt: skip
    out = {key: result[key] for key in ("sentiment", "confidence", "attribution", "scene_weights", "segments", "answer")}
    if probe_score is not None:
        out["probe_score"] = probe_score
    return out


def model_analyzer(model, processor, config_name: str = "implicit", max_new_tokens: int = 64, event_probe=None,
                   probe_threshold: float = 0.0) -> Analyzer:  # fmt: skip
    """An analyser for :func:`watch` backed by an ICM ``model`` and its ``processor`` (and, optionally, the model's
    scene probe: :func:`watch` then asks it to vet the eventful windows)."""

    def analyzer(frames: np.ndarray, timestamps: Sequence[float], vet: bool = False) -> dict[str, Any]:
        return analyze_window(model, processor, frames, timestamps, config_name=config_name,
                              max_new_tokens=max_new_tokens, event_probe=event_probe,
                              probe_threshold=probe_threshold, vet=vet)  # fmt: skip

    analyzer.num_frames = int(processor.num_frames)  # type: ignore[attr-defined]
    analyzer.max_side = int(processor.max_side)  # type: ignore[attr-defined]
    analyzer.vets = event_probe is not None  # type: ignore[attr-defined]
    return analyzer


# ----------------------------------------------------------------------------------------------------------------
# Ring buffer and bounded window queue
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Frame:
    time: float  # stream seconds
    wall: float  # wall-clock arrival (epoch seconds)
    image: np.ndarray  # [H, W, 3] uint8 RGB


class FrameRing:
    """The last ``span`` seconds of frames (stream time), at most ``max_fps`` per second, all of one size."""

    def __init__(self, span: float, max_fps: float | None = None):
        if not span > 0:
            raise ValueError(f"ring span must be > 0 s, got {span!r}")
        if max_fps is not None and not max_fps > 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps!r}")
        self.span = float(span)
        self.max_fps = float(max_fps) if max_fps else None
        limit = None if not max_fps else int(math.ceil(span * max_fps)) + 2
        self._frames: deque[Frame] = deque(maxlen=limit)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self._frames[-1].image.shape if self._frames else None

    def add(self, frame: Frame) -> bool:
        """Keep ``frame`` (False when thinned out by ``max_fps``); frames older than ``span`` s are evicted."""
        if self.max_fps and self._frames:  # one frame per 1/max_fps slot of stream time
            if math.floor(frame.time * self.max_fps + 1e-6) <= math.floor(self._frames[-1].time * self.max_fps + 1e-6):
                return False
        self._frames.append(frame)
        while self._frames and self._frames[0].time < frame.time - self.span - 1e-9:
            self._frames.popleft()
        return True

    def clear(self) -> None:
        self._frames.clear()

    def between(self, start: float, end: float) -> list[Frame]:
        return [f for f in self._frames if start - 1e-9 <= f.time < end - 1e-9]


def sample_uniform(frames: Sequence[Frame], num_frames: int) -> list[Frame]:
    """``num_frames`` frames spread evenly over ``frames`` (the centre of each of ``num_frames`` equal parts;
    frames repeat when there are fewer)."""
    if not frames:
        return []
    n = len(frames)
    return [frames[min(n - 1, int((k + 0.5) * n / num_frames))] for k in range(num_frames)]


@dataclass
class WindowJob:
    index: int
    start: float
    end: float
    frames: np.ndarray | None  # [T, H, W, 3]; None: a window event-driven selection skipped (nothing to analyse)
    times: list[float]  # stream seconds of the frames
    walls: list[float]
    queued_at: float = field(default_factory=time.time)
    reason: str = "all"  # why it is analysed or skipped (inference.events)
    score: float | None = None  # its event score (None: selection off)


class WindowQueue:
    """A bounded FIFO of windows: putting into a full queue drops the oldest waiting window and counts it. Windows
    skipped by event-driven selection (no frames: nothing for the model to do) pass in order without taking a
    place, and are never dropped."""

    def __init__(self, maxsize: int = 2):
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"queue size must be an integer >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._items: deque[WindowJob] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.dropped_indices: list[int] = []

    def put(self, job: WindowJob) -> WindowJob | None:
        """Queue ``job``; the dropped window, if the queue was full."""
        with self._cond:
            dropped = None
            waiting = [j for j in self._items if j.frames is not None]
            if job.frames is not None and len(waiting) >= self.maxsize:
                dropped = waiting[0]
                self._items.remove(dropped)
                self.dropped += 1
                if len(self.dropped_indices) < 10_000:
                    self.dropped_indices.append(dropped.index)
            self._items.append(job)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> WindowJob | None:
        """The oldest window; None when closed and empty, or after ``timeout`` s."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------


class SourceError(ValueError):
    """A source that cannot be read (names the source)."""


def source_kind(source: str) -> str:
    """``"network"``, ``"device"`` or ``"file"``."""
    if source.startswith(NETWORK_SCHEMES):
        return "network"
    if source.startswith("/dev/video") or source.startswith("v4l2:"):
        return "device"
    return "file"


class _GrowingFile:
    """A file read while another process appends to it: at its end, ``read`` waits (up to ``idle_timeout`` s
    without growth) for more bytes before reporting the end."""

    def __init__(self, path: Path, idle_timeout: float, stop: threading.Event, poll: float = 0.05):
        self._handle = path.open("rb")
        self.idle_timeout, self._stop, self.poll = float(idle_timeout), stop, poll

    def read(self, n: int = -1) -> bytes:
        waited = 0.0
        while True:
            data = self._handle.read(n)
            if data or waited >= self.idle_timeout or self._stop.is_set():
                return data
            time.sleep(self.poll)
            waited += self.poll

    def close(self) -> None:
        self._handle.close()


def open_source(
    source: str, *, kind: str | None = None, stall_timeout: float = 5.0, open_timeout: float = 10.0,
    options: Mapping[str, str] | None = None, follow: bool = True, stop: threading.Event | None = None,
):  # fmt: skip
    """``(container, closer)`` for ``source`` (see the module docstring); :class:`SourceError` naming it."""
    import av

    kind = kind or source_kind(source)
    opts = dict(options or {})
    try:
        if kind == "device":
            device = source.removeprefix("v4l2:")
            return av.open(device, format="v4l2", options=opts, timeout=(open_timeout, stall_timeout)), None
        if kind == "network":
            opts.setdefault("analyzeduration", "1000000")  # probe 1 s, not FFmpeg's 5: the first window comes sooner
            return av.open(source, options=opts, timeout=(open_timeout, stall_timeout), metadata_errors="ignore"), None
        path = Path(source)
        if not path.is_file():
            raise SourceError(f"source {source}: no such file (give a file, a stream URL such as udp://HOST:PORT, "
                              "or a device /dev/videoN)")  # fmt: skip
        if not follow:
            return av.open(str(path), options=opts, metadata_errors="ignore"), None
        handle = _GrowingFile(path, stall_timeout, stop or threading.Event())
        try:
            container = av.open(handle, options=opts, metadata_errors="ignore")
        except BaseException:
            handle.close()
            raise
        return container, handle
    except SourceError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg's errors carry its message
        raise SourceError(f"source {source}: cannot open it ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err


# ----------------------------------------------------------------------------------------------------------------
# watch
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class WatchSummary:
    """What a :func:`watch` run did."""

    source: str
    frames: int = 0
    windows_queued: int = 0
    windows_analysed: int = 0
    windows_dropped: int = 0
    windows_skipped: int = 0
    windows_uneventful: int = 0
    windows_probe_normal: int = 0
    analyzer_errors: int = 0
    alerts: int = 0
    alert_messages: int = 0
    undelivered: int = 0
    stream_seconds: float = 0.0
    wall_seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    ended_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_empty_file(source: str) -> bool:
    try:
        return os.stat(source).st_size == 0
    except OSError:
        return False


class _Watcher:
    def __init__(self, source: str, analyzer: Analyzer, **kw):
        self.source = source
        self.analyzer = analyzer
        self.kw = kw
        self.summary = WatchSummary(source=source)
        self.queue = WindowQueue(kw["queue_size"])
        self.ring = FrameRing(kw["window"] + kw["stride"], kw["max_fps"])
        self.tracker = AlertTracker(kw["rule"], source=source)
        self.stop = kw["stop_event"] or threading.Event()
        self.delivery = kw["delivery"]
        self.sink = kw["sink"]
        self.on_window = kw["on_window"]
        self.on_alert = kw["on_alert"]
        self._next_end: float | None = None
        self._index = 0
        self._last_time: float | None = None  # stream time of the last frame
        self._last_wall: float | None = None
        self._offset = 0.0
        self._last_frame_mono: float | None = None  # monotonic clock of the last frame (for giving up)
        self._skip_logged = False
        from .events import WindowGate

        self.gate = WindowGate(kw["events"])

    # -- faults ------------------------------------------------------------------------------------------------
    def fault(self, kind: str, message: str, *args) -> None:
        self.summary.faults[kind] = self.summary.faults.get(kind, 0) + 1
        logger.warning("%s: " + message, self.source, *args)

    # -- reading -----------------------------------------------------------------------------------------------
    def _frames_of(self, container) -> Iterator[tuple[float, Any]]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = float(stream.time_base) if stream.time_base else None
        start = float(container.start_time) / 1e6 if container.start_time not in (None, 0) else None
        for k, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and base:
                raw = frame.pts * base
            else:
                rate = float(stream.average_rate or 25)
                raw = k / rate
            if start is None:
                start = raw
            yield raw - start, frame

    def _stream_time(self, raw: float, wall: float, reconnected: bool) -> float:
        """Monotonic stream time from the source's raw time (see the module docstring)."""
        if self._last_time is None:
            self._offset = -raw if raw < 0 else 0.0
        elif reconnected:
            self._offset = self._last_time + max(0.0, wall - self._last_wall) - raw
        else:
            t = raw + self._offset
            gap = t - self._last_time
            if gap < -0.5 or gap > self.kw["max_gap"]:
                self.fault("restart", "stream restarted: its time jumped from %.2f s to %.2f s (source time); "
                           "stream time continues at %.2f s", self._last_time, t, self._last_time)  # fmt: skip
                self._offset = self._last_time + 1e-3 - raw
        return raw + self._offset

    def read(self) -> None:
        kw = self.kw
        kind = kw["kind"] or source_kind(self.source)
        pace = kw["pace"] if kw["pace"] is not None else (1.0 if kind == "file" else None)
        backoff = Backoff(initial=0.5, factor=2.0, maximum=5.0, jitter=0.0)
        failures = 0
        connected_once = False
        started = time.monotonic()

        def away() -> float:  # seconds without a frame
            return time.monotonic() - (self._last_frame_mono or started)

        while not self.stop.is_set():
            if kind == "file" and kw["follow"] and not connected_once and _is_empty_file(self.source):
                # a file not yet written to: wait for it to grow, up to give_up_after (opening it now would fail)
                if away() >= kw["give_up_after"]:
                    self.summary.ended_by = f"no data for {away():.1f} s (the file stayed empty)"
                    logger.warning("%s: giving up after %.1f s: the file stayed empty", self.source, away())
                    return
                if not failures:
                    logger.warning("%s: the file is empty; waiting up to %.0f s for it to grow", self.source,
                                   kw["give_up_after"])  # fmt: skip
                failures = 1
                self.stop.wait(min(0.25, max(0.01, kw["give_up_after"] - away())))
                continue
            try:
                container, handle = open_source(
                    self.source, kind=kind, stall_timeout=kw["stall_timeout"], open_timeout=kw["open_timeout"],
                    options=kw["av_options"], follow=kw["follow"], stop=self.stop,
                )  # fmt: skip
            except SourceError as err:
                if not connected_once and kind == "file":
                    raise
                failures += 1
                if away() >= kw["give_up_after"]:
                    self.summary.ended_by = f"no data for {away():.1f} s"
                    logger.warning("%s: giving up after %.1f s without data (%d attempts)", self.source, away(), failures)
                    return
                wait = backoff.delay(failures)
                self.fault("reconnect_failed", "reconnect attempt %d failed (%s); next in %.1f s",
                           failures, str(err).split(": ", 1)[-1][:160], wait)  # fmt: skip
                self.stop.wait(wait)
                continue
            if connected_once:
                logger.warning("%s: reconnected after %.1f s without a frame", self.source, away())
            frames_before = self.summary.frames
            reason = self._consume(container, pace, reconnected=connected_once)
            connected_once = True
            if self.summary.frames > frames_before:
                failures = 0
            try:
                container.close()
            finally:
                if handle is not None:
                    handle.close()
            if reason in ("stopped", "limit"):
                self.summary.ended_by = self.summary.ended_by or reason
                return
            if kind == "file" and not kw["reconnect_files"]:
                self.summary.ended_by = "end of file"
                logger.warning("%s: stream ended (%s)", self.source, reason)
                return
            self.fault("ended" if reason == "ended" else "stall",
                       "stream %s; reconnecting (giving up after %.0f s without data)",
                       "ended" if reason == "ended" else f"stalled ({reason})", kw["give_up_after"])  # fmt: skip
            if away() >= kw["give_up_after"]:
                self.summary.ended_by = f"no data for {away():.1f} s"
                logger.warning("%s: giving up after %.1f s without data", self.source, away())
                return
            if frames_before == self.summary.frames:  # opened but gave nothing: do not spin
                failures += 1
                self.stop.wait(backoff.delay(failures))

    def _consume(self, container, pace: float | None, reconnected: bool) -> str:
        kw = self.kw
        max_side = kw["max_side"]
        pace_origin: tuple[float, float] | None = None
        first = True
        try:
            for raw, frame in self._frames_of(container):
                if self.stop.is_set():
                    return "stopped"
                wall = time.time()
                t = self._stream_time(raw, wall, reconnected and first)
                first = False
                if pace:
                    if pace_origin is None:
                        pace_origin = (time.monotonic(), t)
                    target = pace_origin[0] + (t - pace_origin[1]) / pace
                    delay = target - time.monotonic()
                    if delay > 0:
                        if self.stop.wait(delay):
                            return "stopped"
                    elif delay < -2.0:  # the decoder fell behind the pace: do not sprint to catch up
                        pace_origin = (time.monotonic(), t)
                    wall = time.time()
                width, height = int(frame.width), int(frame.height)
                if max_side and max(width, height) > max_side:
                    scale = max_side / max(width, height)
                    width, height = max(2, round(width * scale)), max(2, round(height * scale))
                image = frame.to_ndarray(format="rgb24", width=width, height=height)
                shape = self.ring.shape
                if shape is not None and shape != image.shape:
                    self.fault("resolution", "frame size changed from %dx%d to %dx%d at %.2f s; the ring restarts",
                               shape[1], shape[0], image.shape[1], image.shape[0], t)  # fmt: skip
                    self.ring.clear()
                self.ring.add(Frame(t, wall, image))
                self.summary.frames += 1
                self._last_frame_mono = time.monotonic()
                self._last_time, self._last_wall = t, wall
                self.summary.stream_seconds = t
                if self._next_end is None:
                    self._next_end = t + kw["window"]
                self._schedule(t)
                if kw["max_seconds"] is not None and t >= kw["max_seconds"]:
                    return "limit"
                if kw["max_windows"] is not None and self._index >= kw["max_windows"]:
                    return "limit"
        except Exception as err:  # noqa: BLE001 - a read time-out or a broken stream: reconnect
            text = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            return f"{type(err).__name__}: {text}"
        return "ended"

    def _schedule(self, t: float) -> None:
        kw = self.kw
        window, stride = kw["window"], kw["stride"]
        if t - self._next_end > window:  # a gap: jump to the first window end that can hold frames again
            self._next_end += math.floor((t - self._next_end - window) / stride + 1) * stride
        while self._next_end <= t + 1e-9:
            end, self._next_end = self._next_end, self._next_end + stride
            start = end - window
            inside = self.ring.between(start, end)
            if len(inside) < 2 or inside[0].time > start + window / 2 or inside[-1].time < end - window / 2:
                self.summary.windows_skipped += 1
                if not self._skip_logged:
                    self._skip_logged = True
                    logger.warning("%s: window %.2f-%.2f s skipped: its frames cover less than half of it "
                                   "(start, gap or restart)", self.source, start, end)  # fmt: skip
                continue
            self._skip_logged = False
            chosen = sample_uniform(inside, kw["num_frames"])
            times = [f.time for f in chosen]
            # the score looks at the frames the model would see; a frame's stream time names it across windows
            decision, _ = self.gate.decide_frames(start, times, [f.image for f in chosen], times)
            images = np.stack([f.image for f in chosen]) if decision.generate else None
            job = WindowJob(self._index, round(start, 3), round(end, 3), images, times, [f.wall for f in chosen],
                            reason=decision.reason, score=decision.score)  # fmt: skip
            self._index += 1
            if not decision.generate:
                self.summary.windows_uneventful += 1
                self.queue.put(job)
                continue
            self.summary.windows_queued += 1
            dropped = self.queue.put(job)
            if dropped is not None:
                n = self.queue.dropped
                self.summary.windows_dropped = n
                if n & (n - 1) == 0:
                    logger.warning("%s: window %d (%.2f-%.2f s) dropped: the model is slower than real time "
                                   "(%d dropped so far, queue of %d)", self.source, dropped.index, dropped.start,
                                   dropped.end, n, self.queue.maxsize)  # fmt: skip

    # -- analysing ---------------------------------------------------------------------------------------------
    def analyse(self) -> None:
        while True:
            job = self.queue.get(timeout=0.5)
            if job is None:
                if self.queue._closed:
                    break
                continue
            if job.frames is None:  # skipped by event-driven selection: recorded, and quiet for the alert rule
                self._finish(job, {})
                continue
            relative = [round(t - job.start, 4) for t in job.times]
            vet = {"vet": job.reason == "event"} if getattr(self.analyzer, "vets", False) else {}
            try:
                result = dict(self.analyzer(job.frames, relative, **vet))
            except Exception as err:  # noqa: BLE001 - one bad window never stops the watch
                self.summary.analyzer_errors += 1
                self.fault("analyzer", "window %d (%.2f-%.2f s): the analyser failed (%s: %s); skipped",
                           job.index, job.start, job.end, type(err).__name__, str(err)[:160])  # fmt: skip
                continue
            if result.get("skipped"):  # the scene probe called an eventful window normal: quiet, not generated
                self.summary.windows_probe_normal += 1
                job.reason = str(result["skipped"])
                self._finish(job, result)
                continue
            self.summary.windows_analysed += 1
            self._finish(job, result)
        for message in self.tracker.finish("stream ended" if not self.stop.is_set() else "watch stopped"):
            self._alert(message)

    def _finish(self, job: WindowJob, result: Mapping[str, Any]) -> None:
        record = self._record(job, result)
        if self.sink is not None:
            self.sink.write(record)
        for message in self.tracker.update(record):
            self._alert(message)
        if self.on_window is not None:
            self.on_window(record)

    def _alert(self, message: dict) -> None:
        self.summary.alert_messages += 1
        if message["event"] == "start":
            self.summary.alerts += 1
        self.delivery.deliver(message)
        if self.on_alert is not None:
            self.on_alert(message)

    def _record(self, job: WindowJob, result: Mapping[str, Any]) -> dict[str, Any]:
        segments = []
        for seg in result.get("segments") or []:
            s, e = sorted((float(seg[0]), float(seg[1])))
            s, e = max(job.start, job.start + s), min(job.end, job.start + e)
            if e - s > 1e-6:
                segments.append([round(s, 3), round(e, 3)])
        analysed = time.time()
        return {
            "type": "window",
            "source": self.source,
            "index": job.index,
            "start": job.start,
            "end": job.end,
            "wall_start": round(min(job.walls), 3),
            "wall_end": round(max(job.walls), 3),
            "analysed_at": round(analysed, 3),
            "latency_s": round(analysed - max(job.walls), 3),
            "sentiment": result.get("sentiment", ""),
            "confidence": round(float(result.get("confidence") or 0.0), 6),
            "attribution": result.get("attribution", ""),
            "scene_weights": dict(result.get("scene_weights") or {}),
            "segments": segments,
            "answer": result.get("answer", ""),
            "generated": job.frames is not None and not result.get("skipped"),
            "reason": job.reason,
            "score": job.score,
            "probe_score": result.get("probe_score"),
        }


def watch(
    source: str | os.PathLike,
    analyzer: Analyzer,
    *,
    window: float = 8.0,
    stride: float = 2.0,
    num_frames: int | None = None,
    rule: AlertRule | None = None,
    output: str | os.PathLike | Any | None = None,
    webhook: str | None = None,
    outbox: str | os.PathLike | None = None,
    webhook_timeout: float = 5.0,
    backoff: Backoff | None = None,
    queue_size: int = 2,
    pace: float | None = None,
    max_side: int | None = None,
    max_fps: float | None = 8.0,
    stall_timeout: float = 5.0,
    open_timeout: float = 10.0,
    give_up_after: float = 60.0,
    max_gap: float = 10.0,
    follow: bool = True,
    reconnect_files: bool = False,
    kind: str | None = None,
    av_options: Mapping[str, str] | None = None,
    max_seconds: float | None = None,
    max_windows: int | None = None,
    drain_timeout: float = 10.0,
    stop_event: threading.Event | None = None,
    on_window: Callable[[dict], None] | None = None,
    on_alert: Callable[[dict], None] | None = None,
    events=None,
) -> WatchSummary:
    """Watch ``source`` and analyse it live until it ends, ``stop_event`` is set, or a limit is reached (see the
    module docstring); returns a :class:`WatchSummary`.

    Args:
        source: a stream URL, a file (followed while it grows) or a camera device.
        analyzer: ``(frames [T, H, W, 3] uint8, timestamps from the window start) -> {sentiment, confidence,
            attribution, scene_weights[, segments, answer]}`` (e.g. :func:`model_analyzer`).
        window, stride: seconds analysed, and seconds between two windows.
        num_frames: frames per window (default: the analyser's ``num_frames`` attribute, else 8).
        rule: the alert rule (:class:`~inference.alerts.AlertRule`).
        output: where the JSON lines go: None/"-" for stdout, a path, or an open text stream.
        webhook, outbox: POST alert messages to ``webhook``; undelivered ones wait in ``outbox`` (default
            ``icm-watch-outbox``) and are re-sent, also by a later run.
        webhook_timeout, backoff: the webhook's answer time-out and the retry back-off.
        queue_size: windows waiting for the analyser before the oldest is dropped.
        pace: read at this multiple of real time (default: 1 for files, as fast as it comes for streams).
        max_side, max_fps: frames are downscaled to this longer side (default: the analyser's ``max_side``) and
            thinned to this rate in the ring.
        stall_timeout: seconds without data that count as a stall (and that a growing file may stay idle).
        open_timeout: seconds to wait for a stream to open.
        give_up_after: seconds without a frame after which the watch ends.
        max_gap: a forward jump of the source's time by more than this many seconds counts as a restart.
        follow: follow a file while it grows (False: read it as it is).
        reconnect_files: treat the end of a file like a network stream's (wait for it to come back).
        kind: ``"network"``, ``"file"`` or ``"device"`` (default: guessed from ``source``).
        av_options: FFmpeg options for opening the source (e.g. ``{"rtsp_transport": "tcp"}``).
        max_seconds, max_windows: stop after this much stream time / this many windows.
        drain_timeout: at the end, seconds to keep trying to deliver the outbox.
        stop_event: set it to stop the watch from another thread.
        on_window, on_alert: called with each window's JSON record / each alert message.
        events: event-driven selection (:class:`inference.events.EventSelection`; None: every window is
            analysed). A skipped window costs no model call; its JSON line says ``generated: false`` with its
            ``reason`` and ``score``, and it counts as a quiet window for the alert rule.
    """
    source = os.fspath(source)
    for name, value in (("window", window), ("stride", stride)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    num_frames = int(num_frames or getattr(analyzer, "num_frames", 8))
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    sink = output if isinstance(output, JsonLinesSink) else JsonLinesSink(output)
    sender = None
    if webhook:
        sender = WebhookSender(webhook, Outbox(outbox or "icm-watch-outbox"), timeout=webhook_timeout,
                               backoff=backoff).start()  # fmt: skip
    watcher = _Watcher(
        source, analyzer, window=float(window), stride=float(stride), num_frames=num_frames, rule=rule or AlertRule(),
        queue_size=queue_size, pace=pace, max_side=max_side or getattr(analyzer, "max_side", None), max_fps=max_fps,
        stall_timeout=stall_timeout, open_timeout=open_timeout, give_up_after=give_up_after, max_gap=max_gap,
        follow=follow, reconnect_files=reconnect_files, kind=kind, av_options=av_options, max_seconds=max_seconds,
        max_windows=max_windows, stop_event=stop_event, delivery=AlertDelivery(sink, sender), sink=sink,
        on_window=on_window, on_alert=on_alert, events=events,
    )  # fmt: skip
    worker = threading.Thread(target=watcher.analyse, name="icm-analyser", daemon=True)
    worker.start()
    started = time.monotonic()
    summary = watcher.summary
    try:
        watcher.read()
    except KeyboardInterrupt:
        summary.ended_by = "interrupted"
        watcher.stop.set()
        raise
    finally:
        watcher.queue.close()
        worker.join()
        summary.windows_dropped = watcher.queue.dropped
        summary.wall_seconds = round(time.monotonic() - started, 3)
        summary.stream_seconds = round(summary.stream_seconds, 3)
        if sender is not None:
            if not sender.drain(drain_timeout):
                logger.warning("%s: %d alert message(s) still undelivered after %.0f s", source,
                               len(sender.outbox), drain_timeout)  # fmt: skip
            sender.stop()
            summary.undelivered = len(sender.outbox)
        logger.warning(
            "%s: watch ended (%s): %d frames, %.1f s of stream in %.1f s; windows: %d analysed, %d uneventful (not "
            "analysed), %d called normal by the scene probe, %d dropped (model slower than real time), %d skipped; "
            "%d alert(s); faults %s", source, summary.ended_by or "-", summary.frames, summary.stream_seconds,
            summary.wall_seconds, summary.windows_analysed, summary.windows_uneventful, summary.windows_probe_normal,
            summary.windows_dropped, summary.windows_skipped, summary.alerts, summary.faults or "none",
        )  # fmt: skip
        if sink is not output:
            sink.close()
    return summary


# ----------------------------------------------------------------------------------------------------------------
# A loopback streamer (tests, benchmarks, demos)
# ----------------------------------------------------------------------------------------------------------------


def send_mpegts(
    frames: Callable[[int], np.ndarray | None] | Sequence[np.ndarray],
    url: str,
    fps: float,
    *,
    pace: float = 1.0,
    codec: str = "libx264",
    gop: int | None = None,
    pts_offset: int = 0,
    on_frame: Callable[[int, float], None] | None = None,
    stop: threading.Event | None = None,
    max_frames: int | None = None,
) -> int:
    """Encode ``frames`` (a sequence, or ``frames(i)`` returning None at the end) as H.264 in MPEG-TS to ``url``
    (``udp://127.0.0.1:PORT``, a file ...) at ``pace`` × real time, like ``ffmpeg -re``; ``on_frame(i, wall)`` is
    called as frame ``i`` leaves. ``pts_offset`` (frames) shifts the timestamps (a restarted sender). Returns the
    number of frames sent."""
    from fractions import Fraction

    import av

    get = frames if callable(frames) else (lambda i: frames[i] if i < len(frames) else None)
    limit = max_frames if max_frames is not None else 10**9
    first = get(0)
    if first is None:
        return 0
    height, width = first.shape[:2]
    target = url + ("?pkt_size=1316" if url.startswith("udp://") and "?" not in url else "")
    container = av.open(target, mode="w", format="mpegts")
    try:
        rate = Fraction(fps).limit_denominator(1000)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.codec_context.gop_size = gop or max(1, int(round(fps)))
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
        origin = time.monotonic()
        i, image = 0, first
        while image is not None and i < limit:
            if stop is not None and stop.is_set():
                break
            delay = origin + i / (fps * pace) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width]), format="rgb24")
            frame.pts = i + pts_offset  # in the codec's time base, 1 / rate
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
            if on_frame is not None:
                on_frame(i, time.time())
            i += 1
            image = get(i)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return i


__all__ = [
    "FrameRing",
    "SourceError",
    "WatchSummary",
    "WindowQueue",
    "analyze_window",
    "model_analyzer",
    "open_source",
    "sample_uniform",
    "send_mpegts",
    "source_kind",
    "watch",
]

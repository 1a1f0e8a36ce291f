"""The analysis API: video (file or stream) -> windows -> batched generation -> segments -> merged timeline.

This module owns inference with a trained ICM; ``icm analyze``, the ``video-sentiment-analysis`` pipeline
(``modeling_icm/pipeline_icm.py``), the web app (``icm serve``) and stream watchers are thin layers over it.

It loads models with :func:`inference.loading.load_model` and answers batches of windows with
:func:`inference.generation.generate_answers` (one left-padded ``generate`` with token probabilities).

* :func:`analyze_frames` / :func:`analyze_frames_batch` — one window (or a batch of windows) of already decoded
  frames with their video timestamps -> a window result ``{start, end, sentiment, confidence, attribution,
  scene_weights, segments, ...}``; what a live-stream watcher calls.
* :func:`iter_window_results` — any iterable of windows (a file's, a stream's) -> window results, batch by batch.
* :func:`analyze_video` — a video file: windows planned over its duration, frames sampled from a shared frame grid,
  each frame decoded once (``processing.video.iter_window_clips``) and its scene features extracted once
  (:class:`SharedSceneFeatures`), results appended to a JSON Lines log as batches finish (resumable),
  and the analysis document with the merged timeline (:func:`merge_windows`).

``icm analyze`` cuts a video into windows of the model's clip length (``window`` seconds) that overlap by
``overlap`` seconds, asks the model the combined Omni-SILA instruction for each window (identify, locate,
attribute), and merges what the windows say. Choices (the paper analyses single clips; it is silent on long
videos):

* **Segments** a window's answer gives are relative to the window (the prompt states the frames' times from the
  window start); they are shifted to video time and clipped to the window and to the video.
* **Merge**: segments of the *same* sentiment that overlap or touch (gap <= ``gap`` seconds) across windows become
  one segment spanning them all. Segments of different sentiments are kept apart (a "Normal" stretch next to a
  "Fire" one is information, not a conflict to hide).
* **Confidence** of a window's judgement is the probability the model gave to the tokens of the sentiment label
  it generated (the product of those tokens' probabilities: the probability of the label given the prompt and the
  preceding words). When the label cannot be located in the answer, it is the geometric mean of all generated
  tokens' probabilities. A merged segment's confidence is the length-weighted mean of its windows' confidences.
* **Attribution** of a merged segment is the one of its most confident window.
* **scene_weights** of a segment are the router's gating probabilities P (SBM, Eq. 1) averaged over the analysed
  frames whose time lies in the segment (frames of every window, overlaps included); frames where no scene is
  present carry no weights and are left out. They say which scenes drove the judgement.
* **Frames** of a video file's windows come from one frame grid of ``num_frames / window`` frames per second
  (:func:`analysis_grid_fps`; ``processing.grid``'s rule, as for training clips): a full window holds exactly
  ``num_frames`` grid frames, evenly spaced, and overlapping windows sample the *same* frames in their overlap
  (per-window ``round(linspace)`` sampling almost never does: at 25 fps, 10-s windows 5 s apart share no frame).
  The scene extractors then run once per distinct frame and overlapping windows reuse the features
  (:class:`SharedSceneFeatures`; at 50 % overlap half the extraction). A window clipped by the end of the video
  holds fewer grid frames, which repeat.
* **Long runs** append one JSON line per finished window to ``<out>.partial.jsonl`` (the first line is a header
  naming the video, model and settings) instead of rewriting a growing document per batch (quadratic in the
  number of windows); a run started again with the same header continues after the last complete line.

Deterministic: greedy decoding, ``torch.manual_seed(seed)`` before each run, and the processor's scene
extractors are seeded by its ``scene_extraction`` settings.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

from .generation import generate_answers
from .loading import _first_line

ANALYSIS_FORMAT = "icm-analysis/1"
logger = logging.getLogger("icm.analysis")
#: decode strategies of :func:`analyze_video`: "once" reads each frame once over all windows (the default),
#: "per_window" decodes every window on its own (what a window-by-window loop does; kept for the P11 benchmark).
DECODE_MODES = ("once", "per_window")


# ----------------------------------------------------------------------------------------------------------------
# Windows, confidence, scene weights, merging (plain functions)
# ----------------------------------------------------------------------------------------------------------------


def plan_windows(duration: float, window: float, overlap: float) -> list[tuple[float, float]]:
    """The ``[start, end)`` windows (seconds) of a video: ``window`` long, each starting ``window - overlap`` after
    the previous one, the last one clipped to the video (a video shorter than ``window`` is one window)."""
    for name, value in (("duration", duration), ("window", window), ("overlap", overlap)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if duration <= 0:
        raise ValueError(f"duration must be > 0 s, got {duration!r}")
    if window <= 0:
        raise ValueError(f"window must be > 0 s, got {window!r}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window={window}) s, got {overlap!r}")
    from processing.video import clip_windows  # one window walk for files, clips and analysis

    return [(round(start, 6), round(end, 6)) for start, end in clip_windows(duration, window, window - overlap)]


def to_video_segments(
    segments: Iterable[Sequence[float]], window_start: float, window_end: float, duration: float | None = None
) -> list[list[float]]:
    """Window-relative ``[s, e]`` segments -> video time, clipped to the window (and the video); empty ones dropped."""
    limit = window_end if duration is None else min(window_end, duration)
    out = []
    for segment in segments:
        s, e = float(segment[0]), float(segment[1])
        if not (math.isfinite(s) and math.isfinite(e)):
            continue
        s, e = min(s, e), max(s, e)
        s = min(max(window_start + s, window_start), limit)
        e = min(max(window_start + e, window_start), limit)
        if e - s > 1e-6:
            out.append([round(s, 3), round(e, 3)])
    return out


def frame_scene_weights(router_probs: Sequence[Sequence[float]], scenes: Sequence[str]) -> list[dict[str, float] | None]:
    """One ``{scene: weight}`` per frame from the router's ``[frames, experts]`` probabilities (experts in
    ``scenes`` order); a frame whose weights sum to 0 (no scene present) gives None."""
    out: list[dict[str, float] | None] = []
    for row in router_probs:
        row = [float(x) for x in row]
        if len(row) != len(scenes):
            raise ValueError(f"router row has {len(row)} experts for scenes {list(scenes)}")
        total = sum(row)
        out.append({s: round(w / total, 6) for s, w in zip(scenes, row)} if total > 1e-9 else None)
    return out


def mean_scene_weights(frames: Iterable[tuple[float, Mapping[str, float] | None]]) -> dict[str, float]:
    """The mean of per-frame ``{scene: weight}`` (frames without weights left out); ``{}`` when none has weights."""
    total: dict[str, float] = {}
    count = 0
    for _, weights in frames:
        if not weights:
            continue
        count += 1
        for scene, w in weights.items():
            total[scene] = total.get(scene, 0.0) + float(w)
    return {s: round(v / count, 6) for s, v in total.items()} if count else {}


@dataclass
class WindowResult:
    """What the model said about one window. Times are video seconds.

    Attributes:
        index: the window's position in the video.
        start, end: the window.
        answer: the generated text.
        sentiment: the parsed label (``""`` when unreadable).
        segments: the located segments in video time (clipped to the window).
        confidence: see :func:`answer_confidence`; ``confidence_method`` says how it was computed.
        attribution: the parsed attribution.
        frame_times: video time of each analysed frame.
        frame_weights: router ``{scene: weight}`` of each frame (None where no scene is present).
        generated: whether the window went to the LLM (event-driven selection skips uneventful windows:
            ``inference.events``); a skipped window has no answer, sentiment or segments.
        reason: why it was generated (``"all"``, ``"event"``, ``"floor"``) or skipped (``"uneventful"``,
            ``"covered"``, ``"budget"``, ``"no_frames"``, ``"probe_normal"``).
        score: the window's event score (None when selection is off); ``frame_scores``: each frame's.
        probe_score: the scene probe's probability that the window shows something other than the normal label
            (None without a probe; ``inference.events.SceneEventProbe``).
    """

    index: int
    start: float
    end: float
    answer: str
    sentiment: str
    segments: list[list[float]]
    confidence: float
    attribution: str
    frame_times: list[float] = field(default_factory=list)
    frame_weights: list[dict[str, float] | None] = field(default_factory=list)
    confidence_method: str = "label_tokens"
    generated: bool = True
    reason: str = "all"
    score: float | None = None
    frame_scores: list[float] = field(default_factory=list)
    probe_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> WindowResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in row.items() if k in names})

    def frames(self) -> list[tuple[float, dict[str, float] | None]]:
        return list(zip(self.frame_times, self.frame_weights))


def merge_windows(windows: Sequence[WindowResult], gap: float = 0.0) -> list[dict[str, Any]]:
    """Merge the windows' segments into one list sorted by start (see the module docstring).

    Returns one dict per segment: ``{start, end, sentiment, confidence, attribution, scene_weights, windows}``
    (``windows``: the indices of the windows that located it)."""
    if gap < 0:
        raise ValueError(f"gap must be >= 0 s, got {gap!r}")
    all_frames = sorted((frame for w in windows for frame in w.frames()), key=lambda f: f[0])
    frame_times = [t for t, _ in all_frames]  # sorted: each segment finds its frames by bisection
    by_label: dict[str, list[tuple[float, float, WindowResult]]] = {}
    for w in windows:
        if not w.sentiment:
            continue
        for s, e in w.segments:
            by_label.setdefault(w.sentiment, []).append((float(s), float(e), w))
    merged: list[dict[str, Any]] = []
    for label, candidates in by_label.items():
        candidates.sort(key=lambda c: (c[0], c[1], c[2].index))
        clusters: list[list[tuple[float, float, WindowResult]]] = []
        for candidate in candidates:
            if clusters and candidate[0] <= max(c[1] for c in clusters[-1]) + gap + 1e-9:
                clusters[-1].append(candidate)
            else:
                clusters.append([candidate])
        for cluster in clusters:
            start = min(c[0] for c in cluster)
            end = max(c[1] for c in cluster)
            lengths = [max(c[1] - c[0], 1e-6) for c in cluster]
            confidence = sum(c[2].confidence * n for c, n in zip(cluster, lengths)) / sum(lengths)
            best = max(cluster, key=lambda c: (c[2].confidence, -c[2].index))[2]
            inside = all_frames[bisect.bisect_left(frame_times, start - 1e-6) : bisect.bisect_right(frame_times, end + 1e-6)]
            weights = mean_scene_weights(inside)
            if not weights:  # no analysed frame inside a short segment: use its windows' frames
                weights = mean_scene_weights(f for c in cluster for f in c[2].frames())
            merged.append(
                {
                    "start": round(start, 3),
                    "end": round(end, 3),
                    "sentiment": label,
                    "confidence": round(float(confidence), 6),
                    "attribution": best.attribution,
                    "scene_weights": weights,
                    "windows": sorted({c[2].index for c in cluster}),
                }
            )
    merged.sort(key=lambda m: (m["start"], m["end"], m["sentiment"]))
    return merged


# ----------------------------------------------------------------------------------------------------------------
# Windows of decoded frames -> window results (the API stream watchers call)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FrameWindow:
    """One window of already decoded frames: ``frames`` uint8 RGB ``[T, H, W, 3]``, ``timestamps`` their video
    time (s), ``start``/``end`` the window (default: the first timestamp / the last one plus one frame step),
    ``index`` its position (a counter for a stream). ``frame_keys`` names each frame (its index in the video: equal
    keys are the same frame, what :class:`SharedSceneFeatures` shares between windows); ``scene_features`` /
    ``scene_masks`` (``{scene: [T, items, dim]}`` / ``{scene: [T, items]}``) are its scene features when already
    extracted (otherwise the processor's extractors run on ``frames``). ``reason``, ``score``, ``frame_scores`` and
    ``probe_score`` are what event-driven selection decided and measured (``inference.events``), carried into the
    window's result."""

    frames: Any
    timestamps: Sequence[float]
    start: float | None = None
    end: float | None = None
    index: int = 0
    frame_keys: Sequence[int] | None = None
    scene_features: dict | None = None
    scene_masks: dict | None = None
    reason: str = "all"
    score: float | None = None
    frame_scores: Sequence[float] | None = None
    probe_score: float | None = None

    def bounds(self) -> tuple[float, float]:
        times = [float(t) for t in self.timestamps]
        if not times:
            raise ValueError(f"window {self.index}: no frame timestamps")
        if len(times) != len(self.frames):
            raise ValueError(f"window {self.index}: {len(self.frames)} frames but {len(times)} timestamps")
        start = min(times) if self.start is None else float(self.start)
        if self.end is not None:
            end = float(self.end)
        else:
            steps = [b - a for a, b in zip(times, times[1:]) if b > a]
            end = max(times) + (sum(steps) / len(steps) if steps else 1e-3)
        if not (math.isfinite(start) and math.isfinite(end) and end > start):
            raise ValueError(f"window {self.index}: bad bounds start={start!r} end={end!r}")
        return start, end


def analyze_frames_batch(
    model,
    processor,
    windows: Sequence[FrameWindow],
    *,
    config_name: str = "implicit",
    duration: float | Sequence[float | None] | None = None,
    scene_features: Sequence[dict] | None = None,
    scene_masks: Sequence[dict] | None = None,
    max_new_tokens: int = 96,
) -> list[WindowResult]:
    """Analyse a batch of windows of decoded frames in one ``generate`` call: one :class:`WindowResult` each
    (segments in video time, clipped to the window and to ``duration`` when known: one value, or one per window
    when the batch mixes videos). Scene features are computed by the processor's extractors unless given."""
    from modeling_icm.templates import combined_instruction

    if not windows:
        return []
    bounds = [w.bounds() for w in windows]
    durations = list(duration) if isinstance(duration, Sequence) else [duration] * len(windows)
    if scene_features is None and all(w.scene_features is not None for w in windows):
        scene_features = [w.scene_features for w in windows]
        scene_masks = [w.scene_masks for w in windows]
    answers = generate_answers(
        model,
        processor,
        [w.frames for w in windows],
        [[float(t) - s for t in w.timestamps] for w, (s, _) in zip(windows, bounds)],
        combined_instruction(config_name),
        config_name,
        scene_features=scene_features,
        scene_masks=scene_masks,
        max_new_tokens=max_new_tokens,
    )
    results = []
    for w, (start, end), answer, video_duration in zip(windows, bounds, answers, durations):
        results.append(
            WindowResult(
                index=int(w.index),
                start=round(start, 6),
                end=round(end, 6),
                answer=answer["answer"],
                sentiment=answer["sentiment"],
                segments=to_video_segments(answer["segments"], start, end, video_duration),
                confidence=answer["confidence"],
                attribution=answer["attribution"],
                frame_times=[round(float(t), 4) for t in w.timestamps],
                frame_weights=frame_scene_weights(answer["router_probs"], answer["scenes"]),
                confidence_method=answer["confidence_method"],
                reason=w.reason,
                score=w.score,
                frame_scores=[round(float(x), 4) for x in (w.frame_scores or [])],
                probe_score=w.probe_score,
            )
        )
    return results


def analyze_frames(
    model,
    processor,
    frames,
    timestamps: Sequence[float],
    *,
    start: float | None = None,
    end: float | None = None,
    index: int = 0,
    config_name: str = "implicit",
    duration: float | None = None,
    scene_features: dict | None = None,
    scene_masks: dict | None = None,
    max_new_tokens: int = 96,
) -> dict[str, Any]:
    """Analyse ONE window of decoded frames (uint8 RGB ``[T, H, W, 3]``) with their video timestamps (s).

    Returns the window's result as a dict: ``{index, start, end, sentiment, confidence, confidence_method,
    attribution, segments (video time), scene_weights (the window's mean router weights), answer, frame_times,
    frame_weights}``; collect them and call :func:`merge_windows` (with :meth:`WindowResult.from_dict`) for the
    timeline."""
    window = FrameWindow(frames, timestamps, start, end, index)
    result = analyze_frames_batch(
        model, processor, [window], config_name=config_name, duration=duration, max_new_tokens=max_new_tokens,
        scene_features=None if scene_features is None else [scene_features],
        scene_masks=None if scene_masks is None else [scene_masks],
    )[0]  # fmt: skip
    return window_summary(result)


def window_summary(result: WindowResult) -> dict[str, Any]:
    """A window result as a dict with its mean ``scene_weights`` added."""
    return {**result.to_dict(), "scene_weights": mean_scene_weights(result.frames())}


def iter_window_results(
    model,
    processor,
    windows: Iterable[FrameWindow],
    *,
    batch_size: int = 4,
    config_name: str = "implicit",
    duration: float | None = None,
    max_new_tokens: int = 96,
    timer: StageTimer | None = None,
) -> Iterator[list[WindowResult]]:
    """Windows from any source (a file's :func:`processing.video.iter_window_clips`, a live stream) -> lists of
    :class:`WindowResult`, one list per batch of ``batch_size`` windows, as soon as each batch is generated
    (``timer`` counts the batches' time as ``"generation"``)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")

    def answer(chunk: list[FrameWindow]) -> list[WindowResult]:
        with _stage(timer, "generation"):
            return analyze_frames_batch(model, processor, chunk, config_name=config_name, duration=duration,
                                        max_new_tokens=max_new_tokens)  # fmt: skip

    chunk: list[FrameWindow] = []
    for window in windows:
        chunk.append(window)
        if len(chunk) == int(batch_size):
            yield answer(chunk)
            chunk = []
    if chunk:
        yield answer(chunk)


# ----------------------------------------------------------------------------------------------------------------
# Scene features shared between overlapping windows; where the time goes
# ----------------------------------------------------------------------------------------------------------------


class StageTimer:
    """Wall-clock and CPU seconds an analysis spends per stage: ``"decode"`` (reading the windows' frames),
    ``"scene_extraction"`` (the four extractors) and ``"generation"`` (the processor, ``generate`` and parsing).
    Pass one to :func:`analyze_video` (``timer=``) to see where the time goes (the P11 benchmark prints it)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0

    def report(self) -> dict[str, dict[str, float]]:
        """``{stage: {"wall": s, "cpu": s}}``."""
        return {name: {"wall": self.wall[name], "cpu": self.cpu[name]} for name in self.wall}


def _stage(timer: StageTimer | None, name: str):
    return nullcontext() if timer is None else timer.stage(name)


class SharedSceneFeatures:
    """Scene features of each distinct frame, extracted once and reused by every window that samples the frame.

    At 50 % overlap every frame a window samples is also sampled by the next window — provided both sample it:
    per-window uniform sampling (``round(linspace)`` over each window's own frames) puts the frames of overlapping
    windows at different positions, so :func:`analyze_video` samples every window from one shared frame grid
    (``grid_fps``, see :func:`processing.video.window_indices`). Frames are named by ``FrameWindow.frame_keys``
    (their index in the video); the unseen frames of a group of windows (``group``: :func:`analyze_video` takes its
    generation batch) go through ``pipeline.extract`` in calls of one window's frame count — the batch per-window
    extraction has, where a window's new frames alone would make a smaller one — the others come from an LRU of the last ``capacity`` frames' features (memory
    bounded; windows arriving in time order reuse at most one window's frames from their predecessors, so any
    ``capacity`` >= the frames per window keeps every reuse). The extractors are per-frame (features
    ``[T, items, dim]`` with a fixed ``items``), so a frame's features do not depend on which window it is extracted
    with — up to float rounding of batched kernels (about 1e-6; tested). ``capacity=0``, or a window without ``frame_keys``, extracts every frame of every window (what
    the processor does per window).

    Attributes:
        frames_extracted: frames the extractors ran on.
        frames_reused: window frames served from the LRU.
    """

    def __init__(self, pipeline, capacity: int = 64):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be an integer >= 0 (frames), got {capacity!r}")
        self.pipeline = pipeline
        self.capacity = capacity
        self.frames_extracted = 0
        self.frames_reused = 0
        self._lru: OrderedDict[Any, tuple[dict, dict]] = OrderedDict()

    def features(self, window: FrameWindow) -> tuple[dict, dict]:
        """``({scene: [T, items, dim]}, {scene: [T, items]})`` of the window's frames."""
        return self.features_batch([window])[0]

    def features_batch(self, windows: Sequence[FrameWindow]) -> list[tuple[dict, dict]]:
        """The features of several windows; their unseen frames go through the extractors together, in calls of
        one window's frame count."""
        import torch

        frames = [w.frames if torch.is_tensor(w.frames) else torch.as_tensor(w.frames) for w in windows]
        for window, clip in zip(windows, frames):
            if window.frame_keys is not None and len(window.frame_keys) != clip.shape[0]:
                raise ValueError(f"window {window.index}: {clip.shape[0]} frames but {len(window.frame_keys)} frame keys")
        keyed = [self.capacity > 0 and w.frame_keys is not None for w in windows]
        wanted: dict[Any, torch.Tensor] = {}  # unseen frame key -> its frame, in order of first use
        for window, clip, shared in zip(windows, frames, keyed):
            if shared:
                for position, key in enumerate(window.frame_keys):
                    if key not in self._lru and key not in wanted:
                        wanted[key] = clip[position]
        # extractor calls of one window's frame count, the batch per-window extraction has (larger batches are
        # slower per frame on CPU: MTCNN's image pyramid of 16+ frames at 640x360 falls out of the caches)
        step = max(int(clip.shape[0]) for clip in frames)
        pending = list(wanted.items())
        for k in range(0, len(pending), step):
            chunk = pending[k : k + step]
            feats, masks = self.pipeline.extract(torch.stack([frame for _, frame in chunk]))
            self.frames_extracted += len(chunk)
            for j, (key, _) in enumerate(chunk):
                self._lru[key] = (
                    {s: v[j].clone() for s, v in feats.items()},
                    {s: v[j].clone() for s, v in masks.items()},
                )
        out = []
        for window, clip, shared in zip(windows, frames, keyed):
            if not shared:
                self.frames_extracted += int(clip.shape[0])
                out.append(self.pipeline.extract(clip))
                continue
            keys = list(window.frame_keys)
            fresh = [key for key in dict.fromkeys(keys) if key in wanted]  # extracted just now, first used here
            self.frames_reused += len(keys) - len(fresh)
            for key in fresh:
                del wanted[key]
            for key in dict.fromkeys(keys):
                self._lru.move_to_end(key)
            rows = [self._lru[key] for key in keys]
            scenes = rows[0][0].keys()
            out.append(
                (
                    {s: torch.stack([r[0][s] for r in rows]) for s in scenes},
                    {s: torch.stack([r[1][s] for r in rows]) for s in scenes},
                )
            )
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
        return out

    def __call__(
        self, windows: Iterable[FrameWindow], timer: StageTimer | None = None, group: int = 1
    ) -> Iterator[FrameWindow]:
        """The windows with their ``scene_features`` / ``scene_masks`` filled in, ``group`` windows at a time (their
        unseen frames extracted in one call; ``timer``: ``"scene_extraction"``)."""
        if isinstance(group, bool) or not isinstance(group, int) or group < 1:
            raise ValueError(f"group must be an integer >= 1 (windows), got {group!r}")
        windows = iter(windows)
        while chunk := list(islice(windows, group)):
            with _stage(timer, "scene_extraction"):
                features = self.features_batch(chunk)
            for window, (feats, masks) in zip(chunk, features):
                yield replace(window, scene_features=feats, scene_masks=masks)

    def clear(self) -> None:
        self._lru.clear()


# ----------------------------------------------------------------------------------------------------------------
# A video file: windows, decode once, JSON Lines log, document
# ----------------------------------------------------------------------------------------------------------------


def _video_signature(video: Path) -> dict[str, Any]:
    stat = video.stat()
    return {"path": str(video.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_json_atomic(path: str | os.PathLike, data: Mapping) -> Path:
    """Write ``data`` as JSON through a temporary file and a rename (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class OutputPathError(ValueError):
    """An output path that cannot be written: said before any work starts."""


def check_output_path(path: str | os.PathLike, what: str = "output", folder: bool = False) -> Path:
    """``path`` (a file, or with ``folder`` a folder) can be written: it is not a folder (not a file), and the
    nearest existing folder above it is a writable folder. Called before decoding starts, so that a bad ``--out``
    costs nothing rather than the whole analysis. Creates nothing; :class:`OutputPathError` naming ``what``."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"{what} {path}: is a file, not a folder")
    elif path.is_dir():
        raise OutputPathError(f"{what} {path}: is a folder; give a file name")
    probe = path if folder and path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path}: cannot write in {probe} (permission denied)")
    if path.is_file() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path}: the file exists and cannot be written (permission denied)")
    return path


def check_analysis_outputs(out_json: str | os.PathLike, what: str = "--out") -> None:
    """The files a run writing ``out_json`` writes: the document, its temporary file and the partial log."""
    out_json = Path(out_json)
    check_output_path(out_json, what)
    for extra in (out_json.with_name(f".{out_json.name}.tmp"), partial_path(out_json)):
        check_output_path(extra, f"{what} {out_json}: its companion file")


def partial_path(out_json: str | os.PathLike) -> Path:
    """The JSON Lines log of a run writing ``out_json``."""
    out_json = Path(out_json)
    return out_json.with_name(out_json.name + ".partial.jsonl")


class ResultsLog:
    """The append-only JSON Lines log of a long run: a header line (video, model, settings), then one line per
    finished window, flushed and fsynced per batch. Reopening a log with the same header resumes it; a line cut by
    an interruption is dropped (its window is analysed again)."""

    def __init__(self, path: str | os.PathLike, header: Mapping[str, Any], resume: bool = True):
        self.path = Path(path)
        self.header = dict(header)
        self.done: dict[int, WindowResult] = self._read() if resume else {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.done:
            self.path.write_text(json.dumps(self.header) + "\n", encoding="utf-8")
        else:  # rewrite once without a possibly cut last line, so appends start on a fresh line
            lines = [json.dumps(self.header)] + [json.dumps(w.to_dict(), ensure_ascii=False) for w in self.windows()]
            self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _read(self) -> dict[int, WindowResult]:
        if not self.path.is_file():
            return {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            if not lines or json.loads(lines[0]) != self.header:
                return {}
        except json.JSONDecodeError:
            return {}
        done = {}
        for line in lines[1:]:
            try:
                window = WindowResult.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                break  # a line cut by the interruption: redo from there
            done[window.index] = window
        return done

    def append(self, results: Sequence[WindowResult]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            for result in results:
                handle.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                self.done[result.index] = result
            handle.flush()
            os.fsync(handle.fileno())

    def windows(self) -> list[WindowResult]:
        return sorted(self.done.values(), key=lambda w: w.index)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def analysis_document(
    header: Mapping[str, Any], info, windows: Sequence[WindowResult], total: int, complete: bool, gap: float,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The analysis document: settings, the merged ``segments`` (the timeline) and every window's result."""
    from .events import quiet_stretches

    ordered = sorted(windows, key=lambda w: w.index)
    rows = [w.to_dict() for w in ordered]
    video = header["video"]
    return {
        "format": ANALYSIS_FORMAT,
        "video": video["path"] if isinstance(video, Mapping) else str(video),
        "duration": info.duration,
        "fps": info.fps,
        "model": header["model"],
        "config": header["config"],
        "window": header["window"],
        "overlap": header["overlap"],
        "scenes": header["scenes"],
        "num_windows": total,
        "windows_done": len(ordered),
        "complete": complete,
        "notes": list(notes),
        "segments": merge_windows(ordered, gap=gap),
        "selection": selection_summary(header.get("events"), ordered),
        "uneventful": quiet_stretches(rows),
        "event_scores": event_scores(ordered),
        "windows": rows,
    }


def selection_summary(settings: Mapping[str, Any] | None, windows: Sequence[WindowResult]) -> dict[str, Any]:
    """What event-driven selection did: its settings (``enabled: false`` for the full analysis), windows generated
    and skipped, and the count per reason."""
    reasons: dict[str, int] = {}
    for w in windows:
        reasons[w.reason] = reasons.get(w.reason, 0) + 1
    generated = sum(1 for w in windows if w.generated)
    return {**(dict(settings) if settings else {"enabled": False}), "windows_generated": generated,
            "windows_skipped": len(windows) - generated, "reasons": reasons}  # fmt: skip


def event_scores(windows: Sequence[WindowResult]) -> list[list[float]]:
    """``[[time, score], ...]``: the event score of every scored frame, once per frame, in time order."""
    scores: dict[float, float] = {}
    for w in windows:
        for t, value in zip(w.frame_times, w.frame_scores):
            scores.setdefault(round(float(t), 3), round(float(value), 4))
    return [[t, scores[t]] for t in sorted(scores)]


def skipped_result(window: FrameWindow, reason: str, score: float | None, frame_scores: Sequence[float]) -> WindowResult:
    """The result of a window event-driven selection did not send to the LLM: no answer, its score and why."""
    start, end = window.bounds()
    return WindowResult(index=int(window.index), start=round(start, 6), end=round(end, 6), answer="", sentiment="",
                        segments=[], confidence=0.0, attribution="",
                        frame_times=[round(float(t), 4) for t in window.timestamps], frame_weights=[],
                        confidence_method="none", generated=False, reason=reason, score=score,
                        frame_scores=[round(float(x), 4) for x in frame_scores])  # fmt: skip


def select_windows(windows: Iterable[FrameWindow], gate, on_skipped: Callable[[list[WindowResult]], None],
                   flush_every: int = 4, timer: StageTimer | None = None,
                   stride: float | None = None) -> Iterator[FrameWindow]:  # fmt: skip
    """The windows ``gate`` (a :class:`inference.events.WindowGate`) decides to generate, with its reason and scores;
    the skipped ones become results handed to ``on_skipped`` in groups of ``flush_every`` (and the rest at the end),
    so that they reach the results log as promptly as the generated ones (``timer``: ``"event_score"``). ``stride``
    (seconds between window starts) lets the gate leave an event to the next window (``"covered"``); a window so
    left at the end of the video is generated."""
    pending: list[WindowResult] = []
    owed: tuple | None = None  # a window skipped because the next one sees its events: recorded once that one goes
    for window in windows:
        start, end = window.bounds()
        with _stage(timer, "event_score"):
            decision, scores = gate.decide_frames(start, window.timestamps, window.frames, window.frame_keys, end=end,
                                                  next_start=None if stride is None else start + stride)  # fmt: skip
        if owed is not None:
            pending.append(skipped_result(*owed))
            owed = None
        if decision.generate:
            yield replace(window, reason=decision.reason, score=decision.score, frame_scores=scores)
            continue
        if gate.owed:
            owed = (window, decision.reason, decision.score, scores)
            continue
        pending.append(skipped_result(window, decision.reason, decision.score, scores))
        if len(pending) >= flush_every:
            on_skipped(pending)
            pending = []
    if owed is not None:  # no next window sees its events: it is generated after all
        window, _, score, scores = owed
        gate.owed = False
        gate.counts["covered"] -= 1
        gate.counts["event"] = gate.counts.get("event", 0) + 1
        yield replace(window, reason="event", score=score, frame_scores=scores)
    if pending:
        on_skipped(pending)


def probe_windows(windows: Iterable[FrameWindow], probe, threshold: float,
                  on_skipped: Callable[[list[WindowResult]], None], flush_every: int = 4,
                  timer: StageTimer | None = None) -> Iterator[FrameWindow]:  # fmt: skip
    """After scene extraction, before the LLM: every window gets the scene probe's score (``probe``, a
    :class:`inference.events.SceneEventProbe`, on its extracted features); a window chosen as ``"event"`` whose score
    is below ``threshold`` is skipped as ``"probe_normal"`` (floor windows always go on), its result handed to
    ``on_skipped`` in groups of ``flush_every`` (``timer``: ``"scene_probe"``)."""
    pending: list[WindowResult] = []
    for window in windows:
        with _stage(timer, "scene_probe"):
            value = round(probe.score(window.scene_features, window.scene_masks), 4)
        if window.reason == "event" and value < threshold:
            skipped = skipped_result(window, "probe_normal", window.score, window.frame_scores or [])
            pending.append(replace(skipped, probe_score=value))
            if len(pending) >= flush_every:
                on_skipped(pending)
                pending = []
            continue
        yield replace(window, probe_score=value)
    if pending:
        on_skipped(pending)


def empty_result(index: int, start: float, end: float) -> WindowResult:
    """The result of a window that holds no frame of its own (the stream stalls, or has a gap, there): skipped
    with reason ``"no_frames"``, nothing invented for it."""
    return WindowResult(index=int(index), start=round(start, 6), end=round(end, 6), answer="", sentiment="",
                        segments=[], confidence=0.0, attribution="", confidence_method="none", generated=False,
                        reason="no_frames")  # fmt: skip


def _own_frames(clip, slot: float):
    """The clip's frames inside its window (up to one frame ``slot`` past its end), the others replaced by the
    nearest frame inside, or None when none is: next to a gap in the stream the decoder gives the last frame before
    it, which belongs to another time."""
    times = [float(t) for t in clip.timestamps]
    inside = [k for k, t in enumerate(times) if clip.start - 1e-3 <= t < clip.end + slot]
    if len(inside) == len(times):
        return clip
    if not inside:
        return None
    pick = [min(inside, key=lambda k: (abs(k - q), k)) for q in range(len(times))]
    return replace(clip, frames=clip.frames[pick], timestamps=[times[k] for k in pick],
                   indices=[clip.indices[k] for k in pick] if clip.indices else clip.indices)  # fmt: skip


def _file_windows(video: Path, plan: Sequence[tuple[int, tuple[float, float]]], processor, decode: str,
                  backend: str | None, grid_fps: float | None = None, timer: StageTimer | None = None,
                  notes: list[str] | None = None, on_empty: Callable[[list[WindowResult]], None] | None = None,
                  flush_every: int = 4) -> Iterator[FrameWindow]:  # fmt: skip
    """The planned windows' frames. A stream that ends before the duration its header states (a truncated file, a
    wrong header) ends the windows there, with a line in ``notes`` saying what was assumed: the windows before it
    are analysed and kept, not lost to an error at the end. A file whose first window cannot be read still fails.
    A window without a frame of its own (a gap in the stream) is not yielded: its :func:`empty_result` goes to
    ``on_empty``, ``flush_every`` at a time (and the rest at the end)."""
    from processing.video import VideoDecodeError, iter_window_clips, sample_frames

    if decode == "once":
        clips = iter_window_clips(video, [w for _, w in plan], num_frames=processor.num_frames,
                                  max_side=processor.max_side, backend=backend, grid_fps=grid_fps)  # fmt: skip
    else:
        clips = (sample_frames(video, num_frames=processor.num_frames, start=s, end=e, max_side=processor.max_side,
                               backend=backend, grid_fps=grid_fps) for _, (s, e) in plan)  # fmt: skip
    clips = iter(clips)
    empty: list[WindowResult] = []
    for position, (index, (start, _)) in enumerate(plan):
        try:
            with _stage(timer, "decode"):
                clip = next(clips)
        except VideoDecodeError as err:
            if position == 0 or notes is None:
                raise
            notes.append(f"the video ended before {start:.1f} s, short of the {plan[-1][1][1]:.1f} s its header "
                         f"states ({_first_line(err)}); windows {index} and after were not analysed")  # fmt: skip
            break
        own = _own_frames(clip, 1.0 / clip.fps) if on_empty is not None else clip
        if own is None:
            empty.append(empty_result(index, clip.start, clip.end))
            if len(empty) >= flush_every:
                on_empty(empty)
                empty = []
            continue
        yield FrameWindow(own.frames, own.timestamps, own.start, own.end, index, frame_keys=own.indices)
    if empty:
        on_empty(empty)


def stream_notes(info) -> list[str]:
    """What :func:`analyze_video` assumes about an irregular stream (``processing.video.VideoInfo``)."""
    notes = []
    if info.stated_duration is not None:
        notes.append(f"the header states {info.stated_duration:.1f} s but the stream goes on to {info.duration:.1f} "
                     f"s; windows were planned over the {info.duration:.1f} s its packets give")  # fmt: skip
    if info.variable_rate:
        average = f"{info.average_fps:.2f} frames/s on average, " if info.average_fps else ""
        notes.append(f"variable frame rate ({average}up to {info.fps:g}): frame and segment times are the frames' "
                     "own timestamps")  # fmt: skip
    return notes


def gap_notes(windows: Sequence[WindowResult]) -> list[str]:
    """One line per run of windows without frames (reason ``"no_frames"``): where the stream has no frames and
    which windows were reported instead of analysed."""
    ordered = sorted(windows, key=lambda w: w.index)
    by_index = {w.index: w for w in ordered}
    runs: list[list[WindowResult]] = []
    for w in ordered:
        if w.reason != "no_frames":
            continue
        if runs and runs[-1][-1].index == w.index - 1:
            runs[-1].append(w)
        else:
            runs.append([w])
    notes = []
    for run in runs:
        first, last = run[0], run[-1]
        before = by_index.get(first.index - 1)
        after = by_index.get(last.index + 1)
        lo = max(before.frame_times) if before is not None and before.frame_times else first.start
        hi = min(after.frame_times) if after is not None and after.frame_times else last.end
        notes.append(f"the stream has no frames between {lo:.1f} s and {hi:.1f} s (a gap of {hi - lo:.1f} s): "
                     f"windows {first.index}-{last.index} hold none and are reported as skipped (no_frames)")  # fmt: skip
    return notes


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None on other C libraries)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Hand the heap pages freed by the last batch back to the operating system (glibc ``malloc_trim``; False where
    there is none). Generation frees many tensors of growing sizes (the key/value cache, the logits of every step);
    glibc keeps those pages and reuses them only in part, so without this the resident memory of a long analysis
    creeps up with its length: on ``bench/bench_long_memory.py``'s 2-hour video, +99 MiB from the first tenth of the
    windows to the end without it, +20 MiB with it (docs/long-footage.md)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def analysis_grid_fps(window: float, num_frames: int) -> float:
    """The frame grid :func:`analyze_video` samples windows from: ``num_frames / window`` frames per second, one grid
    frame per frame slot, so every full window holds exactly ``num_frames`` grid frames, evenly spaced, and two
    overlapping windows sample the same frames in their overlap (their scene features are shared)."""
    return float(num_frames) / float(window)


def analyze_video(
    video: str | os.PathLike,
    model,
    processor,
    *,
    model_name: str = "",
    out_json: str | os.PathLike | None = None,
    config_name: str = "implicit",
    window: float = 10.0,
    overlap: float | None = None,
    batch_size: int = 4,
    max_new_tokens: int = 96,
    gap: float = 0.0,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    decode: str = "once",
    backend: str | None = None,
    on_update: Callable[[dict], None] | None = None,
    grid_fps: float | None = None,
    share_features: bool | None = None,
    feature_capacity: int = 64,
    timer: StageTimer | None = None,
    events=None,
    event_probe=None,
) -> dict[str, Any]:
    """Analyse ``video`` window by window and return the analysis document (see :func:`analysis_document`).

    Every window samples its frames from one frame grid of ``grid_fps`` frames per second (default
    :func:`analysis_grid_fps`: ``num_frames / window``), so overlapping windows sample the same frames. Memory stays
    flat in the video's length: the frames of about one batch of windows are held at a time, each frame is decoded
    once (``decode="once"``; ``"per_window"`` decodes each window on its own), and — with ``share_features``
    (default: on with ``decode="once"``) — the scene extractors run once per distinct frame, an LRU of the last
    ``feature_capacity`` frames' features serving the windows that sample it again (:class:`SharedSceneFeatures`;
    off: every window extracts its own frames, as the processor does). ``timer`` (a :class:`StageTimer`) adds up
    the time spent decoding, extracting and generating. With ``out_json``,
    finished windows are appended to ``<out_json>.partial.jsonl`` after every batch (never a rewrite of the whole
    document); a run interrupted and started again with the same video, model and settings continues from the
    windows already done (``resume``); the document is written to ``out_json`` at the end (and, once, when the run
    is interrupted, with ``"complete": false``). Without ``out_json`` nothing is written.

    ``events`` (a :class:`inference.events.EventSelection`; None or ``enabled=False``: the full analysis) sends only
    the windows where something happens to the LLM: every window's frames are still decoded and scored (a cheap
    frame-difference score), uneventful windows skip scene extraction and generation and are recorded as skipped
    (``generated: false`` with their ``reason`` and ``score``), at least one window is generated every
    ``events.floor`` seconds. The document then says what was selected (``selection``), which stretches were
    uneventful (``uneventful``) and the score over time (``event_scores``). With ``event_probe`` (a
    :class:`inference.events.SceneEventProbe` of ``config_name``, e.g. ``load_event_probe(model_dir, config)``) the
    eventful windows' scene features are scored too, and those the probe calls normal skip the LLM
    (``"probe_normal"``, :func:`probe_windows`).

    ``on_update`` is called after every batch with ``{"windows_done", "num_windows", "windows": [the batch's
    window dicts]}``; an exception it raises stops the run (the windows done so far stay in the log)."""
    import torch
    from tqdm.auto import tqdm

    from processing.video import probe_video

    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    video = Path(video)
    info = probe_video(video, backend=backend)
    overlap = window / 2 if overlap is None else overlap
    windows = plan_windows(info.duration, window, overlap)
    grid_fps = analysis_grid_fps(window, processor.num_frames) if grid_fps is None else float(grid_fps)
    share_features = decode == "once" if share_features is None else bool(share_features)
    selecting = events is not None and events.enabled
    probing = selecting and event_probe is not None and bool(processor.num_scene_tokens)
    if probing:
        if event_probe.config != config_name:
            raise ValueError(f"event_probe was trained for the {event_probe.config} config, the analysis is {config_name}")
        event_probe.check_pipeline(processor.scene_pipeline.config_hash())
    header = {
        "format": ANALYSIS_FORMAT,
        "video": _video_signature(video),
        "model": model_name,
        "config": config_name,
        "window": window,
        "overlap": overlap,
        "num_frames": processor.num_frames,
        "grid_fps": grid_fps,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "scenes": list(model.config.active_scenes),
        "events": events.to_dict() if selecting else None,
        "event_probe": {"config": event_probe.config, "pipeline_hash": event_probe.pipeline_hash,
                        "coef_sum": round(float(sum(event_probe.coef)), 6)} if probing else None,  # fmt: skip
    }
    out_json = None if out_json is None else Path(out_json)
    if out_json is not None:
        check_analysis_outputs(out_json, "out_json")
    log = ResultsLog(partial_path(out_json), header, resume=resume) if out_json is not None else None
    done: dict[int, WindowResult] = dict(log.done) if log is not None else {}
    plan = [(i, w) for i, w in enumerate(windows) if i not in done]
    torch.manual_seed(seed)
    bar = tqdm(total=len(windows), initial=len(done), desc=f"analyse {video.name}", unit="window", disable=not progress)
    notes: list[str] = stream_notes(info)  # what the analysis had to assume about the video
    def record(batch: list[WindowResult]) -> None:
        if log is not None:
            log.append(batch)
        done.update((w.index, w) for w in batch)
        release_freed_memory()  # resident memory flat in the video's length
        bar.update(len(batch))
        if on_update is not None:
            on_update({"windows_done": len(done), "num_windows": len(windows), "windows": [w.to_dict() for w in batch]})

    try:
        frame_windows = _file_windows(video, plan, processor, decode, backend, grid_fps, timer, notes, record,
                                      flush_every=batch_size)  # fmt: skip
        if selecting:
            from .events import WindowGate

            gate = WindowGate(events)
            if any(w.generated for w in done.values()):  # a resumed run: the floor counts from its last generation
                gate.resume_after(max(w.start for w in done.values() if w.generated))
            frame_windows = select_windows(frame_windows, gate, record, flush_every=batch_size, timer=timer,
                                           stride=window - overlap)  # fmt: skip
        if processor.num_scene_tokens:  # without scene tokens the processor extracts nothing
            shared = SharedSceneFeatures(processor.scene_pipeline, feature_capacity if share_features else 0)
            frame_windows = shared(frame_windows, timer, group=batch_size if share_features else 1)
            if probing:
                frame_windows = probe_windows(frame_windows, event_probe, events.probe_threshold, record,
                                              flush_every=batch_size, timer=timer)  # fmt: skip
        results = iter_window_results(
            model, processor, frame_windows, batch_size=batch_size, config_name=config_name,
            duration=info.duration, max_new_tokens=max_new_tokens, timer=timer,
        )  # fmt: skip
        for batch in results:
            record(batch)
    except BaseException:
        if out_json is not None and done:
            notes += gap_notes(list(done.values()))
            write_json_atomic(out_json, analysis_document(header, info, list(done.values()), len(windows), False, gap,
                                                          notes))  # fmt: skip
        raise
    finally:
        bar.close()
    notes += gap_notes(list(done.values()))
    document = analysis_document(header, info, list(done.values()), len(windows), True, gap, notes)
    for note in notes:
        logger.warning("%s: %s", video.name, note)
    if out_json is not None:
        write_json_atomic(out_json, document)
        log.remove()
    return document


__all__ = [
    "ANALYSIS_FORMAT",
    "DECODE_MODES",
    "FrameWindow",
    "ResultsLog",
    "SharedSceneFeatures",
    "StageTimer",
    "WindowResult",
    "analysis_document",
    "analysis_grid_fps",
    "analyze_frames",
    "analyze_frames_batch",
    "analyze_video",
    "event_scores",
    "probe_windows",
    "select_windows",
    "selection_summary",
    "skipped_result",
    "empty_result",
    "gap_notes",
    "stream_notes",
    "frame_scene_weights",
    "iter_window_results",
    "check_output_path",
    "merge_windows",
    "mean_scene_weights",
    "plan_windows",
    "release_freed_memory",
    "to_video_segments",
    "window_summary",
    "write_json_atomic",
]

"""Event-driven window selection: a cheap per-frame event score decides which windows of a long video (or a live
stream) go to the LLM, so that the cost of analysis grows with what happens, not with the length of the footage.

* **Score** (:class:`NoveltyScorer`): each sampled frame is reduced to a small grey thumbnail (``thumb_size`` ×
  ``thumb_size`` block means of the luma); its *novelty* is the mean absolute difference, in grey levels (0-255),
  between it and the mean thumbnail of the frames of the previous ``history`` seconds. A static scene (sensor noise,
  compression flicker) scores well below 1; motion, a cut, a person walking in score several grey levels. It needs
  only the frames analysis decodes anyway (a few hundred multiply-adds per frame); the scene features and the video
  tower's embeddings would cost the extraction and the tower on every frame, which is what selection is meant to
  save (``bench/bench_event_driven.py`` measures how well each predicts the events).
* **Window score**: the largest novelty of the window's frames.
* **Selection** (:class:`WindowGate`, settings :class:`EventSelection`): a window is generated when its score
  reaches ``threshold`` (reason ``"event"``), or when no window was generated for ``floor`` seconds (``"floor"``:
  a slow change — light fading, a crowd building up — is not missed, and the start of every run is analysed);
  otherwise it is *skipped* (``"uneventful"``) and reported without generation. With a ``budget`` (the largest
  share of windows generated, a token bucket of ``burst`` windows), eventful windows beyond it are skipped as
  ``"budget"``. With selection off every window is generated (``"all"``: the full analysis).
* **Time**: the gate works in the frames' own times, never in the video's stated duration, so a header that
  misstates the duration (or a stream without one) does not change which windows are chosen.

Memory is bounded: the scorer keeps the thumbnails of the last ``history`` seconds and the scores of the last
``keep`` frames.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: why a window was generated ("all": selection off; "event": its score reached the threshold; "floor": no window
#: was generated for ``floor`` seconds) or skipped ("uneventful": below the threshold; "budget": over the budget;
#: "no_frames": the stream has no frame in the window, a stall or a gap, whether selection is on or off)
GENERATED_REASONS = ("all", "event", "floor")
SKIPPED_REASONS = ("uneventful", "budget", "no_frames")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class EventSelection:
    """Settings of event-driven window selection (see the module docstring).

    Args:
        enabled: select windows by their event score (False: every window is generated, the full analysis).
        threshold: window score (mean absolute grey-level change against the recent past, 0-255) at which a window
            counts as eventful. 2.0 separates static footage (below 1) from motion on the benchmark's videos.
        floor: at least one window is generated every ``floor`` seconds (0: no floor).
        history: seconds of past frames a frame is compared with.
        thumb_size: side of the grey thumbnail the score compares (pixels).
        budget: the largest share of windows generated for events (0-1; None: no limit). Floor windows are always
            generated.
        burst: eventful windows that may be generated in a row before the budget applies.
    """

    enabled: bool = True
    threshold: float = 2.0
    floor: float = 60.0
    history: float = 4.0
    thumb_size: int = 32
    budget: float | None = None
    burst: float = 10.0

    def __post_init__(self) -> None:
        checks = (
            ("threshold", self.threshold, 0.0, False),
            ("floor", self.floor, 0.0, False),
            ("history", self.history, 0.0, True),
            ("burst", self.burst, 1.0, False),
        )
        for name, value, low, strict in checks:
            if not _is_number(value) or value < low or (strict and value == low):
                raise ValueError(f"event selection: {name} must be a number {'>' if strict else '>='} {low}, got {value!r}")
        if isinstance(self.thumb_size, bool) or not isinstance(self.thumb_size, int) or self.thumb_size < 1:
            raise ValueError(f"event selection: thumb_size must be an integer >= 1, got {self.thumb_size!r}")
        if self.budget is not None and (not _is_number(self.budget) or not 0 < self.budget <= 1):
            raise ValueError(f"event selection: budget must be a share of windows in (0, 1], got {self.budget!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def thumbnail(image, size: int = 32) -> np.ndarray:
    """A frame (uint8 RGB ``[H, W, 3]`` or grey ``[H, W]``, numpy or torch) as a ``size`` × ``size`` float32 grid of
    block-mean grey levels (fewer cells when the frame is smaller)."""
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    grey = array.astype(np.float32) @ _LUMA if array.ndim == 3 else array.astype(np.float32)
    rows = np.linspace(0, grey.shape[0], min(size, grey.shape[0]) + 1).astype(int)
    cols = np.linspace(0, grey.shape[1], min(size, grey.shape[1]) + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=0), cols[:-1], axis=1)
    return sums / (np.diff(rows)[:, None] * np.diff(cols)[None, :])


class NoveltyScorer:
    """Per-frame novelty against the recent past (see the module docstring), for frames given in time order.

    ``score(time, image, key)`` scores a frame once (a frame named again by ``key`` — the same grid frame in two
    overlapping windows — returns its first score); the first frame, and one after a gap longer than ``history``,
    has no past to compare with and scores 0.
    """

    def __init__(self, history: float = 4.0, thumb_size: int = 32, keep: int = 256):
        self.history = float(history)
        self.thumb_size = int(thumb_size)
        self._past: deque[tuple[float, np.ndarray]] = deque()
        self._scores: OrderedDict[Any, float] = OrderedDict()
        self._keep = int(keep)

    def score(self, time: float, image, key: Any = None) -> float:
        if key is not None and key in self._scores:
            return self._scores[key]
        thumb = thumbnail(image, self.thumb_size)
        while self._past and (self._past[0][0] < time - self.history or self._past[0][1].shape != thumb.shape):
            self._past.popleft()  # too old, or a frame size change: the past is not comparable
        past = [t for when, t in self._past if when < time]
        value = float(np.abs(thumb - np.mean(past, axis=0)).mean()) if past else 0.0
        self._past.append((float(time), thumb))
        if key is not None:
            self._scores[key] = value
            while len(self._scores) > self._keep:
                self._scores.popitem(last=False)
        return value

    def scores(self, times: Sequence[float], images, keys: Sequence[Any] | None = None) -> list[float]:
        """The scores of a window's frames, scored in time order (frames already scored keep their score)."""
        keys = list(keys) if keys is not None else [None] * len(times)
        order = sorted(range(len(times)), key=lambda i: float(times[i]))
        out = [0.0] * len(times)
        for i in order:
            out[i] = self.score(float(times[i]), images[i], keys[i])
        return out


@dataclass(frozen=True)
class WindowDecision:
    """Whether a window is generated, why (one of :data:`GENERATED_REASONS` / :data:`SKIPPED_REASONS`), and its
    score (None when selection is off)."""

    generate: bool
    reason: str
    score: float | None = None


class WindowGate:
    """Decides, window by window in time order, which windows are generated (see the module docstring)."""

    def __init__(self, selection: EventSelection | None = None):
        self.selection = selection or EventSelection(enabled=False)
        self.scorer = NoveltyScorer(self.selection.history, self.selection.thumb_size)
        self.last_generated: float | None = None  # start of the last generated window
        self.credit = self.selection.burst
        self.counts: dict[str, int] = {}

    def decide_frames(self, start: float, times: Sequence[float], images, keys=None) -> tuple[WindowDecision, list[float]]:
        """Score a window's frames and decide; ``(decision, per-frame scores)`` (no scores when selection is off)."""
        if not self.selection.enabled:
            return self.decide(start, None), []
        scores = self.scorer.scores(times, images, keys)
        return self.decide(start, max(scores, default=0.0)), scores

    def decide(self, start: float, score: float | None) -> WindowDecision:
        """The decision for the window starting at ``start`` (seconds) with window score ``score``."""
        s = self.selection
        if not s.enabled:
            return self._count(WindowDecision(True, "all", None))
        score = round(float(score or 0.0), 4)
        if s.budget is not None:
            self.credit = min(s.burst, self.credit + s.budget)
        if self.last_generated is None or (s.floor > 0 and start - self.last_generated >= s.floor - 1e-9):
            return self._generated(start, WindowDecision(True, "floor", score))
        if score < s.threshold:
            return self._count(WindowDecision(False, "uneventful", score))
        if s.budget is not None and self.credit < 1.0:
            return self._count(WindowDecision(False, "budget", score))
        return self._generated(start, WindowDecision(True, "event", score))

    def resume_after(self, start: float) -> None:
        """Continue a run whose last generated window started at ``start``."""
        self.last_generated = start if self.last_generated is None else max(self.last_generated, start)

    def _generated(self, start: float, decision: WindowDecision) -> WindowDecision:
        self.last_generated = start
        if self.selection.budget is not None:
            self.credit -= 1.0
        return self._count(decision)

    def _count(self, decision: WindowDecision) -> WindowDecision:
        self.counts[decision.reason] = self.counts.get(decision.reason, 0) + 1
        return decision


def quiet_stretches(windows: Sequence[dict]) -> list[dict[str, Any]]:
    """The stretches of time covered by skipped windows and by no generated one, merged: ``[{start, end, windows,
    max_score, reasons}]`` — what the analysis reports as uneventful instead of a judgement."""
    generated = sorted((float(w["start"]), float(w["end"])) for w in windows if w.get("generated", True))
    pieces = []
    for w in sorted((w for w in windows if not w.get("generated", True)), key=lambda w: float(w["start"])):
        for s, e in _subtract((float(w["start"]), float(w["end"])), generated):
            pieces.append((s, e, w))
    stretches: list[dict[str, Any]] = []
    for s, e, w in pieces:
        if stretches and s <= stretches[-1]["end"] + 1e-6:
            last = stretches[-1]
            last["end"] = max(last["end"], round(e, 3))
            if w["index"] not in last["windows"]:
                last["windows"].append(w["index"])
            last["max_score"] = max(last["max_score"], float(w.get("score") or 0.0))
        else:
            stretches.append({"start": round(s, 3), "end": round(e, 3), "windows": [w["index"]],
                              "max_score": float(w.get("score") or 0.0), "reasons": {}})  # fmt: skip
    by_index = {w["index"]: w for w in windows}
    for stretch in stretches:  # each window counted once, by its reason
        reasons: dict[str, int] = {}
        for index in stretch["windows"]:
            reason = by_index[index].get("reason", "")
            reasons[reason] = reasons.get(reason, 0) + 1
        stretch["reasons"] = reasons
        stretch["max_score"] = round(stretch["max_score"], 4)
    return stretches


def _subtract(span: tuple[float, float], covered: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``span`` minus the (sorted) ``covered`` intervals."""
    out, (s, e) = [], span
    for cs, ce in covered:
        if ce <= s or cs >= e:
            continue
        if cs > s:
            out.append((s, cs))
        s = max(s, ce)
        if s >= e:
            break
    if e - s > 1e-6:
        out.append((s, e))
    return out


__all__ = [
    "GENERATED_REASONS",
    "SKIPPED_REASONS",
    "EventSelection",
    "NoveltyScorer",
    "WindowDecision",
    "WindowGate",
    "quiet_stretches",
    "thumbnail",
]

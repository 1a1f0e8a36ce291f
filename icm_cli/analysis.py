"""Long-video analysis as plain functions: sliding windows, per-window results, confidence from token
probabilities, router weights per segment, and the merge of segments across overlapping windows.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "WindowResult",
    "answer_confidence",
    "frame_scene_weights",
    "merge_windows",
    "mean_scene_weights",
    "plan_windows",
    "to_video_segments",
]


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
    stride = window - overlap
    windows = []
    k = 0
    while True:
        start = k * stride
        if start >= duration - 1e-9:
            break
        end = min(start + window, duration)
        windows.append((round(start, 6), round(end, 6)))
        if end >= duration - 1e-9:
            break
        k += 1
    return windows


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


_SENTIMENT_SPAN_RE = r"sentiment\s+(?:is|was|:)\s*({label})"


def answer_confidence(
    answer: str,
    token_spans: Sequence[tuple[int, int]],
    token_probs: Sequence[float],
    sentiment: str,
) -> tuple[float, str]:
    """Confidence of a generated answer's judgement (see the module docstring) and how it was computed
    (``"label_tokens"`` or ``"mean_token"``; ``"none"`` without tokens).

    Args:
        answer: the decoded answer text.
        token_spans: ``(start, end)`` character span in ``answer`` of each generated token (empty for special
            tokens).
        token_probs: the probability the model gave each generated token.
        sentiment: the label parsed from the answer (``""`` when unreadable).
    """
    if len(token_spans) != len(token_probs):
        raise ValueError(f"{len(token_spans)} token spans for {len(token_probs)} token probabilities")
    probs = [min(max(float(p), 1e-12), 1.0) for p in token_probs]
    if not probs:
        return 0.0, "none"
    if sentiment:
        match = re.search(_SENTIMENT_SPAN_RE.format(label=re.escape(sentiment)), answer, re.IGNORECASE)
        if match is None:
            match = re.search(re.escape(sentiment), answer, re.IGNORECASE)
        if match is not None:
            lo, hi = match.span(1) if match.re.groups else match.span()
            chosen = [p for (s, e), p in zip(token_spans, probs) if e > lo and s < hi and e > s]
            if chosen:
                return float(math.exp(sum(math.log(p) for p in chosen))), "label_tokens"
    return float(math.exp(sum(math.log(p) for p in probs) / len(probs))), "mean_token"


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
    all_frames = [frame for w in windows for frame in w.frames()]
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
            inside = [(t, wts) for t, wts in all_frames if start - 1e-6 <= t <= end + 1e-6]
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

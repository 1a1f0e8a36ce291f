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
* **Covering** (``skip_covered``, window analysis only): overlapping windows see the same seconds twice. An
  eventful window whose eventful frames (novelty at or above ``threshold``) all lie inside the last generated
  window, or outside it only where the next window will see them, is skipped as ``"covered"`` — the next window is
  then generated whatever its score. Every eventful second is still inside a generated window, so during an event
  the generated windows tile it instead of overlapping (with 50 % overlap, every other window). ``icm watch`` does
  not skip covered windows: its alert rule counts consecutive eventful windows.
* **Scene probe** (:class:`SceneEventProbe`, optional, with a trained ICM): a logistic regression on a window's
  pooled scene features, trained with the model on its Omni-SILA training clips, that gives the probability that
  the window shows something other than the config's normal label (``Normal`` / ``neutral``). It runs after scene
  extraction and before the LLM: an eventful window the probe calls normal with ``probe_threshold`` confidence is
  skipped (``"probe_normal"``), saving the generation, not the extraction. Floor windows are always generated.
* **Time**: the gate works in the frames' own times, never in the video's stated duration, so a header that
  misstates the duration (or a stream without one) does not change which windows are chosen.

Memory is bounded: the scorer keeps the thumbnails of the last ``history`` seconds and the scores of the last
``keep`` frames.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: why a window was generated ("all": selection off; "event": its score reached the threshold; "floor": no window
#: was generated for ``floor`` seconds) or skipped ("uneventful": below the threshold; "budget": over the budget;
#: "covered": its eventful frames lie inside the last generated window or where the next window sees them;
#: "no_frames": the stream has no frame in the window, a stall or a gap, whether selection is on or off)
GENERATED_REASONS = ("all", "event", "floor")
SKIPPED_REASONS = ("uneventful", "covered", "budget", "no_frames", "probe_normal")
#: the file a trained model's scene probe is saved in, beside its weights
EVENT_PROBE_FILE = "event_probe.json"
EVENT_PROBE_FORMAT = "icm-event-probe/1"
#: the label of each config that means nothing is happening: what the scene probe scores against
NORMAL_LABELS = {"explicit": "neutral", "implicit": "Normal"}
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
        skip_covered: skip an eventful window whose events another generated window sees (``"covered"``; window
            analysis only, not ``icm watch``). Off by default: on the benchmark it halved the generations and kept
            every event in a generated window, but the timeline lost what the overlapping views found (segments
            split where a window was skipped; docs/long-footage.md) — a trade for the user to make.
        probe_threshold: with a scene probe, an eventful window whose probability of showing something other than
            the normal label is below this is skipped as ``"probe_normal"``. 0 (the default): the probe scores every
            extracted window but never skips one — at 0.25, with SmolLM2 and the real offline extractors, it lost one
            of 11 events on the benchmark video (docs/long-footage.md), so skipping is the user's choice.
    """

    enabled: bool = True
    threshold: float = 2.0
    floor: float = 60.0
    history: float = 4.0
    thumb_size: int = 32
    budget: float | None = None
    burst: float = 10.0
    probe_threshold: float = 0.0
    skip_covered: bool = False

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
        if not _is_number(self.probe_threshold) or not 0 <= self.probe_threshold <= 1:
            raise ValueError(f"event selection: probe_threshold must be a probability in [0, 1], got {self.probe_threshold!r}")
        if not isinstance(self.skip_covered, bool):
            raise ValueError(f"event selection: skip_covered must be true or false, got {self.skip_covered!r}")
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
        self.covered: tuple[float, float] | None = None  # the span of the last generated window, when its end is known
        self.owed = False  # the last window was skipped as "covered" because the next one will see its events
        self.credit = self.selection.burst
        self.counts: dict[str, int] = {}

    def decide_frames(
        self, start: float, times: Sequence[float], images, keys=None, end: float | None = None,
        next_start: float | None = None,
    ) -> tuple[WindowDecision, list[float]]:  # fmt: skip
        """Score a window's frames and decide; ``(decision, per-frame scores)`` (no scores when selection is off).
        ``end`` (the window's end) and ``next_start`` (the next window's start) let an eventful window whose events
        another generated window sees be skipped as ``"covered"`` (``EventSelection.skip_covered``)."""
        if not self.selection.enabled:
            return self.decide(start, None), []
        scores = self.scorer.scores(times, images, keys)
        eventful = [float(t) for t, score in zip(times, scores) if score >= self.selection.threshold]
        decision = self.decide(start, max(scores, default=0.0), end=end, eventful_times=eventful, next_start=next_start)
        return decision, scores

    def decide(
        self, start: float, score: float | None, end: float | None = None,
        eventful_times: Sequence[float] | None = None, next_start: float | None = None,
    ) -> WindowDecision:  # fmt: skip
        """The decision for the window ``[start, end)`` (seconds) with window score ``score``; ``eventful_times``:
        the times of its frames that score at or above the threshold; ``next_start``: the next window's start.

        Covering (with ``end`` and ``eventful_times``): an eventful window is skipped as ``"covered"`` when its
        eventful frames all lie inside the last generated window, or — given ``next_start`` — when those outside it
        all lie at or after ``next_start``, so that the next window sees them; that next window is then generated
        whatever its own score (``owed``), so the events are never left to chance. On a video, a window left owed
        at the end is generated by the caller (:func:`inference.analysis.select_windows`)."""
        s = self.selection
        if not s.enabled:
            return self._count(WindowDecision(True, "all", None))
        score = round(float(score or 0.0), 4)
        owed, self.owed = self.owed, False
        if s.budget is not None:
            self.credit = min(s.burst, self.credit + s.budget)
        if self.last_generated is None or (s.floor > 0 and start - self.last_generated >= s.floor - 1e-9):
            return self._generated(start, WindowDecision(True, "floor", score), end)
        if owed:  # the window before was skipped because this one sees its events
            return self._generated(start, WindowDecision(True, "event", score), end)
        if score < s.threshold:
            return self._count(WindowDecision(False, "uneventful", score))
        if s.skip_covered and end is not None and eventful_times:
            first, last = self.covered if self.covered is not None else (math.inf, -math.inf)
            unseen = [t for t in eventful_times if not first - 1e-6 <= t < last - 1e-6]
            if not unseen:
                return self._count(WindowDecision(False, "covered", score))
            if next_start is not None and min(unseen) >= next_start - 1e-6:
                self.owed = True
                return self._count(WindowDecision(False, "covered", score))
        if s.budget is not None and self.credit < 1.0:
            return self._count(WindowDecision(False, "budget", score))
        return self._generated(start, WindowDecision(True, "event", score), end)

    def resume_after(self, start: float) -> None:
        """Continue a run whose last generated window started at ``start``."""
        self.last_generated = start if self.last_generated is None else max(self.last_generated, start)

    def _generated(self, start: float, decision: WindowDecision, end: float | None = None) -> WindowDecision:
        self.last_generated = start
        self.covered = (start, end) if end is not None else None
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


# ----------------------------------------------------------------------------------------------------------------
# The scene probe: "does this window show something other than the normal label?"
# ----------------------------------------------------------------------------------------------------------------


#: the per-scene statistics over frames and items that :func:`pooled_scene_features` can take
POOLING_STATISTICS = ("mean", "max", "min", "std")


def pooled_scene_features(
    example: Mapping[str, Any], scenes: Sequence[str], statistics: Sequence[str] = ("mean", "max")
):
    """One vector per clip or window (a float32 torch tensor): for each scene, ``statistics`` of its present items'
    features over all frames (by default the mean and the max; zeros for an absent scene), concatenated in
    ``scenes`` order. ``example`` holds ``scene_features`` (``{scene: [T, items, dim]}``) and optionally
    ``scene_masks`` (``{scene: [T, items]}``). The pooling of the scene probes of training
    (``trainers.diagnostics``) and of analysis (:class:`SceneEventProbe`); the study set's probes add the min and the
    standard deviation (``trainers.study``), which keep which way a scene changed within a clip."""
    import torch

    unknown = [s for s in statistics if s not in POOLING_STATISTICS]
    if unknown or not statistics:
        raise ValueError(f"pooling statistics {list(statistics)!r}: each must be one of {list(POOLING_STATISTICS)}")
    parts = []
    masks = example.get("scene_masks") or {}
    for scene in scenes:
        feats = torch.as_tensor(example["scene_features"][scene]).float()
        dim = feats.shape[-1]
        feats = feats.reshape(-1, dim)
        present = torch.as_tensor(masks[scene]).reshape(-1).bool() if scene in masks else torch.ones(len(feats), dtype=torch.bool)
        rows = feats[present]
        for statistic in statistics:
            if not len(rows):
                parts.append(torch.zeros(dim))
            elif statistic == "mean":
                parts.append(rows.mean(0))
            elif statistic == "max":
                parts.append(rows.max(0).values)
            elif statistic == "min":
                parts.append(rows.min(0).values)
            else:  # population std: one present item gives 0, not NaN
                parts.append(rows.std(0, unbiased=False))
    return torch.cat(parts)


@dataclass
class SceneEventProbe:
    """A logistic regression on :func:`pooled_scene_features` that scores how likely a window shows something other
    than the config's normal label. Plain numbers (saved as JSON, nothing unpickled); fitted with scikit-learn by
    :meth:`fit`, applied with numpy by :meth:`score`.

    Attributes:
        config: the Omni-SILA config it was trained for (``explicit`` / ``implicit``).
        normal_label: the label that counts as nothing happening (``neutral`` / ``Normal``).
        scenes: the scenes whose features it reads, in order.
        mean, scale: the standardisation of the pooled features (the training clips' mean and std).
        coef, intercept: the logistic regression on the standardised features (positive class: not normal).
        pipeline_hash: the scene extractors' ``config_hash`` its features came from (features of other extractors
            are another input distribution; :meth:`check_pipeline` refuses them).
        trained_on: what it was fitted on (clip counts per class, its training accuracy).
    """

    config: str
    normal_label: str
    scenes: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    pipeline_hash: str | None = None
    trained_on: dict[str, Any] | None = None

    @classmethod
    def fit(cls, examples: Sequence[Mapping[str, Any]], config: str, scenes: Sequence[str],
            pipeline_hash: str | None = None) -> SceneEventProbe:  # fmt: skip
        """Fit on training examples (one per clip: ``scene_features``, ``scene_masks``, ``label``; several examples of
        one ``clip_id`` count once). The normal label is the config's (:data:`NORMAL_LABELS`)."""
        from sklearn.linear_model import LogisticRegression

        if config not in NORMAL_LABELS:
            raise ValueError(f"scene probe: unknown config {config!r}; known: {list(NORMAL_LABELS)}")
        normal = [NORMAL_LABELS[config]]
        clips: dict[Any, Mapping[str, Any]] = {}
        for index, example in enumerate(examples):
            clips.setdefault(example.get("clip_id", index), example)
        x = np.stack([pooled_scene_features(e, scenes).numpy() for e in clips.values()])
        y = np.asarray([e["label"] not in normal for e in clips.values()], dtype=int)
        if len(set(y.tolist())) < 2:
            raise ValueError(f"scene probe ({config}): the training clips need both normal ({normal}) and other labels")
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-8] = 1.0
        z = (x - mean) / scale
        model = LogisticRegression(max_iter=5000, class_weight="balanced").fit(z, y)
        probe = cls(config=config, normal_label=normal[0], scenes=list(scenes), mean=mean.tolist(),
                    scale=scale.tolist(), coef=model.coef_[0].tolist(), intercept=float(model.intercept_[0]),
                    pipeline_hash=pipeline_hash)  # fmt: skip
        accuracy = float(((probe.probabilities(x) >= 0.5).astype(int) == y).mean())
        probe.trained_on = {"clips": int(len(y)), "normal": int((y == 0).sum()), "other": int(y.sum()),
                            "train_accuracy": round(accuracy, 4)}  # fmt: skip
        return probe

    def probabilities(self, pooled: np.ndarray) -> np.ndarray:
        """P(not normal) of pooled feature rows ``[N, D]`` (or one row ``[D]``)."""
        z = (np.asarray(pooled, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def score(self, scene_features: Mapping[str, Any], scene_masks: Mapping[str, Any] | None = None) -> float:
        """P(not normal) of one window's scene features (``{scene: [T, items, dim]}``)."""
        pooled = pooled_scene_features({"scene_features": scene_features, "scene_masks": scene_masks}, self.scenes)
        return float(self.probabilities(pooled.numpy()))

    def check_pipeline(self, pipeline_hash: str | None) -> None:
        """ValueError when the features come from other extractors than the probe's."""
        if self.pipeline_hash and pipeline_hash and pipeline_hash != self.pipeline_hash:
            raise ValueError(f"scene probe ({self.config}): trained on features of scene pipeline "
                             f"{self.pipeline_hash[:12]}, given features of {pipeline_hash[:12]}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def save_event_probes(probes: Sequence[SceneEventProbe], folder) -> Any:
    """Write the probes (one per config) to ``folder/event_probe.json``; returns the path."""
    import json
    from pathlib import Path

    path = Path(folder) / EVENT_PROBE_FILE
    document = {"format": EVENT_PROBE_FORMAT, "probes": {p.config: p.to_dict() for p in probes}}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def load_event_probe(folder, config: str) -> SceneEventProbe | None:
    """The probe for ``config`` saved in a model folder (None when the folder has none for it). A file that is not
    a probe file is a ValueError naming it."""
    import json
    from pathlib import Path

    path = Path(folder) / EVENT_PROBE_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != EVENT_PROBE_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {EVENT_PROBE_FORMAT!r}")
        entry = document["probes"].get(config)
        probe = None if entry is None else SceneEventProbe(**entry)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a scene probe file ({err})") from err
    if probe is not None and not (len(probe.mean) == len(probe.scale) == len(probe.coef)):
        raise ValueError(f"{path}: the {config} probe's mean, scale and coef differ in length")
    return probe



__all__ = [
    "EVENT_PROBE_FILE",
    "GENERATED_REASONS",
    "NORMAL_LABELS",
    "SKIPPED_REASONS",
    "EventSelection",
    "NoveltyScorer",
    "SceneEventProbe",
    "WindowDecision",
    "WindowGate",
    "load_event_probe",
    "POOLING_STATISTICS",
    "pooled_scene_features",
    "quiet_stretches",
    "save_event_probes",
    "thumbnail",
]

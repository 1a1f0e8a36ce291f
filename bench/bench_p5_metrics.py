"""P5: Omni-SILA localisation/identification metrics on 25,000 examples, vectorised vs a per-example loop.

Times acc + f2 + mAP at every tIoU threshold + FNRs on synthetic implicit-config data (the implicit test set's size,
paper §4.1), once with ``evaluate_metrics.compute_omnisila`` (validation and flattening included, plus the TSL-300 F2
and the per-example scores it always computes) and once with a straightforward per-example loop written here the way
the ActivityNet/TSL-300 evaluation code reads. Both must give the same numbers. Goal: < 2 s and >= 10x.

    python bench/bench_p5_metrics.py [--examples 25000] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np

from evaluate_metrics.functions import compute_omnisila
from modeling_icm.templates import FNR_TARGET_LABELS, IMPLICIT_LABELS

THRESHOLDS = (0.1, 0.2, 0.3)


def synthetic(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Predictions and references with 0-3 segments each, jittered matches, wrong labels, unreadable answers and
    scores on a 0.01 grid (so ties occur)."""
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(n):
        duration = round(rng.uniform(5, 120), 2)
        label = rng.choice(IMPLICIT_LABELS)
        gt = []
        for _ in range(rng.choice((0, 1, 1, 2, 3)) if label != "Normal" else 0):
            start = rng.uniform(0, duration - 1)
            gt.append([round(start, 2), round(min(duration + 5, start + rng.uniform(1, 30)), 2)])
        roll = rng.random()
        p_label = label if roll < 0.6 else ("" if roll < 0.65 else rng.choice(IMPLICIT_LABELS))
        segments = [[max(0.0, s + rng.gauss(0, 3)), max(0.0, e + rng.gauss(0, 3))] for s, e in gt if rng.random() < 0.8]
        segments = [[round(min(s, e), 2), round(max(s, e), 2)] for s, e in segments]
        for _ in range(rng.choice((0, 0, 1))):
            start = rng.uniform(0, duration)
            segments.append([round(start, 2), round(start + rng.uniform(0.5, 20), 2)])
        scores = [round(rng.random(), 2) for _ in segments]
        predictions.append({"sentiment": p_label, "segments": segments, "scores": scores, "attribution": ""})
        references.append({"sentiment": label, "segments": gt, "cause": "", "duration": duration})
    return predictions, references


# ----------------------------------------------------------------------------------------------------------------
# The straightforward per-example implementation
# ----------------------------------------------------------------------------------------------------------------


def loop_tiou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def loop_interpolated_ap(precision: list[float], recall: list[float]) -> float:
    """ActivityNet's interpolated_prec_rec, as a loop."""
    mprec = [0.0, *precision, 0.0]
    mrec = [0.0, *recall, 1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def loop_metrics(predictions: list[dict], references: list[dict], frame_length: float = 1.0) -> dict:
    labels = list(IMPLICIT_LABELS)
    # clip to the duration, as the library does
    preds, refs = [], []
    for p, r in zip(predictions, references):
        d = float(r["duration"])
        preds.append([[min(float(s), d), min(float(e), d)] for s, e in p["segments"]])
        refs.append([[min(float(s), d), min(float(e), d)] for s, e in r["segments"]])
    # acc, f2
    correct = sum(p["sentiment"] == r["sentiment"] for p, r in zip(predictions, references))
    out = {"acc": correct / len(references)}
    total, weighted = 0, 0.0
    for label in labels:
        support = sum(r["sentiment"] == label for r in references)
        predicted = sum(p["sentiment"] == label for p in predictions)
        tp = sum(p["sentiment"] == label == r["sentiment"] for p, r in zip(predictions, references))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f = 5 * precision * recall / (4 * precision + recall) if (4 * precision + recall) > 0 else 0.0
        weighted += f * support
        total += support
    out["f2"] = weighted / total
    # mAP
    for threshold in THRESHOLDS:
        aps = []
        for label in labels:
            num_gt = sum(len(refs[i]) for i, r in enumerate(references) if r["sentiment"] == label)
            if num_gt == 0:
                continue
            candidates = [
                (-p["scores"][j], i, j)
                for i, p in enumerate(predictions)
                if p["sentiment"] == label
                for j in range(len(p["segments"]))
            ]
            candidates.sort(key=lambda c: c[0])  # stable: ties keep example, then segment order
            matched = {}
            tp_flags = []
            for _, i, j in candidates:
                hit = False
                if references[i]["sentiment"] == label:
                    used = matched.setdefault(i, set())
                    best, best_k = -1.0, -1
                    for k, g in enumerate(refs[i]):
                        if k in used:
                            continue
                        t = loop_tiou(preds[i][j], g)
                        if t > best:
                            best, best_k = t, k
                    if best >= threshold:
                        used.add(best_k)
                        hit = True
                tp_flags.append(hit)
            tp_cum, precision, recall = 0, [], []
            for rank, flag in enumerate(tp_flags, 1):
                tp_cum += flag
                precision.append(tp_cum / rank)
                recall.append(tp_cum / num_gt)
            aps.append(loop_interpolated_ap(precision, recall))
        out[f"map@{threshold:g}"] = sum(aps) / len(aps)
    # FNRs
    targets = set(FNR_TARGET_LABELS["implicit"])
    positives = false_negatives = 0
    for i, (p, r) in enumerate(zip(predictions, references)):
        if r["sentiment"] not in targets:
            continue
        frames = math.ceil(round(float(r["duration"]) / frame_length, 9))
        for k in range(frames):
            centre = (k + 0.5) * frame_length
            if any(s <= centre <= e for s, e in refs[i]):
                positives += 1
                covered = p["sentiment"] in targets and any(s <= centre <= e for s, e in preds[i])
                false_negatives += not covered
    out["fnr"] = false_negatives / positives
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    predictions, references = synthetic(args.examples, args.seed)
    num_pred = sum(len(p["segments"]) for p in predictions)
    num_gt = sum(len(r["segments"]) for r in references)
    print(f"P5: {args.examples} examples, {num_pred} predicted and {num_gt} ground-truth segments, tIoU {THRESHOLDS}")

    def timed(fn, repeats):
        best_wall = best_cpu = math.inf
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            value = fn()
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        return value, best_wall, best_cpu

    fast, fast_wall, fast_cpu = timed(
        lambda: compute_omnisila(predictions, references, "implicit", attribution_metrics=()), args.repeats
    )
    slow, slow_wall, slow_cpu = timed(lambda: loop_metrics(predictions, references), 1)

    for key, value in slow.items():
        assert np.isclose(fast[key], value, rtol=1e-12, atol=1e-12), (key, fast[key], value)
    print("same numbers:", ", ".join(f"{k}={v:.6f}" for k, v in slow.items()))
    print(f"vectorised  (compute_omnisila): {fast_wall:8.3f} s wall  {fast_cpu:8.3f} s CPU  (best of {args.repeats})")
    print(f"per-example loop              : {slow_wall:8.3f} s wall  {slow_cpu:8.3f} s CPU")
    print(f"speed-up: {slow_wall / fast_wall:.1f}x wall, {slow_cpu / fast_cpu:.1f}x CPU")
    print(f"goal (< 2 s, >= 10x): {'met' if fast_cpu < 2 and slow_cpu / fast_cpu >= 10 else 'NOT met'} (CPU time)")


if __name__ == "__main__":
    main()

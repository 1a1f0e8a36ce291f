"""``map@t`` and ``f2_tsl@t`` against the figures of TSL-300's own evaluation code.

``tests/data/tsl300_reference.json`` was made by running TSL-300's ``eval/eval_detection.py`` (unmodified, in a
scratch folder) on generated inputs: 4 to 20 videos, 2 to 6 labels, several segments per video, jittered and false
predictions with distinct scores, wrong labels. The inputs are stored in this package's format beside the figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaluate_metrics.functions import compute_omnisila

DATA = json.loads((Path(__file__).parent / "data" / "tsl300_reference.json").read_text())
CASES = DATA["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_map_and_f2_match_tsl300(case):
    result = compute_omnisila(
        case["predictions"], case["references"], case["config"], attribution_metrics=(),
        tiou_thresholds=DATA["tiou_thresholds"],
    )  # fmt: skip
    expected = case["tsl300"]
    for k, t in enumerate(DATA["tiou_thresholds"]):
        assert result[f"map@{t:g}"] == pytest.approx(expected["map"][k], abs=1e-12), f"map@{t:g}"
        assert result[f"f2_tsl@{t:g}"] == pytest.approx(expected["f2"][k], abs=1e-12), f"f2_tsl@{t:g}"
    assert result["map_avg"] == pytest.approx(expected["average_map"], abs=1e-12)
    assert result["f2_tsl"] == pytest.approx(sum(expected["f2"]) / len(expected["f2"]), abs=1e-12)


def test_per_label_option_is_the_old_definition_and_differs_on_several_labels():
    case = next(c for c in CASES if len(c["tsl300"]["labels_with_gt"]) >= 3)
    kwargs = dict(attribution_metrics=(), tiou_thresholds=DATA["tiou_thresholds"])
    tsl = compute_omnisila(case["predictions"], case["references"], case["config"], **kwargs)
    per_label = compute_omnisila(case["predictions"], case["references"], case["config"], f2_tsl_average="per_label", **kwargs)
    assert per_label["map@0.1"] == tsl["map@0.1"]
    assert not math.isclose(per_label["f2_tsl"], tsl["f2_tsl"])  # the label-mean of F2 is not F2 of the means
    with pytest.raises(ValueError, match="f2_tsl_average"):
        compute_omnisila(case["predictions"], case["references"], case["config"], f2_tsl_average="macro", **kwargs)


def test_label_without_prediction_counts_zero_in_the_means():
    # Two labels with ground truth; "positive" has no prediction: P = R = 0 for it, as TSL-300's zero-filled arrays.
    refs = [{"sentiment": "negative", "segments": [[0, 10]], "cause": "", "duration": 30.0},
            {"sentiment": "positive", "segments": [[0, 10]], "cause": "", "duration": 30.0}]
    preds = [{"sentiment": "negative", "segments": [[0, 10]], "attribution": ""},
             {"sentiment": "negative", "segments": [], "attribution": ""}]  # fmt: skip
    result = compute_omnisila(preds, refs, "explicit", attribution_metrics=())
    p, r = (1.0 + 0.0) / 2, (1.0 + 0.0) / 2
    assert result["map@0.1"] == pytest.approx(0.5)
    assert result["f2_tsl@0.1"] == pytest.approx(5 * p * r / (4 * p + r))


# ---- the default is TSL-300's official scoring, on real TSL-300 clips ------------------------------------------


def _tiou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def official_map_and_f2(predictions, references, labels, thresholds):
    """mAP@t and F2@t written here from the definitions TSL-300's ``eval/eval_detection.py`` implements (not from
    its code): per label, predictions in descending score order each take the unmatched ground-truth segment of
    their clip with the highest tIoU >= t (else a false positive); AP is the all-point interpolated area under the
    precision-recall curve; mAP averages the labels with ground truth. F2: per label the mean of the cumulative
    precision and of the cumulative recall curves (0 without predictions), each averaged over the labels with ground
    truth, then 5PR / (4P + R). No segment is clipped."""
    maps, f2s = [], []
    for t in thresholds:
        aps, precisions, recalls = [], [], []
        for label in labels:
            gt = {i: [s for s in r["segments"]] for i, r in enumerate(references) if r["sentiment"] == label}
            npos = sum(len(v) for v in gt.values())
            if npos == 0:
                continue
            detections = [(score, i, seg) for i, p in enumerate(predictions) if p["sentiment"] == label
                          for seg, score in zip(p["segments"], p["scores"])]  # fmt: skip
            detections.sort(key=lambda d: -d[0])
            used = {i: [False] * len(v) for i, v in gt.items()}
            tp_cum, fp_cum, prec, rec = 0, 0, [], []
            for _, i, seg in detections:
                hit = False
                for k in sorted(range(len(gt.get(i, []))), key=lambda k: -_tiou(seg, gt[i][k])):
                    if _tiou(seg, gt[i][k]) < t:
                        break
                    if not used[i][k]:
                        used[i][k] = hit = True
                        break
                tp_cum, fp_cum = tp_cum + hit, fp_cum + (not hit)
                prec.append(tp_cum / (tp_cum + fp_cum))
                rec.append(tp_cum / npos)
            envelope = [0.0] + prec + [0.0]
            points = [0.0] + rec + [1.0]
            for k in range(len(envelope) - 2, -1, -1):
                envelope[k] = max(envelope[k], envelope[k + 1])
            aps.append(sum((points[k] - points[k - 1]) * envelope[k] for k in range(1, len(points))
                           if points[k] != points[k - 1]))  # fmt: skip
            precisions.append(sum(prec) / len(prec) if prec else 0.0)
            recalls.append(sum(rec) / len(rec) if rec else 0.0)
        maps.append(sum(aps) / len(aps))
        p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
        f2s.append(5 * p * r / (4 * p + r) if 4 * p + r > 0 else 0.0)
    return maps, f2s


@pytest.fixture(scope="module")
def windowed_tsl300_test_set():
    """Every 10th clip of the real TSL-300 test set as the converter windows it, and generated predictions: each
    ground-truth segment jittered, most of them running past the window's end, some with the wrong label, some false
    segments, all with distinct scores."""
    import random

    from datasets_scripts.converters import convert_tsl300

    folder = Path(__file__).parent / "data" / "tsl300"
    windows, _ = convert_tsl300(folder / "videosenti_gt.json", folder / "fps_dict.json",
                                folder / "len_duration_dict.json", folder, check_video=False)  # fmt: skip
    clips = [vars(c) for c in windows if c.split == "test"][::10]
    rng = random.Random(0)
    labels = ("positive", "negative", "neutral")
    references, predictions, overrun = [], [], 0
    for clip in clips:
        duration = clip["duration"]
        references.append({"sentiment": clip["label"], "segments": clip["segments"], "cause": "", "duration": duration})
        segments = []
        for start, end in clip["segments"]:
            new_start = max(0.0, start + rng.uniform(-2.0, 2.0))
            new_end = end + rng.uniform(-2.0, 2.0) + (rng.uniform(0.5, 12.0) if rng.random() < 0.7 else 0.0)
            segments.append([new_start, max(new_end, new_start + 0.5)])
        if rng.random() < 0.3:
            s = rng.uniform(0, duration)
            segments.append([s, s + rng.uniform(1.0, 15.0)])
        overrun += sum(e > duration for _, e in segments)
        label = clip["label"] if rng.random() < 0.8 else rng.choice(labels)
        predictions.append({"sentiment": label, "segments": segments,
                            "scores": [rng.random() for _ in segments], "attribution": ""})  # fmt: skip
    return clips, predictions, references, overrun


def test_default_scoring_is_tsl300_official_on_windowed_real_clips(windowed_tsl300_test_set):
    clips, predictions, references, overrun = windowed_tsl300_test_set
    assert len(clips) > 2000 and overrun > len(clips) // 2 and max(c["duration"] for c in clips) == 20.0
    thresholds = (0.1, 0.2, 0.3)
    maps, f2s = official_map_and_f2(predictions, references, ("positive", "negative", "neutral"), thresholds)
    ours = compute_omnisila(predictions, references, "explicit", attribution_metrics=())
    for k, t in enumerate(thresholds):
        assert ours[f"map@{t:g}"] == pytest.approx(maps[k], abs=1e-9), f"map@{t:g}"
        assert ours[f"f2_tsl@{t:g}"] == pytest.approx(f2s[k], abs=1e-9), f"f2_tsl@{t:g}"
    clipped = compute_omnisila(predictions, references, "explicit", attribution_metrics=(), clip_segments=True)
    assert clipped["map@0.3"] > maps[2] + 0.01  # clipping forgives the overrun: not TSL-300's figure

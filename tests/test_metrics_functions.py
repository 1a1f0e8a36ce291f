"""Hand-computed cases of Acc, F2, mAP@tIoU, F2 (TSL-300) and FNRs; properties; bad input; the paired t-test."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import fbeta_score

from evaluate_metrics.functions import (
    acc,
    compute_omnisila,
    f2,
    paired_t_test,
    prepare_batch,
    score_omnisila,
    tiou_matrix,
)
from modeling_icm.templates import LABELS, combined_answer


def ref(sentiment, segments, duration=30.0, cause="a cause"):
    return {"sentiment": sentiment, "segments": segments, "cause": cause, "duration": duration}


def pred(sentiment, segments, scores=None, attribution="an attribution"):
    out = {"sentiment": sentiment, "segments": segments, "attribution": attribution}
    if scores is not None:
        out["scores"] = scores
    return out


def loc(predictions, references, config="explicit", **kwargs):
    kwargs.setdefault("attribution_metrics", ())
    return compute_omnisila(predictions, references, config, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Acc and F2
# ------------------------------------------------------------------------------------------------------------------


def test_acc_and_f2_by_hand():
    y_true = ["negative", "negative", "positive", "neutral"]
    y_pred = ["negative", "positive", "positive", ""]
    assert acc(y_pred, y_true) == 0.5
    # negative: P = 1, R = 1/2 -> F2 = 5 * 0.5 / (4 + 0.5) = 5/9; positive: P = 1/2, R = 1 -> 2.5 / 3 = 5/6;
    # neutral: 0. Weighted by support 2, 1, 1.
    assert f2(y_pred, y_true) == pytest.approx((2 * 5 / 9 + 5 / 6) / 4)
    result = loc([pred(p, []) for p in y_pred], [ref(t, []) for t in y_true])
    assert result["acc"] == 0.5
    assert result["f2"] == pytest.approx((2 * 5 / 9 + 5 / 6) / 4)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), config=st.sampled_from(["explicit", "implicit"]), n=st.integers(1, 40))
def test_f2_agrees_with_sklearn(data, config, n):
    labels = list(LABELS[config])
    y_true = data.draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n))
    y_pred = data.draw(st.lists(st.sampled_from([*labels, ""]), min_size=n, max_size=n))
    expected = fbeta_score(y_true, y_pred, beta=2, average="weighted", zero_division=0)
    assert f2(y_pred, y_true) == pytest.approx(expected)
    result = loc([pred(p, []) for p in y_pred], [ref(t, []) for t in y_true], config)
    assert result["f2"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------------------------
# mAP@tIoU and TSL-300 F2
# ------------------------------------------------------------------------------------------------------------------


def test_tiou_matrix():
    t = tiou_matrix(np.array([[0.0, 10.0], [5.0, 5.0]]), np.array([[5.0, 15.0], [20.0, 30.0], [5.0, 5.0]]))
    np.testing.assert_allclose(t, [[5 / 15, 0.0, 0.0], [0.0, 0.0, 0.0]])


MAP_CASES = [
    # (id, predictions, references, expected {key: value}, kwargs)
    ("duplicates: the second copy is a false positive",
     [pred("negative", [[0, 10], [0, 10]])], [ref("negative", [[0, 10]])],
     {"map@0.1": 1.0, "map@0.3": 1.0, "f2_tsl": 5 * 0.75 / (3 + 1)}, {}),
    ("ties keep input order: false positive first",
     [pred("negative", [[12, 15], [0, 10]])], [ref("negative", [[0, 10]])],
     {"map@0.1": 0.5, "f2_tsl": 5 * 0.25 * 0.5 / (1 + 0.5)}, {}),
    ("scores sort the predictions (false positive first)",
     [pred("negative", [[12, 15], [0, 10]], [0.9, 0.5])], [ref("negative", [[0, 10]])], {"map@0.1": 0.5}, {}),
    ("scores sort the predictions (true positive first)",
     [pred("negative", [[12, 15], [0, 10]], [0.1, 0.9])], [ref("negative", [[0, 10]])], {"map@0.1": 1.0}, {}),
    ("score order across examples; tIoU exactly at the threshold matches",
     [pred("negative", [[0, 4]], [0.8]), pred("negative", [[0, 2]], [0.9])],
     [ref("negative", [[0, 10]]), ref("negative", [[0, 10]])],
     {"map@0.1": 1.0, "map@0.2": 1.0, "map@0.3": 0.25, "map_avg": 2.25 / 3}, {}),
    ("greedy match takes the highest tIoU, not the first above the threshold",
     [pred("negative", [[7, 20], [0, 9]], [0.9, 0.8])], [ref("negative", [[0, 10], [8, 20]])],
     {"map@0.1": 1.0}, {}),
    ("a prediction matches only ground truth of its own example",
     [pred("negative", [[0, 10]]), pred("negative", [])], [ref("negative", []), ref("negative", [[0, 10]])],
     {"map@0.1": 0.0}, {}),
    ("beyond the duration, clip_segments=True: clipped to the video",
     [pred("negative", [[5, 30], [12, 15]])], [ref("negative", [[5, 10]], duration=10)],
     {"map@0.3": 1.0}, {"clip_segments": True}),
    ("beyond the duration, by default unclipped (TSL-300): tIoU 5/25",
     [pred("negative", [[5, 30]])], [ref("negative", [[5, 10]], duration=10)],
     {"map@0.1": 1.0, "map@0.3": 0.0}, {}),
    ("empty prediction: AP 0",
     [pred("negative", [])], [ref("negative", [[0, 10]])], {"map@0.1": 0.0, "f2_tsl": 0.0}, {}),
    ("wrong label: its segments are false positives of a label without ground truth",
     [pred("positive", [[0, 10]])], [ref("negative", [[0, 10]])], {"map@0.1": 0.0}, {}),
    ("unreadable answer: its segments carry no label",
     ["The location is from 0s to 10s."], [ref("negative", [[0, 10]])], {"map@0.1": 0.0, "acc": 0.0}, {}),
    ("no ground-truth segment anywhere: mAP undefined",
     [pred("negative", [[0, 10]])], [ref("negative", [])], {"map@0.1": math.nan, "map_avg": math.nan}, {}),
    ("mean over the labels that have ground truth",
     [pred("Fire", [[0, 10]]), pred("Theft", [[20, 30]]), pred("Normal", [[0, 5]])],
     [ref("Fire", [[0, 10]]), ref("Theft", [[0, 10]]), ref("Fire", [])],
     {"map@0.1": 0.5}, {"config": "implicit"}),
    ("custom thresholds",
     [pred("negative", [[0, 6]])], [ref("negative", [[0, 10]])],
     {"map@0.5": 1.0, "map@0.7": 0.0, "map_avg": 0.5}, {"tiou_thresholds": (0.5, 0.7)}),
]  # fmt: skip


@pytest.mark.parametrize("case", MAP_CASES, ids=[c[0] for c in MAP_CASES])
def test_map_by_hand(case):
    _, predictions, references, expected, kwargs = case
    kwargs = dict(kwargs)
    config = kwargs.pop("config", "explicit")
    result = loc(predictions, references, config, **kwargs)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(result[key]), key
        else:
            assert result[key] == pytest.approx(value), key


# ------------------------------------------------------------------------------------------------------------------
# FNRs
# ------------------------------------------------------------------------------------------------------------------

FNR_CASES = [
    # (id, predictions, references, config, frame_length, expected fnr)
    ("explicit: only negative frames count; a non-target prediction covers nothing",
     [pred("negative", [[4.4, 8]]), pred("positive", [[0, 5]]), pred("positive", [[0, 3]])],
     [ref("negative", [[2, 6]], 10), ref("positive", [[0, 5]], 10), ref("negative", [[0, 3]], 3.5)],
     "explicit", 1.0, 5 / 7),
    ("the same at half-second frames",
     [pred("negative", [[4.4, 8]]), pred("positive", [[0, 5]]), pred("positive", [[0, 3]])],
     [ref("negative", [[2, 6]], 10), ref("positive", [[0, 5]], 10), ref("negative", [[0, 3]], 3.5)],
     "explicit", 0.5, 11 / 14),
    ("frame centres on the segment's boundary are inside",
     [pred("negative", [[0, 1.5]])], [ref("negative", [[0, 2.5]], 5)], "explicit", 1.0, 1 / 3),
    ("ground truth beyond the duration: frames stop at ceil(duration) - 1",
     [pred("negative", [[8, 9]])], [ref("negative", [[8, 14]], 10)], "explicit", 1.0, 1 / 2),
    ("implicit: any abnormal label covers the frames",
     [pred("Fire", [[0, 4]]), pred("Normal", [[0, 4]])], [ref("Theft", [[0, 4]], 4), ref("Robbery", [[0, 4]], 4)],
     "implicit", 1.0, 4 / 8),
    ("implicit: Normal frames are not positive",
     [pred("Normal", [])], [ref("Normal", [[0, 4]], 4)], "implicit", 1.0, math.nan),
    ("overlapping ground-truth segments count each frame once",
     [pred("negative", [[0, 2]])], [ref("negative", [[0, 4], [2, 6]], 10)], "explicit", 1.0, 4 / 6),
    ("a twelve-day video: counted on segment boundaries, not frame by frame",
     [pred("negative", [[0, 5e5]])], [ref("negative", [[0, 1e6]], 1e6)], "explicit", 0.001, 0.5),
    ("an empty answer misses everything",
     [""], [ref("negative", [[0, 10]], 10)], "explicit", 1.0, 1.0),
]  # fmt: skip


@pytest.mark.parametrize("case", FNR_CASES, ids=[c[0] for c in FNR_CASES])
def test_fnr_by_hand(case):
    _, predictions, references, config, frame_length, expected = case
    result = loc(predictions, references, config, frame_length=frame_length)
    if math.isnan(expected):
        assert math.isnan(result["fnr"])
    else:
        assert result["fnr"] == pytest.approx(expected)


def test_per_label_and_per_example_breakdowns():
    predictions = [pred("Fire", [[0, 4]]), pred("Normal", []), pred("Vandalism", [[0, 2]]), pred("Normal", [])]
    references = [ref("Theft", [[0, 4]], 4), ref("Theft", [[0, 4]], 4), ref("Vandalism", [[0, 4]], 8),
                  ref("Normal", [], 8)]  # fmt: skip
    result = score_omnisila(predictions, references, "implicit", attribution_metrics=())
    assert result.per_label["Theft"]["fnr"] == 0.5
    assert result.per_label["Vandalism"]["fnr"] == 0.5
    assert "fnr" not in result.per_label["Normal"]
    assert result.per_label["Theft"]["count"] == 2
    assert result.per_label["Fire"]["ap@0.1"] != result.per_label["Fire"]["ap@0.1"]  # NaN: no Fire ground truth
    np.testing.assert_allclose(result.per_example["acc"], [0, 0, 1, 1])
    np.testing.assert_allclose(result.per_example["fnr"], [0.0, 1.0, 0.5, np.nan])
    np.testing.assert_allclose(result.per_example["tiou"], [0.0, 0.0, 0.5, 1.0])


# ------------------------------------------------------------------------------------------------------------------
# A perfect answer
# ------------------------------------------------------------------------------------------------------------------


@st.composite
def references_strategy(draw):
    config = draw(st.sampled_from(["explicit", "implicit"]))
    n = draw(st.integers(1, 12))
    refs = []
    for _ in range(n):
        duration = draw(st.floats(1, 200, allow_nan=False))
        starts = draw(st.lists(st.floats(0, duration - 0.5, allow_nan=False), max_size=3))
        segments = [[round(s, 2), round(min(duration, s + draw(st.floats(0.5, 50))), 2)] for s in starts]
        segments = [s for s in segments if s[1] > s[0]]
        refs.append(ref(draw(st.sampled_from(LABELS[config])), segments, duration, cause="smoke rises"))
    return config, refs


@settings(max_examples=60, deadline=None)
@given(case=references_strategy(), as_text=st.booleans())
def test_perfect_prediction_scores_one(case, as_text):
    config, references = case
    if as_text:
        predictions = [combined_answer(config, r["sentiment"], r["segments"], r["cause"]) for r in references]
    else:
        predictions = [pred(r["sentiment"], r["segments"], attribution=r["cause"]) for r in references]
    result = compute_omnisila(predictions, references, config, attribution_metrics=("sem_r",))
    assert result["acc"] == 1.0
    assert result["f2"] == pytest.approx(1.0)
    assert result["sem_r"] == pytest.approx(1.0)
    if any(r["segments"] for r in references):
        for key in ("map@0.1", "map@0.2", "map@0.3", "map_avg"):
            assert result[key] == pytest.approx(1.0), key
    if not math.isnan(result["fnr"]):  # NaN only without positive frames
        assert result["fnr"] == 0.0
    batch, _ = prepare_batch(predictions, references, config)
    assert batch.num_examples == len(references)


@settings(max_examples=40, deadline=None)
@given(case=references_strategy(), data=st.data())
def test_fast_and_checked_paths_agree(case, data):
    """Plain dicts take the lean vectorised path; any other mapping takes the per-example checked path."""
    from types import MappingProxyType

    config, references = case
    predictions = []
    for r in references:
        segments = [[s, e + data.draw(st.floats(0, 5))] for s, e in r["segments"]]
        scores = data.draw(st.none() | st.just([round(0.1 * k, 1) % 1 for k in range(len(segments))]))
        label = data.draw(st.sampled_from([r["sentiment"], "", LABELS[config][0]]))
        predictions.append(pred(label, segments, scores))
    fast = loc(predictions, references, config)
    checked = loc([MappingProxyType(p) for p in predictions], [MappingProxyType(r) for r in references], config)
    assert fast.keys() == checked.keys()
    for key in fast:
        assert fast[key] == checked[key] or (math.isnan(fast[key]) and math.isnan(checked[key])), key


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------

BAD_INPUT = [
    ([pred("negative", []), pred("negative", [])], [ref("negative", [])], r"predictions has 2 examples but references has 1"),
    ([pred("negative", [])], [ref("happy", [])], r"references\[0\]\.sentiment: unknown label 'happy'"),
    ([pred("negative", []), pred("Fire", [])], [ref("negative", []), ref("negative", [])], r"predictions\[1\]\.sentiment: unknown label 'Fire'"),
    ([pred("negative", [])], [ref("negative", [[0, 1], [5, 2]])], r"references\[0\]\.segments\[1\]: end 2\.0 < start 5\.0"),
    ([pred("negative", [[float("nan"), 2]])], [ref("negative", [])], r"predictions\[0\]\.segments\[0\]: times must be finite"),
    ([pred("negative", [])], [ref("negative", [[-1, 2]])], r"references\[0\]\.segments\[0\]: times must be >= 0"),
    ([pred("negative", [[0, 1], [2, 3]], [0.5])], [ref("negative", [])], r"predictions\[0\]\.scores: 1 scores for 2 segments"),
    ([pred("negative", [[0, 1]], [float("nan")])], [ref("negative", [])], r"predictions\[0\]\.scores: scores must be finite"),
    ([pred("negative", [])], [{"sentiment": "negative", "segments": [], "cause": ""}], r"references\[0\]: missing field 'duration'"),
    ([pred("negative", [])], [ref("negative", [], duration=float("nan"))], r"references\[0\]\.duration"),
    ([pred("negative", [])], [ref("negative", [], duration=0)], r"references\[0\]\.duration"),
    ([pred("negative", [[1, 2, 3]])], [ref("negative", [])], r"predictions\[0\]\.segments\[0\]: expected \[start, end\]"),
    ([pred("negative", [["a", 2]])], [ref("negative", [])], r"predictions\[0\]\.segments\[0\]: times must be numbers"),
    ([42], [ref("negative", [])], r"predictions\[0\]: expected a dict"),
    ([pred("negative", [], attribution=3)], [ref("negative", [])], r"predictions\[0\]\.attribution: expected a string"),
]  # fmt: skip


@pytest.mark.parametrize("predictions,references,message", BAD_INPUT)
def test_bad_input_names_example_and_field(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        loc(predictions, references)


_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    sentiment=st.sampled_from(["negative", "Negative", ""]) | _junk,
    segments=st.just([[1, 2]]) | _junk,
    scores=st.none() | _junk,
    duration=st.just(10) | _junk,
    cause=st.just("c") | _junk,
    as_text=st.booleans(),
)
def test_any_input_either_scores_or_raises_value_error(sentiment, segments, scores, duration, cause, as_text):
    """Junk anywhere in a prediction or reference gives a ValueError that names the example, never a crash."""
    prediction = str(sentiment) if as_text else {"sentiment": sentiment, "segments": segments, "scores": scores}
    reference = {"sentiment": sentiment, "segments": segments, "cause": cause, "duration": duration}
    try:
        result = loc([prediction, pred("negative", [])], [reference, ref("negative", [])])
    except ValueError as error:
        assert re.search(r"(predictions|references)\[0\]", str(error)), str(error)
    else:
        assert result["num_examples"] == 2


def test_skip_invalid_reports_and_carries_on():
    predictions = [pred("negative", [[0, 10]]), pred("negative", [[5, 2]]), pred("negative", [])]
    references = [ref("negative", [[0, 10]]), ref("negative", [[0, 10]]), ref("wrong", [])]
    result = loc(predictions, references, on_invalid="skip")
    assert result["num_examples"] == 1 and result["num_invalid"] == 2
    assert "predictions[1].segments[0]" in result["invalid"][0]
    assert "references[2].sentiment" in result["invalid"][1]
    assert result["map@0.1"] == 1.0
    detailed = score_omnisila(predictions, references, "explicit", attribution_metrics=(), on_invalid="skip")
    assert detailed.indices.tolist() == [0]


@pytest.mark.parametrize(
    "kwargs,message",
    [({"tiou_thresholds": (0.0,)}, "tIoU threshold"), ({"frame_length": 0}, "frame_length"),
     ({"attribution_metrics": ("bleu",)}, "attribution_metrics"), ({"on_invalid": "ignore"}, "on_invalid")],
)  # fmt: skip
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        loc([pred("negative", [[0, 1]])], [ref("negative", [[0, 1]])], **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Paired t-test
# ------------------------------------------------------------------------------------------------------------------


def test_paired_t_test_matches_scipy_and_drops_nan_pairs():
    from scipy import stats

    rng = np.random.default_rng(0)
    a = rng.random(50)
    b = a - 0.05 + 0.02 * rng.standard_normal(50)
    expected = stats.ttest_rel(a, b)
    result = paired_t_test(a, b)
    assert result["pvalue"] == pytest.approx(expected.pvalue)
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["pvalue"] < 0.01 and result["num_pairs"] == 50
    a_nan = np.append(a, np.nan)
    b_nan = np.append(b, 0.3)
    assert paired_t_test(a_nan, b_nan)["pvalue"] == pytest.approx(expected.pvalue)
    assert paired_t_test(a, b, alternative="greater")["pvalue"] == pytest.approx(expected.pvalue / 2)


@pytest.mark.parametrize(
    "a,b,alternative,pvalue",
    [([1, 1, 1], [1, 1, 1], "two-sided", 1.0), ([1, 1, 1], [0, 0, 0], "two-sided", 0.0),
     ([1, 1, 1], [0, 0, 0], "less", 1.0), ([0, 0, 0], [1, 1, 1], "less", 0.0)],
)  # fmt: skip
def test_paired_t_test_without_variance(a, b, alternative, pvalue):
    assert paired_t_test(a, b, alternative)["pvalue"] == pvalue


@pytest.mark.parametrize("a,b,message", [([1, 2], [1], "one length"), ([1, np.nan], [1, 2], "at least 2 pairs")])
def test_paired_t_test_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_t_test(a, b)


def test_reference_of_is_the_one_place_references_are_built():
    from datasets_scripts.schema import ClipRecord
    from evaluate_metrics.functions import reference_of

    record = ClipRecord(id="c1", video="v.mp4", duration=10, fps=4.0, split="test", config="implicit", label="Fire",
                        segments=[[1, 3]], cause="flames")  # fmt: skip
    expected = {"sentiment": "Fire", "segments": [[1.0, 3.0]], "cause": "flames", "duration": 10.0}
    assert reference_of(record) == expected
    assert reference_of({"clip_id": "c1", "label": "Fire", "segments": [(1, 3)], "cause": "flames", "duration": 10}) == expected
    assert reference_of({"sentiment": "Fire", "segments": [[1, 3]], "duration": "10"})["cause"] == ""
    with pytest.raises(ValueError, match="clip c2: no 'label'"):
        reference_of({"id": "c2", "segments": [], "duration": 4})
    with pytest.raises(ValueError, match="clip c3: no 'duration'"):
        reference_of({"id": "c3", "label": "Fire", "segments": []})

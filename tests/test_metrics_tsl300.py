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

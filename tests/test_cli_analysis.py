"""inference.analysis: windows, video-time segments, confidence from token probabilities, router weights, merging."""

from __future__ import annotations

import math

import pytest

from inference.analysis import (
    WindowResult,
    frame_scene_weights,
    mean_scene_weights,
    merge_windows,
    plan_windows,
    to_video_segments,
)
from inference.generation import answer_confidence


@pytest.mark.parametrize(
    "duration, window, overlap, expected",
    [
        (10.0, 4.0, 2.0, [(0, 4), (2, 6), (4, 8), (6, 10)]),
        (9.0, 4.0, 2.0, [(0, 4), (2, 6), (4, 8), (6, 9)]),
        (3.0, 10.0, 5.0, [(0, 3)]),
        (20.0, 10.0, 0.0, [(0, 10), (10, 20)]),
        (21.0, 10.0, 0.0, [(0, 10), (10, 20), (20, 21)]),
    ],
)
def test_plan_windows(duration, window, overlap, expected):
    assert plan_windows(duration, window, overlap) == [(float(s), float(e)) for s, e in expected]


@pytest.mark.parametrize(
    "duration, window, overlap, match",
    [(0.0, 4.0, 1.0, "duration"), (5.0, 0.0, 0.0, "window"), (5.0, 4.0, 4.0, "overlap"), (5.0, 4.0, -1, "overlap"),
     (math.nan, 4.0, 1.0, "duration")],
)  # fmt: skip
def test_plan_windows_rejects_bad_values(duration, window, overlap, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(duration, window, overlap)


def test_long_video_windows_are_generated_lazily_in_order():
    windows = plan_windows(3 * 3600.0, 10.0, 5.0)  # three hours
    assert len(windows) == 2159 and windows[-1] == (10790.0, 10800.0)
    assert all(b[0] - a[0] == 5.0 for a, b in zip(windows, windows[1:]))


@pytest.mark.parametrize(
    "segments, start, end, duration, expected",
    [
        ([[1, 3]], 10, 20, None, [[11, 13]]),
        ([[3, 1]], 10, 20, None, [[11, 13]]),  # reversed
        ([[8, 15]], 10, 20, None, [[18, 20]]),  # beyond the window: clipped
        ([[12, 15]], 10, 20, None, []),  # wholly beyond: dropped
        ([[0, 10]], 10, 20, 14.5, [[10, 14.5]]),  # beyond the video
        ([[2, 2]], 0, 10, None, []),  # empty
        ([[0, math.inf]], 0, 10, None, []),
    ],
)
def test_to_video_segments(segments, start, end, duration, expected):
    assert to_video_segments(segments, start, end, duration) == expected


def _spans(pieces):
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return "".join(pieces), spans


def test_confidence_is_the_probability_of_the_label_tokens():
    text, spans = _spans([" The", " implicit", " visual", " sentiment", " is", " Tra", "ffic", " Accidents", "."])
    probs = [0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.8, 0.5, 0.99]
    confidence, method = answer_confidence(text, spans, probs, "Traffic Accidents")
    assert method == "label_tokens"
    assert confidence == pytest.approx(0.5 * 0.8 * 0.5)


def test_confidence_falls_back_to_the_geometric_mean():
    text, spans = _spans([" garbled", " text"])
    confidence, method = answer_confidence(text, spans, [0.25, 1.0], "")
    assert method == "mean_token" and confidence == pytest.approx(0.5)
    assert answer_confidence("", [], [], "Fire") == (0.0, "none")
    with pytest.raises(ValueError, match="token spans"):
        answer_confidence("x", [(0, 1)], [], "")


def test_frame_scene_weights_and_means():
    weights = frame_scene_weights([[0.2, 0.8], [0.0, 0.0], [1.0, 3.0]], ["face", "action"])
    assert weights[0] == {"face": 0.2, "action": 0.8}
    assert weights[1] is None  # no scene present in that frame
    assert weights[2] == {"face": 0.25, "action": 0.75}
    assert mean_scene_weights([(0, weights[0]), (1, weights[1]), (2, weights[2])]) == {"face": 0.225, "action": 0.775}
    assert mean_scene_weights([(0, None)]) == {}
    with pytest.raises(ValueError, match="experts"):
        frame_scene_weights([[0.5]], ["face", "action"])


def _window(index, start, end, sentiment, segments, confidence, frames):
    return WindowResult(
        index=index, start=start, end=end, answer="", sentiment=sentiment, segments=segments, confidence=confidence,
        attribution=f"because of window {index}", frame_times=[t for t, _ in frames], frame_weights=[w for _, w in frames],
    )  # fmt: skip


A = {"face": 0.0, "action": 1.0}
B = {"face": 1.0, "action": 0.0}


def test_merge_joins_overlapping_and_touching_segments_of_one_sentiment():
    windows = [
        _window(0, 0, 4, "Fire", [[1, 3]], 0.9, [(0.5, A), (1.5, A), (3.5, B)]),
        _window(1, 2, 6, "Fire", [[3, 5]], 0.5, [(2.5, A), (4.5, None)]),
        _window(2, 4, 8, "Normal", [[4, 8]], 0.7, [(5.5, B), (7.0, B)]),
        _window(3, 6, 10, "Fire", [[8, 9]], 0.6, [(8.5, A)]),
    ]
    merged = merge_windows(windows)
    assert [(m["sentiment"], m["start"], m["end"]) for m in merged] == [
        ("Fire", 1.0, 5.0),
        ("Normal", 4.0, 8.0),
        ("Fire", 8.0, 9.0),
    ]
    fire = merged[0]
    assert fire["windows"] == [0, 1]
    assert fire["confidence"] == pytest.approx((0.9 * 2 + 0.5 * 2) / 4)  # length-weighted
    assert fire["attribution"] == "because of window 0"  # the most confident window
    # frames inside [1, 5]: 1.5 (A), 3.5 (B), 2.5 (A), 4.5 (no scene) -> mean of A, B, A
    assert fire["scene_weights"] == pytest.approx({"face": 1 / 3, "action": 2 / 3})
    assert merged[1]["scene_weights"] == B
    for m in merged:
        assert set(m) == {"start", "end", "sentiment", "confidence", "attribution", "scene_weights", "windows"}


def test_merge_gap_and_unreadable_windows():
    windows = [
        _window(0, 0, 4, "Fire", [[0, 1]], 0.9, [(0.5, A)]),
        _window(1, 2, 6, "Fire", [[3.5, 4]], 0.9, [(3.6, A)]),
        _window(2, 4, 8, "", [[4, 8]], 0.1, [(5.0, B)]),  # unreadable sentiment: not a segment
    ]
    assert len(merge_windows(windows)) == 2
    assert [(m["start"], m["end"]) for m in merge_windows(windows, gap=3.0)] == [(0.0, 4.0)]
    with pytest.raises(ValueError, match="gap"):
        merge_windows(windows, gap=-1)


def test_merge_uses_the_windows_frames_when_no_frame_lies_inside():
    windows = [_window(0, 0, 4, "Theft", [[1.1, 1.2]], 0.8, [(0.0, A), (2.0, B)])]
    assert merge_windows(windows)[0]["scene_weights"] == {"face": 0.5, "action": 0.5}


def test_window_result_round_trip():
    w = _window(3, 6, 10, "Fire", [[8, 9]], 0.6, [(8.5, A), (9.5, None)])
    assert WindowResult.from_dict(w.to_dict()) == w

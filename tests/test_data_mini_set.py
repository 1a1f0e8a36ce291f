"""The embedded mini set: deterministic, every label represented, and its labels match its pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.mini_set import (
    EVENT_COLORS,
    FPS,
    SIZES,
    count_event_pixels,
    generate_mini_set,
    load_mini_split,
    mini_set_corpus,
    possible_segments,
    read_video_frames,
)
from datasets_scripts.schema import ClipRecord
from modeling_icm.templates import IMPLICIT_LABELS, LABELS

CUE_LABELS = [label for label in EVENT_COLORS]
IMPLICIT_EVENT_LABELS = [label for label in IMPLICIT_LABELS if label != "Normal"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini")
    generate_mini_set(out, seed=0, size="tiny")
    return out


def _records(root: Path) -> list[dict]:
    rows = []
    for config in ("explicit", "implicit"):
        rows += [json.loads(line) for line in (root / f"{config}.jsonl").read_text().splitlines()]
    return rows


def _inside(segments, times) -> np.ndarray:
    return np.array([any(s <= t < e for s, e in segments) for t in times])


def test_tiny_counts_and_manifest(tiny):
    manifest = json.loads((tiny / "mini_set.json").read_text())
    assert manifest["num_clips"] == 30 and manifest["size"] == "tiny"
    for config, labels in LABELS.items():
        for split in ("train", "test"):
            clips = load_mini_split(tiny, config, split)
            assert all(isinstance(c, ClipRecord) for c in clips)
            assert sorted(c.label for c in clips) == sorted(labels * SIZES["tiny"][config][split])
    assert all(n > 0 for n in manifest["scene_tuning"].values())


def test_same_seed_same_frames_other_seed_differs(tiny, tmp_path):
    again = tmp_path / "again"
    generate_mini_set(again, seed=0, size="tiny")
    assert (again / "implicit.jsonl").read_text() == (tiny / "implicit.jsonl").read_text()
    assert (again / "explicit.jsonl").read_text() == (tiny / "explicit.jsonl").read_text()
    for row in _records(tiny)[::7]:
        a, ta = read_video_frames(tiny / row["video"])
        b, tb = read_video_frames(again / row["video"])
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta, tb)
    other = tmp_path / "other"
    generate_mini_set(other, seed=1, size="tiny")
    assert (other / "implicit.jsonl").read_text() != (tiny / "implicit.jsonl").read_text()


@pytest.mark.parametrize("label", CUE_LABELS)
def test_event_pixels_inside_segments_only(tiny, label):
    rows = [r for r in _records(tiny) if r["label"] == label]
    assert rows, label
    for row in rows:
        frames, times = read_video_frames(tiny / row["video"])
        assert len(frames) == row["duration"] * FPS
        np.testing.assert_allclose(times, np.arange(len(frames)) / FPS)
        counts = count_event_pixels(frames, label)
        inside = _inside(row["segments"], times)
        assert inside.any()
        assert counts[inside].min() >= 20, (row["id"], counts)
        assert counts[~inside].max(initial=0) == 0, (row["id"], counts)
        if label in IMPLICIT_EVENT_LABELS:  # its own colour dominates every other implicit event colour
            for other in IMPLICIT_EVENT_LABELS:
                if other != label:
                    assert (count_event_pixels(frames[inside], other) * 3 < counts[inside]).all(), (label, other)


@pytest.mark.parametrize("label", ["Normal", "neutral"])
def test_whole_clip_labels_have_no_event(tiny, label):
    for row in [r for r in _records(tiny) if r["label"] == label]:
        assert row["segments"] == [[0.0, row["duration"]]]
        frames, _ = read_video_frames(tiny / row["video"])
        colors = IMPLICIT_EVENT_LABELS if label == "Normal" else ["positive", "negative"]
        for other in colors:
            assert count_event_pixels(frames, other).max() == 0, (row["id"], other)


def test_segments_are_integer_seconds_and_in_corpus(tiny):
    corpus = set(mini_set_corpus())
    for row in _records(tiny):
        for start, end in row["segments"]:
            assert float(start).is_integer() and float(end).is_integer() and 0 <= start < end <= row["duration"]
        assert row["segments"] in possible_segments(row["label"])
        assert row["cause"] in corpus


def test_load_mini_split_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="validation"):
        load_mini_split(tiny, "implicit", "validation")
    with pytest.raises(FileNotFoundError, match="generate_mini_set"):
        load_mini_split(tmp_path, "implicit", "train")
    with pytest.raises(ValueError, match="size"):
        generate_mini_set(tmp_path, size="huge")

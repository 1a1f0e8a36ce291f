"""Taking "at most N" records keeps every label / description (scene tuning on only the first four face
records — all "A person with a happy face." — taught the face expert one constant answer)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datasets_scripts.mini_set import FACE_DESCRIPTIONS, generate_mini_set
from datasets_scripts.schema import round_robin
from trainers.data import read_scene_records


@pytest.mark.parametrize(
    "items, limit, expected",
    [
        ("aaabbc", 4, "abca"),
        ("aaabbc", None, "abcaba"),
        ("aaabbc", 0, ""),
        ("aaabbc", 99, "abcaba"),
        ("", 3, ""),
        ("bba", 2, "ba"),  # groups in order of first appearance
    ],
)
def test_round_robin(items, limit, expected):
    assert "".join(round_robin(list(items), lambda x: x, limit)) == expected


def test_round_robin_keeps_file_order_within_a_group():
    rows = [("x", 1), ("x", 2), ("y", 3), ("x", 4)]
    assert round_robin(rows, lambda r: r[0], 3) == [("x", 1), ("y", 3), ("x", 2)]


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini-select")
    generate_mini_set(out, seed=0, size="small")
    return out


def test_mini_set_face_records_cover_every_explicit_label(mini):
    rows = [json.loads(x) for x in (mini / "scene_tuning" / "face.jsonl").read_text().splitlines()]
    train = Counter(r["text"] for r in rows if r["split"] == "train")
    assert set(train) == set(FACE_DESCRIPTIONS.values())
    assert max(train.values()) - min(train.values()) <= 1


@pytest.mark.parametrize("scene", ["face", "action", "background"])
@pytest.mark.parametrize("limit", [3, 4, 12])
def test_read_scene_records_limit_takes_each_description_in_turn(mini, scene, limit):
    rows = [json.loads(x) for x in (mini / "scene_tuning" / f"{scene}.jsonl").read_text().splitlines()]
    kinds = {r["text"] for r in rows if r["split"] == "train"}
    picked = read_scene_records(mini / "scene_tuning", [scene], "train", max_per_scene=limit)
    counts = Counter(row["text"] for _, row in picked)
    assert len(picked) == limit
    assert len(counts) == min(limit, len(kinds))  # as many descriptions as the limit allows
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(Path(row["video"] or row["image"]).is_absolute() for _, row in picked)


def test_read_scene_records_without_limit_reads_every_train_record(mini):
    rows = [json.loads(x) for x in (mini / "scene_tuning" / "face.jsonl").read_text().splitlines()]
    picked = read_scene_records(mini / "scene_tuning", ["face"], "train")
    assert sorted(r["id"] for _, r in picked) == sorted(r["id"] for r in rows if r["split"] == "train")

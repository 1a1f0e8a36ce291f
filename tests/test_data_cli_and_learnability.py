"""``python -m datasets_scripts`` and the claim the mini set is built for: a tiny model can learn its labels and
timing (slow: the demo-size set and a linear classifier)."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from datasets_scripts.__main__ import main
from datasets_scripts.builders import OmniSila
from datasets_scripts.mini_set import FPS, load_mini_split, read_video_frames


def test_cli_mini_validate_export(tmp_path, capsys):
    assert main(["mini", str(tmp_path / "mini"), "--size", "tiny", "--seed", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["num_clips"] == 30
    assert main(["validate", str(tmp_path / "mini" / "implicit.jsonl")]) == 0
    assert main(["validate", str(tmp_path / "mini" / "scene_tuning" / "object.jsonl"), "--scene"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert main(["validate", str(bad)]) == 1
    assert "bad.jsonl:1: field 'video'" in capsys.readouterr().out
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "mini"), str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    implicit = datasets.load_dataset(str(out), "implicit", cache_dir=str(tmp_path / "load"))
    assert implicit["train"][0]["video"].startswith("videos/implicit/")
    scene = datasets.load_dataset(str(out), "scene_object", cache_dir=str(tmp_path / "load"))
    assert scene["train"][0]["instruction"] == "Please describe the image region."


@pytest.mark.parametrize("args, message", [
    (["--size", "large"], "mini set size must be one of ['tiny', 'small', 'default'], got 'large'"),
    (["--seed", "-1"], "mini set seed must be an integer in [0, 2**32), got -1"),
])  # fmt: skip
def test_cli_mini_names_a_bad_size_or_seed_in_one_line(tmp_path, capsys, args, message):
    assert main(["mini", str(tmp_path / "mini"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mini" / "mini_set.json").exists()


def test_video_feature_option(tmp_path):
    main(["mini", str(tmp_path / "mini"), "--size", "tiny"])
    builder = OmniSila(cache_dir=str(tmp_path / "c"), config_name="explicit", data_dir=str(tmp_path / "mini"),
                       video_feature="video")  # fmt: skip
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert isinstance(ds["train"].features["video"], datasets.Video)
    with pytest.raises(ValueError, match="video_feature"):
        OmniSila(cache_dir=str(tmp_path / "c"), config_name="explicit", data_dir=str(tmp_path / "mini"),
                 video_feature="frames").download_and_prepare()  # fmt: skip


def _frame_features(frames: np.ndarray) -> np.ndarray:
    """A generic per-frame descriptor: log counts of a 4×4×4 RGB histogram (no knowledge of the event colours)."""
    q = (frames // 64).astype(np.int64)
    index = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    return np.log1p(np.stack([np.bincount(i.ravel(), minlength=64) for i in index]).astype(np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("config, whole", [("implicit", "Normal"), ("explicit", "neutral")])
def test_a_linear_model_learns_label_and_timing_of_the_demo_set(tmp_path_factory, config, whole):
    from sklearn.linear_model import LogisticRegression

    from datasets_scripts.mini_set import generate_mini_set

    root = tmp_path_factory.getbasetemp() / "mini-default"
    if not (root / "mini_set.json").exists():
        generate_mini_set(root, seed=0, size="default")
    data = {}
    for split in ("train", "test"):
        rows = []
        for record in load_mini_split(root, config, split):
            frames, times = read_video_frames(record.video)
            inside = np.array([any(s <= t < e for s, e in record.segments) for t in times])
            target = np.where(inside & (record.label != whole), record.label, "none")
            rows.append((record, _frame_features(frames), target))
        data[split] = rows
    x = np.concatenate([f for _, f, _ in data["train"]])
    y = np.concatenate([t for _, _, t in data["train"]])
    classifier = LogisticRegression(max_iter=2000, C=10).fit(x, y)
    correct, ious = 0, []
    for record, features, target in data["test"]:
        predicted = classifier.predict(features)
        events = [p for p in predicted if p != "none"]
        label = max(set(events), key=events.count) if events else whole
        correct += label == record.label
        if record.label != whole:
            a, b = predicted != "none", target != "none"
            ious.append((a & b).sum() / (a | b).sum())
    accuracy = correct / len(data["test"])
    assert accuracy >= 0.9, accuracy
    assert np.mean(ious) >= 0.9, np.mean(ious)
    assert len(data["test"][0][1]) == data["test"][0][0].duration * FPS

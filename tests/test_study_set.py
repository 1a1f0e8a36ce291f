"""The scene-dependence study set (``generate_study_set``): its layout and conflict clips, a video tower that cannot
see any cue (exactly: its input does not change when the side panels are blanked), bad arguments named, and (slow)
the probes of ``trainers.study`` on the held-out split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datasets_scripts.mini_set import (
    CONFLICT_EVENTS,
    FRAME_SIZE,
    STUDY_GUTTER,
    STUDY_WIDTH,
    conflict_clip_ids,
    generate_mini_set,
    generate_study_set,
    mini_set_corpus,
    read_video_frames,
)
from datasets_scripts.schema import read_annotations
from trainers.presets import tiny_processor


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, generate_study_set(out, seed=0, size="tiny")


def _records(out, config):
    records, report = read_annotations(out / f"{config}.jsonl", strict=True, config=config)
    assert not report
    return records


def test_layout_manifest_and_conflict_clips(study):
    out, manifest = study
    assert manifest["variant"] == "study" and manifest["name"] == "omnisila-study"
    assert manifest["frame_size"] == [FRAME_SIZE, STUDY_WIDTH]
    explicit = _records(out, "explicit")
    conflicts = [r for r in explicit if r.id.endswith("-conflict")]
    assert sorted(r.id for r in conflicts) == manifest["conflict_clips"] == sorted(conflict_clip_ids(out))
    assert conflicts and all(r.label == "negative" for r in conflicts)
    assert {r.split for r in conflicts} == {"train", "test"}
    assert all(any(event.lower() in r.cause for event in ("fight", "rob", "falls", "paint")) for r in conflicts)
    # balanced labels: the majority class is chance
    for split in ("train", "test"):
        counts = manifest["clips"]["explicit"][split]
        assert len(set(counts.values())) == 1
    assert "smiles" in " ".join(mini_set_corpus("study")) and "smiles" not in " ".join(mini_set_corpus())
    # the face scene-tuning items never come from a conflict clip (its face does not show its label)
    faces = [json.loads(line) for line in (out / "scene_tuning" / "face.jsonl").read_text().splitlines()]
    assert faces and not any(item["source_id"].endswith("-conflict") for item in faces)
    assert conflict_clip_ids(out / "nowhere") == set()


def test_cues_lie_in_one_side_panel_and_a_conflict_clip_shows_its_event_in_the_other(study):
    out, _ = study
    centre = slice(FRAME_SIZE, FRAME_SIZE + 2 * STUDY_GUTTER + FRAME_SIZE)
    for record in _records(out, "implicit"):
        if record.label != "Fighting":
            continue
        frames, times = read_video_frames(record.video)
        start, end = record.segments[0]
        inside = frames[(times >= start) & (times < end)].astype(int)
        red = (inside[..., 0] > 180) & (inside[..., 1] < 80) & (inside[..., 2] < 80)
        assert red[:, :, centre].sum() == 0 and red.sum() > 100  # the fighters: in a side panel only
    conflict = next(r for r in _records(out, "explicit") if r.id.endswith("-conflict"))
    frames, times = read_video_frames(conflict.video)
    start, end = conflict.segments[0]
    inside = frames[(times >= start) & (times < end)].astype(int)
    vivid = (inside.max(-1) - inside.min(-1)) > 120  # a saturated event colour (the grey backgrounds never are)
    assert vivid[:, :, centre].sum() == 0 and vivid.sum() > 50
    outside = frames[(times < start) | (times >= end)].astype(int)
    assert ((outside.max(-1) - outside.min(-1)) > 120).sum() == 0  # the event only in the conflict's seconds
    assert conflict.cause.split()[0] == "although" and len(CONFLICT_EVENTS) == 4


def test_the_video_tower_input_does_not_change_when_the_side_panels_are_blanked(study):
    """Video-LLaVA's processor resizes the short side and crops the centre: the side panels never reach the tower."""
    out, _ = study
    processor = tiny_processor(_tokenizer()).video_processor
    checked = 0
    for config in ("explicit", "implicit"):
        for record in _records(out, config)[:6]:
            frames, _ = read_video_frames(record.video)
            frames = frames[:: max(1, len(frames) // 8)][:8]
            blanked = frames.copy()
            blanked[:, :, :FRAME_SIZE] = 0
            blanked[:, :, -FRAME_SIZE:] = 255
            a = processor(videos=[list(frames)], return_tensors="pt")["pixel_values_videos"]
            b = processor(videos=[list(blanked)], return_tensors="pt")["pixel_values_videos"]
            assert a.shape[-2:] == (32, 32)
            assert torch.equal(a, b), record.id
            checked += 1
    assert checked == 12


def _tokenizer():
    from trainers.presets import build_tiny_tokenizer

    return build_tiny_tokenizer()


def test_the_mini_set_is_unchanged_by_the_variant(tmp_path):
    a = generate_mini_set(tmp_path / "a", seed=0, size="tiny")
    b = generate_mini_set(tmp_path / "b", seed=0, size="tiny", variant="mini")
    assert a["variant"] == b["variant"] == "mini" and "conflict_clips" not in a and a["frame_size"] == FRAME_SIZE
    frames_a, _ = read_video_frames(next((tmp_path / "a" / "videos" / "implicit").glob("*.mp4")))
    frames_b, _ = read_video_frames(next((tmp_path / "b" / "videos" / "implicit").glob("*.mp4")))
    assert frames_a.shape[1:] == (FRAME_SIZE, FRAME_SIZE, 3) and np.array_equal(frames_a, frames_b)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": "huge"}, "study set size must be one of"),
    ({"seed": -1}, "study set seed must be an integer in"),
    ({"seed": 2**32}, "study set seed must be an integer in"),
    ({"seed": "0"}, "study set seed must be an integer in"),
    ({"seed": True}, "study set seed must be an integer in"),
])  # fmt: skip
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_study_set(tmp_path, **kwargs)
    with pytest.raises(ValueError, match="variant must be one of"):
        generate_mini_set(tmp_path, variant="big")
    with pytest.raises(ValueError, match="mini set size must be one of"):  # "large" is the study variant's only
        generate_mini_set(tmp_path, size="large")


def test_cli_writes_the_study_set(tmp_path, capsys):
    from icm_cli.main import main

    assert main(["data", "study", "--out", str(tmp_path), "--size", "tiny"]) == 0
    assert "study set (tiny, seed 0)" in capsys.readouterr().out
    assert json.loads((tmp_path / "mini_set.json").read_text())["variant"] == "study"
    assert main(["data", "study", "--out", str(tmp_path), "--seed", "-3"]) == 2
    assert "seed must be an integer" in capsys.readouterr().err


def _tiny_probes(folder, size: str, configs=("explicit", "implicit"), tower: bool = True) -> dict:
    """``trainers.study.study_probes`` on a study set of ``size`` generated into ``folder`` (seed 0), with the tiny
    scene pipeline and (``tower``) the tiny video tower, on one thread."""
    from processing.pipeline import ScenePipeline
    from trainers.study import study_probes, tiny_video_tower

    torch.set_num_threads(1)
    generate_study_set(folder, seed=0, size=size)
    processor, video_tower = tiny_video_tower() if tower else (None, None)
    return study_probes(folder, ScenePipeline.tiny(seed=0), processor, video_tower, configs=configs)


@pytest.mark.slow
def test_probes_scene_features_read_the_label_and_the_video_tower_does_not(tmp_path):
    """On the small study set's held-out clips with the tiny scene pipeline: each tower view (pixels, colour
    histogram, tower tokens) within chance + 0.15; the scene features well above every tower view. (Measured with
    the study probes' pooling: all scenes 0.889 explicit, 0.542 implicit; docs/study-set.md.)"""
    found = _tiny_probes(tmp_path, "small")
    for config, probes in found.items():
        chance = probes["chance"]
        towers = [probes["tower_pixels"], probes["tower_histogram"], probes["tower_tokens"]]
        assert max(towers) <= chance + 0.15, (config, probes)
        assert probes["scene"]["all"] >= max(towers) + 0.3, (config, probes)
    assert found["explicit"]["scene"]["face"] >= found["explicit"]["scene"]["object"] + 0.15
    assert found["implicit"]["scene"]["action"] >= found["implicit"]["scene"]["face"] + 0.3


@pytest.mark.slow
def test_at_the_default_size_the_explicit_scene_probe_reaches_085(tmp_path):
    """The ``default`` study set (24 / 8 explicit, 16 / 4 implicit clips per label), tiny scene pipeline: the
    explicit labels are read from the scene features at >= 0.85 (measured 1.000 with the study probes' pooling, 0.917
    with the mean and the max alone) and the action scene carries the implicit events far above chance and above the
    face scene (measured 0.708 against chance 0.083; the set's 0.85 is reached at ``large`` only: docs/study-set.md).
    The tower views stay within chance + 0.15."""
    found = _tiny_probes(tmp_path, "default")
    assert found["explicit"]["eval_clips"] == 24 and found["implicit"]["eval_clips"] == 48
    assert found["explicit"]["scene"]["all"] >= 0.85, found["explicit"]
    implicit = found["implicit"]
    assert implicit["scene"]["action"] >= implicit["chance"] + 0.5, implicit
    assert implicit["scene"]["action"] >= implicit["scene"]["face"] + 0.5, implicit
    for probes in found.values():
        assert max(probes["tower_pixels"], probes["tower_histogram"], probes["tower_tokens"]) <= probes["chance"] + 0.15


@pytest.mark.slow
def test_at_the_large_size_the_scene_probe_reaches_085_on_both_configs(tmp_path):
    """The ``large`` study set (64 / 8 implicit, 48 / 16 explicit clips per label), tiny scene pipeline, each scene
    pooled by its mean, max, min and std over the frames (the study probes' pooling): both configs' labels are read
    from the scene features at >= 0.85 (measured: implicit 0.927, the action scene alone 0.896; explicit 0.896; the
    same on the set of seed 1, never looked at before: 0.896 and 0.917, docs/study-set.md, H-P). With the mean and the
    max alone the explicit probe reads 0.771: the min and the std keep which way the face changed. The tower views
    stay within chance + 0.15."""
    found = _tiny_probes(tmp_path, "large")
    implicit, explicit = found["implicit"], found["explicit"]
    assert implicit["train_clips"] == 768 and implicit["eval_clips"] == 96
    assert explicit["train_clips"] == 144 and explicit["eval_clips"] == 48
    for probes in found.values():
        assert probes["scene"]["all"] >= 0.85, probes
        assert max(probes["tower_pixels"], probes["tower_histogram"], probes["tower_tokens"]) <= probes["chance"] + 0.15
    assert implicit["scene"]["action"] >= implicit["scene"]["face"] + 0.5, implicit

"""The OmniSila and SceneTuning builders (rows, features, the paper's wording) and the Parquet + card export."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from datasets_scripts.builders import TASKS, OmniSila, SceneTuning
from datasets_scripts.export import export_parquet
from datasets_scripts.frames import sample_frames
from datasets_scripts.mini_set import generate_mini_set, mini_set_corpus, write_video
from modeling_icm.templates import LABELS, SCENE_NAMES


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini")
    generate_mini_set(out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="module")
def paper_dir(tmp_path_factory) -> Path:
    """Two hand-written clips whose answers the paper spells out (§4.1: "from 4s to 18s")."""
    root = tmp_path_factory.mktemp("paper")
    write_video(root / "v.mp4", np.zeros((4, 64, 64, 3), dtype=np.uint8))
    rows = [
        {"id": "c1", "video": "v.mp4", "duration": 30, "fps": 25, "split": "train", "config": "implicit",
         "label": "Traffic Accidents", "segments": [[4, 18]], "cause": "a car hits a pedestrian",
         "source": "cuva", "source_id": "00041"},
        {"id": "c2", "video": "v.mp4", "duration": 30, "fps": 25, "split": "test", "config": "implicit",
         "label": "Fire", "segments": [[4, 18], [25, 30]], "cause": "flames rise.", "source": "cuva",
         "source_id": "00042"},
    ]  # fmt: skip
    (root / "implicit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _build(cls, cache: Path, **kwargs) -> datasets.DatasetDict:
    builder = cls(cache_dir=str(cache), **kwargs)
    builder.download_and_prepare()
    return builder.as_dataset()


PREFIX = "You will be presented with a video. After watching the video"
PAPER_ROWS = [
    ("identify", f"{PREFIX}, please identify the implicit visual sentiments in the video.",
     "The implicit visual sentiment is Traffic Accidents."),
    ("locate", f"{PREFIX}, please locate the timestamp when the implicit visual sentiment Traffic Accidents happens "
     "in the video.", "The location of Traffic Accidents is from 4s to 18s."),
    ("attribute", f"{PREFIX}, please attribute the implicit visual sentiment Traffic Accidents considering facial "
     "expression, human action, object relations and visual backgrounds.", "The attribution is a car hits a pedestrian."),
    ("combined", f"{PREFIX}, please identify the implicit visual sentiments in the video, locate the timestamp when "
     "they happen, and attribute them considering facial expression, human action, object relations and visual "
     "backgrounds.", "The implicit visual sentiment is Traffic Accidents. The location of Traffic Accidents is from 4s "
     "to 18s. The attribution is a car hits a pedestrian."),
]  # fmt: skip


@pytest.mark.parametrize("task, instruction, answer", PAPER_ROWS, ids=[r[0] for r in PAPER_ROWS])
def test_omnisila_rows_use_the_papers_wording(paper_dir, tmp_path, task, instruction, answer):
    ds = _build(OmniSila, tmp_path, config_name="implicit", data_dir=str(paper_dir))
    assert set(ds) == {"train", "test"}
    row = next(r for r in ds["train"] if r["task"] == task)
    assert (row["instruction"], row["answer"]) == (instruction, answer)
    assert row["video"] == str((paper_dir / "v.mp4").resolve())
    assert ds["train"].features["label"].int2str(row["label"]) == "Traffic Accidents"
    assert row["segments"] == [[4.0, 18.0]] and row["duration"] == 30.0 and row["source_id"] == "00041"
    two = next(r for r in ds["test"] if r["task"] == "locate")
    assert two["answer"] == "The location of Fire is from 4s to 18s and from 25s to 30s."


@pytest.mark.parametrize("config", ["explicit", "implicit"])
def test_omnisila_on_mini_set_counts_features_and_corpus(mini, tmp_path, config):
    ds = _build(OmniSila, tmp_path, config_name=config, data_dir=str(mini))
    clips = [json.loads(x) for x in (mini / f"{config}.jsonl").read_text().splitlines()]
    per_split = {s: sum(c["split"] == s for c in clips) for s in ("train", "test")}
    assert {s: len(ds[s]) for s in ds} == {s: n * len(TASKS) for s, n in per_split.items()}
    features = ds["train"].features
    assert features["label"].names == list(LABELS[config])
    assert features["segments"] == datasets.List(datasets.List(datasets.Value("float64")))
    assert sorted(set(ds["train"]["task"])) == sorted(TASKS)
    assert sorted(set(ds["test"]["clip_id"])) == sorted(c["id"] for c in clips if c["split"] == "test")
    corpus = set(mini_set_corpus())
    for split in ds:
        assert set(ds[split]["instruction"]) <= corpus
        assert set(ds[split]["answer"]) <= corpus


def test_omnisila_tasks_option_and_cache_follows_edits(paper_dir, tmp_path):
    ds = _build(OmniSila, tmp_path, config_name="implicit", data_dir=str(paper_dir), tasks=("combined",))
    assert set(ds["train"]["task"]) == {"combined"} and len(ds["train"]) == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "v.mp4").write_bytes((paper_dir / "v.mp4").read_bytes())
    text = (paper_dir / "implicit.jsonl").read_text()
    (copy / "implicit.jsonl").write_text(text)
    first = _build(OmniSila, tmp_path, config_name="implicit", data_dir=str(copy))
    (copy / "implicit.jsonl").write_text(text.replace('"Fire"', '"Theft"'))
    second = _build(OmniSila, tmp_path, config_name="implicit", data_dir=str(copy))
    names = second["test"].features["label"].names
    assert names[first["test"][0]["label"]] == "Fire" and names[second["test"][0]["label"]] == "Theft"


def test_omnisila_strict_and_lenient_builders(paper_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "v.mp4").write_bytes((paper_dir / "v.mp4").read_bytes())
    lines = (paper_dir / "implicit.jsonl").read_text().splitlines()
    lines.insert(1, lines[0].replace('"c1"', '"c3"').replace("[[4, 18]]", "[[18, 4]]"))
    (bad / "implicit.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"implicit.jsonl:2: field 'segments\[0\]'"):
        _build(OmniSila, tmp_path / "strict", config_name="implicit", data_dir=str(bad))
    builder = OmniSila(cache_dir=str(tmp_path / "lenient"), config_name="implicit", data_dir=str(bad), lenient=True)
    builder.download_and_prepare()
    assert [(i.line, i.field) for i in builder.report.issues] == [(2, "segments[0]")]
    assert [(i.line, i.field) for i in builder.validate().issues] == [(2, "segments[0]")]
    assert sorted(set(builder.as_dataset()["train"]["clip_id"])) == ["c1"]
    with pytest.raises(ValueError, match="data_dir"):
        _build(OmniSila, tmp_path, config_name="implicit")


@pytest.mark.parametrize("scene", SCENE_NAMES)
def test_scene_tuning_builder(mini, tmp_path, scene):
    rate = 2.0
    ds = _build(SceneTuning, tmp_path, config_name=scene, data_dir=str(mini / "scene_tuning"), frame_rate=rate,
                max_frames_per_video=0)  # fmt: skip
    records = [json.loads(x) for x in (mini / "scene_tuning" / f"{scene}.jsonl").read_text().splitlines()]
    prompts = {"face": "Please describe the facial.", "action": "Please describe the action.",
               "object": "Please describe the image region.", "background": "Please describe the background."}  # fmt: skip
    rows = [r for split in ds for r in ds[split]]
    assert {r["instruction"] for r in rows} == {prompts[scene]}
    if scene in ("face", "action"):  # frames sampled from the videos at the configured rate
        expected = sum(int((r["end"] - r["start"]) * rate) for r in records)
        assert len(rows) == expected
        row = rows[0]
        src = next(r for r in records if r["id"] == row["id"].split("@")[0])
        frames, times = sample_frames(mini / "scene_tuning" / src["video"], rate, src["start"], src["end"])
        assert row["timestamp"] == times[0]
        np.testing.assert_array_equal(np.asarray(Image.open(row["image"])), frames[0])
    else:
        assert len(rows) == len(records) and all(Path(r["image"]).is_file() for r in rows)
    if scene == "object":
        box = rows[0]["box"]
        assert len(box) == 4 and f"<{box[0]:.2f},{box[1]:.2f},{box[2]:.2f},{box[3]:.2f}>" in rows[0]["answer"]


def test_export_parquet_reload_identical(mini, paper_dir, tmp_path):
    sets = {c: _build(OmniSila, tmp_path / "c", config_name=c, data_dir=str(mini)) for c in ("explicit", "implicit")}
    sets["paper"] = _build(OmniSila, tmp_path / "c", config_name="implicit", data_dir=str(paper_dir))
    out = tmp_path / "export"
    readme = export_parquet(sets, out, pretty_name="Omni-SILA mini", license="apache-2.0")
    header = readme.read_text().split("---")[1]
    assert "config_name: implicit" in header and "path: implicit/train-00000-of-00001.parquet" in header
    assert "license: apache-2.0" in header and "video-text-to-text" in header and "class_label" in header
    clips = len(set(sets["explicit"]["train"]["clip_id"]))  # the card counts clips and source videos per split
    assert f"| explicit | train | {clips:,} | {clips:,} | 52,000 |" in readme.read_text()
    for name, built in sets.items():
        loaded = datasets.load_dataset(str(out), name, cache_dir=str(tmp_path / "load"))
        assert set(loaded) == set(built)
        for split in built:
            assert loaded[split].features == built[split].features
            assert loaded[split].to_list() == built[split].to_list()


def test_export_scene_tuning_with_relative_media(mini, tmp_path):
    root = mini / "scene_tuning"
    built = _build(SceneTuning, tmp_path / "c", config_name="object", data_dir=str(root))
    out = tmp_path / "export"
    export_parquet({"object": built}, out, relative_to=root, task_categories=("image-to-text",))
    loaded = datasets.load_dataset(str(out), "object", cache_dir=str(tmp_path / "load"))
    assert loaded["train"]["image"][0] == "images/object-000.png"
    assert loaded["train"]["answer"] == built["train"]["answer"]


def test_export_dataset_is_self_contained_and_names_bad_input(mini, tmp_path):
    from datasets_scripts.export import DatasetExportError, export_dataset

    with pytest.raises(DatasetExportError, match="data folder not found: .*nowhere"):
        export_dataset(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetExportError, match="no explicit.jsonl or implicit.jsonl"):
        export_dataset(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DatasetExportError, match=r"explicit.jsonl: file not found \(config 'explicit'\)"):
        export_dataset(tmp_path / "empty", tmp_path / "out", configs=["explicit"])
    readme, counts = export_dataset(mini, tmp_path / "export", configs=["implicit"])
    assert readme == tmp_path / "export" / "README.md" and not (tmp_path / "export" / ".build-cache").exists()
    assert set(counts) == {"implicit", "scene_face", "scene_action", "scene_object", "scene_background"}
    built = datasets.load_dataset(str(tmp_path / "export"), "implicit", cache_dir=str(tmp_path / "load"))
    assert len(built["train"]) == counts["implicit"]["train"]
    video = built["train"][0]["video"]
    assert video.startswith("videos/implicit/") and (tmp_path / "export" / video).is_file()

"""Converters from the public sources, each on a small fixture written in the source's own format."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.builders import OmniSila, SceneTuning
from datasets_scripts.converters import (
    convert_cmu_mosei,
    convert_cuva,
    convert_humanml3d,
    convert_places365,
    convert_refcoco,
    convert_tsl300,
    load_refcoco_refs,
    parse_cuva_category,
    parse_cuva_timestamps,
    places365_scene_name,
)
from datasets_scripts.mini_set import write_video
from datasets_scripts.windows import WindowConfig


def _video(path: Path, seconds: int = 10, fps: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.full((seconds * fps, 32, 32, 3), 90, dtype=np.uint8), fps=fps)
    return path


def _build(cls, cache: Path, **kwargs):
    builder = cls(cache_dir=str(cache), **kwargs)
    builder.download_and_prepare()
    return builder.as_dataset()


def _issues(report) -> set[tuple[str, str]]:
    return {(issue.file[issue.file.index("[") + 1 : -1], issue.field) for issue in report.issues}


# ----------------------------------------------------------------------------------------------------------------
# TSL-300
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tsl300(tmp_path) -> Path:
    root = tmp_path / "VideoSenti"
    database = {
        "102_Ekman6_surprise_408": {"subset": "test", "annotations": [
            {"segment": ["56.12", "61.38"], "label": "p"}, {"segment": ["18.44", "31.199"], "label": "p"},
            {"segment": ["40", "45.5"], "label": "n"}]},
        "183_CMU_MOSEI_9cSJglGi9Pg": {"subset": "train", "annotations": [{"segment": ["35.832", "41.36"], "label": "n"}]},
        "quiet": {"subset": "train", "annotations": []},
        "bad_code": {"subset": "train", "annotations": [{"segment": ["1", "2"], "label": "x"}]},
        "inverted": {"subset": "train", "annotations": [{"segment": ["9", "3"], "label": "p"}]},
        "beyond": {"subset": "train", "annotations": [{"segment": ["1", "500"], "label": "p"}]},
        "no_fps": {"subset": "train", "annotations": []},
        "no_video": {"subset": "train", "annotations": [{"segment": ["1", "2"], "label": "n"}]},
    }  # fmt: skip
    fps = {vid: 30.0 for vid in database if vid != "no_fps"}
    durations = {vid: 151.6 for vid in database}
    root.mkdir()
    (root / "gt.json").write_text(json.dumps({"database": database}))
    (root / "fps_dict.json").write_text(json.dumps(fps))
    (root / "len_duration_dict.json").write_text(json.dumps(durations))
    for vid in database:
        if vid != "no_video":
            _video(root / "videos" / f"{vid}.mp4", seconds=1)
    return root


def test_tsl300_converter_windows_and_report(tsl300, tmp_path):
    out = tmp_path / "explicit" / "explicit.jsonl"
    (tsl300 / "videos" / "183_CMU_MOSEI_9cSJglGi9Pg.mp4").rename(tsl300 / "videos" / "183_CMU_MOSEI_9cSJglGi9Pg.mkv")
    _video(tsl300 / "videos" / "102_Ekman6_surprise_408.mov", seconds=1)
    windows, report = convert_tsl300(
        tsl300 / "gt.json", tsl300 / "fps_dict.json", tsl300 / "len_duration_dict.json", tsl300 / "videos", out,
        causes={"102_Ekman6_surprise_408": {"positive": "a surprised smiling face"}},
        window_config=WindowConfig(window=20.0, stride=1.0),
    )  # fmt: skip
    # 151.6 s sources, one window per started second; "beyond" keeps its video, only the overlong segment goes
    assert [s.source_id for s in windows.sources] == ["102_Ekman6_surprise_408", "183_CMU_MOSEI_9cSJglGi9Pg"]
    assert windows.counts() == {"test": 151, "train": 151} and report.kept == 302
    by_id = {r.id: r for r in windows}
    assert Path(by_id["183_CMU_MOSEI_9cSJglGi9Pg@0s"].video).suffix == ".mkv"
    w = by_id["102_Ekman6_surprise_408@15s"]  # [15, 35): positive 18.44-31.199 covers most
    assert (w.label, w.segments, w.offset, w.duration) == ("positive", [[3.44, 16.199]], 15.0, 20.0)
    assert w.cause == "a surprised smiling face" and w.split == "test" and w.source_id == "102_Ekman6_surprise_408"
    w = by_id["102_Ekman6_surprise_408@38s"]  # [38, 58): negative 40-45.5 (5.5 s) vs positive 56.12-58 (1.88 s)
    assert (w.label, w.segments) == ("negative", [[2.0, 7.5]])
    assert (by_id["102_Ekman6_surprise_408@140s"].label, by_id["102_Ekman6_surprise_408@140s"].segments) == (
        "neutral", [[0.0, 11.6]])  # fmt: skip
    assert _issues(report) == {
        ("quiet", "annotations"),
        ("bad_code", "annotations[0].label"),
        ("inverted", "annotations[0].segment"),
        ("inverted", "annotations"),
        ("beyond", "annotations[0].segment"),
        ("beyond", "annotations"),
        ("no_fps", "fps"),
        ("no_video", "video"),
    }
    multi = [w for w in report.warnings if w.field == "video"]
    assert len(multi) == 1 and "took 102_Ekman6_surprise_408.mp4" in multi[0].reason
    ds = _build(OmniSila, tmp_path / "cache", config_name="explicit", data_dir=str(out.parent))
    locate = next(r for r in ds["test"] if r["task"] == "locate" and r["clip_id"] == "102_Ekman6_surprise_408@15s")
    assert locate["answer"] == "The location of positive is from 3.44s to 16.2s." and locate["offset"] == 15.0
    assert len(ds["train"]) == 4 * 151 and len(ds["test"]) == 4 * 151


def test_tsl300_overshoot_is_clamped_or_drops_the_segment_only(tmp_path):
    database = {"v": {"subset": "train", "annotations": [
        {"segment": ["1", "10.05"], "label": "p"}, {"segment": ["2", "3"], "label": "n"}]},
        "w": {"subset": "train", "annotations": [
        {"segment": ["1", "2"], "label": "p"}, {"segment": ["5", "11"], "label": "n"}]}}  # fmt: skip
    for name, data in (("gt.json", {"database": database}), ("fps.json", {"v": 30, "w": 30}),
                       ("len.json", {"v": 10.0, "w": 10.0})):  # fmt: skip
        (tmp_path / name).write_text(json.dumps(data))
    windows, report = convert_tsl300(
        tmp_path / "gt.json", tmp_path / "fps.json", tmp_path / "len.json", tmp_path, check_video=False,
        window_config=WindowConfig(window=10, stride=5),
    )  # fmt: skip
    records = {r.id: r for r in windows}
    assert (records["v@0s"].label, records["v@0s"].segments) == ("positive", [[1.0, 10.0]])  # 1.5 frames: clamped
    assert (records["w@0s"].label, records["w@0s"].segments) == ("positive", [[1.0, 2.0]])  # 30 frames: dropped
    assert [(w.file.split("[")[-1], w.field) for w in report.warnings] == [("v]", "annotations[0].segment")]
    assert [(i.file.split("[")[-1], i.field) for i in report.issues] == [("w]", "annotations[1].segment")]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"window": 0}, "window must be a positive"), ({"stride": -1}, "stride must be a positive"),
     ({"stride": float("nan")}, "stride"), ({"label_rule": "vote"}, "label_rule")],
)  # fmt: skip
def test_window_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WindowConfig(**kwargs)


def test_tsl300_rejects_a_non_activitynet_file(tsl300):
    (tsl300 / "gt.json").write_text(json.dumps({"videos": {}}))
    with pytest.raises(ValueError, match="database"):
        convert_tsl300(tsl300 / "gt.json", tsl300 / "fps_dict.json", tsl300 / "len_duration_dict.json", tsl300)
    (tsl300 / "gt.json").write_text("{")
    with pytest.raises(ValueError, match="gt.json: line 1: malformed JSON"):
        convert_tsl300(tsl300 / "gt.json", tsl300 / "fps_dict.json", tsl300 / "len_duration_dict.json", tsl300)


# ----------------------------------------------------------------------------------------------------------------
# CUVA
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ([[1, 4], [6, 8]], [[1.0, 4.0], [6.0, 8.0]]),
        ([2, 5], [[2.0, 5.0]]),
        (["18.44", "31.2"], [[18.44, 31.2]]),
        ("[0012, 0035]", [[12.0, 35.0]]),
        ("12s-35s", [[12.0, 35.0]]),
        ("00:12-01:05", [[12.0, 65.0]]),
        ("1-2, 5-8", [[1.0, 2.0], [5.0, 8.0]]),
    ],
)
def test_cuva_timestamp_spellings(value, expected):
    assert parse_cuva_timestamps(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [(5, "Traffic Accidents"), ("[8]", "Pedestrian Incidents"), ("10. Traffic Violations", "Traffic Violations"),
     ("fire", "Fire"), (["Theft"], "Theft"), ("normal", "Normal"), ("Explosion", None), (12, None), (True, None)],
)  # fmt: skip
def test_cuva_category_spellings(value, expected):
    assert parse_cuva_category(value) == expected


@pytest.fixture
def cuva(tmp_path) -> Path:
    root = tmp_path / "cuva"
    for name in ("00041", "00042", "00043", "00044", "00045"):
        _video(root / "videos" / f"{name}.mp4", seconds=10)
    return root


def test_cuva_per_video_records(cuva, tmp_path):
    annotations = [
        {"video_name": "00041.mp4", "category": "Traffic Accidents", "timestamps": [[1, 4]],
         "cause": "A car suddenly changed lanes and hit the car in front.", "description": "Two cars collide."},
        {"video_name": "00042", "category": 9, "timestamps": "[0002, 0006]", "description": "A kitchen catches fire."},
        {"video_name": "00043", "category": "Explosion", "timestamps": [[1, 2]]},
        {"video_name": "00044", "category": 1, "timestamps": "[0002, 0012]"},
        {"video_name": "00045", "category": "normal", "split": "test"},
        {"video_name": "missing", "category": 1, "timestamps": [[1, 2]]},
        {"category": 1},
    ]  # fmt: skip
    (cuva / "cuva.json").write_text(json.dumps(annotations))
    (cuva / "videos" / "00042.mp4").rename(cuva / "videos" / "00042.avi")
    windows, report = convert_cuva(
        cuva / "cuva.json", cuva / "videos", tmp_path / "out" / "implicit.jsonl",
        window_config=WindowConfig(window=4, stride=1),
    )  # fmt: skip
    assert [s.source_id for s in windows.sources] == ["00041", "00042", "00045"]
    by_id = {r.id: r for r in windows}
    assert len(by_id) == 30 and windows.counts() == {"train": 20, "test": 10}
    assert (by_id["00041@0s"].label, by_id["00041@0s"].segments) == ("Traffic Accidents", [[1.0, 4.0]])
    assert by_id["00041@0s"].cause.startswith("A car suddenly")
    assert (by_id["00041@5s"].label, by_id["00041@5s"].segments, by_id["00041@5s"].cause) == (
        "Normal", [[0.0, 4.0]], "")  # fmt: skip
    assert by_id["00042@3s"].cause == "A kitchen catches fire." and by_id["00042@3s"].segments == [[0.0, 3.0]]
    assert by_id["00042@3s"].video.endswith("00042.avi") and by_id["00042@3s"].fps == 4.0
    assert by_id["00045@0s"].label == "Normal" and by_id["00045@0s"].split == "test"
    assert _issues(report) == {
        ("[2]:00043", "category"), ("[3]:00044", "segments[0]"), ("[3]:00044", "timestamps"),
        ("[5]:missing", "video"), ("[6]", "video_name"),
    }  # fmt: skip
    ds = _build(OmniSila, tmp_path / "cache", config_name="implicit", data_dir=str(tmp_path / "out"))
    attribute = next(r for r in ds["train"] if r["task"] == "attribute" and r["clip_id"] == "00041@0s")
    assert attribute["answer"] == "The attribution is A car suddenly changed lanes and hit the car in front."


def test_cuva_qa_rows_keyed_layout_and_given_durations(cuva, tmp_path):
    rows = [
        {"video_name": "00041.mp4", "task": "Classification", "instruction": "...", "answer": "[5]"},
        {"video_name": "00041.mp4", "task": "Timestamp", "instruction": "...", "answer": "[0001, 0004]"},
        {"video_name": "00041.mp4", "task": "Cause", "instruction": "...", "answer": "The car ran a red light."},
        {"video_name": "00042.mp4", "task": "Classification", "instruction": "...", "answer": "[3]"},
        {"video_name": "00042.mp4", "task": "Timestamp", "instruction": "...", "answer": "no idea"},
    ]
    (cuva / "qa.json").write_text(json.dumps(rows))
    windows, report = convert_cuva(cuva / "qa.json", cuva / "videos", split={"00041": "test"},
                                   window_config=WindowConfig(window=20))  # fmt: skip
    first = next(iter(windows))
    assert (first.id, first.label, first.segments, first.cause, first.split) == (
        "00041@0s", "Traffic Accidents", [[1.0, 4.0]], "The car ran a red light.", "test")  # fmt: skip
    assert _issues(report) == {("00042.mp4", "timestamps")}
    assert [w.field for w in report.warnings] == ["window"]  # the 20-s window is longer than the 10-s video
    keyed = {"00043": {"class": "Robbery", "timestamp": "1-3", "Cause": "A man grabs a bag."}}
    (cuva / "keyed.json").write_text(json.dumps(keyed))
    windows, report = convert_cuva(cuva / "keyed.json", cuva / "videos", durations={"00043": 30.0}, fps={"00043": 25},
                                   window_config=WindowConfig(window=10, stride=10))  # fmt: skip
    assert [(r.label, r.duration, r.fps, r.segments) for r in windows] == [
        ("Robbery", 10.0, 25.0, [[1.0, 3.0]]), ("Normal", 10.0, 25.0, [[0.0, 10.0]]),
        ("Normal", 10.0, 25.0, [[0.0, 10.0]])]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Scene-tuning sources
# ----------------------------------------------------------------------------------------------------------------


def test_cmu_mosei_label_csv_to_face_records(tmp_path):
    raw = tmp_path / "Raw"
    rows = [
        ("-3g5yACwYnA", "1", "i loved it", "2.4", "Positive", "train"),
        ("-3g5yACwYnA", "2", "it was awful", "-1.8", "Negative", "valid"),
        ("zhpQhgha_KU", "3", "okay", "0.2", "Neutral", "test"),
        ("zhpQhgha_KU", "4", "bad", "n/a", "Negative", "train"),
        ("zhpQhgha_KU", "5", "fine", "1.0", "Positive", "dev"),
        ("missing", "6", "hm", "1.0", "Positive", "train"),
    ]
    for video_id, clip_id, *_ in rows:
        if video_id != "missing":
            _video(raw / video_id / f"{clip_id}.mp4", seconds=2)
    with (tmp_path / "label.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        writer.writerows(rows)
    out = tmp_path / "scene" / "face.jsonl"
    records, report = convert_cmu_mosei(tmp_path / "label.csv", raw, out)
    assert [(r.id, r.text, r.split) for r in records] == [
        ("mosei--3g5yACwYnA-1", "A person with a happy face.", "train"),
        ("mosei--3g5yACwYnA-2", "A person with a sad face.", "validation"),
        ("mosei-zhpQhgha_KU-3", "A person with a calm face.", "test"),
    ]
    assert {(i.field, i.line) for i in report.issues} == {("label", 5), ("mode", 6), ("video", 7)}
    ds = _build(SceneTuning, tmp_path / "cache", config_name="face", data_dir=str(out.parent), frame_rate=1.0)
    assert len(ds["train"]) == 2 and ds["train"]["timestamp"] == [0.0, 1.0]
    assert ds["train"][0]["instruction"] == "Please describe the facial."


def test_humanml3d_texts_to_action_records(tmp_path):
    root = tmp_path / "HumanML3D"
    (root / "texts").mkdir(parents=True)
    (root / "train.txt").write_text("000001\n000002\n")
    (root / "test.txt").write_text("000003\n")
    (root / "texts" / "000001.txt").write_text(
        "a person waves his hand.#a/DET person/NOUN wave/VERB his/DET hand/NOUN#0.0#0.0\n"
        "the man walks forward#the/DET man/NOUN walk/VERB forward/ADV#1.0#2.5\n"
        "broken line without tags\n"
    )
    (root / "texts" / "000003.txt").write_text("someone jumps#someone/PRON jump/VERB#x#y\n")
    for motion in ("000001", "000003"):
        _video(tmp_path / "renders" / f"{motion}.mp4", seconds=3)
    records, report = convert_humanml3d(root, tmp_path / "renders", tmp_path / "scene" / "action.jsonl")
    assert [(r.text, r.start, r.end, r.split) for r in records] == [
        ("A person waves his hand.", None, None, "train"),
        ("The man walks forward.", 1.0, 2.5, "train"),
    ]
    assert {(i.field, i.line) for i in report.issues} == {("caption", 3), ("texts", 0), ("from/to", 1)}
    ds = _build(SceneTuning, tmp_path / "cache", config_name="action", data_dir=str(tmp_path / "scene"), frame_rate=2.0)
    assert sorted(ds["train"]["timestamp"]) == [0.0, 0.5, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0, 2.5]


def _coco(tmp_path) -> tuple[Path, Path]:
    images = tmp_path / "train2014"
    images.mkdir()
    (images / "COCO_train2014_000000000001.jpg").write_bytes(b"jpg")
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 100, "height": 50}],
        "annotations": [{"id": 7, "image_id": 1, "bbox": [10, 10, 40, 35], "category_id": 18},
                        {"id": 8, "image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 1}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
    }  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return images, tmp_path / "instances.json"


def test_refcoco_refs_to_object_records_with_box(tmp_path):
    images, instances = _coco(tmp_path)
    refs = [
        {"ref_id": 0, "ann_id": 7, "image_id": 1, "split": "train", "sentences": [{"sent": "dog on the grass"}]},
        {"ref_id": 1, "ann_id": 8, "image_id": 1, "split": "val", "sentences": [{"sent": "left guy"}]},
        {"ref_id": 2, "ann_id": 99, "image_id": 1, "split": "train", "sentences": [{"sent": "ghost"}]},
        {"ref_id": 3, "ann_id": 7, "image_id": 1, "split": "train", "sentences": []},
    ]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs))
    out = tmp_path / "scene" / "object.jsonl"
    records, report = convert_refcoco(tmp_path / "refs(unc).p", instances, images, out)
    assert [(r.text, r.box, r.split) for r in records] == [
        ("A dog <0.10,0.20,0.50,0.90> on the grass.", [0.1, 0.2, 0.5, 0.9], "train"),
        ("A person <0.00,0.00,0.10,0.20> left guy.", [0.0, 0.0, 0.1, 0.2], "validation"),
    ]
    assert _issues(report) == {("ref 2", "ann_id"), ("ref 3", "sentences")}
    ds = _build(SceneTuning, tmp_path / "cache", config_name="object", data_dir=str(out.parent))
    assert ds["train"][0]["answer"] == "A dog <0.10,0.20,0.50,0.90> on the grass."
    assert ds["train"][0]["instruction"] == "Please describe the image region."


def test_refcoco_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_refcoco_refs(tmp_path / "evil.p")


@pytest.mark.parametrize(
    "category, name",
    [("/a/airfield", "airfield"), ("/b/bamboo_forest", "bamboo forest"),
     ("/a/apartment_building/outdoor", "outdoor apartment building")],
)  # fmt: skip
def test_places365_scene_names(category, name):
    assert places365_scene_name(category) == name


def test_places365_list_to_background_records(tmp_path):
    (tmp_path / "categories_places365.txt").write_text(
        "/a/airfield 0\n/b/bamboo_forest 1\n/a/apartment_building/outdoor 2\n"
    )
    (tmp_path / "list.txt").write_text(
        "/a/airfield/00000001.jpg 0\n/b/bamboo_forest/00000002.jpg 1\n/x/none.jpg 9\nbroken\n"
        "/a/apartment_building/outdoor/00000003.jpg 2\n"
    )
    for rel in ("a/airfield/00000001.jpg", "b/bamboo_forest/00000002.jpg"):
        (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / rel).write_bytes(b"jpg")
    records, report = convert_places365(
        tmp_path / "categories_places365.txt",
        tmp_path / "list.txt",
        tmp_path / "img",
        tmp_path / "s" / "background.jsonl",
    )
    assert [r.text for r in records] == ["An airfield.", "A bamboo forest."]
    assert {(i.field, i.line) for i in report.issues} == {("category", 3), ("<line>", 4), ("image", 5)}
    ds = _build(SceneTuning, tmp_path / "cache", config_name="background", data_dir=str(tmp_path / "s"))
    assert ds["train"]["answer"] == ["An airfield.", "A bamboo forest."]

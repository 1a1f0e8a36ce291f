"""The clip and scene-tuning annotation schemas: strict errors name file, line and field; lenient mode skips and
reports, losing nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.frames import sample_frames
from datasets_scripts.mini_set import write_video
from datasets_scripts.scene_schema import read_scene_annotations
from datasets_scripts.schema import ClipRecord, read_annotations, write_annotations


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("schema")
    frames = np.zeros((40, 64, 64, 3), dtype=np.uint8)
    frames[:, :, :, 0] = (np.arange(40) * 6)[:, None, None]  # frame i has red level 6 i
    write_video(root / "clip.mp4", frames)
    return root / "clip.mp4"


def _good(**overrides) -> dict:
    row = {
        "id": "a",
        "video": "clip.mp4",
        "duration": 10.0,
        "fps": 4,
        "split": "train",
        "config": "implicit",
        "label": "Fire",
        "segments": [[4, 8]],
        "cause": "flames",
        "source": "test",
        "source_id": "1",
    }
    row.update(overrides)
    return row


BAD_LINES = [
    ("missing video file", json.dumps(_good(id="b", video="nope.mp4")), "video", "does not exist"),
    ("end before start", json.dumps(_good(id="b", segments=[[5, 3]])), "segments[0]", "end < start"),
    ("beyond duration", json.dumps(_good(id="b", segments=[[5, 40]])), "segments[0]", "beyond the duration"),
    ("unknown label", json.dumps(_good(id="b", label="Explosion")), "label", "not an implicit label"),
    ("label of other config", json.dumps(_good(id="b", label="positive")), "label", "not an implicit label"),
    ("malformed json", '{"id": "b", "video": ', "<json>", "malformed JSON"),
    ("duplicate id", json.dumps(_good()), "id", "duplicate id"),
    ("missing field", json.dumps({k: v for k, v in _good(id="b").items() if k != "fps"}), "fps", "missing"),
    ("bad config", json.dumps(_good(id="b", config="other")), "config", "must be one of"),
    ("negative start", json.dumps(_good(id="b", segments=[[-1, 3]])), "segments[0]", "before 0"),
    ("not a pair", json.dumps(_good(id="b", segments=[[1, 2, 3]])), "segments[0]", "pair"),
    ("bad duration", json.dumps(_good(id="b", duration="long")), "duration", "number"),
    ("unknown field", json.dumps({**_good(id="b"), "colour": "red"}), "colour", "not a field"),
]


def _write(root: Path, lines: list[str]) -> Path:
    path = root / "annotations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name, line, field, reason", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_record_strict_raises_with_file_line_field(video, name, line, field, reason):
    path = _write(video.parent, [json.dumps(_good()), line, json.dumps(_good(id="c"))])
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: field '{field}'")) as err:
        read_annotations(path)
    assert reason in str(err.value)


@pytest.mark.parametrize("name, line, field, reason", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_record_lenient_skips_and_reports(video, name, line, field, reason):
    path = _write(video.parent, [json.dumps(_good()), line, json.dumps(_good(id="c"))])
    records, report = read_annotations(path, strict=False)
    assert [r.id for r in records] == ["a", "c"]
    assert report.kept == 2 and report.skipped == 1
    issue = report.issues[0]
    assert (issue.file, issue.line, issue.field) == (str(path), 2, field)
    assert reason in issue.reason and reason in report.summary()


def test_valid_record_is_normalised_and_round_trips(video, tmp_path):
    path = _write(video.parent, [json.dumps(_good(label="fire", segments=[["4.5", 10.02]]))])
    (record,), report = read_annotations(path)
    assert not report
    assert record.label == "Fire" and record.segments == [[4.5, 10.0]]
    assert Path(record.video) == video.resolve()
    out = write_annotations([record], tmp_path / "copy" / "a.jsonl")
    again, _ = read_annotations(out)
    assert again == [record]
    assert not Path(json.loads(out.read_text())["video"]).is_absolute()


def test_config_filter_and_missing_file(video, tmp_path):
    path = _write(video.parent, [json.dumps(_good()), json.dumps(_good(id="e", config="explicit", label="neutral"))])
    records, _ = read_annotations(path, config="explicit")
    assert [r.id for r in records] == ["e"] and isinstance(records[0], ClipRecord)
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        read_annotations(tmp_path / "nothing.jsonl")


SCENE_GOOD = {
    "id": "o1",
    "scene": "object",
    "split": "train",
    "text": "A dog.",
    "image": "img.png",
    "box": [0.1, 0.2, 0.5, 0.9],
}
SCENE_BAD = [
    ({"image": None}, "image", "exactly one"),
    ({"video": "clip.mp4"}, "image", "exactly one"),
    ({"scene": "sound"}, "scene", "must be one of"),
    ({"box": [0.5, 0.2, 0.1, 0.9]}, "box", "normalised"),
    ({"box": [0, 0, 2, 1]}, "box", "normalised"),
    ({"text": ""}, "text", "non-empty"),
    ({"image": "missing.png"}, "image", "does not exist"),
]


@pytest.mark.parametrize("override, field, reason", SCENE_BAD)
def test_scene_schema_strict_and_lenient(video, override, field, reason):
    (video.parent / "img.png").write_bytes(b"png")
    path = video.parent / "object.jsonl"
    path.write_text(json.dumps(SCENE_GOOD) + "\n" + json.dumps({**SCENE_GOOD, "id": "o2", **override}) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: field '{field}'")):
        read_scene_annotations(path)
    records, report = read_scene_annotations(path, strict=False)
    assert [r.id for r in records] == ["o1"] and report.issues[0].field == field and reason in report.issues[0].reason


@pytest.mark.parametrize(
    "rate, start, end, max_frames, expected_times",
    [
        (1.0, None, None, None, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (2.0, 4.0, 6.0, None, [4.0, 4.5, 5.0, 5.5]),
        (4.0, 1.0, 2.0, 2, [1.0, 1.75]),
        (0.5, 3.0, None, None, [3.0, 5.0, 7.0, 9.0]),
    ],
)
def test_sample_frames_rate_and_window(video, rate, start, end, max_frames, expected_times):
    frames, times = sample_frames(video, rate, start, end, max_frames)
    np.testing.assert_allclose(times, expected_times)
    # frame i (shown at i / 4 s) has red level 6 i: the sampled frame is the one shown at that time
    np.testing.assert_allclose(frames[:, 32, 32, 0], np.asarray(expected_times) * 4 * 6, atol=4)


@pytest.mark.parametrize("rate, start, message", [(0, None, "frame rate"), (1.0, 50.0, "no frames between")])
def test_sample_frames_errors(video, rate, start, message):
    with pytest.raises(ValueError, match=message):
        sample_frames(video, rate, start)
    with pytest.raises(ValueError, match="does not exist"):
        sample_frames(video.parent / "absent.mp4")

"""Clip windows on the real TSL-300 annotation files (tests/data/tsl300, from the public repository)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from datasets_scripts.converters import convert_tsl300
from datasets_scripts.schema import read_annotations
from datasets_scripts.windows import ClipWindows, SourceVideo, WindowConfig, window_label, window_spans

TSL = Path(__file__).parent / "data" / "tsl300"


def _convert(annotations: str = "videosenti_gt.json", **kwargs):
    return convert_tsl300(
        TSL / annotations, TSL / "fps_dict.json", TSL / "len_duration_dict.json", TSL, check_video=False, **kwargs
    )


@pytest.fixture(scope="module")
def tsl300():
    return _convert()


def test_counts_per_split_match_the_papers_one_clip_per_second(tsl300):
    windows, report = tsl300
    durations = json.loads((TSL / "len_duration_dict.json").read_text())
    # one window per whole second of every annotated source video
    by_split = {"train": 0, "test": 0}
    for source in windows.sources:
        by_split[source.split] += math.floor(durations[source.source_id])
    assert windows.counts() == by_split == {"train": 51_997, "test": 25_022}  # paper: 52K / 25K
    assert len(windows) == report.kept == sum(1 for _ in windows)
    assert len(windows.sources) == 298


def test_unannotated_videos_never_become_labels(tsl300):
    windows, report = tsl300
    unannotated = {"71_CMU_MOSEI__gzYkdjNvPc", "371_CMU_MOSEI_36o2cux9kfQ"}
    assert {i.file.split("[")[-1].rstrip("]") for i in report.issues} == unannotated
    assert all(i.field == "annotations" and "unannotated" in i.reason for i in report.issues)
    assert not unannotated & {r.source_id for r in windows}
    # gt.json annotates the test videos only: every train video is unannotated there, none becomes a label
    gt_windows, gt_report = _convert("gt.json")
    assert set(gt_windows.counts()) == {"test"} and gt_windows.counts()["test"] == 25_022
    assert sum("unannotated" in i.reason and "videosenti_gt.json" in i.reason for i in gt_report.issues) == 201


def test_small_overshoots_are_clamped_with_a_warning(tsl300):
    windows, report = tsl300
    assert len(report.warnings) == 11 and all("clamped" in w.reason for w in report.warnings)
    durations = json.loads((TSL / "len_duration_dict.json").read_text())
    clamped = {w.file.split("[")[-1].rstrip("]") for w in report.warnings}
    for source in windows.sources:
        assert all(0 <= s < e <= source.duration for s, e, _ in source.segments)
        if source.source_id in clamped:
            assert max(e for _, e, _ in source.segments) == durations[source.source_id]
    # a tolerance below the real overshoots drops those segments only; a video goes only when nothing is left
    strict, strict_report = _convert(overshoot_frames=0.5)
    assert len(strict_report.warnings) == 1  # the 0.3-frame one
    assert sum("segment skipped" in i.reason for i in strict_report.issues) == 10
    left_empty = [i.file for i in strict_report.issues if "no usable segment left" in i.reason]
    assert left_empty == [f"{TSL / 'videosenti_gt.json'}[295_Ekman6_anger_932]"]  # its one segment spans it all
    assert len(strict.sources) == 297


def _coverage(windows: ClipWindows, source: SourceVideo) -> dict[str, list[tuple[float, float]]]:
    covered: dict[str, list[tuple[float, float]]] = {}
    for record in windows.windows_of(source):
        if record.label == "neutral":
            continue
        covered.setdefault(record.label, []).extend((s + record.offset, e + record.offset) for s, e in record.segments)
    return covered


def _gap(segment: tuple[float, float], spans: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The first part of ``segment`` no span covers (None when covered)."""
    reach = segment[0]
    for s, e in sorted(spans):
        if s <= reach + 1e-6:
            reach = max(reach, e)
    return None if reach >= segment[1] - 1e-3 else (reach, segment[1])


def test_every_annotated_second_is_covered_by_a_window_of_its_label(tsl300):
    windows, _ = tsl300
    cfg = windows.config
    uncovered, seconds = [], 0.0
    for source in windows.sources:
        covered = _coverage(windows, source)
        for start, end, label in source.segments:
            seconds += end - start
            gap = _gap((start, end), covered.get(label, []))
            if gap is None:
                continue
            uncovered.append((source.source_id, start, end, label))
            # the majority rule explains it: every window holding the gap gives another label more time
            t = (gap[0] + gap[1]) / 2
            for w_start, w_end in window_spans(source.duration, cfg):
                if w_start <= t < w_end:
                    assert window_label(source.segments, w_start, w_end, "explicit", cfg)[0] != label
    assert round(seconds) == 14_557  # annotated seconds of the 1,642 segments
    # 20-s windows: one 7-s negative segment between two longer positive ones is never a window's majority
    assert uncovered == [("302_CMU_MOSEI_nbru7qLot04", 11.428, 18.428, "negative")]
    # shorter windows cover it too
    short = ClipWindows([s for s in windows.sources if s.source_id == uncovered[0][0]], WindowConfig(window=8))
    assert _gap((11.428, 18.428), _coverage(short, short.sources[0]).get("negative", [])) is None


def test_one_label_per_window_so_answers_never_contradict(tsl300, tmp_path):
    windows, _ = tsl300
    seen: set[tuple[str, float]] = set()
    for n, record in enumerate(windows):
        key = (record.source_id, record.offset)
        assert key not in seen
        seen.add(key)
        assert record.label in ("positive", "negative", "neutral")
        assert all(0 <= s < e <= record.duration + 1e-9 for s, e in record.segments)
        if n > 20_000:
            break
    # both labels in one source: its windows carry one label each, with only that label's segments
    source = next(s for s in windows.sources if len({lab for *_, lab in s.segments}) == 2)
    for record in windows.windows_of(source):
        if record.label == "neutral":
            continue
        for s, e in record.segments:
            mid = record.offset + (s + e) / 2
            assert any(a <= mid <= b and lab == record.label for a, b, lab in source.segments)
    # the written file reads back through the strict schema validation
    path = ClipWindows([source], windows.config).write(tmp_path / "explicit.jsonl")
    records, report = read_annotations(path, check_video=False)
    assert len(records) == math.floor(source.duration) and not report
    assert {r.split for r in records} == {source.split}

"""TSL-300 → the explicit Omni-SILA clip schema (paper §4.1: "The explicit Omni-SILA dataset is based on public
TSL-300").

TSL-300 (Zhang et al., ACM MM 2022; github.com/nku-zhichengzhang/TSL300) ships, in ``dataset/VideoSenti/``:

* ``gt.json`` — ActivityNet style: ``{"database": {vid: {"subset": "train"|"test", "annotations": [{"segment":
  ["18.44", "31.199"], "label": "p"|"n"}, ...]}}}`` with seconds written as strings;
* ``fps_dict.json`` — ``{vid: fps}``; ``len_duration_dict.json`` — ``{vid: duration seconds}``;
* the videos, ``<vid>.mp4``.

Choices: a TSL-300 video holds positive *and* negative segments, our schema one label per clip, so each video gives
one record per label present (id ``<vid>-positive`` / ``<vid>-negative``) with that label's segments; a video
without any segment gives one ``neutral`` record spanning the clip. TSL-300 has no attribution text (the paper
generated it with GPT-4V and checked it by hand); pass ``causes`` (``{vid: text}`` or ``{vid: {label: text}}``)
to fill ``cause``, otherwise it is empty. Letter codes come from ``modeling_icm.templates.TSL300_LABEL_CODES``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modeling_icm.templates import TSL300_LABEL_CODES

from ..schema import ClipRecord, ValidationReport, write_annotations
from .common import Collector, load_json

SOURCE = "tsl300"


def _sorted(segments: list) -> list:
    try:
        return sorted(segments, key=lambda s: float(s[0]))
    except (TypeError, ValueError, IndexError, KeyError):
        return segments  # validation reports the bad segment


def convert_tsl300(
    gt_json: str | os.PathLike,
    fps_json: str | os.PathLike,
    duration_json: str | os.PathLike,
    video_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    causes: dict[str, Any] | None = None,
    video_ext: str = ".mp4",
    check_video: bool = True,
    subset_to_split: dict[str, str] | None = None,
) -> tuple[list[ClipRecord], ValidationReport]:
    """Convert TSL-300 annotations; bad entries (unknown label code, unparsable or inverted segment, segment beyond
    the duration, missing fps/duration/video) are skipped and reported. Writes ``out_jsonl`` when given."""
    gt = load_json(gt_json, "TSL-300 gt.json")
    fps_dict = load_json(fps_json, "TSL-300 fps dictionary")
    durations = load_json(duration_json, "TSL-300 duration dictionary")
    if not isinstance(gt, dict) or not isinstance(gt.get("database"), dict):
        raise ValueError(f"{gt_json}: expected an ActivityNet-style object with a 'database' mapping")
    subset_to_split = {"training": "train", "validation": "validation", "testing": "test", **(subset_to_split or {})}
    causes = causes or {}
    video_dir = Path(video_dir)
    out = Collector(str(gt_json), check_video=check_video)
    for vid, entry in gt["database"].items():
        where = f"database.{vid}"
        if not isinstance(entry, dict):
            out.skip(where, "<entry>", "must be an object", entry)
            continue
        if vid not in fps_dict:
            out.skip(where, "fps", "video missing from the fps dictionary", vid)
            continue
        if vid not in durations:
            out.skip(where, "duration", "video missing from the duration dictionary", vid)
            continue
        subset = str(entry.get("subset", "train"))
        split = subset_to_split.get(subset, subset)
        by_label: dict[str, list[list[Any]]] = {}
        bad = False
        for index, ann in enumerate(entry.get("annotations", [])):
            code = str(ann.get("label", "")).strip().lower() if isinstance(ann, dict) else ""
            label = TSL300_LABEL_CODES.get(code)
            if label is None:
                out.skip(where, f"annotations[{index}].label", f"unknown TSL-300 label code; known {sorted(TSL300_LABEL_CODES)}",
                         ann.get("label") if isinstance(ann, dict) else ann)  # fmt: skip
                bad = True
                break
            by_label.setdefault(label, []).append(ann.get("segment"))
        if bad:
            continue
        if not by_label:
            by_label["neutral"] = [[0.0, durations[vid]]]
        for label, segments in by_label.items():
            cause = causes.get(vid, "")
            if isinstance(cause, dict):
                cause = cause.get(label, "")
            row = {
                "id": f"{vid}-{label}",
                "video": str(video_dir / f"{vid}{video_ext}"),
                "duration": durations[vid],
                "fps": fps_dict[vid],
                "split": split,
                "config": "explicit",
                "label": label,
                "segments": _sorted(segments),
                "cause": cause,
                "source": SOURCE,
                "source_id": vid,
            }
            out.add(row, where)
    records, report = out.result()
    if out_jsonl is not None:
        write_annotations(records, out_jsonl)
    return records, report

"""CUVA → the implicit Omni-SILA clip schema (paper §4.1: "Implicit Omni-SILA dataset is based on public CUVA").

CUVA ("Uncovering What, Why and How: A Comprehensive Benchmark for Causation Understanding of Video Anomaly",
CVPR 2024; github.com/fesvhtr/CUVA, data on the Hub as ``fesvhtr/CUVA``) annotates each video with its anomaly
category, the timestamps of the anomaly in seconds, a description, a cause and a result/effect. Its release has been
distributed in two JSON layouts, both read here:

1. **per-video records** — a list of objects, or an object keyed by video name, with fields such as
   ``video_name``/``video``, ``category``/``class``/``anomaly_type`` (a name, or CUVA's category number),
   ``timestamps``/``timestamp`` and ``cause``/``description``/``result``;
2. **per-task QA rows** (the benchmark's evaluation files) — ``{"video_name", "task", "answer"}`` rows with
   ``task`` in Classification, Timestamp, Description, Cause, Result; rows of one video are merged.

Timestamps may be ``[[s, e], ...]``, ``[s, e]``, ``"s-e"`` strings, CUVA's ``mmss`` digits (``"[0012, 0035]"`` is
12 s to 35 s) or ``"mm:ss"``. Category numbers follow CUVA's own prompt (1 Fighting, 2 Animals Hurting People,
3 Water Incidents, 4 Vandalism, 5 Traffic Accidents, 6 Robbery, 7 Theft, 8 Pedestrian Incidents, 9 Fire,
10 Traffic Violations, 11 Forbidden to Burn), which swaps 8 and 10 relative to the paper's numbering; 0 and
"normal" map to Normal. The attribution ``cause`` is CUVA's cause text (its description when no cause is given).
Durations and fps come from ``durations``/``fps`` dictionaries when given, else from the video container.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from modeling_icm.templates import normalize_label

from ..schema import ClipRecord, ValidationReport, write_annotations
from .common import Collector, load_json, probe_video

SOURCE = "cuva"
#: CUVA's category numbers (its classification prompt).
CUVA_CATEGORY_NUMBERS: dict[int, str] = {
    0: "Normal",
    1: "Fighting",
    2: "Animals Hurting People",
    3: "Water Incidents",
    4: "Vandalism",
    5: "Traffic Accidents",
    6: "Robbery",
    7: "Theft",
    8: "Pedestrian Incidents",
    9: "Fire",
    10: "Traffic Violations",
    11: "Forbidden to Burn",
}
_KEYS = {
    "video": ("video_name", "video", "video_id", "Video Name", "name", "file_name"),
    "category": ("category", "class", "anomaly_type", "Anomaly Type", "label", "Classification", "type"),
    "timestamps": ("timestamps", "timestamp", "Timestamp", "time", "segments"),
    "cause": ("cause", "Cause"),
    "description": ("description", "Description"),
    "split": ("split", "subset"),
}


def _get(entry: dict, key: str) -> Any:
    for alias in _KEYS[key]:
        if alias in entry and entry[alias] not in (None, ""):
            return entry[alias]
    return None


def parse_cuva_category(value: Any) -> str | None:
    """A CUVA category (name, number, ``"[5]"``, ``"5. Traffic Accidents"``, or a one-element list) → our label."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and float(value).is_integer():
        return CUVA_CATEGORY_NUMBERS.get(int(value))
    if not isinstance(value, str):
        return None
    text = value.strip().strip("[]*. ").strip()
    if text.isdigit():
        return CUVA_CATEGORY_NUMBERS.get(int(text))
    text = re.sub(r"^\d+\s*[.)]\s*", "", text)  # "5. Traffic Accidents"
    return normalize_label(text, "implicit")


def _seconds(token: str) -> float:
    token = token.strip().strip("'\"")
    if ":" in token:
        parts = [float(p) for p in token.split(":")]
        total = 0.0
        for part in parts:
            total = total * 60 + part
        return total
    if re.fullmatch(r"\d{4}", token):  # CUVA's mmss
        return int(token[:2]) * 60 + int(token[2:])
    return float(token.rstrip("s"))


def _is_time_token(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*\d+(?::\d+)*(?:\.\d+)?\s*s?\s*", value) is not None


def parse_cuva_timestamps(value: Any) -> list[list[float]]:
    """CUVA timestamps in any of its spellings → ``[[start, end], ...]`` seconds. Raises ``ValueError``."""
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(_is_time_token(v) for v in value):
            return [[_seconds(str(value[0])), _seconds(str(value[1]))]]
        segments: list[list[float]] = []
        for item in value:
            if not isinstance(item, (list, tuple, str)):
                raise ValueError(f"cannot read timestamps from {value!r}")
            segments += parse_cuva_timestamps(item)
        return segments
    if isinstance(value, str):
        number = r"(\d+(?::\d+)*(?:\.\d+)?)"
        pairs = re.findall(number + r"\s*s?\s*(?:-|,|to|~)\s*" + number, value)
        if not pairs:
            raise ValueError(f"no start/end pair in timestamp {value!r}")
        return [[_seconds(a), _seconds(b)] for a, b in pairs]
    raise ValueError(f"cannot read timestamps from {value!r}")


def _entries(data: Any) -> list[tuple[str, dict]]:
    """(where, per-video entry) pairs from either layout."""
    if isinstance(data, dict) and "database" in data and isinstance(data["database"], dict):
        data = data["database"]
    if isinstance(data, dict):
        return [(str(k), {"video_name": k, **v} if isinstance(v, dict) else {"video_name": k, "_bad": v})
                for k, v in data.items()]  # fmt: skip
    if not isinstance(data, list):
        raise ValueError("CUVA annotations must be a list of records or an object keyed by video")
    if data and all(isinstance(r, dict) and "task" in r and "answer" in r for r in data):
        merged: dict[str, dict] = {}
        for row in data:
            video = _get(row, "video")
            merged.setdefault(str(video), {"video_name": video})[str(row["task"]).strip().lower()] = row["answer"]
        return [
            (video, {"video_name": entry["video_name"], "category": entry.get("classification"),
                     "timestamps": entry.get("timestamp"), "cause": entry.get("cause"),
                     "description": entry.get("description"), "split": entry.get("split")})
            for video, entry in merged.items()
        ]  # fmt: skip
    return [(f"[{i}]", r if isinstance(r, dict) else {"_bad": r}) for i, r in enumerate(data)]


def convert_cuva(
    annotations_json: str | os.PathLike,
    video_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    split: str | dict[str, str] = "train",
    durations: dict[str, float] | None = None,
    fps: dict[str, float] | None = None,
    check_video: bool = True,
) -> tuple[list[ClipRecord], ValidationReport]:
    """Convert CUVA annotations into implicit clip records; bad entries are skipped and reported.

    Args:
        annotations_json: CUVA's JSON annotations (either layout, see the module docstring).
        video_dir: where the videos are; a video name without extension gets ``.mp4``.
        out_jsonl: write the records here when given.
        split: a split name for all videos, or ``{video_name: split}`` (a record's own ``split`` field wins).
        durations, fps: per video; otherwise probed from the video file.
        check_video: require the video files to exist.
    """
    data = load_json(annotations_json, "CUVA annotations")
    video_dir = Path(video_dir)
    out = Collector(str(annotations_json), check_video=check_video)
    for where, entry in _entries(data):
        if "_bad" in entry:
            out.skip(where, "<entry>", "must be an object", entry["_bad"])
            continue
        name = _get(entry, "video")
        if not name:
            out.skip(where, "video_name", "is missing")
            continue
        name = str(name)
        stem = Path(name).stem
        path = video_dir / (name if Path(name).suffix else f"{name}.mp4")
        raw_category = _get(entry, "category")
        label = parse_cuva_category(raw_category)
        if label is None:
            out.skip(where, "category", "unknown CUVA category", raw_category)
            continue
        raw_times = _get(entry, "timestamps")
        try:
            segments = parse_cuva_timestamps(raw_times) if raw_times is not None else []
        except (ValueError, TypeError) as err:
            out.skip(where, "timestamps", str(err), raw_times)
            continue
        duration = (durations or {}).get(stem, (durations or {}).get(name))
        rate = (fps or {}).get(stem, (fps or {}).get(name))
        if duration is None or rate is None:
            if not path.is_file():
                out.skip(where, "video", f"file does not exist ({path}) and no duration/fps were given", name)
                continue
            try:
                probed_duration, probed_fps = probe_video(path)
            except Exception as err:  # noqa: BLE001 — any decoder failure is reported, the batch goes on
                out.skip(where, "video", f"cannot read the video: {err}", name)
                continue
            duration = probed_duration if duration is None else duration
            rate = probed_fps if rate is None else rate
        if label == "Normal" and not segments:
            segments = [[0.0, float(duration)]]
        clip_split = _get(entry, "split") or (
            split.get(stem, split.get(name, "train")) if isinstance(split, dict) else split
        )
        cause = _get(entry, "cause") or _get(entry, "description") or ""
        if isinstance(cause, list):
            cause = " ".join(str(c) for c in cause)
        row = {
            "id": f"cuva-{stem}",
            "video": str(path),
            "duration": duration,
            "fps": rate,
            "split": str(clip_split),
            "config": "implicit",
            "label": label,
            "segments": segments,
            "cause": " ".join(str(cause).split()),
            "source": SOURCE,
            "source_id": stem,
        }
        out.add(row, where)
    records, report = out.result()
    if out_jsonl is not None:
        write_annotations(records, out_jsonl)
    return records, report

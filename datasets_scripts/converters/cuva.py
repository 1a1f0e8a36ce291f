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
"normal" map to Normal. The attribution ``cause`` is CUVA's cause text (its description when no cause is given); ``Normal`` windows have
none. Each video is cut into clip windows by :mod:`datasets_scripts.windows`.
Durations and fps come from ``durations``/``fps`` dictionaries when given, else from the video container.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from modeling_icm.templates import normalize_label

from ..schema import ValidationReport
from ..windows import ClipWindows, SourceVideo, WindowConfig
from .common import OVERSHOOT_FRAMES, SourceCollector, VideoIndex, load_json, probe_video

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
    window_config: WindowConfig | None = None,
    overshoot_frames: float = OVERSHOOT_FRAMES,
) -> tuple[ClipWindows, ValidationReport]:
    """Convert CUVA annotations into implicit clip windows (:mod:`datasets_scripts.windows`); bad entries are
    skipped and reported.

    Each video is one source: its category labels the windows its anomaly segments overlap; the other windows are
    ``Normal``. A ``Normal`` video needs no timestamps; an abnormal video without any is skipped (its anomaly
    cannot be placed in time). Segment checks (overshoot clamping, bad segments dropped) are those of
    :class:`~datasets_scripts.converters.common.SourceCollector`.

    Args:
        annotations_json: CUVA's JSON annotations (either layout, see the module docstring).
        video_dir: where the videos are; a name without extension is found whatever its container.
        out_jsonl: stream the clips here when given.
        split: a split name for all videos, or ``{video_name: split}`` (a record's own ``split`` field wins).
        durations, fps: per video; otherwise probed from the video file.
        check_video: require the video files to exist.
        window_config: the clip construction.
        overshoot_frames: segments ending at most this many frames after the duration are clamped.

    Returns:
        ``(windows, report)`` as :func:`~datasets_scripts.converters.convert_tsl300`.
    """
    data = load_json(annotations_json, "CUVA annotations")
    video_dir = Path(video_dir)
    index = VideoIndex(video_dir)
    out = SourceCollector(str(annotations_json), check_video=check_video, overshoot_frames=overshoot_frames)
    for where, entry in _entries(data):
        if "_bad" in entry:
            out.skip(where, "<entry>", "must be an object", entry["_bad"])
            continue
        name = _get(entry, "video")
        if not name:
            out.skip(where, "video_name", "is missing")
            continue
        name = str(name)
        if Path(name).is_absolute() or ".." in Path(name).parts or not (video_dir / name).resolve().is_relative_to(
            video_dir.resolve()
        ):  # a record must not point the converter (and the training run) at files outside --videos
            out.skip(where, "video_name", f"names a file outside the videos folder {video_dir}", name)
            continue
        stem = Path(name).stem if Path(name).suffix.lower() in index.extensions else name
        where = f"{where}:{stem}" if where != stem and not where.startswith(stem) else where
        found, note = index.find(name)
        if note:
            out.warn(where, "video", note, name)
        path = found if found is not None else video_dir / (name if Path(name).suffix else f"{name}.mp4")
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
        duration = out.number(where, "duration", duration)
        rate = out.number(where, "fps", rate)
        if duration is None or rate is None:
            continue
        clean = []
        if label != "Normal":
            if not segments:
                out.skip(where, "timestamps", f"a {label} video without timestamps cannot be placed in time", raw_times)
                continue
            raw = [(f"segments[{i}]", seg, label) for i, seg in enumerate(segments)]
            clean = out.segments(where, raw, float(duration), float(rate))
            if not clean:
                out.skip(where, "timestamps", "no usable segment left: video skipped", raw_times)
                continue
        clip_split = _get(entry, "split") or (
            split.get(stem, split.get(name, "train")) if isinstance(split, dict) else split
        )
        if isinstance(clip_split, (list, tuple)) and len(clip_split) == 1:
            clip_split = clip_split[0]  # ["test"]: one split written as a list
        if not isinstance(clip_split, str) or not clip_split.strip():
            out.skip(where, "split", "must be a split name such as train or test", clip_split)
            continue
        cause = _get(entry, "cause") or _get(entry, "description") or ""
        if isinstance(cause, list):
            cause = " ".join(str(c) for c in cause)
        out.add(
            SourceVideo(
                source_id=stem,
                video=str(path.resolve() if path.exists() else path),
                duration=float(duration),
                fps=float(rate),
                split=str(clip_split),
                config="implicit",
                segments=clean,
                causes={label: " ".join(str(cause).split())} if label != "Normal" else {},
                source=SOURCE,
            ),
            where,
        )
    return out.windows(window_config, out_jsonl)

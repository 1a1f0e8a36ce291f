"""Converting a public source's annotation file and video folder into an Omni-SILA data folder (``icm data
convert``): TSL-300 gives the explicit config, CUVA the implicit one. Writes ``<config>.jsonl`` and a report of what
was skipped (``<config>.skipped.json``: the file, field, reason and value of each skipped entry, and the clip counts
per split beside the paper's)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schema import ValidationReport
from ..windows import ClipWindows, WindowConfig, counts_table
from .cuva import convert_cuva
from .tsl300 import ANNOTATIONS_NAME, convert_tsl300

#: the public source of each Omni-SILA config
SOURCE_CONFIGS = {"tsl300": "explicit", "cuva": "implicit"}


class ConversionInputError(ValueError):
    """A missing or unusable input of :func:`convert_source`: the message names the option and the path."""


@dataclass
class Conversion:
    """What :func:`convert_source` wrote: the config, its clip windows, the skipped entries and warnings, the clip
    counts per split (with the paper's) and the two files."""

    config: str
    windows: ClipWindows
    report: ValidationReport
    counts: list[dict[str, Any]]
    annotations_path: Path
    report_path: Path


def convert_source(
    source: str,
    annotations: str | os.PathLike,
    videos: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    fps_json: str | os.PathLike | None = None,
    durations_json: str | os.PathLike | None = None,
    window_config: WindowConfig | None = None,
    check_video: bool = True,
    **converter_kwargs: Any,
) -> Conversion:
    """Convert ``source`` (``"tsl300"`` or ``"cuva"``) into ``out_dir/<config>.jsonl``.

    Args:
        annotations: the source's annotation file; for TSL-300 also its folder (``videosenti_gt.json`` in it).
        videos: the folder of the source videos.
        split: the split of CUVA's records (TSL-300 carries its own).
        fps_json, durations_json: TSL-300's ``fps_dict.json`` and ``len_duration_dict.json`` (default: beside the
            annotation file).
        window_config: the clip windows (default: :class:`WindowConfig`'s).
        check_video: decode each video's header to check its duration.
        converter_kwargs: passed to the converter (e.g. ``overshoot_frames``).
    """
    if source not in SOURCE_CONFIGS:
        raise ConversionInputError(f"source {source!r}: choose one of {sorted(SOURCE_CONFIGS)}")
    annotations = Path(annotations)
    if source == "tsl300" and annotations.is_dir():
        annotations = annotations / ANNOTATIONS_NAME
    if not annotations.is_file():
        raise ConversionInputError(f"--annotations {annotations}: file not found")
    videos = Path(videos)
    if not videos.is_dir():
        raise ConversionInputError(f"--videos {videos}: not a folder")
    config = SOURCE_CONFIGS[source]
    out = Path(out_dir)
    target = out / f"{config}.jsonl"
    kwargs = {"check_video": check_video, "window_config": window_config, **converter_kwargs}
    if source == "tsl300":
        folder = annotations.parent
        fps_path = Path(fps_json or folder / "fps_dict.json")
        durations_path = Path(durations_json or folder / "len_duration_dict.json")
        for flag, path in (("--fps-json", fps_path), ("--durations-json", durations_path)):
            if not path.is_file():
                raise ConversionInputError(f"TSL-300 needs {path.name} ({flag}): {path} not found")
        windows, report = convert_tsl300(annotations, fps_path, durations_path, videos, target, **kwargs)
    else:
        windows, report = convert_cuva(annotations, videos, target, split=split, **kwargs)

    def rows(issues) -> list[dict[str, Any]]:
        return [{"file": i.file, "field": i.field, "reason": i.reason, "value": i.value} for i in issues]

    counts = counts_table(windows, config)
    used = window_config or WindowConfig()
    report_path = out / f"{config}.skipped.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    document = {"kept": len(windows), "sources": len(windows.sources), "window": vars(used), "counts": counts,
                "skipped": rows(report.issues), "warnings": rows(report.warnings)}  # fmt: skip
    report_path.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return Conversion(config, windows, report, counts, target, report_path)


__all__ = ["SOURCE_CONFIGS", "Conversion", "ConversionInputError", "convert_source"]

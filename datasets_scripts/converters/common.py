"""Helpers shared by the converters: validation into the schema, skip-and-report, media probing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..schema import AnnotationError, ClipRecord, ValidationIssue, ValidationReport, validate_record


def load_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None


def probe_video(path: str | os.PathLike) -> tuple[float, float]:
    """``(duration seconds, fps)`` of a video, read from its container with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = sum(1 for _ in container.decode(video=0)) / fps if fps else 0.0
    return duration, fps


class Collector:
    """Validates converted rows into :class:`ClipRecord`\\ s; bad rows are skipped and reported (never raised:
    converters are batch jobs), duplicates included."""

    def __init__(self, source_file: str, check_video: bool = True):
        self.source_file = str(source_file)
        self.check_video = check_video
        self.records: list[ClipRecord] = []
        self.report = ValidationReport()
        self._seen: set[str] = set()

    def skip(self, where: str, field: str, reason: str, value: Any = None, line: int = 0) -> None:
        self.report.add(ValidationIssue(f"{self.source_file}[{where}]", line, field, reason, value))

    def add(self, row: dict[str, Any], where: str, line: int = 0) -> ClipRecord | None:
        try:
            record = validate_record(row, file=f"{self.source_file}[{where}]", line=line, check_video=self.check_video)
        except AnnotationError as err:
            self.report.add(err.issue)
            return None
        if record.id in self._seen:
            self.skip(where, "id", "duplicate id", record.id, line)
            return None
        self._seen.add(record.id)
        self.records.append(record)
        return record

    def result(self) -> tuple[list[ClipRecord], ValidationReport]:
        self.report.kept = len(self.records)
        return self.records, self.report

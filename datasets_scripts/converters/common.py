"""Helpers shared by the converters: validation into the schema, skip-and-report, media probing."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..schema import ValidationIssue, ValidationReport
from ..windows import OVERSHOOT_FRAMES


def load_json(path: str | os.PathLike, what: str, expect: type | None = None) -> Any:
    r"""The JSON of ``path``; ``ValueError`` naming the file (and the line) when it is not UTF-8, not JSON, or not of
    the ``expect``\ ed type (``dict``: an object such as ``{"video": value}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save it as UTF-8") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None
    if expect is not None and not isinstance(value, expect):
        kinds = {dict: "an object ({\"video\": value, ...})", list: "a list"}
        raise ValueError(f"{path}: the {what} must be {kinds.get(expect, expect.__name__)}, got "
                         f"{type(value).__name__.replace('dict', 'an object').replace('list', 'a list')}")  # fmt: skip
    return value


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


# ----------------------------------------------------------------------------------------------------------------
# Source videos (the converters' common step before clip windows, datasets_scripts.windows)
# ----------------------------------------------------------------------------------------------------------------

#: Containers a source video may come in, in order of preference when several files share its id.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")


class VideoIndex:
    """Finds a source video by id whatever its container (:data:`VIDEO_EXTENSIONS`, any case) in one folder,
    listed once. ``find`` returns ``(path or None, note)``; the note names the file taken when several match."""

    def __init__(self, folder: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
        self.folder = Path(folder)
        self.extensions = tuple(e.lower() for e in extensions)
        self._by_stem: dict[str, list[Path]] = {}
        if self.folder.is_dir():
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    suffix = os.path.splitext(entry.name)[1].lower()
                    if suffix in self.extensions and entry.is_file():
                        self._by_stem.setdefault(os.path.splitext(entry.name)[0], []).append(Path(entry.path))

    def find(self, video_id: str) -> tuple[Path | None, str]:
        name = Path(str(video_id))
        if name.suffix.lower() in self.extensions and (self.folder / name).is_file():
            return self.folder / name, ""
        matches = self._by_stem.get(name.stem if name.suffix.lower() in self.extensions else str(video_id), [])
        if not matches:
            return None, ""
        matches = sorted(matches, key=lambda p: (self.extensions.index(p.suffix.lower()), p.name))
        note = ""
        if len(matches) > 1:
            note = f"{len(matches)} files match ({', '.join(p.name for p in matches)}); took {matches[0].name}"
        return matches[0], note


class SourceCollector:
    """Builds :class:`~datasets_scripts.windows.SourceVideo`\\ s from a converter's entries: validates segments
    (skip the bad one, clamp a small overshoot with a warning) and skips unannotated or unusable videos, each with
    a line naming the file, the video id, the field and the value. Never raises: converters are batch jobs."""

    def __init__(self, source_file: str, check_video: bool = True, overshoot_frames: float = OVERSHOOT_FRAMES):
        self.source_file = str(source_file)
        self.check_video = check_video
        self.overshoot_frames = float(overshoot_frames)
        self.sources: list = []
        self.report = ValidationReport()
        self._seen: set[str] = set()

    def _issue(self, where: str, field: str, reason: str, value: Any = None) -> ValidationIssue:
        return ValidationIssue(f"{self.source_file}[{where}]", 0, field, reason, value)

    def skip(self, where: str, field: str, reason: str, value: Any = None) -> None:
        self.report.add(self._issue(where, field, reason, value))

    def warn(self, where: str, field: str, reason: str, value: Any = None) -> None:
        self.report.warn(self._issue(where, field, reason, value))

    def number(self, where: str, field: str, value: Any, positive: bool = True) -> float | None:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number) or (positive and number <= 0):
                raise ValueError
        except (TypeError, ValueError):
            self.skip(where, field, "must be a positive number" if positive else "must be a number", value)
            return None
        return number

    def segments(
        self, where: str, raw: list[tuple[str, Any, str]], duration: float, fps: float
    ) -> list[tuple[float, float, str]]:
        """``[(field name, [start, end], label)]`` → clean ``(start, end, label)`` sorted by start."""
        tolerance = self.overshoot_frames / fps
        clean = []
        for name, segment, label in raw:
            try:
                start, end = (float(v) for v in segment)
                if not (math.isfinite(start) and math.isfinite(end)):
                    raise ValueError
            except (TypeError, ValueError):
                self.skip(where, name, "must be a [start, end] pair of seconds; segment skipped", segment)
                continue
            if start < 0:
                self.skip(where, name, "starts before 0 s; segment skipped", segment)
                continue
            if end < start:
                self.skip(where, name, "ends before it starts (end < start); segment skipped", segment)
                continue
            if start >= duration:
                self.skip(where, name, f"starts at or after the end of the video ({duration:g} s); segment skipped",
                          segment)  # fmt: skip
                continue
            if end > duration:
                over = end - duration
                if over <= tolerance + 1e-9:
                    self.warn(where, name, f"ends {over:.3f} s ({over * fps:.1f} frames) after the duration "
                              f"{duration:g} s; clamped to it", segment)  # fmt: skip
                    end = duration
                else:
                    self.skip(where, name, f"ends {over:.3f} s after the duration {duration:g} s (more than "
                              f"{self.overshoot_frames:g} frames); segment skipped", segment)  # fmt: skip
                    continue
            if end > start:
                clean.append((start, end, label))
        return sorted(clean)

    def add(self, source, where: str) -> None:
        if source.source_id in self._seen:
            self.skip(where, "video", "duplicate source video id; skipped", source.source_id)
            return
        if self.check_video and not Path(source.video).is_file():
            self.skip(where, "video", f"file does not exist ({source.video})", source.source_id)
            return
        self._seen.add(source.source_id)
        self.sources.append(source)

    def windows(self, window_config=None, out_jsonl: str | os.PathLike | None = None):
        """The :class:`~datasets_scripts.windows.ClipWindows` of the collected sources (written to ``out_jsonl``
        when given); ``report.kept`` counts the clips."""
        from ..windows import ClipWindows

        windows = ClipWindows(self.sources, window_config, self.report, file=self.source_file)
        if out_jsonl is not None:
            windows.write(out_jsonl)
        self.report.kept = len(windows)
        return windows, self.report

"""The Omni-SILA annotation schema: one clip per JSON Lines record, validated strictly or leniently.

Every source (TSL-300, CUVA, the embedded mini set) is converted into this one schema, and the builders
(:mod:`datasets_scripts.builders`) read only this schema. One line of an ``annotations.jsonl`` file is one clip::

    {"id": "cuva-00041", "video": "videos/00041.mp4", "duration": 30.0, "fps": 25.0, "split": "train",
     "config": "implicit", "label": "Traffic Accidents", "segments": [[4.0, 18.0]],
     "cause": "a car changed lanes suddenly and hit the car in front", "source": "cuva", "source_id": "00041"}

Fields
    ``id`` (str, unique in the file) · ``video`` (str: a path relative to the jsonl's folder, or absolute) ·
    ``duration`` (seconds, > 0) · ``fps`` (> 0) · ``split`` (a name such as ``train``/``test``: letters, digits,
    ``_``) · ``config`` (``explicit`` or ``implicit``, paper §4.1) · ``label`` (one of
    ``modeling_icm.templates.LABELS[config]``; case and spacing are normalised) · ``segments`` (a list of
    ``[start, end]`` in seconds with ``0 <= start <= end <= duration``, in clip time; may be empty) · ``cause`` (the
    attribution text, may be empty) · ``source`` (the source data set) · ``source_id`` (the source video's id
    there) · ``offset`` (the clip's start in its source video, seconds, default 0: a clip is a window of a source
    video, see :mod:`datasets_scripts.windows`; ``video`` is then the source's file).

Choices (the paper is silent): segments are kept in the order given; a segment's end may equal the duration;
a small tolerance (``DURATION_TOLERANCE`` s) absorbs rounding of the duration in the sources; "Normal" and
"neutral" clips conventionally carry the whole clip as their segment (the mini set does so).

Bad input — a missing video file, ``end < start``, a segment beyond the duration, an unknown label, a malformed
JSON line, a duplicate id, a missing or mistyped field — raises ``ValueError`` naming the file, the line and the
field in strict mode (the default); in lenient mode the record is skipped and listed in the returned
:class:`ValidationReport`, and every other record is kept.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modeling_icm.templates import CONFIG_NAMES, LABELS, normalize_label

T = TypeVar("T")

#: Seconds by which a segment may exceed the stated duration (sources round durations).
DURATION_TOLERANCE = 0.05
SCHEMA_FIELDS: tuple[str, ...] = (
    "id",
    "video",
    "duration",
    "fps",
    "split",
    "config",
    "label",
    "segments",
    "cause",
    "source",
    "source_id",
    "offset",
)
#: Fields a record may leave out (their defaults: empty text, offset 0).
OPTIONAL_FIELDS: tuple[str, ...] = ("cause", "source", "source_id", "offset")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class ClipRecord:
    """One validated clip of the schema; ``video`` is resolved to an absolute path by :func:`read_annotations`."""

    id: str
    video: str
    duration: float
    fps: float
    split: str
    config: str
    label: str
    segments: list[list[float]] = field(default_factory=list)
    cause: str = ""
    source: str = ""
    source_id: str = ""
    offset: float = 0.0

    def to_json(self, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in SCHEMA_FIELDS}  # asdict's deep copies cost at 200K clips
        row["segments"] = [list(s) for s in self.segments]
        if relative_to is not None:
            try:
                row["video"] = os.path.relpath(self.video, relative_to)
            except ValueError:  # another drive on Windows
                pass
        return row


@dataclass
class ValidationIssue:
    """One rejected record: where it is and why."""

    file: str
    line: int
    field: str
    reason: str
    value: Any = None

    def __str__(self) -> str:
        value = "" if self.value is None else f" (value: {self.value!r})"
        return f"{self.file}:{self.line}: field '{self.field}': {self.reason}{value}"


@dataclass
class ValidationReport:
    """What a lenient read (or a converter) skipped; ``kept`` counts the records that passed."""

    issues: list[ValidationIssue] = field(default_factory=list)
    kept: int = 0
    warnings: list[ValidationIssue] = field(default_factory=list)  # clamped or noted, the record kept

    @property
    def skipped(self) -> int:
        return len(self.issues)

    def add(self, issue: ValidationIssue) -> None:
        self.issues.append(issue)

    def warn(self, issue: ValidationIssue) -> None:
        self.warnings.append(issue)

    def extend(self, other: ValidationReport) -> None:
        self.issues.extend(other.issues)
        self.warnings.extend(other.warnings)
        self.kept += other.kept

    def __bool__(self) -> bool:  # truthy when something was skipped
        return bool(self.issues)

    def summary(self) -> str:
        lines = [f"kept {self.kept} record(s), skipped {self.skipped}, {len(self.warnings)} warning(s)"]
        lines += [f"  - {issue}" for issue in self.issues]
        lines += [f"  ~ {issue}" for issue in self.warnings]
        return "\n".join(lines)


class AnnotationError(ValueError):
    """A bad record in strict mode; ``issue`` says where and why."""

    def __init__(self, issue: ValidationIssue):
        super().__init__(str(issue))
        self.issue = issue


def _number(value: Any, name: str, issue) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise issue(name, "must be a number", value)
    try:
        number = float(value)
    except ValueError:
        raise issue(name, "must be a number", value) from None
    if not math.isfinite(number):
        raise issue(name, "must be finite", value)
    return number


def validate_record(
    row: Any,
    *,
    file: str = "<memory>",
    line: int = 0,
    base_dir: str | os.PathLike | None = None,
    check_video: bool = True,
    video_memo: dict[str, str | None] | None = None,
) -> ClipRecord:
    """Validate one parsed JSON object against the schema and return a :class:`ClipRecord`.

    ``video_memo`` (a dict the caller keeps) remembers each video path's check, so that the many clips of one
    source video stat its file once. Raises :class:`AnnotationError` (a ``ValueError``) naming ``file``, ``line`` and the field at fault.
    """

    def issue(name: str, reason: str, value: Any = None) -> AnnotationError:
        return AnnotationError(ValidationIssue(str(file), line, name, reason, value))

    if not isinstance(row, dict):
        raise issue("<record>", f"must be a JSON object, got {type(row).__name__}")
    for name in SCHEMA_FIELDS:
        if name not in row and name not in OPTIONAL_FIELDS:
            raise issue(name, "is missing")
    unknown = sorted(set(row) - set(SCHEMA_FIELDS))
    if unknown:
        raise issue(unknown[0], "is not a field of the schema", row[unknown[0]])

    clip_id = row["id"]
    if not isinstance(clip_id, str) or not clip_id.strip():
        raise issue("id", "must be a non-empty string", clip_id)
    config = row["config"]
    if config not in CONFIG_NAMES:
        raise issue("config", f"must be one of {list(CONFIG_NAMES)}", config)
    label = row["label"]
    canonical = normalize_label(label, config) if isinstance(label, str) else None
    if canonical is None:
        raise issue("label", f"is not an {config} label; known labels are {list(LABELS[config])}", label)
    split = row["split"]
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise issue("split", "must be a split name made of letters, digits and '_'", split)
    duration = _number(row["duration"], "duration", issue)
    if duration <= 0:
        raise issue("duration", "must be > 0 seconds", row["duration"])
    fps = _number(row["fps"], "fps", issue)
    if fps <= 0:
        raise issue("fps", "must be > 0", row["fps"])

    segments = row["segments"]
    if not isinstance(segments, list):
        raise issue("segments", "must be a list of [start, end] pairs", segments)
    clean: list[list[float]] = []
    for index, segment in enumerate(segments):
        name = f"segments[{index}]"
        if not isinstance(segment, (list, tuple)) or len(segment) != 2:
            raise issue(name, "must be a [start, end] pair", segment)
        start = _number(segment[0], name, issue)
        end = _number(segment[1], name, issue)
        if start < 0:
            raise issue(name, "starts before 0 s", segment)
        if end < start:
            raise issue(name, "ends before it starts (end < start)", segment)
        if end > duration + DURATION_TOLERANCE:
            raise issue(name, f"ends beyond the duration {duration:g} s", segment)
        clean.append([start, min(end, duration)])

    offset = _number(row.get("offset", 0.0), "offset", issue)
    if offset < 0:
        raise issue("offset", "must be >= 0 seconds", row.get("offset"))
    texts = {}
    for name in ("cause", "source", "source_id"):
        value = row.get(name, "")
        if value is None:
            value = ""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "source_id":
            value = str(value)
        if not isinstance(value, str):
            raise issue(name, "must be a string", value)
        texts[name] = value

    video = row["video"]
    if not isinstance(video, str) or not video.strip():
        raise issue("video", "must be a non-empty path", video)
    path = None
    if video_memo is not None and video in video_memo:
        resolved = video_memo[video]
    else:
        path = Path(video)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if check_video and not path.is_file():
            resolved = None
        else:
            resolved = str(path.resolve()) if check_video or path.is_absolute() else str(path)
        if video_memo is not None:
            video_memo[video] = resolved
    if resolved is None:
        missing = path if path is not None else Path(base_dir or "") / video
        raise issue("video", f"file does not exist ({missing})", video)
    return ClipRecord(
        id=clip_id,
        video=resolved,
        duration=duration,
        fps=fps,
        split=split,
        config=config,
        label=canonical,
        segments=clean,
        offset=offset,
        **texts,
    )


def iter_annotations(
    path: str | os.PathLike,
    *,
    strict: bool = True,
    check_video: bool = True,
    config: str | None = None,
    split: str | None = None,
    report: ValidationReport | None = None,
    lines_out: list[int] | None = None,
    only_lines: Iterable[int] | None = None,
) -> Iterator[ClipRecord]:
    """Yield the valid records of an ``annotations.jsonl`` file one by one (constant memory but for the set of
    ids seen, which catches duplicates); bad records raise (``strict``) or go to ``report``.

    ``config`` / ``split`` keep only records of that config / split (others are validated, not yielded).
    ``report.kept`` counts the records yielded. ``lines_out`` (a list or ``array``) receives the line number of
    each record yielded; ``only_lines`` (ascending line numbers, e.g. an earlier pass's ``lines_out``) reads only
    those lines, the others are not even parsed — how the builder streams one split after a validating pass.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    base_dir = path.parent
    report = report if report is not None else ValidationReport()
    seen: dict[str, int] = {}
    memo: dict[str, str | None] = {}
    wanted = iter(only_lines) if only_lines is not None else None
    next_line = next(wanted, None) if wanted is not None else None
    with path.open("rb") as handle:  # decoded line by line: a line that is not UTF-8 is named, not fatal
        for line_no, raw in enumerate(handle, start=1):
            if wanted is not None:
                if next_line is None:
                    break
                if line_no != next_line:
                    continue
                next_line = next(wanted, None)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                text = None
                bad = f"byte 0x{raw[err.start]:02x} at column {err.start + 1}"
            if text is not None and not text.strip():
                continue
            try:
                if text is None:
                    raise AnnotationError(
                        ValidationIssue(str(path), line_no, "<encoding>", "not UTF-8 text (save the file as UTF-8)", bad)
                    )
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise AnnotationError(
                        ValidationIssue(
                            str(path), line_no, "<json>", f"malformed JSON line: {err.msg}", text.strip()[:80]
                        )
                    ) from None
                record = validate_record(
                    row, file=str(path), line=line_no, base_dir=base_dir, check_video=check_video, video_memo=memo
                )
                if record.id in seen:
                    raise AnnotationError(
                        ValidationIssue(
                            str(path), line_no, "id", f"duplicate id (first seen on line {seen[record.id]})", record.id
                        )
                    )
            except AnnotationError as err:
                if strict:
                    raise
                report.add(err.issue)
                continue
            seen[record.id] = line_no
            if config is not None and record.config != config:
                continue
            if split is not None and record.split != split:
                continue
            report.kept += 1
            if lines_out is not None:
                lines_out.append(line_no)
            yield record


def read_annotations(
    path: str | os.PathLike,
    *,
    strict: bool = True,
    check_video: bool = True,
    config: str | None = None,
) -> tuple[list[ClipRecord], ValidationReport]:
    """Read and validate an ``annotations.jsonl`` file into a list (:func:`iter_annotations` streams it).

    Args:
        path: the JSON Lines file; relative ``video`` paths are resolved against its folder.
        strict: raise ``ValueError`` at the first bad record (default); if False, skip bad records and list them
            in the report.
        check_video: require each video file to exist.
        config: keep only records of this config (``explicit``/``implicit``); others are ignored, not reported.

    Returns:
        ``(records, report)`` — the valid records in file order and what was skipped.
    """
    report = ValidationReport()
    records = list(iter_annotations(path, strict=strict, check_video=check_video, config=config, report=report))
    return records, report


def write_annotations(
    records: Iterable[ClipRecord | dict],
    path: str | os.PathLike,
    *,
    relative_videos: bool = True,
) -> Path:
    """Write records as JSON Lines; with ``relative_videos`` the video paths are written relative to the file's
    folder so that the folder can be moved or pushed as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            if isinstance(record, ClipRecord):
                row = record.to_json(relative_to=path.parent if relative_videos else None)
            else:
                row = dict(record)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def round_robin(items: Iterable[T], key: Callable[[T], Any], limit: int | None = None) -> list[T]:
    """At most ``limit`` of ``items`` (all when ``None``), taken one group at a time in turn: the first item of
    every ``key`` group (groups in order of first appearance), then the second of each, and so on.

    Why: annotation files list clips label by label, so "the first N" of them is one label only; a small N taken
    this way keeps every label (or every scene description) in it. Deterministic; file order within a group."""
    groups: dict[Any, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    total = sum(len(g) for g in groups.values())
    wanted = total if limit is None else max(0, min(int(limit), total))
    out: list[T] = []
    index = 0
    while len(out) < wanted:
        for group in groups.values():
            if index < len(group) and len(out) < wanted:
                out.append(group[index])
        index += 1
    return out

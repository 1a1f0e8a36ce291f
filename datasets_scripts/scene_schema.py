"""The scene-tuning annotation schema (paper §3.4 and §4.1, stage one): one JSON Lines record per described image or
video span, in ``<data_dir>/<scene>.jsonl`` for scene in face, action, object, background::

    {"id": "refcoco-0", "scene": "object", "split": "train", "text": "A dog <0.10,0.20,0.50,0.90> on the grass.",
     "image": "images/0001.jpg", "video": null, "start": null, "end": null, "box": [0.1, 0.2, 0.5, 0.9],
     "source": "refcoco", "source_id": "ann-17"}

Fields: ``id`` (unique), ``scene`` (one of ``SCENE_NAMES``), ``split``, ``text`` (the answer to the scene prompt),
exactly one of ``image`` (a still image: RefCOCO, Places365) or ``video`` (CMU-MOSEI, HumanML3D; frames are
sampled by the builder) with optional ``start``/``end`` seconds, ``box`` (``[x1, y1, x2, y2]`` normalised to
``[0, 1]``, object scene), ``source``, ``source_id``. Paths are relative to the jsonl's folder or absolute.
Strict and lenient validation as in :mod:`datasets_scripts.schema`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modeling_icm.templates import SCENE_NAMES

from .schema import AnnotationError, ValidationIssue, ValidationReport, _number

SCENE_FIELDS = ("id", "scene", "split", "text", "image", "video", "start", "end", "box", "source", "source_id")


@dataclass
class SceneRecord:
    id: str
    scene: str
    split: str
    text: str
    image: str | None = None
    video: str | None = None
    start: float | None = None
    end: float | None = None
    box: list[float] | None = None
    source: str = ""
    source_id: str = ""

    def to_json(self, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
        row = asdict(self)
        if relative_to is not None:
            for key in ("image", "video"):
                if row[key]:
                    row[key] = os.path.relpath(row[key], relative_to)
        return row


def validate_scene_record(
    row: Any, *, file: str = "<memory>", line: int = 0, base_dir=None, check_media: bool = True
) -> SceneRecord:
    """Validate one scene-tuning record; raises :class:`AnnotationError` naming file, line and field."""

    def issue(name: str, reason: str, value: Any = None) -> AnnotationError:
        return AnnotationError(ValidationIssue(str(file), line, name, reason, value))

    if not isinstance(row, dict):
        raise issue("<record>", f"must be a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(SCENE_FIELDS))
    if unknown:
        raise issue(unknown[0], "is not a field of the scene-tuning schema", row[unknown[0]])
    for name in ("id", "scene", "split", "text"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise issue(name, "must be a non-empty string", row.get(name))
    if row["scene"] not in SCENE_NAMES:
        raise issue("scene", f"must be one of {list(SCENE_NAMES)}", row["scene"])
    image, video = row.get("image"), row.get("video")
    if bool(image) == bool(video):
        raise issue("image", "exactly one of 'image' and 'video' must be given", {"image": image, "video": video})
    media_key = "image" if image else "video"
    path = Path(image or video)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if check_media and not path.is_file():
        raise issue(media_key, f"file does not exist ({path})", image or video)
    start = end = None
    if row.get("start") is not None:
        start = _number(row["start"], "start", issue)
        if start < 0:
            raise issue("start", "must be >= 0 seconds", row["start"])
    if row.get("end") is not None:
        end = _number(row["end"], "end", issue)
        if start is not None and end < start:
            raise issue("end", "ends before it starts (end < start)", [row.get("start"), row["end"]])
    if (start is not None or end is not None) and media_key == "image":
        raise issue("start", "start/end only apply to a video", row.get("start"))
    box = row.get("box")
    if box is not None:
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise issue("box", "must be [x1, y1, x2, y2]", box)
        box = [_number(v, "box", issue) for v in box]
        if not all(0.0 <= v <= 1.0 for v in box) or box[2] < box[0] or box[3] < box[1]:
            raise issue("box", "must be normalised corners with 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1", row["box"])
    texts = {}
    for name in ("source", "source_id"):
        value = row.get(name) or ""
        texts[name] = str(value) if isinstance(value, (int, float)) else value
        if not isinstance(texts[name], str):
            raise issue(name, "must be a string", value)
    resolved = str(path.resolve()) if check_media else str(path)
    return SceneRecord(
        id=row["id"],
        scene=row["scene"],
        split=row["split"],
        text=" ".join(row["text"].split()),
        image=resolved if media_key == "image" else None,
        video=resolved if media_key == "video" else None,
        start=start,
        end=end,
        box=box,
        **texts,
    )


def read_scene_annotations(
    path: str | os.PathLike, *, strict: bool = True, check_media: bool = True
) -> tuple[list[SceneRecord], ValidationReport]:
    """Read and validate a scene-tuning jsonl; strict raises ``ValueError``, lenient skips and reports."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene-tuning annotation file not found: {path}")
    records: list[SceneRecord] = []
    report = ValidationReport()
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise AnnotationError(
                        ValidationIssue(str(path), line_no, "<json>", f"malformed JSON line: {err.msg}", text[:80])
                    ) from None
                record = validate_scene_record(
                    row, file=str(path), line=line_no, base_dir=path.parent, check_media=check_media
                )
                if record.id in seen:
                    raise AnnotationError(
                        ValidationIssue(
                            str(path), line_no, "id", f"duplicate id (first on line {seen[record.id]})", record.id
                        )
                    )
            except AnnotationError as err:
                if strict:
                    raise
                report.add(err.issue)
                continue
            seen[record.id] = line_no
            records.append(record)
    report.kept = len(records)
    return records, report


def write_scene_annotations(records: Iterable[SceneRecord], path: str | os.PathLike, relative: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(path.parent if relative else None), ensure_ascii=False) + "\n")
    return path

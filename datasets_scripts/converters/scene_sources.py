"""The four scene-tuning sources (paper §4.1: CMU-MOSEI, HumanML3D, RefCOCO, Places365) → the scene-tuning schema
(:mod:`datasets_scripts.scene_schema`), to the level the :class:`~datasets_scripts.builders.SceneTuning` builder
needs: ids, media paths, time spans, descriptions, boxes, splits. Every converter is a batch job: bad entries are
skipped and reported, the rest is kept.

Source layouts read here (each project's own release):

* **CMU-MOSEI** (face) — the MMSA release's ``label.csv`` (``video_id, clip_id, text, label, annotation, mode``;
  ``label`` the sentiment in [-3, 3], ``mode`` train/valid/test) with clips at ``Raw/<video_id>/<clip_id>.mp4``.
  The description names the facial expression from the sentiment: "A person with a happy/sad/calm face."
  (choice: |label| < ``neutral_band`` is calm). The paper's example answer is "A woman with sad face.".
* **HumanML3D** (action) — ``train.txt``/``val.txt``/``test.txt`` (one motion id per line) and ``texts/<id>.txt``
  (lines ``caption#tokens#from#to``; ``from``/``to`` in seconds, ``0.0#0.0`` for the whole motion); HumanML3D holds
  motions, not videos, so the clips rendered from them are expected at ``<video_dir>/<id>.mp4``. One record per
  caption line.
* **RefCOCO** (object) — ``refs(unc).p`` (a pickled list of refs: ``ref_id, ann_id, image_id, split, sentences
  [{sent}]``; loaded with a restricted unpickler that only builds plain containers) or the same list as JSON, with
  COCO's ``instances.json`` (``images`` with file names and sizes, ``annotations`` with ``bbox [x, y, w, h]``,
  ``categories``). The answer inserts the region box after the category word: "A dog <0.48,0.23,0.87,0.79> on the
  grass." (:func:`~datasets_scripts.mini_set.format_region_box`, normalised corners). One record per ref (its
  first sentence).
* **Places365** (background) — ``categories_places365.txt`` (``/a/airfield 0``) and a file list
  (``places365_train_standard.txt``: ``/a/airfield/00000001.jpg 0``, or ``places365_val.txt``:
  ``Places365_val_00000001.jpg 165``). The answer names the scene: "An airfield." The paper also segments the
  objects away with SAM; that is a model, so it happens in ``processing/`` (the background extractor), not here.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

from ..scene_schema import SceneRecord, validate_scene_record, write_scene_annotations
from ..schema import AnnotationError, ValidationIssue, ValidationReport
from .common import load_json

MOSEI_SPLITS = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}
FACE_PHRASES = {"positive": "happy", "negative": "sad", "neutral": "calm"}


class _SceneCollector:
    def __init__(self, source_file: str, check_media: bool):
        self.source_file, self.check_media = str(source_file), check_media
        self.records: list[SceneRecord] = []
        self.report = ValidationReport()
        self._seen: set[str] = set()

    def skip(self, where: str, field: str, reason: str, value: Any = None, line: int = 0) -> None:
        self.report.add(ValidationIssue(f"{self.source_file}[{where}]", line, field, reason, value))

    def add(self, row: dict, where: str, line: int = 0) -> None:
        try:
            record = validate_scene_record(
                row, file=f"{self.source_file}[{where}]", line=line, check_media=self.check_media
            )
        except AnnotationError as err:
            self.report.add(err.issue)
            return
        if record.id in self._seen:
            self.skip(where, "id", "duplicate id", record.id, line)
            return
        self._seen.add(record.id)
        self.records.append(record)

    def result(self, out_jsonl) -> tuple[list[SceneRecord], ValidationReport]:
        self.report.kept = len(self.records)
        if out_jsonl is not None:
            write_scene_annotations(self.records, out_jsonl)
        return self.records, self.report


def _sentence(text: str) -> str:
    text = " ".join(str(text).split()).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _article(noun: str) -> str:
    return "An" if noun[:1].lower() in "aeiou" else "A"


# ----------------------------------------------------------------------------------------------------------------


def convert_cmu_mosei(
    label_csv: str | os.PathLike,
    raw_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    neutral_band: float = 0.5,
    check_media: bool = True,
) -> tuple[list[SceneRecord], ValidationReport]:
    """CMU-MOSEI (MMSA ``label.csv``) → face-scene records over whole clips (frames are sampled by the builder)."""
    path = Path(label_csv)
    if not path.is_file():
        raise FileNotFoundError(f"CMU-MOSEI label.csv not found: {path}")
    out = _SceneCollector(str(path), check_media)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"video_id", "clip_id", "label", "mode"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: header misses column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            where = f"{row['video_id']}/{row['clip_id']}"
            try:
                score = float(row["label"])
            except (TypeError, ValueError):
                out.skip(where, "label", "sentiment must be a number in [-3, 3]", row["label"], line)
                continue
            polarity = "neutral" if abs(score) < neutral_band else ("positive" if score > 0 else "negative")
            split = MOSEI_SPLITS.get(str(row["mode"]).strip().lower())
            if split is None:
                out.skip(where, "mode", "must be train, valid or test", row["mode"], line)
                continue
            out.add(
                {
                    "id": f"mosei-{row['video_id']}-{row['clip_id']}",
                    "scene": "face",
                    "split": split,
                    "text": f"A person with a {FACE_PHRASES[polarity]} face.",
                    "video": str(Path(raw_dir) / row["video_id"] / f"{row['clip_id']}.mp4"),
                    "source": "cmu-mosei",
                    "source_id": where,
                },
                where,
                line,
            )
    return out.result(out_jsonl)


def convert_humanml3d(
    root: str | os.PathLike,
    video_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    splits: tuple[str, ...] = ("train", "val", "test"),
    check_media: bool = True,
) -> tuple[list[SceneRecord], ValidationReport]:
    """HumanML3D (split files + ``texts/<id>.txt``) → action-scene records over rendered motion clips."""
    root = Path(root)
    out = _SceneCollector(str(root), check_media)
    found_split = False
    for split in splits:
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            continue
        found_split = True
        for motion_id in [m.strip() for m in split_file.read_text().splitlines() if m.strip()]:
            text_file = root / "texts" / f"{motion_id}.txt"
            if not text_file.is_file():
                out.skip(motion_id, "texts", f"caption file does not exist ({text_file})", motion_id)
                continue
            for line, caption_line in enumerate(text_file.read_text(encoding="utf-8").splitlines(), start=1):
                if not caption_line.strip():
                    continue
                parts = caption_line.split("#")
                if len(parts) < 4:
                    out.skip(motion_id, "caption", "expected caption#tokens#from#to", caption_line, line)
                    continue
                try:
                    start, end = float(parts[2]), float(parts[3])
                except ValueError:
                    out.skip(motion_id, "from/to", "times must be numbers", parts[2:4], line)
                    continue
                span = {} if start == 0.0 and end == 0.0 else {"start": start, "end": end}
                out.add(
                    {
                        "id": f"humanml3d-{motion_id}-{line}",
                        "scene": "action",
                        "split": "validation" if split == "val" else split,
                        "text": _sentence(parts[0]),
                        "video": str(Path(video_dir) / f"{motion_id}.mp4"),
                        **span,
                        "source": "humanml3d",
                        "source_id": f"{motion_id}#{line}",
                    },
                    motion_id,
                    line,
                )
    if not found_split:
        raise FileNotFoundError(f"no HumanML3D split file ({', '.join(s + '.txt' for s in splits)}) in {root}")
    return out.result(out_jsonl)


class _PlainUnpickler(pickle.Unpickler):
    """Builds only plain containers and scalars: a refs pickle cannot run code."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a RefCOCO refs file")


def load_refcoco_refs(path: str | os.PathLike) -> list[dict]:
    """RefCOCO refs from ``refs(unc).p`` (restricted unpickling) or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RefCOCO refs file not found: {path}")
    if path.suffix == ".json":
        refs = load_json(path, "RefCOCO refs")
    else:
        refs = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


def _insert_box(sentence: str, category: str, box_text: str) -> str:
    words = sentence.split()
    cat = category.lower().split()
    for i in range(len(words) - len(cat) + 1):
        if [re.sub(r"\W", "", w.lower()) for w in words[i : i + len(cat)]] == cat:
            words.insert(i + len(cat), box_text)
            break
    else:
        words = [_article(category).lower(), category, box_text, *words] if words else [category, box_text]
    if words[0].lower() not in ("a", "an", "the", "this", "that", "two", "three"):
        words.insert(0, _article(words[0]).lower())
    return _sentence(" ".join(words))


def convert_refcoco(
    refs_path: str | os.PathLike,
    instances_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    check_media: bool = True,
) -> tuple[list[SceneRecord], ValidationReport]:
    """RefCOCO refs + COCO instances → object-scene records with the normalised region box in the answer."""
    from ..mini_set import format_region_box

    refs = load_refcoco_refs(refs_path)
    instances = load_json(instances_json, "COCO instances.json")
    images = {img["id"]: img for img in instances.get("images", [])}
    annotations = {ann["id"]: ann for ann in instances.get("annotations", [])}
    categories = {cat["id"]: cat["name"] for cat in instances.get("categories", [])}
    out = _SceneCollector(str(refs_path), check_media)
    for index, ref in enumerate(refs):
        where = f"ref {ref.get('ref_id', index)}" if isinstance(ref, dict) else f"[{index}]"
        if not isinstance(ref, dict):
            out.skip(where, "<ref>", "must be an object", ref)
            continue
        ann = annotations.get(ref.get("ann_id"))
        image = images.get(ref.get("image_id"))
        if ann is None:
            out.skip(where, "ann_id", "no such annotation in instances.json", ref.get("ann_id"))
            continue
        if image is None:
            out.skip(where, "image_id", "no such image in instances.json", ref.get("image_id"))
            continue
        sentences = [s.get("sent") or s.get("raw") for s in ref.get("sentences", []) if isinstance(s, dict)]
        sentences = [s for s in sentences if s]
        if not sentences:
            out.skip(where, "sentences", "no referring expression", ref.get("sentences"))
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            width, height = float(image["width"]), float(image["height"])
            box = [round(max(0.0, min(1.0, v)), 2) for v in (x / width, y / height, (x + w) / width, (y + h) / height)]
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            out.skip(where, "bbox", "needs bbox [x, y, w, h] and the image width/height", ann.get("bbox"))
            continue
        category = categories.get(ann.get("category_id"), "object")
        out.add(
            {
                "id": f"refcoco-{ref.get('ref_id', index)}",
                "scene": "object",
                "split": "validation" if ref.get("split") == "val" else str(ref.get("split", "train")),
                "text": _insert_box(sentences[0], category, format_region_box(box)),
                "image": str(Path(image_dir) / image["file_name"]),
                "box": box,
                "source": "refcoco",
                "source_id": str(ref.get("ref_id", index)),
            },
            where,
        )
    return out.result(out_jsonl)


def places365_scene_name(category: str) -> str:
    """``/b/bamboo_forest`` → ``bamboo forest``; ``/a/apartment_building/outdoor`` → ``outdoor apartment building``."""
    parts = [p for p in category.strip().split("/") if p][1:]  # drop the letter folder
    if not parts:
        raise ValueError(f"not a Places365 category: {category!r}")
    name = parts[0].replace("_", " ")
    return f"{parts[1].replace('_', ' ')} {name}" if len(parts) > 1 else name


def convert_places365(
    categories_txt: str | os.PathLike,
    file_list: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    split: str = "train",
    limit: int | None = None,
    check_media: bool = True,
) -> tuple[list[SceneRecord], ValidationReport]:
    """Places365 categories + a file list → background-scene records ("An airfield.")."""
    names: dict[int, str] = {}
    for line in Path(categories_txt).read_text().splitlines():
        if line.strip():
            category, index = line.rsplit(maxsplit=1)
            names[int(index)] = places365_scene_name(category)
    out = _SceneCollector(str(file_list), check_media)
    for line_no, line in enumerate(Path(file_list).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if limit is not None and len(out.records) >= limit:
            break
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            out.skip(f"line {line_no}", "<line>", "expected '<image path> <category index>'", line, line_no)
            continue
        rel, index = parts[0].lstrip("/"), int(parts[1])
        if index not in names:
            out.skip(f"line {line_no}", "category", "unknown category index", index, line_no)
            continue
        out.add(
            {
                "id": f"places365-{split}-{rel}",
                "scene": "background",
                "split": split,
                "text": f"{_article(names[index])} {names[index]}.",
                "image": str(Path(image_dir) / rel),
                "source": "places365",
                "source_id": rel,
            },
            f"line {line_no}",
            line_no,
        )
    return out.result(out_jsonl)

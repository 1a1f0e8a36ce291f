"""``datasets`` builders for the two training stages of ICM (paper §3.4, §4.1).

datasets ≥ 4 has no loading scripts, so the builders are importable :class:`datasets.GeneratorBasedBuilder`
subclasses::

    from datasets_scripts import OmniSila, SceneTuning

    builder = OmniSila(config_name="implicit", data_dir="path/with/annotations", cache_dir=...)
    builder.download_and_prepare()
    ds = builder.as_dataset()          # DatasetDict, one split per ``split`` value in the annotations

* :class:`OmniSila` — configs ``explicit`` (positive/negative/neutral, built on TSL-300) and ``implicit`` (the 12
  CUVA labels). ``data_dir`` holds ``<config>.jsonl`` (or ``annotations.jsonl``, filtered by its ``config``
  field) in the clip schema of :mod:`datasets_scripts.schema`. Each clip yields one row per task: ``identify``,
  ``locate`` and ``attribute`` (the training instructions of §4.1) and ``combined`` (the single test-time
  instruction, "inferring three tasks with the same instruction"), with every clip field alongside.
* :class:`SceneTuning` — configs ``face`` (CMU-MOSEI), ``action`` (HumanML3D), ``object`` (RefCOCO) and
  ``background`` (Places365); ``data_dir`` holds ``<scene>.jsonl`` in the scene schema of
  :mod:`datasets_scripts.scene_schema`. The instruction is the paper's "Please describe the facial/action/image
  region/background" prompt, the answer the description. Video records are sampled at ``frame_rate`` frames per
  second (one row per sampled frame, written as PNG under ``frames_dir``).

Both builders validate strictly by default; ``lenient=True`` skips bad records and keeps the report in
``builder.report`` (also returned by ``builder.validate()``). The cache key includes a digest of the annotation
files, so an edited annotation file is rebuilt rather than served stale from the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from modeling_icm.templates import (
    CONFIG_NAMES,
    LABELS,
    SCENE_NAMES,
    SCENE_TUNING_PROMPTS,
    attribute_answer,
    attribute_instruction,
    combined_answer,
    combined_instruction,
    identify_answer,
    identify_instruction,
    locate_answer,
    locate_instruction,
)

from .scene_schema import SceneRecord, read_scene_annotations
from .schema import ClipRecord, ValidationReport, iter_annotations

logger = logging.getLogger(__name__)

#: The instruction tasks of one clip: three for training (§4.1) and the combined test-time one.
TASKS: tuple[str, ...] = ("identify", "locate", "attribute", "combined")
VIDEO_FEATURES = ("path", "video")
_CITATION = """@inproceedings{omnisila2025,
  title = {Omni-SILA: Towards Omni-scene Driven Visual Sentiment Identifying, Locating and Attributing in Videos},
  booktitle = {Proceedings of the ACM Web Conference 2025 (WWW '25)},
  year = {2025},
  doi = {10.1145/3696410.3714642}
}"""
_HOMEPAGE = "https://doi.org/10.1145/3696410.3714642"


def instruction_rows(record: ClipRecord, tasks: tuple[str, ...] = TASKS) -> list[dict[str, Any]]:
    """The instruction examples of one clip (paper §4.1), all wording from ``modeling_icm.templates``."""
    config, label = record.config, record.label
    pairs = {
        "identify": (identify_instruction(config), identify_answer(config, label)),
        "locate": (locate_instruction(config, label), locate_answer(label, record.segments)),
        "attribute": (attribute_instruction(config, label), attribute_answer(record.cause)),
        "combined": (combined_instruction(config), combined_answer(config, label, record.segments, record.cause)),
    }
    rows = []
    for task in tasks:
        if task not in pairs:
            raise ValueError(f"unknown task {task!r}; tasks are {list(TASKS)}")
        instruction, answer = pairs[task]
        rows.append(
            {
                "id": f"{record.id}-{task}",
                "clip_id": record.id,
                "task": task,
                "instruction": instruction,
                "answer": answer,
                "video": record.video,
                "duration": record.duration,
                "fps": record.fps,
                "label": label,
                "segments": [list(s) for s in record.segments],
                "cause": record.cause,
                "source": record.source,
                "source_id": record.source_id,
                "offset": float(record.offset),
            }
        )
    return rows


def _video_feature(kind: str) -> datasets.features.features.FeatureType:
    if kind == "path":
        return datasets.Value("string")
    if kind == "video":
        decode = datasets.config.TORCHCODEC_AVAILABLE
        if not decode:
            logger.warning("datasets.Video decoding needs torchcodec (pip install torchcodec); using decode=False")
        return datasets.Video(decode=decode)
    raise ValueError(f"video_feature must be one of {list(VIDEO_FEATURES)}, got {kind!r}")


def omnisila_features(config_name: str, video_feature: str = "path") -> datasets.Features:
    """The typed features of an Omni-SILA config: labels as ``ClassLabel``, segments as a list of [start, end]."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "clip_id": datasets.Value("string"),
            "task": datasets.Value("string"),
            "instruction": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "video": _video_feature(video_feature),
            "duration": datasets.Value("float64"),
            "fps": datasets.Value("float64"),
            "label": datasets.ClassLabel(names=list(LABELS[config_name])),
            "segments": datasets.List(datasets.List(datasets.Value("float64"))),
            "cause": datasets.Value("string"),
            "source": datasets.Value("string"),
            "source_id": datasets.Value("string"),
            "offset": datasets.Value("float64"),
        }
    )


def scene_tuning_features() -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "scene": datasets.Value("string"),
            "instruction": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "image": datasets.Value("string"),
            "video": datasets.Value("string"),
            "timestamp": datasets.Value("float64"),
            "box": datasets.List(datasets.Value("float64")),
            "source": datasets.Value("string"),
            "source_id": datasets.Value("string"),
        }
    )


def _digest(paths: list[Path], extra: str) -> str:
    sha = hashlib.sha256(extra.encode())
    for path in paths:
        sha.update(str(path.resolve()).encode())
        with path.open("rb") as handle:  # streamed: a 200K-clip file never sits in memory
            while block := handle.read(1 << 20):
                sha.update(block)
    return sha.hexdigest()[:16]


def _split_order(splits) -> list[str]:
    known = ["train", "validation", "test"]
    return sorted(set(splits), key=lambda s: (known.index(s) if s in known else len(known), s))


# ----------------------------------------------------------------------------------------------------------------
# Omni-SILA
# ----------------------------------------------------------------------------------------------------------------


class _LastLine:
    """A one-slot ``lines_out`` for :func:`iter_annotations`: the line number of the record just yielded."""

    value = 0

    def append(self, line: int) -> None:
        self.value = line


@dataclass
class OmniSilaConfig(datasets.BuilderConfig):
    """Args:
    lenient: skip and report bad records instead of raising (``builder.report``).
    tasks: which instruction tasks each clip yields (default all four).
    video_feature: ``"path"`` (a string column, default) or ``"video"`` (``datasets.Video``; decoding needs
        torchcodec).
    check_video: require every video file to exist.
    """

    lenient: bool = False
    tasks: tuple[str, ...] = TASKS
    video_feature: str = "path"
    check_video: bool = True


class OmniSila(datasets.GeneratorBasedBuilder):
    """The explicit (TSL-300) and implicit (CUVA) Omni-SILA instruction sets (paper §4.1)."""

    BUILDER_CONFIG_CLASS = OmniSilaConfig
    BUILDER_CONFIGS = [
        OmniSilaConfig(name="explicit", description="Explicit Omni-SILA: positive/negative/neutral on TSL-300."),
        OmniSilaConfig(name="implicit", description="Implicit Omni-SILA: 12 CUVA labels, 11 abnormal + Normal."),
    ]
    DEFAULT_CONFIG_NAME = "implicit"

    def __init__(self, *args, **kwargs):
        data_dir = kwargs.get("data_dir")
        if kwargs.get("hash") is None and data_dir is not None:
            files = self._annotation_files(Path(data_dir), kwargs.get("config_name") or self.DEFAULT_CONFIG_NAME)
            if files:
                kwargs["hash"] = _digest(files, "omnisila-v1")
        super().__init__(*args, **kwargs)
        self.report: ValidationReport | None = None

    @staticmethod
    def _annotation_files(data_dir: Path, config_name: str) -> list[Path]:
        for candidate in (data_dir / f"{config_name}.jsonl", data_dir / "annotations.jsonl"):
            if candidate.is_file():
                return [candidate]
        return []

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"Omni-SILA {self.config.name} instruction examples: identify, locate, attribute, combined.",
            features=omnisila_features(self.config.name, self.config.video_feature),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _annotation_path(self) -> Path:
        if self.config.name not in CONFIG_NAMES:
            raise ValueError(f"config name must be one of {list(CONFIG_NAMES)}, got {self.config.name!r}")
        if not self.config.data_dir:
            raise ValueError("OmniSila needs data_dir=<folder with explicit.jsonl / implicit.jsonl>")
        files = self._annotation_files(Path(self.config.data_dir), self.config.name)
        if not files:
            raise FileNotFoundError(
                f"no annotations in {self.config.data_dir}: expected {self.config.name}.jsonl or annotations.jsonl"
            )
        return files[0]

    def _iter_records(self, report: ValidationReport | None = None, **kwargs):
        return iter_annotations(
            self._annotation_path(),
            strict=not self.config.lenient,
            check_video=self.config.check_video,
            config=self.config.name,
            report=report,
            **kwargs,
        )

    def _records(self) -> tuple[list[ClipRecord], ValidationReport]:
        report = ValidationReport()
        return list(self._iter_records(report=report)), report

    def validate(self) -> ValidationReport:
        """Validate the annotations (leniently) and return what would be skipped."""
        lenient = self.config.lenient
        self.config.lenient = True
        try:
            report = ValidationReport()
            for _ in self._iter_records(report=report):
                pass
            return report
        finally:
            self.config.lenient = lenient

    def _split_generators(self, dl_manager):
        # one streaming pass validates and notes each valid record's line number per split (4 bytes a clip); each
        # split then reads only its lines, so no list of records is ever held (200K clips stream through)
        self.report = ValidationReport()
        lines: dict[str, array] = {}
        last = _LastLine()
        for record in self._iter_records(report=self.report, lines_out=last):
            lines.setdefault(record.split, array("I")).append(last.value)
        if self.report:
            logger.warning("OmniSila(%s): %s", self.config.name, self.report.summary())
        if not lines:
            raise ValueError(f"no valid {self.config.name} clips in {self.config.data_dir}")
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "lines": lines[split]})
            for split in _split_order(lines)
        ]

    def _generate_examples(self, split: str, lines=None):
        index = 0
        tasks = tuple(self.config.tasks)
        # the first pass reported the bad records; this one reads only the valid lines of this split
        for record in self._iter_records(report=ValidationReport(), split=split, only_lines=lines):
            for row in instruction_rows(record, tasks):
                yield index, row
                index += 1


# ----------------------------------------------------------------------------------------------------------------
# Scene tuning
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SceneTuningConfig(datasets.BuilderConfig):
    """Args:
    frame_rate: frames per second sampled from video records (CMU-MOSEI faces, HumanML3D actions); the paper
        samples "at an appropriate rate" to reach 200K frames — choose it for your budget.
    max_frames_per_video: at most this many frames per video record (evenly thinned); 0 keeps all (``datasets``
        drops ``None`` config kwargs, so 0 is the way to say "no limit").
    frames_dir: where sampled frames are written as PNG (default: ``<cache_dir>/omnisila_scene_frames``).
    lenient: skip and report bad records instead of raising.
    """

    frame_rate: float = 1.0
    max_frames_per_video: int | None = 8
    frames_dir: str | None = None
    lenient: bool = False


class SceneTuning(datasets.GeneratorBasedBuilder):
    """The scene-tuning instruction sets (paper §3.4 stage one; §4.1): describe the face, action, image region or
    background."""

    BUILDER_CONFIG_CLASS = SceneTuningConfig
    BUILDER_CONFIGS = [
        SceneTuningConfig(name="face", description="Facial expressions (CMU-MOSEI video frames)."),
        SceneTuningConfig(name="action", description="Human actions (HumanML3D video frames)."),
        SceneTuningConfig(name="object", description="Object regions with boxes (RefCOCO)."),
        SceneTuningConfig(name="background", description="Visual backgrounds (Places365)."),
    ]
    DEFAULT_CONFIG_NAME = "face"

    def __init__(self, *args, **kwargs):
        data_dir, name = kwargs.get("data_dir"), kwargs.get("config_name") or self.DEFAULT_CONFIG_NAME
        if kwargs.get("hash") is None and data_dir is not None and (Path(data_dir) / f"{name}.jsonl").is_file():
            kwargs["hash"] = _digest([Path(data_dir) / f"{name}.jsonl"], "scene-tuning-v1")
        super().__init__(*args, **kwargs)
        self.report: ValidationReport | None = None

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"Omni-SILA scene tuning, {self.config.name} scene: {SCENE_TUNING_PROMPTS[self.config.name]}",
            features=scene_tuning_features(),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _annotation_file(self) -> Path:
        if self.config.name not in SCENE_NAMES:
            raise ValueError(f"scene must be one of {list(SCENE_NAMES)}, got {self.config.name!r}")
        if not self.config.data_dir:
            raise ValueError("SceneTuning needs data_dir=<folder with face.jsonl, action.jsonl, ...>")
        path = Path(self.config.data_dir) / f"{self.config.name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no scene-tuning annotations for {self.config.name!r}: {path} is missing")
        return path

    def validate(self) -> ValidationReport:
        return read_scene_annotations(self._annotation_file(), strict=False)[1]

    def _frames_dir(self) -> Path:
        root = self.config.frames_dir or os.path.join(self._cache_dir_root, "omnisila_scene_frames")
        return Path(root) / self.config.name / (self.hash or "nohash")

    def _split_generators(self, dl_manager):
        records, self.report = read_scene_annotations(self._annotation_file(), strict=not self.config.lenient)
        records = [r for r in records if r.scene == self.config.name] or records
        if self.report:
            logger.warning("SceneTuning(%s): %s", self.config.name, self.report.summary())
        if not records:
            raise ValueError(f"no valid {self.config.name} records in {self.config.data_dir}")
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"records": [r for r in records if r.split == split]})
            for split in _split_order(r.split for r in records)
        ]

    def _generate_examples(self, records: list[SceneRecord]):
        from .frames import sample_frames

        prompt = SCENE_TUNING_PROMPTS[self.config.name]
        index = 0
        for record in records:
            base = {
                "scene": self.config.name,
                "instruction": prompt,
                "answer": record.text,
                "box": list(record.box or []),
                "source": record.source,
                "source_id": record.source_id,
            }
            if record.image:
                yield index, {**base, "id": record.id, "image": record.image, "video": "", "timestamp": None}
                index += 1
                continue
            try:
                frames, times = sample_frames(
                    record.video,
                    self.config.frame_rate,
                    record.start,
                    record.end,
                    self.config.max_frames_per_video or None,
                )
            except ValueError as err:
                if not self.config.lenient:
                    raise ValueError(f"scene record {record.id!r}: {err}") from err
                logger.warning("SceneTuning(%s): skipped %s: %s", self.config.name, record.id, err)
                if self.report is not None:
                    from .schema import ValidationIssue

                    self.report.add(ValidationIssue(str(record.video), 0, "video", str(err), record.id))
                continue
            from PIL import Image

            out_dir = self._frames_dir()
            out_dir.mkdir(parents=True, exist_ok=True)
            for frame, t in zip(frames, times):
                path = out_dir / f"{record.id}-{int(round(t * 1000)):08d}ms.png"
                Image.fromarray(frame).save(path)
                row_id = f"{record.id}@{t:.3f}s"
                yield index, {**base, "id": row_id, "image": str(path), "video": record.video, "timestamp": float(t)}
                index += 1

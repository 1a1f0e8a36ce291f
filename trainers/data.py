"""Training examples of both stages, built from annotations + the scene-feature cache (never re-running extractors).

An example is a plain dict (the collator turns a list of them into an ``IcmBatch``)::

    {"frames": uint8 [T, H, W, 3], "timestamps": [T floats, seconds from the clip start],
     "scene_features": {scene: [T, items, dim]}, "scene_masks": {scene: [T, items]},
     "instruction": str, "answer": str,
     # Omni-SILA rows also carry the reference fields the metrics need:
     "config": "implicit", "label": str, "segments": [[s, e], ...], "cause": str, "duration": float,
     "clip_id": str, "task": str}

Frames are decoded once when the dataset is built (decoding is not extraction; the mini set's 64 px clips are small)
and scene features are read from the :class:`processing.cache.FeatureCache`. A clip whose features are not in the
cache is an error naming the video (or, with ``on_missing="skip"``, skipped and listed in ``dataset.skipped``).

Scene-tuning (stage 1, §3.4) records are either clip segments (``face``/``action``: the segment is sampled like a
clip) or still images (``object``/``background``): a still image becomes a clip of ``num_frames`` identical frames
at 0, 1, 2, ... s (choice: the paper tunes on images; our model always sees ``num_frames`` frames). Their features
are cached under the image file's hash with the sampling ``{"still_image": true, "num_frames": T}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from modeling_icm.templates import SCENE_NAMES, SCENE_TUNING_PROMPTS

OMNISILA_TASKS: tuple[str, ...] = ("identify", "locate", "attribute", "combined")


class MissingFeaturesError(KeyError):
    """A clip's scene features are not in the feature cache."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class IcmExamples(Dataset):
    """A list of example dicts (see the module docstring) usable by the HF ``Trainer``; ``skipped`` lists the
    ``(source, reason)`` of items left out."""

    def __init__(self, examples: list[dict[str, Any]], skipped: list[tuple[str, str]] | None = None):
        self.examples = list(examples)
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]

    def select(self, indices: Iterable[int]) -> IcmExamples:
        return IcmExamples([self.examples[i] for i in indices], self.skipped)

    def filter(self, fn) -> IcmExamples:
        return IcmExamples([e for e in self.examples if fn(e)], self.skipped)

    def clips(self) -> IcmExamples:
        """One example per clip (the first row of each ``clip_id``), e.g. for dictionary embeddings."""
        seen, keep = set(), []
        for example in self.examples:
            key = example.get("clip_id", id(example))
            if key not in seen:
                seen.add(key)
                keep.append(example)
        return IcmExamples(keep, self.skipped)


# ----------------------------------------------------------------------------------------------------------------
# cache access
# ----------------------------------------------------------------------------------------------------------------


def _config_hash(pipeline_or_hash) -> str:
    return pipeline_or_hash if isinstance(pipeline_or_hash, str) else pipeline_or_hash.config_hash()


def still_image_key(cache, image: str | os.PathLike, pipeline_or_hash, num_frames: int):
    from processing.cache import CacheKey

    return CacheKey.create(
        cache.video_hash(image), _config_hash(pipeline_or_hash), still_image=True, num_frames=int(num_frames)
    )


def load_still_image(image: str | os.PathLike, num_frames: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(image) as img:
        frame = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(frame).unsqueeze(0).repeat(int(num_frames), 1, 1, 1)


def extract_still_images(
    images: Iterable[str | os.PathLike], pipeline, cache, num_frames: int = 8
) -> dict[str, list[str]]:
    """Extract the scene features of still images (as ``num_frames``-frame clips) into ``cache``; cached ones are
    read. Returns ``{"computed": [...], "cached": [...], "skipped": ["path: reason", ...]}``."""
    report: dict[str, list[str]] = {"computed": [], "cached": [], "skipped": []}
    for image in images:
        path = os.fspath(image)
        try:
            key = still_image_key(cache, path, pipeline, num_frames)
            if cache.get(key) is not None:
                report["cached"].append(path)
                continue
            frames = load_still_image(path, num_frames)
        except (OSError, ValueError) as err:
            report["skipped"].append(f"{path}: {err}")
            continue
        features, masks = pipeline.extract(frames)
        cache.put(key, features, masks, [float(i) for i in range(num_frames)], meta={"path": path}, flush=False)
        report["computed"].append(path)
    cache.flush()
    return report


def _cached_clip(cache, path: str, pipeline_hash: str, num_frames: int, start=None, end=None, backend=None):
    from processing.cache import cache_key_for

    key = cache_key_for(cache, path, pipeline_hash, num_frames=num_frames, start=start, end=end, backend=backend)
    cached = cache.get(key)
    if cached is None:
        window = "" if start is None and end is None else f" [{start}, {end}] s"
        raise MissingFeaturesError(
            f"no scene features in the cache {cache.root} for video {path}{window} (num_frames={num_frames}, "
            f"pipeline {pipeline_hash[:12]}): {cache.last_status} ({cache.last_reason}). Run "
            "processing.cache.extract_videos first."
        )
    return cached


def _decode(path: str, num_frames: int, start=None, end=None, backend=None):
    from processing.video import sample_frames

    clip = sample_frames(path, num_frames=num_frames, start=start, end=end, backend=backend)
    origin = float(clip.start or 0.0)
    return clip.frames, [float(t) - origin for t in clip.timestamps]


def _clip_example(cache, path, pipeline_hash, num_frames, start=None, end=None, backend=None) -> dict[str, Any]:
    cached = _cached_clip(cache, path, pipeline_hash, num_frames, start, end, backend)
    frames, times = _decode(path, num_frames, start, end, backend)
    return {
        "frames": frames,
        "timestamps": times,
        "scene_features": cached.features,
        "scene_masks": cached.masks,
    }


# ----------------------------------------------------------------------------------------------------------------
# Omni-SILA (stage 2)
# ----------------------------------------------------------------------------------------------------------------


def read_clip_records(data_dir: str | os.PathLike, config_name: str, split: str):
    """The validated clip records (``datasets_scripts.schema``) of one config and split."""
    from datasets_scripts.schema import read_annotations

    data_dir = Path(data_dir)
    for candidate in (data_dir / f"{config_name}.jsonl", data_dir / "annotations.jsonl"):
        if candidate.is_file():
            records, _ = read_annotations(candidate, strict=True, config=config_name)
            chosen = [r for r in records if r.split == split and r.config == config_name]
            if not chosen:
                raise ValueError(f"{candidate}: no {config_name!r} clips in split {split!r}")
            return chosen
    raise FileNotFoundError(f"no annotations for config {config_name!r} in {data_dir} ({config_name}.jsonl)")


def omnisila_examples(
    data_dir: str | os.PathLike,
    config_name: str,
    split: str,
    cache,
    pipeline_or_hash,
    num_frames: int = 8,
    tasks: Sequence[str] = OMNISILA_TASKS,
    backend: str | None = None,
    on_missing: str = "raise",
    limit: int | None = None,
    clip_ids: Iterable[str] | None = None,
    grid=None,
) -> IcmExamples:
    """The instruction examples (paper §4.1: identify, locate, attribute and the combined test-time instruction) of
    one Omni-SILA config and split, with frames and cached scene features. ``clip_ids`` keeps only those clips
    (before anything is read); ``limit`` the first ``limit`` clips.

    Without ``grid`` each clip is its whole video, sampled and cached as one entry (the mini set). Clip windows of
    longer sources (``datasets_scripts.windows``) need ``grid``, a ``processing.grid.GridClips``: each clip gathers
    its frames and features from its source's frame grid. For 200K clips use :class:`WindowExamples` (lazy)."""
    from datasets_scripts.builders import instruction_rows

    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
    pipeline_hash = _config_hash(pipeline_or_hash)
    records = read_clip_records(data_dir, config_name, split)
    if clip_ids is not None:
        wanted = set(clip_ids)
        records = [r for r in records if r.id in wanted]
    if limit is not None:
        records = records[: int(limit)]
    examples, skipped = [], []
    window = next((r for r in records if r.offset > 0), None) if grid is None else None
    if window is not None:
        raise ValueError(
            f"clip {window.id!r} is a window at {window.offset:g} s of {window.video}: clip windows are served from "
            "the per-source frame grid, pass grid=processing.grid.GridClips(...) (or use WindowExamples)"
        )
    for record in records:
        try:
            if grid is not None:
                try:
                    clip = grid.clip(record.video, record.offset, record.duration, num_frames)
                except KeyError as err:  # processing.grid.MissingGridError
                    raise MissingFeaturesError(str(err)) from None
            else:
                clip = _clip_example(cache, record.video, pipeline_hash, num_frames, backend=backend)
        except MissingFeaturesError as err:
            if on_missing == "raise":
                raise
            skipped.append((record.video, str(err)))
            continue
        for row in instruction_rows(record, tuple(tasks)):
            examples.append(
                {
                    **clip,
                    "instruction": row["instruction"],
                    "answer": row["answer"],
                    "config": config_name,
                    "label": record.label,
                    "segments": [list(map(float, s)) for s in record.segments],
                    "cause": record.cause,
                    "duration": float(record.duration),
                    "clip_id": record.id,
                    "task": row["task"],
                    "video": record.video,
                }
            )
    return IcmExamples(examples, skipped)


class WindowExamples(Dataset):
    """Omni-SILA examples of clip windows, built lazily: ``rows`` are the instruction rows (a ``datasets.Dataset``
    from the ``OmniSila`` builder or from ``load_dataset`` of its Parquet export — Arrow, memory-mapped) and each
    item gathers its frames and scene features from the per-source frame grids (``processing.grid.GridClips``).

    Nothing per clip is held in memory, so 200K clips cost what 20K do. ``video_root`` resolves relative ``video``
    paths (an export written with ``relative_to``). Items are the dicts of the module docstring.
    """

    def __init__(self, rows, clips, config_name: str | None = None, video_root: str | os.PathLike | None = None):
        self.rows = rows
        self.clips = clips
        label = rows.features["label"] if hasattr(rows, "features") else None
        self._label_name = label.int2str if hasattr(label, "int2str") else (lambda v: v)
        self.config_name = config_name or (
            "explicit" if label is not None and "neutral" in getattr(label, "names", []) else "implicit"
        )
        self.video_root = None if video_root is None else Path(video_root)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[int(index)]
        video = row["video"]
        if self.video_root is not None and not os.path.isabs(video):
            video = str(self.video_root / video)
        clip = self.clips.clip(video, float(row.get("offset") or 0.0), float(row["duration"]))
        return {
            **clip,
            "instruction": row["instruction"],
            "answer": row["answer"],
            "config": self.config_name,
            "label": self._label_name(row["label"]),
            "segments": [list(map(float, s)) for s in row["segments"]],
            "cause": row["cause"],
            "duration": float(row["duration"]),
            "clip_id": row["clip_id"],
            "task": row["task"],
            "video": video,
            "source_id": row.get("source_id", ""),
            "offset": float(row.get("offset") or 0.0),
        }


# ----------------------------------------------------------------------------------------------------------------
# Scene tuning (stage 1)
# ----------------------------------------------------------------------------------------------------------------


def read_scene_records(
    data_dir: str | os.PathLike,
    scenes: Sequence[str] = SCENE_NAMES,
    split: str = "train",
    max_per_scene: int | None = None,
):
    """``(scene, record dict with absolute paths)`` of the scene-tuning JSONL files (``<scene>.jsonl``); at most
    ``max_per_scene`` records per scene, taken description by description in turn
    (:func:`datasets_scripts.schema.round_robin` on ``text``): the files list records grouped by what they
    describe, and scene tuning on the first few alone taught every expert one constant answer ("A person with a
    happy face." for every face), which collapsed the scene tokens before Omni-SILA tuning began."""
    from datasets_scripts.schema import round_robin

    data_dir = Path(data_dir)
    out = []
    for scene in scenes:
        path = data_dir / f"{scene}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no scene-tuning annotations for scene {scene!r}: {path} is missing")
        rows = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not JSON ({err})") from err
            if row.get("split") == split:
                rows.append(row)
        for row in round_robin(rows, lambda row: row.get("text"), max_per_scene):
            for field_name in ("video", "image"):
                if row.get(field_name):
                    row[field_name] = str((data_dir / row[field_name]).resolve())
            out.append((scene, row))
    return out


def scene_tuning_sources(
    data_dir, scenes: Sequence[str] = SCENE_NAMES, split: str = "train", max_per_scene: int | None = None
):
    """What must be extracted for scene tuning: ``(video items [{"video", "start", "end"}], images [paths])``."""
    videos, images = [], []
    for _, row in read_scene_records(data_dir, scenes, split, max_per_scene):
        if row.get("image"):
            images.append(row["image"])
        elif row.get("video"):
            videos.append({"video": row["video"], "start": row.get("start"), "end": row.get("end")})
    return videos, images


def scene_tuning_examples(
    data_dir: str | os.PathLike,
    cache,
    pipeline_or_hash,
    scenes: Sequence[str] = SCENE_NAMES,
    split: str = "train",
    num_frames: int = 8,
    backend: str | None = None,
    on_missing: str = "raise",
    max_per_scene: int | None = None,
) -> IcmExamples:
    """Scene-tuning examples (§3.4 stage 1: "Please describe the facial/action/image region/background")."""
    pipeline_hash = _config_hash(pipeline_or_hash)
    examples, skipped = [], []
    for scene, row in read_scene_records(data_dir, scenes, split, max_per_scene):
        try:
            if row.get("image"):
                key = still_image_key(cache, row["image"], pipeline_hash, num_frames)
                cached = cache.get(key)
                if cached is None:
                    raise MissingFeaturesError(
                        f"no scene features in the cache {cache.root} for image {row['image']} "
                        f"({cache.last_status}: {cache.last_reason}); run trainers.data.extract_still_images first"
                    )
                clip = {
                    "frames": load_still_image(row["image"], num_frames),
                    "timestamps": [float(i) for i in range(num_frames)],
                    "scene_features": cached.features,
                    "scene_masks": cached.masks,
                }
            else:
                clip = _clip_example(
                    cache, row["video"], pipeline_hash, num_frames, row.get("start"), row.get("end"), backend
                )
        except MissingFeaturesError as err:
            if on_missing == "raise":
                raise
            skipped.append((row.get("image") or row.get("video"), str(err)))
            continue
        examples.append(
            {
                **clip,
                "instruction": SCENE_TUNING_PROMPTS[scene],
                "answer": row["text"],
                "scene": scene,
                "clip_id": row.get("id"),
                "task": f"scene:{scene}",
            }
        )
    return IcmExamples(examples, skipped)


def dataset_extraction_items(data_dir: str | os.PathLike) -> tuple[list, list[str], list]:
    """What ``icm extract --dataset DIR`` extracts from a data folder: every clip video of ``explicit.jsonl`` /
    ``implicit.jsonl`` (both splits), the scene-tuning video segments (``{"video", "start", "end"}``) and still images,
    unique, in file order; and the records skipped as invalid (their validation issues). A folder without either
    annotation file is a ValueError naming it."""
    from datasets_scripts.schema import ValidationReport, iter_annotations
    from modeling_icm.templates import CONFIG_NAMES

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir}: not a folder")
    files = [data_dir / f"{c}.jsonl" for c in CONFIG_NAMES if (data_dir / f"{c}.jsonl").is_file()]
    if not files:
        raise ValueError(f"{data_dir}: no explicit.jsonl or implicit.jsonl in it")
    videos: list = []
    skipped: list = []
    for path in files:
        report = ValidationReport()
        # streamed: the many clip windows of one source name one video
        videos += list(dict.fromkeys(r.video for r in iter_annotations(path, strict=False, check_video=False,
                                                                       config=path.stem, report=report)))  # fmt: skip
        skipped += list(report.issues)
    images: list[str] = []
    scene_dir = data_dir / "scene_tuning"
    if scene_dir.is_dir():
        for split in ("train", "test"):
            items, stills = scene_tuning_sources(scene_dir, split=split)
            videos += items
            images += stills
    unique = {json.dumps(v, sort_keys=True): v for v in videos}
    return list(unique.values()), list(dict.fromkeys(images)), skipped

def extract_items(
    items: Sequence[Any],
    pipeline,
    cache,
    *,
    images: Sequence[str | os.PathLike] = (),
    num_frames: int = 8,
    max_side: int | None = None,
    backend: str | None = None,
    grid_fps: float | None = None,
    progress: bool = True,
):
    """Extract the scene features of what ``icm extract`` is given into ``cache``: video files and scene-tuning
    segments (``{"video", "start", "end"}``, as :func:`dataset_extraction_items` lists them) with ``num_frames``
    frames each, or — with ``grid_fps`` — each source video once on its frame grid (``processing.grid``; segments stay
    per clip); then still images. Returns the videos' ``ExtractionReport`` and the images' report
    (:func:`extract_still_images`)."""
    from processing.cache import extract_videos

    clips = [i for i in items if grid_fps is None or isinstance(i, dict)]
    report = extract_videos(clips, pipeline, cache, num_frames=num_frames, max_side=max_side, backend=backend,
                            progress=progress)  # fmt: skip
    if grid_fps is not None:
        from processing.grid import extract_source_grids

        sources = [i for i in items if not isinstance(i, dict)]
        report = report.merge(extract_source_grids(sources, pipeline, cache, grid_fps=grid_fps, max_side=max_side,
                                                   backend=backend, progress=progress))  # fmt: skip
    still = extract_still_images(images, pipeline, cache, num_frames=num_frames) if images else {
        "computed": [], "cached": [], "skipped": []}  # fmt: skip
    return report, still


__all__ = [
    "dataset_extraction_items",
    "extract_items",
    "OMNISILA_TASKS",
    "IcmExamples",
    "WindowExamples",
    "MissingFeaturesError",
    "extract_still_images",
    "omnisila_examples",
    "read_clip_records",
    "read_scene_records",
    "scene_tuning_examples",
    "scene_tuning_sources",
]

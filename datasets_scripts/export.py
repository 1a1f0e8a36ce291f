"""Parquet + dataset-card export, so that a built set loads with ``datasets.load_dataset`` once pushed.

:func:`export_parquet` writes, for each config and split, ``<out_dir>/<config>/<split>-00000-of-00001.parquet``
and a ``README.md`` whose YAML header declares the ``configs:`` (their ``data_files`` per split), the
``dataset_info`` (typed features, ClassLabel names, split sizes), the license and the task categories. Then
``datasets.load_dataset(out_dir, "implicit")`` (or ``load_dataset("<org>/omni-sila", "implicit")`` after
``icm push --dataset``) gives back exactly the rows and features the builder produced.

Media columns (``video``, ``image``) hold paths. By default they are written as they are (absolute paths); pass
``relative_to=<folder>`` to write them relative to a folder that is pushed alongside. :func:`export_dataset` builds
the sets of a data folder and writes them with their media copied alongside: the one dataset export.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

MEDIA_COLUMNS = ("video", "image")
PARQUET_NAME = "{split}-00000-of-00001.parquet"


def _relative_media(dataset: datasets.Dataset, root: str) -> datasets.Dataset:
    columns = [
        c for c in MEDIA_COLUMNS if c in dataset.column_names and dataset.features[c] == datasets.Value("string")
    ]
    if not columns:
        return dataset

    def rewrite(batch):
        return {c: [os.path.relpath(p, root) if p else p for p in batch[c]] for c in columns}

    return dataset.map(rewrite, batched=True, desc="relative media paths")


def dataset_card(
    infos: Mapping[str, datasets.DatasetInfo],
    data_files: Mapping[str, Mapping[str, str]],
    *,
    pretty_name: str,
    license: str,
    task_categories: tuple[str, ...],
    tags: tuple[str, ...],
    body: str,
) -> str:
    """The README.md text: a YAML header (configs with data_files, dataset_info, license, task categories) and a
    markdown body."""
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        language=["en"],
        task_categories=list(task_categories),
        tags=list(tags),
    )
    MetadataConfigs(
        {
            name: {"data_files": [{"split": split, "path": path} for split, path in files.items()]}
            for name, files in data_files.items()
        }
    ).to_dataset_card_data(card_data)
    DatasetInfosDict(dict(infos)).to_dataset_card_data(card_data)
    return f"---\n{card_data.to_yaml()}\n---\n\n{body.strip()}\n"


def _clip_lines(clips: Mapping[str, Mapping[str, tuple[int, int]]]) -> list[str]:
    """The clips table: clip windows and source videos per config and split, next to the paper's counts."""
    from .windows import PAPER_COUNTS

    if not clips:
        return []
    lines = [
        "",
        "## Clips",
        "",
        "A clip is a window of a source video (`source_id`, `offset` in seconds; `datasets_scripts.windows`: "
        "windows every second, the paper's construction — TSL-300's 52,275 train seconds are its \"52K\" train "
        "clips). Splits are by source video.",
        "",
        "| config | split | clips | source videos | paper (Omni-SILA §4.1) |",
        "|---|---|---|---|---|",
    ]
    for name, splits in clips.items():
        for split, (n_clips, n_sources) in splits.items():
            paper = PAPER_COUNTS.get(name, {}).get(split)
            lines.append(f"| {name} | {split} | {n_clips:,} | {n_sources:,} | {f'{paper:,}' if paper else '—'} |")
    return lines


def _default_body(
    pretty_name: str,
    counts: Mapping[str, Mapping[str, int]],
    license: str,
    clips: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> str:
    lines = [
        f"# {pretty_name}",
        "",
        "Instruction data for Omni-SILA — identify, locate and attribute visual sentiments in videos (Omni-SILA, "
        "WWW 2025, §4.1) — exported by `omnisila-icm` (`datasets_scripts.export_parquet`).",
        "",
        "| config | split | rows |",
        "|---|---|---|",
    ]
    for name, splits in counts.items():
        lines += [f"| {name} | {split} | {n} |" for split, n in splits.items()]
    lines += _clip_lines(clips or {})
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("<org>/<this-dataset>", "{next(iter(counts))}")',
        "```",
        "",
        "Omni-SILA rows: `task` is identify / locate / attribute (training instructions) or combined (the single "
        "test-time instruction); `segments` are `[start, end]` seconds; `label` is a ClassLabel. Scene-tuning rows: "
        "`instruction` is the scene prompt, `answer` the description (object answers carry the region box "
        "`<x1,y1,x2,y2>`, normalised corners).",
        "",
        "Media columns (`video`, `image`) are file paths; push the media alongside when they are relative.",
        "",
        f"License: {license}. Derived sets keep the terms of their sources (TSL-300, CUVA, CMU-MOSEI, HumanML3D, "
        "RefCOCO, Places365).",
        "",
        "## Citation",
        "",
        "Omni-SILA: Towards Omni-scene Driven Visual Sentiment Identifying, Locating and Attributing in Videos. "
        "WWW 2025. doi:10.1145/3696410.3714642",
    ]
    return "\n".join(lines)


def export_parquet(
    sets: Mapping[str, Mapping[str, datasets.Dataset]],
    out_dir: str | os.PathLike,
    *,
    pretty_name: str = "Omni-SILA",
    license: str = "other",
    task_categories: tuple[str, ...] = ("video-text-to-text", "video-classification"),
    tags: tuple[str, ...] = ("omni-sila", "video-sentiment", "temporal-localization", "instruction-tuning"),
    relative_to: str | os.PathLike | None = None,
    body: str | None = None,
    row_group_rows: int = 10_000,
) -> Path:
    """Write every config/split as one Parquet file plus a dataset card declaring them.

    Args:
        sets: ``{config_name: {split: Dataset}}`` — e.g. ``{"implicit": builder.as_dataset()}``.
        out_dir: the folder to write (a dataset repository once pushed).
        pretty_name, license, task_categories, tags: card metadata.
        relative_to: write media paths relative to this folder.
        body: the card's markdown body (a default table of configs and usage otherwise).
        row_group_rows: rows per Parquet row group. ``load_dataset`` reads one row group at a time, so bounded
            row groups keep reading a 200K-clip export flat in memory (``datasets`` would otherwise size them to
            ~100 MB, a whole split here).

    Returns:
        The path of the written ``README.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    infos: dict[str, datasets.DatasetInfo] = {}
    data_files: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[str, int]] = {}
    clips: dict[str, dict[str, tuple[int, int]]] = {}
    for name, splits in sets.items():
        if not splits:
            raise ValueError(f"config {name!r} has no splits to export")
        features = None
        split_dict = datasets.SplitDict()
        data_files[name], counts[name] = {}, {}
        for split, dataset in splits.items():
            if features is None:
                features = dataset.features
            elif dataset.features != features:
                raise ValueError(f"config {name!r}: split {split!r} has other features than the first split")
            if relative_to is not None:
                dataset = _relative_media(dataset, str(relative_to))
            relative = f"{name}/{PARQUET_NAME.format(split=split)}"
            (out / name).mkdir(parents=True, exist_ok=True)
            num_bytes = dataset.to_parquet(str(out / relative), batch_size=int(row_group_rows))
            split_dict.add(datasets.SplitInfo(name=split, num_bytes=num_bytes, num_examples=len(dataset)))
            data_files[name][split] = relative
            counts[name][split] = len(dataset)
            if {"clip_id", "source_id"} <= set(dataset.column_names):  # Omni-SILA rows: count clips and sources
                clips.setdefault(name, {})[split] = (len(dataset.unique("clip_id")), len(dataset.unique("source_id")))
        source_info = next(iter(splits.values())).info
        infos[name] = datasets.DatasetInfo(
            description=source_info.description,
            citation=source_info.citation,
            homepage=source_info.homepage,
            features=features,
            splits=split_dict,
            license=license,
        )
    readme = out / "README.md"
    text = dataset_card(
        infos,
        data_files,
        pretty_name=pretty_name,
        license=license,
        task_categories=task_categories,
        tags=tags,
        body=body if body is not None else _default_body(pretty_name, counts, license, clips),
    )
    readme.write_text(text, encoding="utf-8")
    return readme


class DatasetExportError(ValueError):
    """Bad input to :func:`export_dataset`: the message names the folder or file."""


def export_dataset(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    configs: Sequence[str] | None = None,
    scene_tuning: bool = True,
    copy_media: bool = True,
    license: str = "other",
    pretty_name: str = "Omni-SILA",
    cache_dir: str | os.PathLike | None = None,
    lenient: bool = False,
) -> tuple[Path, dict[str, dict[str, int]]]:
    """Build the Omni-SILA (and scene-tuning) sets of a data folder and write Parquet + dataset card into ``out_dir``
    — the one dataset export (``icm data export``, ``icm push --dataset`` and ``python -m datasets_scripts export``
    call it; ``trainers.hub.upload`` uploads the folder).

    Args:
        data_dir: a data folder with ``explicit.jsonl`` / ``implicit.jsonl`` and, optionally, ``scene_tuning/``
            (what ``icm data mini`` or ``icm data convert`` writes).
        out_dir: the folder to write (a dataset repository once uploaded).
        configs: the Omni-SILA configs to export (default: those the folder holds).
        scene_tuning: also export the scene-tuning sets of ``data_dir/scene_tuning`` as ``scene_<scene>`` configs.
        copy_media: copy the videos and images under ``out_dir`` and write them as relative paths, so the folder is
            self-contained, as a Hub dataset repository must be (off: the media columns keep the paths they have).
        license, pretty_name: card metadata.
        cache_dir: the builders' cache (default: a folder inside ``out_dir``, removed afterwards).
        lenient: skip invalid records (reported by the builders) instead of failing.

    Returns:
        The README path and the row counts ``{config: {split: rows}}``.
    """
    from modeling_icm.templates import CONFIG_NAMES, SCENE_NAMES

    from .builders import OmniSila, SceneTuning

    data = Path(data_dir)
    out = Path(out_dir)
    if not data.is_dir():
        raise DatasetExportError(f"data folder not found: {data}")
    chosen = list(configs) if configs else [c for c in CONFIG_NAMES if (data / f"{c}.jsonl").is_file()]
    if not chosen:
        raise DatasetExportError(
            f"{data} holds no explicit.jsonl or implicit.jsonl (run `icm data mini` or `icm data convert`)"
        )
    for config in chosen:
        if not (data / f"{config}.jsonl").is_file():
            raise DatasetExportError(f"{data / f'{config}.jsonl'}: file not found (config {config!r})")
    if copy_media:  # build from a copy inside out_dir, so every media path is relative to it
        out.mkdir(parents=True, exist_ok=True)
        for config in chosen:
            shutil.copy2(data / f"{config}.jsonl", out / f"{config}.jsonl")
        for name in ("videos", "scene_tuning"):
            if (data / name).is_dir():
                shutil.copytree(data / name, out / name, dirs_exist_ok=True)
        data = out
    own_cache = cache_dir is None
    cache = str(cache_dir or out / ".build-cache")
    sets = {}
    for config in chosen:
        builder = OmniSila(config_name=config, data_dir=str(data), cache_dir=cache, lenient=lenient)
        builder.download_and_prepare()
        sets[config] = builder.as_dataset()
    scene_dir = data / "scene_tuning"
    if scene_tuning and scene_dir.is_dir():
        for scene in SCENE_NAMES:
            if (scene_dir / f"{scene}.jsonl").is_file():
                builder = SceneTuning(
                    config_name=scene, data_dir=str(scene_dir), cache_dir=cache, lenient=lenient,
                    frames_dir=str(out / "scene_tuning" / "frames") if copy_media else None,
                )  # fmt: skip
                builder.download_and_prepare()
                sets[f"scene_{scene}"] = builder.as_dataset()
    relative_to = out.resolve() if copy_media else None
    readme = export_parquet(sets, out, pretty_name=pretty_name, license=license, relative_to=relative_to)
    if own_cache:
        shutil.rmtree(out / ".build-cache", ignore_errors=True)
    counts = {name: {split: len(ds) for split, ds in splits.items()} for name, splits in sets.items()}
    return readme, counts

"""Clip construction for Omni-SILA: sliding windows over source videos (the paper's construction, §4.1).

The paper's sets are *clips*, not source videos: TSL-300's train split lasts 52,275 s and the paper reports
"training: 52K videos", its test split 25,197 s and "test: 25K videos"; 202K clips × 8 frames are its "1.62M
frames". So a clip is a window of a source video and the windows start every second. This module is the one place
where windows are cut: every converter (TSL-300, CUVA) and the mini set turn their sources into
:class:`SourceVideo`\\ s and hand them to :class:`ClipWindows`, which yields the clips lazily (200K clips never sit
in a list).

Construction (every choice a :class:`WindowConfig` field; the defaults are the paper's reading):

* **Windows.** A source of duration ``D`` gives the windows ``[k·stride, min(k·stride + window, D))`` for
  ``k = 0, 1, …`` while ``k·stride < D``. Windows near the end are cut at the video's end (a source shorter than
  ``window`` is reported once, and all its windows are cut); ``min_length`` (default 1 s) drops the cut windows
  shorter than that, so a source gives ``floor(D) `` windows at the default 1-s stride — one clip per whole second
  of source video, the paper's count.
* **Window length** (``window``, default :data:`DEFAULT_WINDOW` = 20 s): the paper's answers locate "from 4s to
  18s", so a clip lasts tens of seconds; TSL-300's median segment lasts 8.9 s, and 20 s keeps a median segment
  on about 3 of the clip's 8 frames (one frame every 2.5 s).
* **Segments** of a window are the source segments intersected with it, re-based to window time (seconds from the
  window's start) and rounded to ``decimals``; intersections shorter than ``min_overlap`` are ignored.
* **Label rule** (``label_rule="majority"``): the window's label is the sentiment covering most of its annotated
  time (ties: the label listed first in ``modeling_icm.templates.LABELS``); the window keeps that label's segments
  only, so its identify, locate and attribute answers never contradict each other. A window no segment overlaps
  is ``neutral`` (explicit) / ``Normal`` (implicit) with the whole window as its segment (the schema's
  convention for those labels).
* A clip record keeps ``source_id``, ``offset`` (its start in the source, seconds), the source's ``split`` (splits
  are by source video, so no source leaks across splits) and the source's ``video`` file, ``fps`` and ``cause``
  (per label when the source gives causes per label). Its id is ``<source_id>@<offset>s``.

Bad input (reported on the :class:`~datasets_scripts.schema.ValidationReport` with file, video id, field and value;
the batch goes on): a ``window`` or ``stride`` that is not a positive number raises at construction (it is a
configuration error, not a record's); a window longer than its source is a warning (its windows are cut).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling_icm.templates import CONFIG_NAMES, LABELS

from .schema import ClipRecord, ValidationIssue, ValidationReport

#: Default window length in seconds (see the module docstring).
DEFAULT_WINDOW = 20.0
#: Default stride in seconds: the paper's one clip per second of source video.
DEFAULT_STRIDE = 1.0
#: A source segment may end this many frames after the stated duration (sources round durations; TSL-300's worst
#: is 2.8 frames, 0.093 s): the converters clamp it to the duration with a warning; a larger overshoot drops that
#: segment (``datasets_scripts.converters.common.SourceCollector``).
OVERSHOOT_FRAMES = 3.0
#: The label of a window that no segment overlaps.
BACKGROUND_LABELS = {"explicit": "neutral", "implicit": "Normal"}
LABEL_RULES = ("majority",)
#: The paper's clip counts (§4.1, "training: 52K videos, test: 25K videos" for explicit Omni-SILA).
PAPER_COUNTS = {"explicit": {"train": 52_000, "test": 25_000}}


@dataclass
class WindowConfig:
    """How source videos are cut into clips (see the module docstring).

    Args:
        window: window length in seconds (default 20 s; the paper's locate answers span tens of seconds).
        stride: seconds between window starts (default 1 s: the paper's one clip per second of source video).
        min_length: drop windows shorter than this (seconds) — the cut windows at a source's end (default 1 s, so a
            window holds at least a second of video); 0 keeps every started stride.
        min_overlap: ignore intersections of a segment with a window shorter than this (seconds).
        label_rule: ``"majority"``: the sentiment covering most of the window's annotated time.
        decimals: rounding of the re-based segment times.
    """

    window: float = DEFAULT_WINDOW
    stride: float = DEFAULT_STRIDE
    min_length: float = 1.0
    min_overlap: float = 0.0
    label_rule: str = "majority"
    decimals: int = 3

    def __post_init__(self) -> None:
        for name in ("window", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"WindowConfig.{name} must be a positive number of seconds, got {value!r}")
        for name in ("min_length", "min_overlap"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"WindowConfig.{name} must be a number of seconds >= 0, got {value!r}")
        if self.label_rule not in LABEL_RULES:
            raise ValueError(f"WindowConfig.label_rule must be one of {LABEL_RULES}, got {self.label_rule!r}")


@dataclass
class SourceVideo:
    """One annotated source video: its segments as ``(start, end, label)`` in source seconds (already validated
    and clamped by the converter), its split, and the causes (``{label: text}``)."""

    source_id: str
    video: str
    duration: float
    fps: float
    split: str
    config: str
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    causes: dict[str, str] = field(default_factory=dict)
    source: str = ""


def window_spans(duration: float, config: WindowConfig) -> Iterator[tuple[float, float]]:
    """The ``(offset, end)`` of every window of a source lasting ``duration`` seconds."""
    count = math.ceil(duration / config.stride - 1e-9)
    for k in range(count):
        start = round(k * config.stride, 6)
        end = min(start + config.window, duration)
        if end - start >= config.min_length - 1e-9 and end > start:
            yield start, end


def window_label(
    segments: Iterable[tuple[float, float, str]], start: float, end: float, config_name: str, cfg: WindowConfig
) -> tuple[str, list[list[float]]]:
    """The label and re-based segments of the window ``[start, end)`` under the majority rule."""
    covered: dict[str, float] = {}
    pieces: dict[str, list[list[float]]] = {}
    for seg_start, seg_end, label in segments:
        lo, hi = max(seg_start, start), min(seg_end, end)
        if hi - lo <= 0 or hi - lo < cfg.min_overlap:
            continue
        covered[label] = covered.get(label, 0.0) + (hi - lo)
        pieces.setdefault(label, []).append([round(lo - start, cfg.decimals), round(hi - start, cfg.decimals)])
    length = round(end - start, cfg.decimals)
    if not covered:
        return BACKGROUND_LABELS[config_name], [[0.0, length]]
    order = list(LABELS[config_name])
    label = max(covered, key=lambda lab: (covered[lab], -order.index(lab)))
    return label, sorted(pieces[label])


def window_id(source_id: str, offset: float) -> str:
    return f"{source_id}@{offset:g}s"


class ClipWindows:
    """The clips of a list of sources, yielded lazily (re-iterable); ``len()`` is computed without building them.

    ``report`` receives one warning per source shorter than the window. ``counts()`` gives the clips per split.
    """

    def __init__(
        self,
        sources: Iterable[SourceVideo],
        config: WindowConfig | None = None,
        report: ValidationReport | None = None,
        file: str = "<sources>",
    ):
        self.config = config or WindowConfig()
        self.sources = list(sources)
        self.report = report if report is not None else ValidationReport()
        for source in self.sources:
            if source.config not in CONFIG_NAMES:
                raise ValueError(f"source {source.source_id!r}: config must be one of {CONFIG_NAMES}")
            if source.duration < self.config.window:
                self.report.warn(
                    ValidationIssue(
                        f"{file}[{source.source_id}]", 0, "window",
                        f"the window ({self.config.window:g} s) is longer than the video ({source.duration:g} s); "
                        "its windows are cut at the video's end", self.config.window,
                    )
                )  # fmt: skip
        self._counts: dict[str, int] | None = None

    def __iter__(self) -> Iterator[ClipRecord]:
        for source in self.sources:
            yield from self.windows_of(source)

    def windows_of(self, source: SourceVideo) -> Iterator[ClipRecord]:
        cfg = self.config
        for start, end in window_spans(source.duration, cfg):
            label, segments = window_label(source.segments, start, end, source.config, cfg)
            yield ClipRecord(
                id=window_id(source.source_id, start),
                video=source.video,
                duration=round(end - start, cfg.decimals),
                fps=source.fps,
                split=source.split,
                config=source.config,
                label=label,
                segments=segments,
                cause=source.causes.get(label, ""),
                source=source.source,
                source_id=source.source_id,
                offset=start,
            )

    def counts(self) -> dict[str, int]:
        """Clips per split (computed from the durations, without building the clips)."""
        if self._counts is None:
            counts: Counter = Counter()
            for source in self.sources:
                counts[source.split] += sum(1 for _ in window_spans(source.duration, self.config))
            self._counts = dict(counts)
        return self._counts

    def __len__(self) -> int:
        return sum(self.counts().values())

    def write(self, path: str | os.PathLike, relative_videos: bool = True) -> Path:
        """Stream the clips to a JSON Lines file (constant memory); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rel_cache: dict[str, str] = {}
        with path.open("w", encoding="utf-8") as handle:
            for record in self:
                row = record.to_json()
                if relative_videos:
                    video = rel_cache.get(record.video)
                    if video is None:
                        try:
                            video = os.path.relpath(record.video, path.parent)
                        except ValueError:
                            video = record.video
                        rel_cache[record.video] = video
                    row["video"] = video
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return path


def counts_table(windows: ClipWindows, config_name: str) -> list[dict[str, Any]]:
    """Rows ``{split, sources, seconds, clips, paper}`` comparing the clip counts with the paper's."""
    rows = []
    for split, clips in sorted(windows.counts().items()):
        sources = [s for s in windows.sources if s.split == split]
        rows.append(
            {
                "split": split,
                "sources": len(sources),
                "seconds": round(sum(s.duration for s in sources), 1),
                "clips": clips,
                "paper": PAPER_COUNTS.get(config_name, {}).get(split),
            }
        )
    return rows


__all__ = [
    "BACKGROUND_LABELS",
    "ClipWindows",
    "DEFAULT_STRIDE",
    "DEFAULT_WINDOW",
    "OVERSHOOT_FRAMES",
    "PAPER_COUNTS",
    "SourceVideo",
    "WindowConfig",
    "counts_table",
    "window_label",
    "window_spans",
]

"""Frame-shared extraction: one frame grid per source video, shared by all its overlapping clip windows.

The Omni-SILA clips are 1-s-stride windows of source videos (``datasets_scripts.windows``): a 20-s window overlaps
19 others, so sampling and extracting each window's 8 frames on its own would decode and run the four extractors
on the same seconds about 8 times over. Here instead:

* each source video is decoded **once**, on a per-source **frame grid** of ``grid_fps`` frames per second
  (default 1: grid time ``g_i = i / grid_fps`` for ``g_i < duration``; grid frame ``i`` is the first video frame at
  or after ``g_i``);
* the extractors run **once per grid frame** (in chunks of ``chunk_frames``, so memory stays flat in the video's
  length) and the result is one cache entry per source (``processing.cache.FeatureCache``; its sampling key is
  ``{"grid_fps", "max_side", "backend"}``), its ``timestamps`` the grid frames' times;
* the grid frames themselves (the video tower's pixel inputs) are kept beside it as a uint8 ``.npy`` array
  ``[G, H, W, 3]`` (``pixels/<entry id>.npy``, downscaled to ``pixel_max_side`` when given), read memory-mapped;
* a clip window ``[offset, offset + length)`` gathers its ``num_frames`` frames from the grid with the uniform rule
  of :func:`processing.video.window_indices` applied to the grid (``round(linspace(first, last, T))`` over the grid
  frames inside the window), so a clip sees the same kind of frames as the per-window sampler, at grid resolution.

:func:`extract_source_grids` is the batch job (bad videos skipped and reported, cached sources read, not
recomputed); ``processing.distributed`` shards it by source video across accelerate processes (``--grid-fps``).
:class:`GridClips` gathers clips for training (an LRU of the few sources in use: memory flat in the number of
clips).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import CacheKey, ExtractionReport, FeatureCache, SkippedVideo, served_from_cache

#: Default grid rate, frames per second: the paper's one clip per second, one new frame per clip.
DEFAULT_GRID_FPS = 1.0
PIXELS_DIR = "pixels"


def grid_sampling(grid_fps: float = DEFAULT_GRID_FPS, max_side: int | None = None, backend: str | None = None) -> dict:
    """The sampling part of a grid entry's cache key (``backend`` resolved)."""
    from .video import resolve_backend

    if (
        isinstance(grid_fps, bool)
        or not isinstance(grid_fps, (int, float))
        or not math.isfinite(grid_fps)
        or grid_fps <= 0
    ):
        raise ValueError(f"grid_fps must be a positive number of frames per second, got {grid_fps!r}")
    return {
        "grid_fps": float(grid_fps),
        "max_side": None if max_side is None else int(max_side),
        "backend": resolve_backend(backend),
    }


def grid_times(duration: float, grid_fps: float = DEFAULT_GRID_FPS) -> np.ndarray:
    """Grid times (seconds) of a source lasting ``duration`` s: ``i / grid_fps`` while ``< duration``."""
    count = max(1, math.ceil(duration * grid_fps - 1e-9))
    return np.arange(count, dtype=np.float64) / grid_fps


def grid_frame_indices(times: np.ndarray, fps: float, num_frames: int) -> list[int]:
    """The video frame shown at each grid time: the first frame at or after it (frame ``i`` is at ``i / fps``)."""
    return [min(num_frames - 1, math.ceil(t * fps - 1e-6)) for t in times]


def clip_grid_indices(
    grid: np.ndarray | list[float], offset: float, length: float, num_frames: int, grid_fps: float = DEFAULT_GRID_FPS
) -> list[int]:
    """The ``num_frames`` grid positions of the clip ``[offset, offset + length)``: ``round(linspace(first, last,
    T))`` over the grid frames inside it (frames repeat when it holds fewer than ``T``; a window holding none takes
    the grid frame nearest its start)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames!r}")
    size = len(grid)
    if size == 0:
        raise ValueError("the source has an empty frame grid")
    first = min(size - 1, math.ceil(offset * grid_fps - 1e-6))
    last = min(size - 1, math.ceil((offset + length) * grid_fps - 1e-6) - 1)
    last = max(first, last)
    return np.rint(np.linspace(first, last, num_frames)).astype(int).tolist()


def pixels_path(cache: FeatureCache, entry_id: str) -> Path:
    return cache.root / PIXELS_DIR / entry_id[:2] / f"{entry_id}.npy"


def _resize(frames: torch.Tensor, max_side: int | None) -> np.ndarray:
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if max_side is None or max(array.shape[1:3]) <= max_side:
        return array
    from PIL import Image

    h, w = array.shape[1:3]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in array])


def _items(items: Iterable[Any], video_key: str) -> list[str]:
    """Unique source video paths, in order (clip rows of one source name the same video)."""
    seen: dict[str, None] = {}
    for item in items:
        if isinstance(item, Mapping):
            item = item.get(video_key)
        if item is not None:
            seen.setdefault(os.fspath(item), None)
    return list(seen)


def grid_key(cache: FeatureCache, path: str, config_hash: str, **sampling: Any) -> CacheKey:
    return CacheKey.create(cache.video_hash(path), config_hash, **grid_sampling(**sampling))


def extract_source_grids(
    items: Iterable[Any],
    pipeline: Any,
    cache: FeatureCache,
    grid_fps: float = DEFAULT_GRID_FPS,
    max_side: int | None = None,
    backend: str | None = None,
    pixels: bool = True,
    pixel_max_side: int | None = None,
    chunk_frames: int = 32,
    video_key: str = "video",
    progress: bool = True,
    desc: str = "scene features (frame grid)",
    flush_every: int = 20,
) -> ExtractionReport:
    """Extract the frame grid of every source video once (see the module docstring).

    ``items`` holds paths or clip rows (mappings with ``video_key``); the many clips of one source count once.
    Sources already cached (features and, with ``pixels``, their grid frames) are read, not recomputed; a bad video
    is skipped and reported with the reason, the others carry on. ``report.frames_extracted`` counts the grid
    frames the extractors ran on.
    """
    from tqdm.auto import tqdm

    from .video import _open

    sampling = grid_sampling(grid_fps, max_side, backend)
    config_hash = pipeline.config_hash()
    report = ExtractionReport()
    pending = 0
    for path in tqdm(_items(items, video_key), desc=desc, unit="video", disable=not progress):
        if not os.path.isfile(path):
            report.skipped.append(SkippedVideo(path, "missing file" if not os.path.exists(path) else "not a file"))
            continue
        try:
            key = CacheKey.create(cache.video_hash(path), config_hash, **sampling)
        except OSError as err:
            report.skipped.append(SkippedVideo(path, f"unreadable: {err}"))
            continue
        store = pixels_path(cache, key.entry_id)
        if served_from_cache(cache, key, path, report, complete=not pixels or store.is_file()):
            continue
        try:
            reader = _open(path, sampling["backend"], max_side)
        except Exception as err:  # VideoDecodeError names the file and the reason
            report.skipped.append(SkippedVideo(path, str(err)))
            continue
        tmp = store.with_name(f".{store.name}.tmp")
        try:
            info = reader.info
            times = grid_times(info.duration, grid_fps)
            indices = grid_frame_indices(times, info.fps, info.num_frames)
            feats: dict[str, list[torch.Tensor]] = {}
            masks: dict[str, list[torch.Tensor]] = {}
            out = None
            for at in range(0, len(indices), chunk_frames):
                frames = reader.read(indices[at : at + chunk_frames])
                chunk_feats, chunk_masks = pipeline.extract(frames)
                for scene in chunk_feats:
                    feats.setdefault(scene, []).append(chunk_feats[scene])
                    masks.setdefault(scene, []).append(chunk_masks[scene])
                if pixels:
                    small = _resize(frames, pixel_max_side)
                    if out is None:
                        tmp.parent.mkdir(parents=True, exist_ok=True)
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                                        shape=(len(indices), *small.shape[1:]))  # fmt: skip
                    out[at : at + len(small)] = small
            if out is not None:
                out.flush()
                del out
                os.replace(tmp, store)
        except Exception as err:
            if tmp.exists():
                tmp.unlink()
            report.skipped.append(SkippedVideo(path, f"grid extraction failed: {type(err).__name__}: {err}"))
            continue
        finally:
            reader.close()
        meta = {"path": path, "fps": info.fps, "duration": info.duration, "grid_fps": float(grid_fps),
                "frame_size": [info.height, info.width]}  # fmt: skip
        cache.put(
            key,
            {s: torch.cat(v) for s, v in feats.items()},
            {s: torch.cat(v) for s, v in masks.items()},
            [i / info.fps for i in indices],
            meta=meta,
            flush=False,
        )
        report.computed.append(path)
        report.entry_ids[path] = key.entry_id
        report.frames_extracted += len(indices)
        pending += 1
        if pending >= flush_every:
            cache.flush()
            pending = 0
    if cache._dirty:
        cache.flush()
    return report


class GridClips:
    """Gathers clip windows from the per-source grids: ``clip(video, offset, length)`` → ``{"frames" uint8 [T, H,
    W, 3], "timestamps" [T] (seconds from the clip start), "scene_features", "scene_masks"}``.

    Holds at most ``max_sources`` sources' grids (an LRU; pixel arrays are memory-mapped), so memory is flat in the
    number of clips. A source missing from the cache raises ``trainers.data.MissingFeaturesError``-style
    ``KeyError`` naming the video (:class:`MissingGridError`).
    """

    def __init__(
        self,
        cache: FeatureCache,
        pipeline_or_hash: Any,
        grid_fps: float = DEFAULT_GRID_FPS,
        max_side: int | None = None,
        backend: str | None = None,
        num_frames: int = 8,
        max_sources: int = 16,
    ):
        self.cache = cache
        self.config_hash = pipeline_or_hash if isinstance(pipeline_or_hash, str) else pipeline_or_hash.config_hash()
        self.sampling = grid_sampling(grid_fps, max_side, backend)
        self.grid_fps = float(grid_fps)
        self.num_frames = int(num_frames)
        self.max_sources = int(max_sources)
        self._sources: OrderedDict[str, tuple[Any, np.ndarray]] = OrderedDict()

    def _source(self, video: str):
        hit = self._sources.get(video)
        if hit is not None:
            self._sources.move_to_end(video)
            return hit
        key = CacheKey.create(self.cache.video_hash(video), self.config_hash, **self.sampling)
        cached = self.cache.get(key)
        store = pixels_path(self.cache, key.entry_id)
        if cached is None or not store.is_file():
            reason = f"{self.cache.last_status} ({self.cache.last_reason})" if cached is None else "no grid frames"
            raise MissingGridError(
                f"no frame grid in the cache {self.cache.root} for video {video} (grid {self.grid_fps:g} fps, pipeline "
                f"{self.config_hash[:12]}): {reason}. Run processing.grid.extract_source_grids first."
            )
        hit = (cached, np.load(store, mmap_mode="r"))
        self._sources[video] = hit
        if len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return hit

    def clip(self, video: str, offset: float, length: float, num_frames: int | None = None) -> dict[str, Any]:
        cached, pixels = self._source(os.fspath(video))
        times = cached.timestamps.numpy()
        grid = grid_times(float(cached.meta.get("duration", times[-1] + 1)), self.grid_fps)[: len(times)]
        idx = clip_grid_indices(grid, float(offset), float(length), num_frames or self.num_frames, self.grid_fps)
        index = torch.as_tensor(idx)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(pixels[idx])),
            "timestamps": [max(0.0, float(times[i]) - float(offset)) for i in idx],
            "scene_features": {s: f.index_select(0, index) for s, f in cached.features.items()},
            "scene_masks": {s: m.index_select(0, index) for s, m in cached.masks.items()},
        }


class MissingGridError(KeyError):
    """A source video's frame grid is not in the cache."""

    def __str__(self) -> str:
        return str(self.args[0])


__all__ = [
    "DEFAULT_GRID_FPS",
    "GridClips",
    "MissingGridError",
    "clip_grid_indices",
    "extract_source_grids",
    "grid_frame_indices",
    "grid_sampling",
    "grid_times",
]

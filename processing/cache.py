"""On-disk scene-feature cache: extract once, train and evaluate many times (training never re-runs extractors).

Layout under ``root``::

    index.json                       # JSON index: entries + a memo of file content hashes
    shards/ab/abcdef....safetensors  # one safetensors shard per (video, pipeline config, sampling)

An entry is keyed by :class:`CacheKey`: the video's **content** hash (sha256 of the file bytes, streamed), the
pipeline's ``config_hash()`` (architectures, thresholds and the sha256 of the weights) and the sampling parameters
(``num_frames``, ``start``, ``end``, ``max_side``, decoder ``backend``). A shard holds per scene
``{scene}.features`` ``[T, items, dim]`` float32 and ``{scene}.mask`` ``[T, items]`` bool, the frame
``timestamps`` (seconds, float64), and in its safetensors metadata the key itself, so a shard describes itself and
the index can be rebuilt from the shards (:meth:`FeatureCache.rebuild_index`).

Integrity: the index records each shard's size and sha256. :meth:`FeatureCache.get` checks them, the shard's own
key and its shapes; a **corrupt** entry (missing or truncated shard, checksum or shape mismatch) or a **stale** one
(the same video and sampling computed with another pipeline config, or an older cache format) is reported as such,
dropped, and recomputed by :func:`extract_videos`. Writes are atomic (temporary file + ``os.replace``).

Processes sharing one cache (two training runs on the same ``cache_dir``, an extraction beside a training run): the
index is written under a lock file (``index.json.lock``) after merging what other processes wrote meanwhile, so
no process drops another's entries; when two processes computed the same entry, the record kept is the one whose
checksum matches the shard now on disk; and an entry that looks corrupt is looked up again in the index on disk
before it is dropped (another process may have just rewritten its shard). Distributed extraction still gives
each rank its own index name and merges them (:meth:`FeatureCache.merge`, ``processing.distributed``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
_CHUNK = 1 << 20
#: Seconds a process waits for another to finish writing the index.
INDEX_LOCK_TIMEOUT_S = 120.0


class _UnreadableIndex(ValueError):
    pass


def file_sha256(path: str | os.PathLike, chunk_size: int = _CHUNK) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (constant memory for hours of video)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class CacheKey:
    """(video content hash, pipeline config hash, sampling parameters)."""

    video_sha256: str
    config_hash: str
    sampling: str  # canonical JSON of the sampling parameters

    @classmethod
    def create(cls, video_sha256: str, config_hash: str, **sampling: Any) -> CacheKey:
        return cls(str(video_sha256), str(config_hash), _canonical(sampling))

    @property
    def sampling_dict(self) -> dict[str, Any]:
        return json.loads(self.sampling)

    @property
    def entry_id(self) -> str:
        return hashlib.sha256(_canonical([self.video_sha256, self.config_hash, self.sampling]).encode()).hexdigest()

    @property
    def group_id(self) -> str:
        """The same video and sampling whatever the pipeline config: entries sharing it go stale together."""
        return hashlib.sha256(_canonical([self.video_sha256, self.sampling]).encode()).hexdigest()


@dataclass
class CachedFeatures:
    """One cached clip: features ``{scene: [T, items, dim]}``, masks ``{scene: [T, items]}``, timestamps ``[T]``."""

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    timestamps: torch.Tensor
    meta: dict[str, Any]
    key: CacheKey


class FeatureCache:
    """safetensors shards + a JSON index (see the module docstring).

    Args:
        root: the cache directory (created).
        index_name: the index file; distributed ranks each use their own (``index.rank{r}.json``).
        replace_stale: on :meth:`put`, delete entries of the same video and sampling made with another pipeline
            config (they are stale: the pipeline changed).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        index_name: str = INDEX_NAME,
        replace_stale: bool = True,
        track_removals: bool = False,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / index_name
        self.replace_stale = bool(replace_stale)
        self.track_removals = bool(track_removals)
        self.removed: set[str] = set()  # entries dropped here, for merge (distributed ranks)
        self.entries: dict[str, dict[str, Any]] = {}
        self.file_hashes: dict[str, list] = {}  # abs path -> [size, mtime_ns, sha256]
        self.last_status: str | None = None
        self.last_reason: str | None = None
        self._dirty = False
        self._written: set[str] = set()  # entries put here since the last flush (checked against the disk there)
        self._dropped: set[str] = set()  # entries removed here since the last flush (not re-adopted from the disk)
        self._load_index()

    # -- index -------------------------------------------------------------------------------------------------
    def _read_index_file(self) -> dict | None:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
                raise ValueError("no 'entries' mapping")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise _UnreadableIndex(str(err)) from err
        return data

    def _load_index(self) -> None:
        try:
            data = self._read_index_file()
        except _UnreadableIndex as err:
            # an unreadable index loses nothing: every shard describes itself
            self.rebuild_index(reason=f"index {self.index_path} unreadable ({err})")
            return
        if data is None:
            return
        self.entries = data["entries"]
        self.file_hashes = data.get("file_hashes", {})
        self.removed = set(data.get("removed", []))

    @contextlib.contextmanager
    def _lock(self):
        """The inter-process lock of this index (``<index>.lock``, held only while the index is merged and
        written)."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.index_path) + ".lock", timeout=INDEX_LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout as err:
            raise TimeoutError(
                f"feature cache {self.root}: could not lock {lock.lock_file} within {INDEX_LOCK_TIMEOUT_S:.0f} s "
                f"(another process holds it; remove the file if no process is using this cache)"
            ) from err
        try:
            yield
        finally:
            lock.release()

    def _merge_from_disk(self) -> None:
        """Adopt what other processes wrote to the index since it was read (call under :meth:`_lock`): their new
        entries (except those removed here) and hash memos; for an entry both wrote, the record whose checksum
        matches the shard on disk."""
        try:
            data = self._read_index_file()
        except _UnreadableIndex:
            data = None  # ours replaces it; the shards describe themselves
        if not data:
            return
        for entry_id in [e for e in self.entries if e not in data["entries"] and e not in self._written]:
            del self.entries[entry_id]  # another process removed it (stale or corrupt there)
        for entry_id, record in data["entries"].items():
            if entry_id in self._dropped:
                continue
            mine = self.entries.get(entry_id)
            if mine is None:
                self.entries[entry_id] = record
            elif mine.get("sha256") != record.get("sha256"):
                # Both indexes describe this entry, differently: the shard on disk decides. An entry not written
                # here since the last flush takes the other record when neither matches (the shard is being
                # rewritten by a process that has yet to flush, and will describe it then).
                shard = self.root / mine["shard"]
                on_disk = file_sha256(shard) if shard.exists() else None
                if on_disk == record.get("sha256") or (
                    on_disk != mine.get("sha256") and entry_id not in self._written
                ):
                    self.entries[entry_id] = record
        for path, memo in data.get("file_hashes", {}).items():
            self.file_hashes.setdefault(path, memo)
        if self.track_removals:
            self.removed |= set(data.get("removed", [])) - set(self.entries)

    def flush(self, merge: bool = True) -> None:
        """Merge what other processes wrote meanwhile (unless ``merge=False``: this index replaces the file), then
        write the index (atomically, under the lock)."""
        with self._lock():
            if merge:
                self._merge_from_disk()
            data = {"format": CACHE_FORMAT, "entries": self.entries, "file_hashes": self.file_hashes}
            if self.track_removals:
                data["removed"] = sorted(self.removed)
            _atomic_write(self.index_path, json.dumps(data, indent=1, sort_keys=True).encode())
        self._dirty = False
        self._written.clear()
        self._dropped.clear()

    def rebuild_index(self, reason: str = "") -> int:
        """Re-create the index from the shards' own metadata (checksums recomputed). Returns the entry count."""
        from safetensors import safe_open

        self.entries = {}
        self._written.clear()
        for shard in sorted((self.root / "shards").glob("*/*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    meta = f.metadata() or {}
                key = CacheKey(meta["video_sha256"], meta["config_hash"], meta["sampling"])
                self.entries[key.entry_id] = self._record(key, shard, json.loads(meta["scenes"]), meta)
            except Exception:  # a broken shard is left out of the index; it will be recomputed
                continue
        self.flush(merge=False)
        return len(self.entries)

    def _record(self, key: CacheKey, shard: Path, scenes: dict, meta: Mapping[str, str]) -> dict[str, Any]:
        return {
            "video_sha256": key.video_sha256,
            "config_hash": key.config_hash,
            "sampling": key.sampling,
            "group_id": key.group_id,
            "format": int(meta.get("format", CACHE_FORMAT)),
            "shard": shard.relative_to(self.root).as_posix(),
            "nbytes": shard.stat().st_size,
            "sha256": file_sha256(shard),
            "scenes": scenes,
            "num_frames": int(meta.get("num_frames", 0)),
            "source": json.loads(meta.get("meta", "{}")).get("path"),
            "created": meta.get("created"),
        }

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: CacheKey) -> bool:
        return key.entry_id in self.entries

    def _shard_path(self, entry_id: str) -> Path:
        return self.root / "shards" / entry_id[:2] / f"{entry_id}.safetensors"

    # -- video hashes ------------------------------------------------------------------------------------------
    def video_hash(self, path: str | os.PathLike, rehash: bool = False) -> str:
        """The file's sha256, memoised by (absolute path, size, mtime) like git does; ``rehash`` forces reading."""
        p = os.path.abspath(os.fspath(path))
        st = os.stat(p)
        memo = self.file_hashes.get(p)
        if not rehash and memo and memo[0] == st.st_size and memo[1] == st.st_mtime_ns:
            return memo[2]
        sha = file_sha256(p)
        self.file_hashes[p] = [st.st_size, st.st_mtime_ns, sha]
        self._dirty = True
        return sha

    # -- lookup ------------------------------------------------------------------------------------------------
    def status(self, key: CacheKey) -> tuple[str, str]:
        """``("hit" | "miss" | "stale" | "corrupt", reason)`` without loading the tensors' values."""
        record = self.entries.get(key.entry_id)
        if record is None:
            others = [r for r in self.entries.values() if r.get("group_id") == key.group_id]
            if others:
                return "stale", (
                    f"cached with pipeline config {others[0]['config_hash'][:12]}, the pipeline is now "
                    f"{key.config_hash[:12]}"
                )
            return "miss", "not cached"
        if record.get("format") != CACHE_FORMAT:
            return "stale", f"cache format {record.get('format')} != {CACHE_FORMAT}"
        shard = self.root / record["shard"]
        if not shard.exists():
            return "corrupt", f"shard {shard} is missing"
        size = shard.stat().st_size
        if size != record["nbytes"]:
            return "corrupt", f"shard {shard} has {size} bytes, the index recorded {record['nbytes']} (truncated?)"
        return "hit", ""

    def get(self, key: CacheKey) -> CachedFeatures | None:
        """The cached clip, or ``None`` (miss, stale or corrupt: ``last_status`` / ``last_reason`` say which;
        stale and corrupt entries are dropped so that they get recomputed)."""
        status, reason = self.status(key)
        if status == "hit":
            try:
                return self._read(key)
            except Exception as err:
                status, reason = "corrupt", f"{type(err).__name__}: {err}"
        if status == "corrupt" and self._refresh_entry(key.entry_id):
            return self.get(key)  # another process rewrote the shard and its index entry: read theirs
        self.last_status, self.last_reason = status, reason
        if status == "corrupt" or (status == "stale" and key.entry_id in self.entries):
            self.remove(key.entry_id)
        return None

    def _refresh_entry(self, entry_id: str) -> bool:
        """Take ``entry_id``'s record from the index on disk when another process changed it there (True)."""
        try:
            data = self._read_index_file()
        except _UnreadableIndex:
            return False
        record = (data or {}).get("entries", {}).get(entry_id)
        if record is None or record == self.entries.get(entry_id):
            return False
        self.entries[entry_id] = record
        self._written.discard(entry_id)
        return True

    def get_by_id(self, entry_id: str) -> CachedFeatures | None:
        record = self.entries.get(entry_id)
        if record is None:
            return None
        return self.get(CacheKey(record["video_sha256"], record["config_hash"], record["sampling"]))

    def _read(self, key: CacheKey) -> CachedFeatures:
        from safetensors import safe_open

        record = self.entries[key.entry_id]
        shard = self.root / record["shard"]
        data = shard.read_bytes()
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ValueError(f"shard {shard} fails its sha256 check")
        from safetensors.torch import load

        tensors = load(data)
        with safe_open(str(shard), framework="pt") as f:
            meta = f.metadata() or {}
        if (meta.get("video_sha256"), meta.get("config_hash"), meta.get("sampling")) != (
            key.video_sha256,
            key.config_hash,
            key.sampling,
        ):
            raise ValueError(f"shard {shard} holds another key than its index entry")
        features, masks = {}, {}
        for scene, (items, dim) in record["scenes"].items():
            feats, mask = tensors[f"{scene}.features"], tensors[f"{scene}.mask"]
            t = record["num_frames"]
            if tuple(feats.shape) != (t, items, dim) or tuple(mask.shape) != (t, items):
                raise ValueError(
                    f"shard {shard}: scene {scene!r} has shape {tuple(feats.shape)}, expected {(t, items, dim)}"
                )
            features[scene], masks[scene] = feats, mask.bool()
        self.last_status, self.last_reason = "hit", ""
        return CachedFeatures(features, masks, tensors["timestamps"], json.loads(meta.get("meta", "{}")), key)

    # -- writing -----------------------------------------------------------------------------------------------
    def put(
        self,
        key: CacheKey,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        timestamps: Sequence[float] | torch.Tensor,
        meta: Mapping[str, Any] | None = None,
        flush: bool = True,
    ) -> dict[str, Any]:
        """Store one clip's features ``{scene: [T, items, dim]}`` and masks ``{scene: [T, items]}``; ``meta``
        (free-form) is stored with ``torch_threads``, the torch thread count it was computed under."""
        from safetensors.torch import save

        ts = torch.as_tensor(timestamps, dtype=torch.float64).reshape(-1)
        t = ts.shape[0]
        tensors: dict[str, torch.Tensor] = {"timestamps": ts.contiguous()}
        scenes: dict[str, list[int]] = {}
        if set(features) != set(masks):
            raise ValueError(f"features scenes {sorted(features)} != masks scenes {sorted(masks)}")
        for scene, feats in features.items():
            feats = torch.as_tensor(feats).detach().cpu().float().contiguous()
            mask = torch.as_tensor(masks[scene]).detach().cpu().bool().contiguous()
            if feats.dim() != 3 or feats.shape[0] != t or tuple(mask.shape) != tuple(feats.shape[:2]):
                raise ValueError(
                    f"put: scene {scene!r} features {tuple(feats.shape)} / mask {tuple(mask.shape)} do not match "
                    f"[T={t}, items, dim] / [T, items]"
                )
            tensors[f"{scene}.features"], tensors[f"{scene}.mask"] = feats, mask
            scenes[scene] = [int(feats.shape[1]), int(feats.shape[2])]
        metadata = {
            "format": str(CACHE_FORMAT),
            "video_sha256": key.video_sha256,
            "config_hash": key.config_hash,
            "sampling": key.sampling,
            "scenes": _canonical(scenes),
            "num_frames": str(t),
            # the torch thread count the features were computed under: their last bits depend on it (reductions
            # split over threads) and a model trained on them can follow those bits, so a rerun can match it
            "meta": _canonical({"torch_threads": torch.get_num_threads(), **dict(meta or {})}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        shard = self._shard_path(key.entry_id)
        _atomic_write(shard, save(tensors, metadata=metadata))
        if self.replace_stale:
            for other_id, record in list(self.entries.items()):
                if other_id != key.entry_id and record.get("group_id") == key.group_id:
                    self.remove(other_id, flush=False)
        record = self._record(key, shard, scenes, metadata)
        self.entries[key.entry_id] = record
        self.removed.discard(key.entry_id)
        self._written.add(key.entry_id)
        self._dropped.discard(key.entry_id)
        self._dirty = True
        if flush:
            self.flush()
        return record

    def remove(self, entry_id: str, flush: bool = True) -> None:
        record = self.entries.pop(entry_id, None)
        self._dropped.add(entry_id)
        self._written.discard(entry_id)
        if self.track_removals:
            self.removed.add(entry_id)
        if record is not None:
            shard = self.root / record["shard"]
            if shard.exists():
                shard.unlink()
            self._dirty = True
            if flush:
                self.flush()

    # -- merging (distributed extraction) ----------------------------------------------------------------------
    @classmethod
    def merge(
        cls, root: str | os.PathLike, index_names: Iterable[str], into: str = INDEX_NAME, remove_parts: bool = True
    ) -> FeatureCache:
        """Merge the per-rank indexes ``index_names`` under ``root`` into the index ``into`` (the shards are
        already shared); returns the merged cache."""
        merged = cls(root, index_name=into)
        for name in index_names:
            part = cls(root, index_name=name)
            for entry_id in part.removed:
                merged.entries.pop(entry_id, None)
            merged.entries.update(part.entries)
            merged.file_hashes.update(part.file_hashes)
        merged.flush()
        if remove_parts:
            for name in index_names:
                if name != into and (merged.root / name).exists():
                    (merged.root / name).unlink()
        return merged


# ---------------------------------------------------------------------------------------------------------------
# Batch extraction
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SkippedVideo:
    path: str
    reason: str


@dataclass
class ExtractionReport:
    """What :func:`extract_videos` did per video. ``entry_ids`` maps each processed path to its cache entry."""

    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    recomputed: list[SkippedVideo] = field(default_factory=list)  # stale / corrupt entries, with the reason
    skipped: list[SkippedVideo] = field(default_factory=list)
    entry_ids: dict[str, str] = field(default_factory=dict)
    frames_extracted: int = 0  # frames the extractors ran on (each through every scene extractor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merge(self, other: ExtractionReport) -> ExtractionReport:
        return ExtractionReport(
            self.computed + other.computed,
            self.cached + other.cached,
            self.recomputed + other.recomputed,
            self.skipped + other.skipped,
            {**self.entry_ids, **other.entry_ids},
            self.frames_extracted + other.frames_extracted,
        )

    def __str__(self) -> str:
        lines = [
            f"{len(self.computed)} computed, {len(self.cached)} read from the cache, "
            f"{len(self.recomputed)} recomputed, {len(self.skipped)} skipped"
        ]
        lines += [f"  recomputed {r.path}: {r.reason}" for r in self.recomputed]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def sampling_params(
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
    max_side: int | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """The sampling part of a cache key (``backend`` resolved: decoders may differ by a pixel)."""
    from .video import resolve_backend

    return {
        "num_frames": int(num_frames),
        "start": None if start is None else float(start),
        "end": None if end is None else float(end),
        "max_side": None if max_side is None else int(max_side),
        "backend": resolve_backend(backend),
    }


def cache_key_for(cache: FeatureCache, path: str | os.PathLike, pipeline_or_hash: Any, **sampling: Any) -> CacheKey:
    """The :class:`CacheKey` of one video file for a pipeline (or its ``config_hash()``) and sampling."""
    config_hash = pipeline_or_hash if isinstance(pipeline_or_hash, str) else pipeline_or_hash.config_hash()
    return CacheKey.create(cache.video_hash(path), config_hash, **sampling_params(**sampling))


def _item(item: Any, video_key: str) -> tuple[str, float | None, float | None]:
    if isinstance(item, Mapping):
        if video_key not in item:
            raise ValueError(f"dataset item has no {video_key!r} field: {sorted(item)}")
        return os.fspath(item[video_key]), item.get("start"), item.get("end")
    return os.fspath(item), None, None


def served_from_cache(cache: FeatureCache, key: CacheKey, path: str, report: ExtractionReport, complete: bool = True) -> bool:
    """Record ``path`` as read from the cache when ``key`` is a hit (and ``complete``); otherwise note a stale or
    corrupt entry as recomputed and return False."""
    if cache.get(key) is not None and complete:
        report.cached.append(path)
        report.entry_ids[path] = key.entry_id
        return True
    if cache.last_status in ("stale", "corrupt"):
        report.recomputed.append(SkippedVideo(path, f"{cache.last_status}: {cache.last_reason}"))
    return False


def extract_videos(
    paths: Iterable[Any],
    pipeline: Any,
    cache: FeatureCache,
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
    max_side: int | None = None,
    backend: str | None = None,
    video_key: str = "video",
    progress: bool = True,
    desc: str = "scene features",
    flush_every: int = 50,
) -> ExtractionReport:
    """Extract the scene features of many videos into ``cache``; videos already cached are read, not recomputed.

    ``paths`` holds file paths or mappings (dataset rows) with a ``video_key`` field and optional ``start`` /
    ``end`` seconds. A bad video (missing, not a video, truncated, empty...) is skipped and reported with the
    reason; the others carry on. Returns an :class:`ExtractionReport`.
    """
    from tqdm.auto import tqdm

    from .video import sample_frames

    items = list(paths)
    report = ExtractionReport()
    config_hash = pipeline.config_hash()
    pending = 0
    bar = tqdm(items, desc=desc, unit="video", disable=not progress)
    for item in bar:
        try:
            path, item_start, item_end = _item(item, video_key)
        except (TypeError, ValueError) as err:
            report.skipped.append(SkippedVideo(repr(item)[:200], f"bad item: {err}"))
            continue
        s = start if item_start is None else item_start
        e = end if item_end is None else item_end
        if not os.path.exists(path):
            report.skipped.append(SkippedVideo(path, "missing file"))
            continue
        if not os.path.isfile(path):
            report.skipped.append(SkippedVideo(path, "not a regular file"))
            continue
        try:
            key = CacheKey.create(
                cache.video_hash(path),
                config_hash,
                **sampling_params(num_frames=num_frames, start=s, end=e, max_side=max_side, backend=backend),
            )
        except OSError as err:
            report.skipped.append(SkippedVideo(path, f"unreadable: {err}"))
            continue
        except ValueError as err:
            report.skipped.append(SkippedVideo(path, f"bad sampling parameters: {err}"))
            continue
        if served_from_cache(cache, key, path, report):
            continue
        try:
            clip = sample_frames(path, num_frames=num_frames, start=s, end=e, backend=backend, max_side=max_side)
        except ValueError as err:  # VideoDecodeError names the file and the reason
            report.skipped.append(SkippedVideo(path, str(err)))
            continue
        except Exception as err:
            report.skipped.append(SkippedVideo(path, f"decoding failed: {type(err).__name__}: {err}"))
            continue
        try:
            features, masks = pipeline.extract(clip.frames)
        except Exception as err:
            report.skipped.append(SkippedVideo(path, f"extraction failed: {type(err).__name__}: {err}"))
            continue
        report.frames_extracted += int(clip.frames.shape[0])
        meta = {
            "path": path,
            "fps": clip.fps,
            "duration": clip.duration,
            "start": clip.start,
            "end": clip.end,
            "frame_size": list(clip.frames.shape[1:3]),
        }
        cache.put(key, features, masks, clip.timestamps, meta=meta, flush=False)
        report.computed.append(path)
        report.entry_ids[path] = key.entry_id
        pending += 1
        if pending >= flush_every:
            cache.flush()
            pending = 0
        bar.set_postfix(computed=len(report.computed), cached=len(report.cached), skipped=len(report.skipped))
    if cache._dirty:
        cache.flush()
    return report

"""FeatureCache + extract_videos + distributed extraction on real clips and deliberately broken files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import segment_anything  # noqa: F401  (installed by scripts/setup.sh: a missing one fails, it does not skip)
import torch

from processing.background import BackgroundExtractor  # noqa: E402
from processing.cache import CacheKey, FeatureCache, extract_videos, file_sha256, sampling_params  # noqa: E402
from processing.pipeline import ScenePipeline  # noqa: E402
from processing.video import sample_frames  # noqa: E402

MAX_SIDE = 96  # small frames keep these tests cheap; the cache logic does not depend on the frame size


@pytest.fixture(scope="module")
def pipeline() -> ScenePipeline:
    return ScenePipeline({"background": BackgroundExtractor.tiny(seed=0)})


@pytest.fixture(scope="module")
def videos(tmp_path_factory, carphone_path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    distorted = carphone_path.parent / "carphone_distorted.mp4"
    good2 = distorted if distorted.exists() else carphone_path
    out = {"carphone": carphone_path, "second": good2}
    (d / "notes.mp4").write_text("this is not a video\n")
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(carphone_path.read_bytes()[:4096])
    out.update({"text": d / "notes.mp4", "empty": d / "empty.mp4", "truncated": d / "truncated.mp4"})
    out["missing"] = d / "missing.mp4"
    return out


def _run(paths, pipeline, cache):
    return extract_videos([str(p) for p in paths], pipeline, cache, num_frames=4, max_side=MAX_SIDE, progress=False)


def test_put_get_roundtrip(tmp_path):
    cache = FeatureCache(tmp_path)
    key = CacheKey.create("a" * 64, "b" * 64, **sampling_params(num_frames=3))
    feats = {"face": torch.randn(3, 4, 8), "background": torch.randn(3, 1, 5)}
    masks = {"face": torch.tensor([[1, 0, 0, 0]] * 3).bool(), "background": torch.ones(3, 1, dtype=torch.bool)}
    assert cache.get(key) is None and cache.last_status == "miss"
    cache.put(key, feats, masks, [0.0, 1.5, 3.0], meta={"path": "x.mp4"})
    got = FeatureCache(tmp_path).get(key)  # a fresh instance reads the JSON index
    assert got is not None
    for scene in feats:
        assert torch.equal(got.features[scene], feats[scene]) and torch.equal(got.masks[scene], masks[scene])
    assert got.timestamps.tolist() == [0.0, 1.5, 3.0]
    assert got.meta == {"path": "x.mp4", "torch_threads": torch.get_num_threads()}  # the features' last bits need it
    index = json.loads((tmp_path / "index.json").read_text())
    assert list(index["entries"]) == [key.entry_id]
    assert (tmp_path / index["entries"][key.entry_id]["shard"]).suffix == ".safetensors"


@pytest.mark.parametrize(
    "feats, masks, ts, match",
    [
        ({"face": torch.zeros(2, 4, 8)}, {"face": torch.zeros(2, 4).bool()}, [0.0], "T=1"),
        ({"face": torch.zeros(2, 4, 8)}, {"face": torch.zeros(2, 3).bool()}, [0.0, 1.0], "mask"),
        ({"face": torch.zeros(2, 4, 8)}, {}, [0.0, 1.0], "masks scenes"),
    ],
)
def test_put_rejects_inconsistent_shapes(tmp_path, feats, masks, ts, match):
    with pytest.raises(ValueError, match=match):
        FeatureCache(tmp_path).put(CacheKey.create("v", "c"), feats, masks, ts)


def test_extract_videos_skips_bad_files_and_a_second_run_reads_the_cache(tmp_path, pipeline, videos):
    order = ["carphone", "missing", "text", "second", "empty", "truncated"]
    report = _run([videos[k] for k in order], pipeline, FeatureCache(tmp_path))
    assert report.computed == [str(videos["carphone"]), str(videos["second"])]
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(skipped) == {"missing.mp4", "notes.mp4", "empty.mp4", "truncated.mp4"}, report
    assert skipped["missing.mp4"] == "missing file"
    for name in ("notes.mp4", "empty.mp4", "truncated.mp4"):
        assert name in skipped[name]  # the decoder's error names the file
    again = _run([videos[k] for k in order], pipeline, FeatureCache(tmp_path))
    assert again.computed == [] and again.cached == report.computed and len(again.skipped) == 4
    # the cached features are exactly what the pipeline computes on those frames
    cached = FeatureCache(tmp_path).get_by_id(again.entry_ids[str(videos["carphone"])])
    clip = sample_frames(videos["carphone"], num_frames=4, max_side=MAX_SIDE)
    feats, masks = pipeline.extract(clip.frames)
    torch.testing.assert_close(cached.features["background"], feats["background"])
    assert cached.timestamps.tolist() == pytest.approx(clip.timestamps)
    assert cached.meta["path"] == str(videos["carphone"])
    assert cached.meta["torch_threads"] == torch.get_num_threads()  # the features' last bits depend on it


def _single_entry(cache: FeatureCache) -> tuple[str, Path]:
    ((entry_id, record),) = cache.entries.items()
    return entry_id, cache.root / record["shard"]


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "delete"])
def test_corrupt_entries_are_detected_and_recomputed(tmp_path, pipeline, videos, damage):
    _run([videos["carphone"]], pipeline, FeatureCache(tmp_path))
    _, shard = _single_entry(FeatureCache(tmp_path))
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "flip-byte":
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        shard.unlink()
    report = _run([videos["carphone"]], pipeline, FeatureCache(tmp_path))
    assert report.computed == [str(videos["carphone"])] and len(report.recomputed) == 1
    reason = report.recomputed[0].reason
    assert reason.startswith("corrupt: ") and str(shard) in reason, reason
    assert _run([videos["carphone"]], pipeline, FeatureCache(tmp_path)).cached == [str(videos["carphone"])]


def test_stale_entries_are_detected_replaced_and_recomputed(tmp_path, pipeline, videos):
    _run([videos["carphone"]], pipeline, FeatureCache(tmp_path))
    old_id, old_shard = _single_entry(FeatureCache(tmp_path))
    changed = ScenePipeline({"background": BackgroundExtractor.tiny(seed=0, max_area=0.5)})
    assert changed.config_hash() != pipeline.config_hash()
    cache = FeatureCache(tmp_path)
    key = CacheKey.create(
        cache.video_hash(videos["carphone"]), changed.config_hash(), **sampling_params(4, max_side=96)
    )
    assert cache.status(key)[0] == "stale"
    report = _run([videos["carphone"]], changed, cache)
    assert report.computed == [str(videos["carphone"])]
    assert report.recomputed[0].reason.startswith("stale: cached with pipeline config")
    new_id, _ = _single_entry(FeatureCache(tmp_path))
    assert new_id != old_id and not old_shard.exists()


def test_key_is_the_content_not_the_name(tmp_path, pipeline, videos):
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(videos["carphone"], copy)
    cache = FeatureCache(tmp_path / "cache")
    _run([videos["carphone"]], pipeline, cache)
    assert _run([copy], pipeline, cache).cached == [str(copy)]  # same bytes, other name: a hit
    with open(copy, "ab") as f:
        f.write(b"\0")  # other bytes: another video
    os.utime(copy, ns=(1, 1))
    assert cache.video_hash(copy) == file_sha256(copy) != file_sha256(videos["carphone"])
    assert _run([copy], pipeline, cache).computed == [str(copy)]


def test_sampling_parameters_are_part_of_the_key(tmp_path, pipeline, videos):
    cache = FeatureCache(tmp_path)
    rows = [{"video": str(videos["carphone"]), "start": 0.0, "end": 2.0}, {"video": str(videos["carphone"])}]
    report = extract_videos(rows, pipeline, cache, num_frames=4, max_side=MAX_SIDE, progress=False)
    assert len(report.computed) == 2 and len(cache) == 2
    bad = extract_videos([{"path": "x"}], pipeline, cache, progress=False)
    assert "no 'video' field" in bad.skipped[0].reason


def test_unreadable_index_is_rebuilt_from_the_shards(tmp_path, pipeline, videos):
    _run([videos["carphone"], videos["second"]], pipeline, FeatureCache(tmp_path))
    entries = FeatureCache(tmp_path).entries
    (tmp_path / "index.json").write_text("{ not json")
    rebuilt = FeatureCache(tmp_path)
    assert rebuilt.entries.keys() == entries.keys()
    assert _run([videos["carphone"]], pipeline, rebuilt).cached == [str(videos["carphone"])]


def test_merge_of_per_rank_indexes(tmp_path, pipeline, videos):
    _run([videos["carphone"]], pipeline, FeatureCache(tmp_path, index_name="index.rank0.json"))
    _run([videos["second"]], pipeline, FeatureCache(tmp_path, index_name="index.rank1.json"))
    merged = FeatureCache.merge(tmp_path, ["index.rank0.json", "index.rank1.json"])
    assert len(merged) == 2 and not (tmp_path / "index.rank0.json").exists()
    assert _run([videos["carphone"], videos["second"]], pipeline, FeatureCache(tmp_path)).computed == []


def _cache_tensors(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    cache = FeatureCache(root)
    out = {}
    for entry_id in cache.entries:
        got = cache.get_by_id(entry_id)
        out[entry_id] = {**{f"{s}.f": t for s, t in got.features.items()}, "ts": got.timestamps}
    return out


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_equals_one_process(tmp_path, videos):
    paths = [str(videos[k]) for k in ("carphone", "second", "missing")]
    common = ["--pipeline", "tiny", "--scenes", "background", "--num-frames", "4", "--max-side", "96", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--num_cpu_threads_per_process", "1", "-m", "processing.distributed"]
    two = subprocess.run(
        launch + ["--cache-dir", str(tmp_path / "two"), "--report", str(tmp_path / "two.json")] + common + paths,
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "processing.distributed", "--cache-dir", str(tmp_path / "one")] + common + paths,
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").glob("index*.json")) == ["index.json"]
    report = json.loads((tmp_path / "two.json").read_text())
    assert sorted(report["computed"]) == sorted(paths[:2]) and report["skipped"][0]["reason"] == "missing file"
    two_t, one_t = _cache_tensors(tmp_path / "two"), _cache_tensors(tmp_path / "one")
    assert two_t.keys() == one_t.keys() and len(two_t) == 2
    for entry_id in one_t:
        for name, tensor in one_t[entry_id].items():
            torch.testing.assert_close(two_t[entry_id][name], tensor, msg=f"{entry_id} {name}")


# ---------------------------------------------------------------------------------------------------------------
# Processes sharing one cache (two training runs on one cache_dir once left "fails its sha256 check" errors)
# ---------------------------------------------------------------------------------------------------------------


def _put(cache: FeatureCache, video: str, value: float, flush: bool = True) -> CacheKey:
    key = CacheKey.create(video * 64, "c" * 64, **sampling_params(num_frames=2))
    feats = {"face": torch.full((2, 1, 4), value)}
    cache.put(key, feats, {"face": torch.ones(2, 1, dtype=torch.bool)}, [0.0, 1.0], flush=flush)
    return key


def test_two_writers_keep_each_others_entries(tmp_path):
    a, b = FeatureCache(tmp_path), FeatureCache(tmp_path)  # both opened before either wrote
    ka, kb = _put(a, "a", 1.0), _put(b, "b", 2.0)
    fresh = FeatureCache(tmp_path)
    assert set(fresh.entries) == {ka.entry_id, kb.entry_id}
    assert fresh.get(ka).features["face"].eq(1.0).all() and fresh.get(kb).features["face"].eq(2.0).all()


def test_same_entry_written_by_two_writers_stays_readable(tmp_path):
    a, b = FeatureCache(tmp_path), FeatureCache(tmp_path)
    key = _put(a, "v", 1.0, flush=False)  # a writes the shard, flushes its index later
    _put(b, "v", 2.0)  # b rewrites the same shard and flushes first
    a.flush()  # a's record no longer matches the shard on disk: b's record is kept
    got = FeatureCache(tmp_path).get(key)
    assert got is not None and got.features["face"].eq(2.0).all()


def test_a_writer_flushing_again_after_another_rewrote_the_entry_keeps_theirs(tmp_path):
    a, b = FeatureCache(tmp_path), FeatureCache(tmp_path)
    key = _put(a, "v", 1.0)  # a writes and flushes
    _put(b, "v", 2.0)  # b rewrites the same shard and flushes
    a.flush()  # a wrote nothing since its flush: its old record must not replace b's
    got = FeatureCache(tmp_path).get(key)
    assert got is not None and got.features["face"].eq(2.0).all()


def test_a_reader_with_an_old_index_rereads_a_rewritten_entry(tmp_path):
    key = _put(FeatureCache(tmp_path), "v", 1.0)
    reader = FeatureCache(tmp_path)
    _put(FeatureCache(tmp_path), "v", 3.0)  # another process recomputes the entry
    got = reader.get(key)
    assert got is not None and got.features["face"].eq(3.0).all() and reader.last_status == "hit"


def test_removed_entry_is_not_brought_back_by_the_merge(tmp_path):
    a = FeatureCache(tmp_path)
    key = _put(a, "v", 1.0)
    b = FeatureCache(tmp_path)
    kw = _put(b, "w", 1.0, flush=False)
    a.remove(key.entry_id)
    b.flush()  # b still lists v from when it opened the index, but v was removed on disk since
    assert set(FeatureCache(tmp_path).entries) == {kw.entry_id}


_WRITER = """
import pathlib, sys, time, torch
from processing.cache import CacheKey, FeatureCache, sampling_params
root, tag = sys.argv[1], sys.argv[2]
cache = FeatureCache(root)  # both open the index before either writes
pathlib.Path(root, f"ready-{tag}").touch()
while not all(pathlib.Path(root, f"ready-{t}").exists() for t in "ab"):
    time.sleep(0.01)
for i in range(25):
    time.sleep(0.005)  # interleave the two writers
    key = CacheKey.create(f"{tag}{i:03d}".ljust(64, "0"), "c" * 64, **sampling_params(num_frames=2))
    ones = {"face": torch.ones(2, 1, dtype=torch.bool)}
    cache.put(key, {"face": torch.full((2, 1, 4), float(i))}, ones, [0.0, 1.0], flush=i % 5 == 4)  # batched flushes
    shared = CacheKey.create("s" * 64, "c" * 64, **sampling_params(num_frames=2))  # both write this one too
    cache.put(shared, {"face": torch.full((2, 1, 4), 7.0)}, ones, [0.0, 1.0], flush=i % 5 == 4)
cache.flush()
"""


def test_two_processes_writing_one_cache_lose_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), tag], env=env, stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    cache = FeatureCache(tmp_path)
    assert len(cache.entries) == 51
    for entry_id in list(cache.entries):
        assert cache.get_by_id(entry_id) is not None, cache.last_reason

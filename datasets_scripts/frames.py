"""Frame sampling from videos for the scene-tuning set (paper §4.1: "Since CMU-MOSEI and HumanML3D contain over 20K
videos, we sample frames at an appropriate rate"). ``processing.video.decode_all_frames`` decodes; the rate is a
config field of the builder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def sample_frames(
    video: str | os.PathLike,
    rate: float = 1.0,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample frames of ``video`` at ``rate`` frames per second between ``start`` and ``end`` seconds.

    The sample times are ``start + k / rate`` (``k = 0, 1, ...``) while ``< end`` (the clip's end when ``end`` is
    None); each takes the last decoded frame shown at or before it. With ``max_frames`` the sample times are thinned
    evenly to at most that many.

    Returns:
        ``(frames uint8 [N, H, W, 3], times float64 [N])`` — the times are the sample times in seconds.

    Raises:
        ValueError naming the video when it cannot be decoded, the rate is not positive, or the window is empty.
    """
    from processing.video import decode_all_frames

    if not rate or rate <= 0:
        raise ValueError(f"frame rate must be > 0 frames per second, got {rate!r}")
    path = Path(video)
    if not path.is_file():
        raise ValueError(f"video file does not exist: {path}")
    frames, decoded_times = decode_all_frames(path)
    times = decoded_times.tolist()
    begin = float(start) if start is not None else 0.0
    stop = float(end) if end is not None else float(decoded_times[-1]) + 1e-6
    if stop <= begin:
        stop = begin + 1e-6  # a zero-length window still yields its first frame
    sample_times = begin + np.arange(int(np.ceil((stop - begin) * rate))) / rate
    sample_times = sample_times[sample_times < stop]
    if max_frames is not None and len(sample_times) > max_frames:
        keep = np.linspace(0, len(sample_times) - 1, int(max_frames)).round().astype(int)
        sample_times = sample_times[keep]
    if len(sample_times) == 0 or begin > decoded_times[-1] + 1e-6:
        raise ValueError(f"video {path}: no frames between {begin:g} s and {stop:g} s (it ends at {times[-1]:g} s)")
    index = np.searchsorted(decoded_times, sample_times + 1e-6, side="right") - 1
    index = np.clip(index, 0, len(frames) - 1)
    return np.stack([frames[i] for i in index]), sample_times.astype(np.float64)

"""Synthetic TSL-300-format annotation sets at the paper's scale, for the scale tests and the P9 benchmark.

:func:`write_tsl300_scale_set` writes ``videosenti_gt.json``, ``fps_dict.json`` and ``len_duration_dict.json`` in
TSL-300's own layout for ``num_sources`` source videos of ``duration`` seconds (seeded positive/negative segments,
a quarter of the sources in ``test``) and a ``videos/`` folder where every id is a symbolic link to one real video
file, so that ``convert_tsl300`` → ``OmniSila`` → ``export_parquet`` run with their file checks at full size
without 1,000 real videos. With the default 20-s windows every second, ``num_sources × floor(duration)`` clips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def write_tsl300_scale_set(
    root: str | os.PathLike, video: str | os.PathLike, num_sources: int = 1000, duration: float = 200.0, seed: int = 0
) -> Path:
    """Write the set under ``root`` (see the module docstring); returns ``root``."""
    root = Path(root)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    database, fps, durations = {}, {}, {}
    target = Path(video).resolve()
    for i in range(num_sources):
        vid = f"scale_{i:06d}"
        segments, t = [], float(rng.uniform(0, 10))
        while t < duration - 3:
            end = min(duration, t + float(rng.uniform(2, 15)))
            segments.append({"segment": [f"{t:.3f}", f"{end:.3f}"], "label": "p" if rng.random() < 0.55 else "n"})
            t = end + float(rng.uniform(5, 40))
        database[vid] = {"subset": "test" if i % 4 == 3 else "train", "annotations": segments}
        fps[vid], durations[vid] = 30.0, float(duration)
        link = videos / f"{vid}{target.suffix}"
        if not link.exists():
            link.symlink_to(target)
    (root / "videosenti_gt.json").write_text(json.dumps({"database": database}))
    (root / "fps_dict.json").write_text(json.dumps(fps))
    (root / "len_duration_dict.json").write_text(json.dumps(durations))
    return root

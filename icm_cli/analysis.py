"""Kept for existing imports: the window, confidence and merge functions live in :mod:`processing.analysis`."""

from processing.analysis import (  # noqa: F401
    WindowResult,
    answer_confidence,
    frame_scene_weights,
    mean_scene_weights,
    merge_windows,
    plan_windows,
    to_video_segments,
)

__all__ = [
    "WindowResult",
    "answer_confidence",
    "frame_scene_weights",
    "merge_windows",
    "mean_scene_weights",
    "plan_windows",
    "to_video_segments",
]

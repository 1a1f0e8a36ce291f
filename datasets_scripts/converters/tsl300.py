"""TSL-300 → the explicit Omni-SILA clips (paper §4.1: "The explicit Omni-SILA dataset is based on public TSL-300").

TSL-300 (Zhang et al., ACM MM 2022; github.com/nku-zhichengzhang/TSL300) ships, in ``dataset/VideoSenti/``:

* ``videosenti_gt.json`` — ActivityNet style, **train and test** segments: ``{"database": {vid: {"subset":
  "train"|"test", "annotations": [{"segment": ["18.44", "31.199"], "label": "p"|"n"}, ...]}}}`` (seconds as
  strings; 1,058 train and 584 test segments over 200 + 100 videos);
* ``gt.json`` — the same layout with segments for the 100 **test** videos only (its train entries are empty);
* ``fps_dict.json`` — ``{vid: fps}``; ``len_duration_dict.json`` — ``{vid: duration seconds}``;
* the videos, ``<vid>.<container>`` (distributed separately, on request).

Each source video is cut into clip windows by :mod:`datasets_scripts.windows` (default 20-s windows every second,
the paper's one-clip-per-second construction; the label of a window is the sentiment covering most of its
annotated time, ``neutral`` when no segment overlaps it). Choices and bad input:

* A video **without any segment is unannotated**, not neutral: it is skipped and reported (with ``gt.json`` that
  is every train video — pass ``videosenti_gt.json``, or the folder, which picks it).
* A segment ending after the stated duration by at most ``overshoot_frames`` frames (default 3; TSL-300's worst is
  2.8 frames) is clamped to the duration with a warning; a larger overshoot, an inverted (end < start), negative
  or unparsable segment drops **that segment only**, reported. An unknown label code skips the video (its time
  could not be labelled without it). A video missing from the fps or duration dictionary, or whose file is not
  found, is skipped.
* The video file is found by id whatever its container (.mp4, .avi, .mkv, .webm, .mov); when several match the
  preferred one is taken and a warning names all of them.
* TSL-300 has no attribution text (the paper generated it with GPT-4V and checked it by hand); pass ``causes``
  (``{vid: text}`` or ``{vid: {label: text}}``) to fill ``cause``. Letter codes come from
  ``modeling_icm.templates.TSL300_LABEL_CODES``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modeling_icm.templates import TSL300_LABEL_CODES

from ..schema import ValidationReport
from ..windows import ClipWindows, SourceVideo, WindowConfig
from .common import OVERSHOOT_FRAMES, SourceCollector, VideoIndex, load_json

SOURCE = "tsl300"
#: The annotation file with train and test segments, picked when a folder is given.
ANNOTATIONS_NAME = "videosenti_gt.json"


def convert_tsl300(
    gt_json: str | os.PathLike,
    fps_json: str | os.PathLike,
    duration_json: str | os.PathLike,
    video_dir: str | os.PathLike,
    out_jsonl: str | os.PathLike | None = None,
    *,
    causes: dict[str, Any] | None = None,
    window_config: WindowConfig | None = None,
    check_video: bool = True,
    subset_to_split: dict[str, str] | None = None,
    overshoot_frames: float = OVERSHOOT_FRAMES,
) -> tuple[ClipWindows, ValidationReport]:
    """Convert TSL-300 annotations into clip windows (see the module docstring).

    Args:
        gt_json: ``videosenti_gt.json`` (train + test segments), ``gt.json``, or the ``VideoSenti`` folder.
        fps_json, duration_json: ``fps_dict.json`` and ``len_duration_dict.json``.
        video_dir: the folder of the videos (any container).
        out_jsonl: stream the clips to this JSON Lines file when given.
        causes: attribution texts per video (and label).
        window_config: the clip construction (default :class:`~datasets_scripts.windows.WindowConfig`).
        check_video: require each video file; without it a missing file is written as ``<vid>.mp4``.
        subset_to_split: renames of TSL-300 subsets.
        overshoot_frames: segments ending at most this many frames after the duration are clamped.

    Returns:
        ``(windows, report)``: the lazily built clips (``len(windows)``, ``windows.counts()``, iterate them) and
        what was skipped, clamped or noted (``report.kept`` = the number of clips).
    """
    gt_path = Path(gt_json)
    if gt_path.is_dir():
        gt_path = gt_path / ANNOTATIONS_NAME
    gt = load_json(gt_path, "TSL-300 annotations")
    fps_dict = load_json(fps_json, "TSL-300 fps dictionary", expect=dict)
    durations = load_json(duration_json, "TSL-300 duration dictionary", expect=dict)
    if not isinstance(gt, dict) or not isinstance(gt.get("database"), dict):
        raise ValueError(f"{gt_path}: expected an ActivityNet-style object with a 'database' mapping")
    subset_to_split = {"training": "train", "validation": "validation", "testing": "test", **(subset_to_split or {})}
    causes = causes or {}
    index = VideoIndex(video_dir)
    out = SourceCollector(str(gt_path), check_video=check_video, overshoot_frames=overshoot_frames)
    hint = "" if gt_path.name == ANNOTATIONS_NAME else f" ({gt_path.name} may annotate only some videos: use {ANNOTATIONS_NAME})"
    for vid, entry in gt["database"].items():
        where = str(vid)
        if not isinstance(entry, dict):
            out.skip(where, "<entry>", "must be an object", entry)
            continue
        if vid not in fps_dict:
            out.skip(where, "fps", "video missing from the fps dictionary", vid)
            continue
        if vid not in durations:
            out.skip(where, "duration", "video missing from the duration dictionary", vid)
            continue
        fps = out.number(where, "fps", fps_dict[vid])
        duration = out.number(where, "duration", durations[vid])
        if fps is None or duration is None:
            continue
        annotations = entry.get("annotations") or []
        if not isinstance(annotations, list) or not annotations:
            out.skip(where, "annotations", f"unannotated video (no segment): skipped, not labelled{hint}", annotations)
            continue
        raw, unknown = [], None
        for i, ann in enumerate(annotations):
            code = str(ann.get("label", "")).strip().lower() if isinstance(ann, dict) else ""
            label = TSL300_LABEL_CODES.get(code)
            if label is None:
                unknown = (f"annotations[{i}].label", ann.get("label") if isinstance(ann, dict) else ann)
                break
            raw.append((f"annotations[{i}].segment", ann.get("segment"), label))
        if unknown is not None:
            out.skip(where, unknown[0], f"unknown TSL-300 label code (known: {sorted(TSL300_LABEL_CODES)}); video "
                     "skipped", unknown[1])  # fmt: skip
            continue
        segments = out.segments(where, raw, duration, fps)
        if not segments:
            out.skip(where, "annotations", "no usable segment left: video skipped", len(raw))
            continue
        path, note = index.find(vid)
        if note:
            out.warn(where, "video", note, vid)
        if path is None:
            if check_video:
                out.skip(where, "video", f"no video file for this id in {video_dir} (looked for {', '.join(index.extensions)})", vid)  # fmt: skip
                continue
            path = Path(video_dir) / f"{vid}.mp4"
        cause = causes.get(vid, "")
        subset = str(entry.get("subset", "train"))
        out.add(
            SourceVideo(
                source_id=str(vid),
                video=str(path.resolve() if path.exists() else path),
                duration=duration,
                fps=fps,
                split=subset_to_split.get(subset, subset),
                config="explicit",
                segments=segments,
                causes=dict(cause) if isinstance(cause, dict) else {"positive": cause, "negative": cause},
                source=SOURCE,
            ),
            where,
        )
    return out.windows(window_config, out_jsonl)

"""What each side of ICM can read on a data set: linear probes on the scene features and on what the video tower
receives, per config, on the held-out split. The study set's card and tests stand on these numbers: the scene
features must carry the label (≥ 0.85 on the study set) and the video tower must not (≤ chance + 0.15).

Every probe is a logistic regression (scikit-learn, standardised inputs) fitted on the training clips and scored on
the evaluation clips, one row per clip. The clips' frames are sampled as the recipes sample them
(``processing.video.sample_frames``, ``num_frames`` uniformly over the clip); the scene features are pooled per
scene by ``inference.events.pooled_scene_features`` (:data:`STUDY_POOLING`: the mean, max, min and standard deviation
over the present items), and the probe is
``trainers.diagnostics.fit_linear_probe``, the one the recipes' scene probe uses.

What the video tower receives is probed three ways, so that "the tower cannot see the label" is not an artefact of
one weak probe: its pixel input (``pixel_values_videos`` after the processor's resize and centre crop, averaged over
the frames), a 16-bin-per-channel colour histogram of that input (the probe that reads the mini set's colours at
≥ 0.9), and the tower's output tokens (mean-pooled over frames and patches).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_scripts.schema import read_annotations
from modeling_icm.templates import SCENE_NAMES

#: each scene's statistics over frames and items in the study probes. The recipes' scene probe and the event probe
#: pool by the mean and the max; on the study set's explicit clips those lose which way the face changed (a clip
#: brightens or darkens a face whose own level differs from clip to clip), which the min and the std keep: held out
#: on the ``large`` set, 0.771 with the mean and the max against 0.896 with all four (docs/study-set.md, H-P).
STUDY_POOLING = ("mean", "max", "min", "std")


def _probe(x_train, y_train, x_eval, y_eval) -> float | None:
    from .diagnostics import fit_linear_probe

    if len(set(y_train)) < 2 or not len(y_eval):
        return None
    return float(fit_linear_probe(np.asarray(x_train), y_train).score(np.asarray(x_eval), list(y_eval)))


def colour_histogram(pixels: torch.Tensor, bins: int = 16) -> np.ndarray:
    """A ``bins``-per-channel histogram (normalised counts) of video pixels ``[T, 3, H, W]`` in any range."""
    x = pixels.float()
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / max(hi - lo, 1e-6)
    out = [torch.histc(x[:, c], bins=bins, min=0.0, max=1.0) for c in range(x.shape[1])]
    hist = torch.cat(out)
    return (hist / hist.sum().clamp_min(1)).numpy()


@torch.no_grad()
def clip_views(
    records: Sequence[Any],
    pipeline,
    processor=None,
    tower=None,
    num_frames: int = 8,
    statistics: Sequence[str] = STUDY_POOLING,
) -> list[dict[str, Any]]:
    """Per clip record: its label, split, id, pooled features per scene (``statistics`` over frames and items), and
    (with ``processor``) the video tower's pixel input, its colour histogram and (with ``tower``, a callable on
    ``pixel_values_videos``) its output."""
    from inference.events import pooled_scene_features
    from processing.video import sample_frames

    views = []
    for record in records:
        frames = sample_frames(record.video, num_frames).frames
        features, masks = pipeline.extract(torch.from_numpy(np.ascontiguousarray(frames)))
        view = {
            "id": record.id,
            "label": record.label,
            "split": record.split,
            "scenes": {
                scene: pooled_scene_features(
                    {"scene_features": features, "scene_masks": masks}, [scene], statistics
                ).numpy()
                for scene in features
            },
        }
        if processor is not None:
            pixels = processor(videos=[list(frames)], return_tensors="pt")["pixel_values_videos"]
            view["tower_pixels"] = pixels[0].mean(0).flatten().numpy()
            view["tower_histogram"] = colour_histogram(pixels[0])
            if tower is not None:
                tokens = tower(pixels)
                view["tower_tokens"] = tokens.reshape(-1, tokens.shape[-1]).mean(0).float().numpy()
        views.append(view)
    return views


def probe_views(views: Sequence[dict[str, Any]], train_split: str = "train", eval_split: str = "test") -> dict:
    """The probes' held-out accuracies on :func:`clip_views` rows: per scene, all scenes together, and each view
    of the video tower that the rows carry; with the chance level (one over the labels) and the clip counts."""
    train = [v for v in views if v["split"] == train_split]
    test = [v for v in views if v["split"] == eval_split]
    y_train, y_test = [v["label"] for v in train], [v["label"] for v in test]

    def acc(get) -> float | None:
        return _probe([get(v) for v in train], y_train, [get(v) for v in test], y_test)

    scenes = [s for s in SCENE_NAMES if train and s in train[0]["scenes"]]
    result: dict[str, Any] = {
        "chance": 1.0 / max(len(set(y_train) | set(y_test)), 1),
        "train_clips": len(train),
        "eval_clips": len(test),
        "scene": {scene: acc(lambda v, s=scene: v["scenes"][s]) for scene in scenes},
    }
    result["scene"]["all"] = acc(lambda v: np.concatenate([v["scenes"][s] for s in scenes]))
    for key in ("tower_pixels", "tower_histogram", "tower_tokens"):
        if train and key in train[0]:
            result[key] = acc(lambda v, k=key: v[k])
    return result


def study_views(
    data_dir: str | os.PathLike,
    pipeline,
    processor=None,
    tower=None,
    configs: Sequence[str] = ("explicit", "implicit"),
    num_frames: int = 8,
    statistics: Sequence[str] = STUDY_POOLING,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`clip_views` per config of a data folder (``<config>.jsonl`` in the clip schema); ``statistics``: the
    scene features' pooling over frames and items (``inference.events.pooled_scene_features``)."""
    out = {}
    for config in configs:
        path = Path(data_dir) / f"{config}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no annotations for config {config!r}")
        records, _ = read_annotations(path, strict=True, config=config)
        out[config] = clip_views(records, pipeline, processor, tower, num_frames, statistics)
    return out


def study_probes(data_dir: str | os.PathLike, pipeline, processor=None, tower=None, **options) -> dict[str, dict]:
    """:func:`probe_views` of each config's :func:`study_views` (``options``: its ``configs``, ``num_frames``,
    ``statistics``)."""
    views = study_views(data_dir, pipeline, processor, tower, **options)
    return {config: probe_views(found) for config, found in views.items()}


def tiny_video_tower(seed: int = 0):
    """``(processor, tower)``: the tiny recipes' video processor and a callable giving the tiny random ICM's video
    tower output for ``pixel_values_videos`` — what a tiny ICM's LLM receives from the video."""
    from .presets import tiny_icm

    model, processor = tiny_icm(seed=seed)
    model.eval()
    return processor.video_processor, model._video_features


__all__ = [
    "STUDY_POOLING",
    "clip_views",
    "colour_histogram",
    "probe_views",
    "study_probes",
    "study_views",
    "tiny_video_tower",
]

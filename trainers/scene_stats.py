"""Per-dimension statistics of the scene features for ``IcmConfig.scene_feature_norm = "standardize"``.

Filled once before training from the training clips' cached features (like the IEC dictionary, §3.3), written into
the SBM's ``SceneFeatureStandardizer`` buffers and saved with the model, so inference standardises with the
training set's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from inference.loading import icm_base_model

# a floor on the variance: a dimension constant on the training set is scaled by at most 1/0.01, not by 1/eps
VARIANCE_FLOOR = 1e-4


@torch.no_grad()
def fit_scene_standardization(model, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Set every scene's ``SceneFeatureStandardizer`` ``mean`` / ``std`` to the mean and standard deviation, per input
    dimension, of the scene's *present* items (``scene_masks``) over all frames of ``examples`` (one row per clip:
    examples of several tasks on one clip count once).

    Returns ``{scene: number of items}``; ``{"skipped": reason}`` for a model that does not standardise. A scene with no present item keeps the identity (mean 0, std 1)."""
    base = icm_base_model(model)
    config = base.config
    if config.scene_feature_norm != "standardize":
        return {"skipped": f"scene_feature_norm={config.scene_feature_norm!r}"}
    if base.sbm is None or base.sbm.feature_norms is None:
        return {"skipped": "no scene tokens"}
    clips: dict[Any, dict[str, Any]] = {}
    for i, example in enumerate(examples):
        clips.setdefault(example.get("clip_id", i), example)
    counts: dict[str, int] = {}
    for scene, norm in base.sbm.feature_norms.items():
        dim = norm.mean.shape[0]
        total = torch.zeros(dim, dtype=torch.float64)
        square = torch.zeros(dim, dtype=torch.float64)
        n = 0
        for example in clips.values():
            value = (example.get("scene_features") or {}).get(scene)
            if value is None:
                continue
            rows = torch.as_tensor(value, dtype=torch.float64).reshape(-1, dim)
            masks = example.get("scene_masks") or {}
            if masks.get(scene) is not None:
                rows = rows[torch.as_tensor(masks[scene]).reshape(-1).bool()]
            total += rows.sum(0)
            square += (rows * rows).sum(0)
            n += rows.shape[0]
        counts[scene] = n
        if n == 0:
            continue
        mean = total / n
        variance = (square / n - mean * mean).clamp(min=0.0)
        norm.mean.copy_(mean.to(norm.mean.dtype))
        norm.std.copy_((variance + VARIANCE_FLOOR).sqrt().to(norm.std.dtype))
    return counts


__all__ = ["VARIANCE_FLOOR", "fit_scene_standardization"]

"""The scene-feature contract between the extractors (``processing/``) and the model — written once, here.

For each scene ``s`` in :data:`SCENE_NAMES` the model receives

* ``scene_features[s]``: a float tensor ``[batch, frames, items, dim_s]``
* ``scene_masks[s]``: a bool tensor ``[batch, frames, items]``; ``True`` marks a real item.

Items are faces (``face``), persons (``action``), relation triplets (``object``) and the one background
(``background``). An absent thing (no face in a frame) is a ``False`` mask entry: padded rows are zeros **and**
masked, never unmasked zeros that would look like a face.

Default dimensions (what the default extractors in ``processing/`` produce):

* ``face`` 512 — a ResNet-18-sized CNN's pooled embedding of each MTCNN-aligned face (x_f);
* ``action`` 595 — per person, 17 COCO keypoints × (x, y normalised to [0, 1], score) = 51, plus the 32-channel
  HigherHRNet final-stage feature sampled at each keypoint, 17 × 32 = 544 (x_a);
* ``object`` 868 — per RelTR triplet, subject and object decoder embeddings (2 × 256) and the subject / predicate /
  object class distributions (152 + 52 + 152) (x_o);
* ``background`` 768 — the ViT-Base [CLS] embedding of the frame with SAM's foreground masks filled black (x_b).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .templates import SCENE_NAMES

DEFAULT_SCENE_DIMS: dict[str, int] = {"face": 512, "action": 595, "object": 868, "background": 768}
#: Default item capacity per frame (faces, persons, triplets, backgrounds).
DEFAULT_SCENE_ITEMS: dict[str, int] = {"face": 4, "action": 4, "object": 10, "background": 1}

# Fixed sub-dimensions used by the extractors that build these vectors.
NUM_KEYPOINTS = 17
ACTION_FEATURE_CHANNELS = 32
RELTR_HIDDEN = 256
RELTR_NUM_ENTITY_CLASSES = 152  # 151 Visual Genome classes + no-object
RELTR_NUM_PREDICATE_CLASSES = 52  # 51 predicates (incl. background) + no-relation


def validate_scene_inputs(
    scene_features: Mapping[str, torch.Tensor],
    scene_masks: Mapping[str, torch.Tensor] | None,
    expected_dims: Mapping[str, int],
    *,
    num_frames: int | None = None,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Check ``scene_features`` / ``scene_masks`` against the contract and return the masks (all-true where a
    scene's mask is not given). Raises ``ValueError`` naming the scene and the field at fault."""
    if not isinstance(scene_features, Mapping):
        raise ValueError(f"scene_features must be a mapping scene -> tensor, got {type(scene_features).__name__}")
    scene_masks = dict(scene_masks or {})
    unknown = set(scene_features) - set(SCENE_NAMES)
    if unknown:
        raise ValueError(f"scene_features has unknown scene(s) {sorted(unknown)}; known scenes are {list(SCENE_NAMES)}")
    missing = [s for s in expected_dims if s not in scene_features]
    if missing:
        raise ValueError(f"scene_features is missing the enabled scene(s) {missing}")
    masks: dict[str, torch.Tensor] = {}
    for scene, dim in expected_dims.items():
        feats = scene_features[scene]
        if not torch.is_tensor(feats) or feats.dim() != 4:
            shape = tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__
            raise ValueError(f"scene_features[{scene!r}] must be a [batch, frames, items, dim] tensor, got {shape}")
        b, t, n, d = feats.shape
        if d != dim:
            raise ValueError(
                f"scene_features[{scene!r}] has dim {d} but the config expects scene_dims[{scene!r}]={dim}"
            )
        if num_frames is not None and t != num_frames:
            raise ValueError(
                f"scene_features[{scene!r}] has {t} frames but the video has {num_frames} frames (frame count mismatch)"
            )
        if batch_size is not None and b != batch_size:
            raise ValueError(f"scene_features[{scene!r}] has batch size {b} but input_ids has batch size {batch_size}")
        mask = scene_masks.get(scene)
        if mask is None:
            mask = torch.ones(b, t, n, dtype=torch.bool, device=feats.device)
        elif not torch.is_tensor(mask) or tuple(mask.shape) != (b, t, n):
            shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
            raise ValueError(f"scene_masks[{scene!r}] must have shape {(b, t, n)} to match its features, got {shape}")
        masks[scene] = mask.bool()
    return masks


def collate_scene_features(
    examples: list[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor] | None]],
    scenes: tuple[str, ...] | list[str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Batch per-clip scene features ``{scene: [T, items_i, dim]}`` (+ masks ``[T, items_i]``) into the contract's
    ``[B, T, max_items, dim]`` features and ``[B, T, max_items]`` masks; padded items are zeros and masked out.

    ``examples`` is a list of ``(features, masks)`` pairs (masks may be None: all items real)."""
    if not examples:
        raise ValueError("collate_scene_features needs at least one example")
    scenes = list(scenes) if scenes is not None else [s for s in SCENE_NAMES if s in examples[0][0]]
    features: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for scene in scenes:
        rows, row_masks = [], []
        for index, (feats, mks) in enumerate(examples):
            if scene not in feats:
                raise ValueError(f"example {index} has no scene_features[{scene!r}]")
            x = torch.as_tensor(feats[scene])
            if x.dim() != 3:
                raise ValueError(
                    f"example {index}: scene_features[{scene!r}] must be [frames, items, dim] per clip, got {tuple(x.shape)}"
                )
            m = torch.as_tensor(mks[scene]).bool() if mks is not None and scene in mks else None
            if m is None:
                m = torch.ones(x.shape[:2], dtype=torch.bool)
            if tuple(m.shape) != tuple(x.shape[:2]):
                raise ValueError(
                    f"example {index}: scene_masks[{scene!r}] has shape {tuple(m.shape)}, expected {tuple(x.shape[:2])}"
                )
            rows.append(x.float())
            row_masks.append(m)
        frames = {r.shape[0] for r in rows}
        dims = {r.shape[2] for r in rows}
        if len(frames) != 1:
            raise ValueError(f"scene_features[{scene!r}] frame counts differ across the batch: {sorted(frames)}")
        if len(dims) != 1:
            raise ValueError(f"scene_features[{scene!r}] dims differ across the batch: {sorted(dims)}")
        n_max = max(1, max(r.shape[1] for r in rows))
        t, d = rows[0].shape[0], rows[0].shape[2]
        out = torch.zeros(len(rows), t, n_max, d)
        out_mask = torch.zeros(len(rows), t, n_max, dtype=torch.bool)
        for i, (r, m) in enumerate(zip(rows, row_masks)):
            out[i, :, : r.shape[1]] = r * m.unsqueeze(-1)
            out_mask[i, :, : r.shape[1]] = m
        features[scene] = out
        masks[scene] = out_mask
    return features, masks

"""Tiny ICM set-ups (timm style test variants) for tests, the CPU demo and benchmarks: a tiny random ICM, its tiny
tokenizer and an ``IcmProcessor`` sized for it, plus synthetic examples."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

#: The tiny video processor: 32 px crops, patch 8 -> 16 patches + CLS = 17 video tokens per frame.
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8


def tiny_processor(tokenizer, num_frames: int = 8, num_scene_tokens: int | None = None, use_video: bool = True):
    from transformers import VideoLlavaVideoProcessor

    from modeling_icm.processing_icm import IcmProcessor

    video_processor = VideoLlavaVideoProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    return IcmProcessor(
        video_processor,
        tokenizer,
        num_frames=num_frames,
        num_scene_tokens=num_frames if num_scene_tokens is None else num_scene_tokens,
        patch_size=TINY_PATCH_SIZE,
        scene_extraction={"pipeline": "tiny"},
        use_video=use_video,
    )


def tiny_icm(
    scene_dims: Mapping[str, int] | None = None,
    corpus: Iterable[str] = (),
    seed: int = 0,
    num_frames: int = 8,
    **config_overrides,
):
    """``(model, processor)``: a tiny random ICM (``modeling_icm.presets.tiny_icm_config``) whose tokenizer is trained
    on the templates plus ``corpus``, and the matching processor."""
    from modeling_icm.modeling_icm import IcmForVideoSentiment
    from modeling_icm.presets import build_tiny_tokenizer, tiny_icm_config

    tokenizer = build_tiny_tokenizer(list(corpus))
    config = tiny_icm_config(
        tokenizer, scene_dims=dict(scene_dims) if scene_dims else None, num_frames=num_frames, **config_overrides
    )
    torch.manual_seed(seed)
    model = IcmForVideoSentiment(config)
    processor = tiny_processor(
        tokenizer,
        num_frames=num_frames,
        num_scene_tokens=config.num_scene_placeholders,
        use_video=config.use_video_tokens,
    )
    return model, processor


def synthetic_examples(
    scene_dims: Mapping[str, int],
    count: int,
    answers: list[str],
    instruction: str,
    num_frames: int = 8,
    seed: int = 0,
    items: int = 3,
) -> list[dict]:
    """Random frames and scene features with the given answers (for unit tests of the training machinery only)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        feats = {s: torch.randn(num_frames, items, d, generator=generator) for s, d in scene_dims.items()}
        masks = {s: torch.rand(num_frames, items, generator=generator) > 0.3 for s in scene_dims}
        out.append(
            {
                "frames": torch.randint(0, 255, (num_frames, 40, 48, 3), dtype=torch.uint8, generator=generator),
                "timestamps": [float(t) for t in range(num_frames)],
                "scene_features": feats,
                "scene_masks": masks,
                "instruction": instruction,
                "answer": answers[i % len(answers)],
                "clip_id": f"synthetic-{i}",
            }
        )
    return out


def label_coded_scene_examples(
    scene_dims: Mapping[str, int],
    labels: list[str],
    count: int,
    seed: int = 0,
    noise: float = 1.0,
    clip_noise: float = 0.0,
    coded_scenes: tuple[str, ...] = ("action", "background"),
    num_frames: int = 8,
    items: int = 3,
    prototype_seed: int = 1234,
) -> list[dict]:
    """Implicit-config identify clips whose label is written *only* in their scene features (the frames are one grey
    image for every clip): each label has a random prototype per scene in ``coded_scenes`` (from ``prototype_seed``,
    shared by the train and test sets), and a clip's per-frame features are its label's prototype plus a per-clip
    nuisance vector (``clip_noise``) plus per-frame noise (``noise``); the other scenes are absent (false masks).
    Labels come in turn. The smallest test of the scene pathway: a scene-only model (``use_video_tokens=False``) can
    answer above chance only through its scene tokens."""
    from modeling_icm import templates as T

    protos = torch.Generator().manual_seed(prototype_seed)
    prototypes = {s: torch.randn(len(labels), scene_dims[s], generator=protos) for s in coded_scenes}
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        k = i % len(labels)
        feats, masks = {}, {}
        for scene, dim in scene_dims.items():
            if scene in coded_scenes:
                nuisance = clip_noise * torch.randn(dim, generator=generator)
                feats[scene] = prototypes[scene][k] + nuisance + noise * torch.randn(num_frames, items, dim, generator=generator)
                masks[scene] = torch.ones(num_frames, items, dtype=torch.bool)
            else:
                feats[scene] = torch.zeros(num_frames, items, dim)
                masks[scene] = torch.zeros(num_frames, items, dtype=torch.bool)
        out.append(
            {
                "frames": torch.full((num_frames, 32, 32, 3), 128, dtype=torch.uint8),
                "timestamps": [float(t) for t in range(num_frames)],
                "scene_features": feats,
                "scene_masks": masks,
                "instruction": T.identify_instruction("implicit"),
                "answer": T.identify_answer("implicit", labels[k]),
                "label": labels[k],
                "config": "implicit",
                "clip_id": f"coded-{seed}-{i}",
            }
        )
    return out

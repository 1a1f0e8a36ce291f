"""Tiny ICM set-ups (timm style test variants) for tests, the CPU demo and benchmarks: a tiny random ICM, its tiny
tokenizer and an ``IcmProcessor`` sized for it, plus synthetic examples."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

#: The tiny video processor: 32 px crops, patch 8 -> 16 patches + CLS = 17 video tokens per frame.
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8


def tiny_processor(tokenizer, num_frames: int = 8, num_scene_tokens: int | None = None):
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
    return model, tiny_processor(tokenizer, num_frames=num_frames, num_scene_tokens=config.num_scene_placeholders)


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

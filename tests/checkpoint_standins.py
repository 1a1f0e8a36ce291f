"""Stand-ins of the real checkpoints the paper's path starts from, written by the tests in the published layouts.

* :func:`save_video_llava_7b_standin` — ``LanguageBind/Video-LLaVA-7B-hf`` file for file: ``config.json`` of
  ``VideoLlavaForConditionalGeneration`` (7B's token ids, 32,064 embedding rows, CLIP ViT-L/14 224 px geometry,
  feature layer -2), ``generation_config.json``, sharded safetensors under the checkpoint's *legacy* key names
  (``language_model.model.*``, ``language_model.lm_head.*``, ``video_tower.*``, ``image_tower.*``,
  ``multi_modal_projector.*``) with ``model.safetensors.index.json``, and the ``VideoLlavaProcessor`` files
  (``tokenizer.json`` / ``tokenizer_config.json`` / ``special_tokens_map.json`` / ``added_tokens.json`` with
  ``<unk> <s> </s>`` 0-2, the 256 byte-fallback pieces, ``<image>`` 32000, ``<video>`` 32001, ``<pad>`` 32002 and
  no ``<scene>``; ``preprocessor_config.json``; ``processor_config.json``; ``chat_template.json``). Shrunk only in
  width and depth (LLM hidden 64 × 2 layers, CLIP hidden 32 × 2 layers) and in the learned BPE merges (trained on
  the Omni-SILA templates; the unused ids up to 32000 are filler pieces). Not written: ``tokenizer.model`` (the
  SentencePiece file only the slow tokenizer reads; transformers 5 loads ``tokenizer.json``).
* :func:`save_scene_extractor_standins` — the official containers of HigherHRNet (a plain state dict), RelTR
  (``{"model": state_dict, "args": Namespace}``), SAM-V1 (a plain state dict) with tiny widths, and the face CNN /
  background ViT as ``save_pretrained`` folders; returns the ``ScenePipeline.from_pretrained`` keyword arguments
  (JSON-able) a recipe's ``features.pipeline_kwargs`` takes.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch

# The published files' contents (values of LanguageBind/Video-LLaVA-7B-hf that do not depend on the model's size).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
VIDEO_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LEGACY_PREFIXES = (  # transformers 5 module path -> the key prefix of the published safetensors
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.video_tower.", "video_tower."),
    ("model.image_tower.", "image_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
BASE_VOCAB = 32000  # LLaMA's SentencePiece vocabulary; <image> <video> <pad> follow, then spare rows up to 32064


@functools.lru_cache(maxsize=1)
def _llama_vocab(corpus: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A LLaMA-shaped BPE vocabulary of exactly 32,000 pieces: ``<unk> <s> </s>``, ``<0x00>..<0xFF>``, pieces and
    merges learned on ``corpus`` (▁-prefixed words, single digits), then unused filler pieces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
         pre_tokenizers.Digits(individual_digits=True)]
    )  # fmt: skip
    learner.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=3000, show_progress=False))
    spec = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    filler = 0
    while len(vocab) < BASE_VOCAB:
        vocab.setdefault(f"▁unused{filler}", len(vocab))
        filler += 1
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    return vocab, merges


def _corpus() -> tuple[str, ...]:
    from trainers.presets import template_corpus

    return tuple(template_corpus() + ["USER: ASSISTANT: The frames are sampled at"])


def save_video_llava_tokenizer(out: Path, with_scene: bool = False) -> None:
    """The VideoLlavaProcessor's tokenizer files of Video-LLaVA-7B-hf (``with_scene``: with an added ``<scene>``
    token after ``<pad>``, as a tokenizer someone already extended)."""
    from tokenizers import processors
    from transformers import AddedToken, LlamaTokenizer

    vocab, merges = _llama_vocab(_corpus())
    vocab, merges = dict(vocab), list(merges)
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True)
    names = ("<image>", "<video>", "<pad>") + (("<scene>",) if with_scene else ())
    extra = [AddedToken(t, special=True, normalized=False) for t in names]
    tok.add_tokens(extra, special_tokens=True)
    # LLaMA's tokenizer.json prepends <s> (add_bos_token) through its post-processor
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    assert [tok.convert_tokens_to_ids(t) for t in ("<image>", "<video>", "<pad>")] == [32000, 32001, 32002]
    backend = json.loads(tok.backend_tokenizer.to_str())
    (out / "tokenizer.json").write_text(json.dumps(backend, ensure_ascii=False, indent=2))
    added = {t["content"]: t["id"] for t in backend["added_tokens"] if t["id"] >= BASE_VOCAB}
    decoder = {
        str(t["id"]): {"content": t["content"], "lstrip": False, "normalized": t["id"] < 3, "rstrip": False,
                       "single_word": False, "special": True}
        for t in backend["added_tokens"]
    }  # fmt: skip
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": None,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "left",
        "processor_class": "VideoLlavaProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "added_tokens.json").write_text(json.dumps(added, indent=2))
    special = {
        "bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "eos_token": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def video_llava_7b_standin_config(text_hidden: int = 64, text_layers: int = 2, vision_hidden: int = 32,
                                  vision_layers: int = 2) -> dict:
    """``config.json`` of Video-LLaVA-7B-hf with the widths and depths shrunk (everything else as published)."""
    return {
        "architectures": ["VideoLlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_seq_length": 256,
        "image_token_index": 32000,
        "model_type": "video_llava",
        "pad_token_id": 32002,
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 2,
            "num_attention_heads": 4,
            "num_hidden_layers": text_layers,
            "num_key_value_heads": 4,
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "pad_token_id": 0,
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": 32064,
        },
        "torch_dtype": "float16",
        "transformers_version": "4.41.0.dev0",
        "video_seq_length": 2056,
        "video_token_index": 32001,
        "vision_config": {
            "hidden_size": vision_hidden,
            "image_size": 224,
            "intermediate_size": vision_hidden * 2,
            "model_type": "clip_vision_model",
            "num_attention_heads": 2,
            "num_hidden_layers": vision_layers,
            "patch_size": 14,
            "projection_dim": vision_hidden,
            "vocab_size": 32000,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }


def save_video_llava_processor_files(out: Path, with_scene: bool = False) -> None:
    save_video_llava_tokenizer(out, with_scene=with_scene)
    preprocessor = {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "VideoLlavaImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "VideoLlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 224},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    processor = {"patch_size": 14, "processor_class": "VideoLlavaProcessor", "vision_feature_select_strategy": "default"}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": VIDEO_LLAVA_CHAT_TEMPLATE}, indent=2))


def save_video_llava_7b_standin(out: str | Path, seed: int = 0, shards: int = 2, with_scene: bool = False,
                                **sizes) -> Path:
    """Write the stand-in of ``LanguageBind/Video-LLaVA-7B-hf`` to ``out`` (see the module docstring)."""
    from safetensors.torch import save_file
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = video_llava_7b_standin_config(**sizes)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    generation = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32002,
                  "transformers_version": "4.41.0.dev0"}  # fmt: skip
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(VideoLlavaConfig.from_dict(config))
    state = {}
    for name, tensor in model.state_dict().items():
        for current, legacy in LEGACY_PREFIXES:
            if name.startswith(current):
                name = legacy + name[len(current) :]
                break
        else:
            raise AssertionError(f"unexpected parameter {name}")
        state[name] = tensor.detach().to(torch.float16).contiguous()
    names = list(state)
    per_shard = -(-len(names) // shards)
    weight_map, total = {}, 0
    for index in range(shards):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[index * per_shard : (index + 1) * per_shard]}
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
        total += sum(t.numel() * t.element_size() for t in part.values())
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2))
    save_video_llava_processor_files(out, with_scene=with_scene)
    return out


# ---------------------------------------------------------------------------------------------------- extractors
def save_scene_extractor_standins(out: str | Path, seed: int = 0) -> dict:
    """The four extractors' checkpoints in their official containers (tiny widths) under ``out``; returns the
    JSON-able ``ScenePipeline.from_pretrained`` kwargs (the file names are the ones ``paper.yaml`` expects)."""
    from processing.pipeline import ScenePipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ex = ScenePipeline.tiny(seed=seed).extractors
    ex["face"].encoder.save_pretrained(out / "resnet-18")  # the transformers layout of microsoft/resnet-18
    ex["background"].encoder.save_pretrained(out / "vit-base-patch16-224-in21k")
    torch.save(ex["background"].sam.state_dict(), out / "sam_vit_b_01ec64.pth")  # SAM-V1: a plain state dict
    torch.save(ex["action"].model.state_dict(), out / "pose_higher_hrnet_w32_512.pth")  # HigherHRNet: plain
    reltr = ex["object"].model
    args = argparse.Namespace(nheads=reltr.config.num_heads, num_entities=reltr.config.num_entities)
    torch.save({"model": reltr.state_dict(), "args": args}, out / "checkpoint0149.pth")  # RelTR's main.py
    hrnet = ex["action"].model.config
    return {
        "face_encoder": str(out / "resnet-18"),
        "background_encoder": str(out / "vit-base-patch16-224-in21k"),
        "action_checkpoint": str(out / "pose_higher_hrnet_w32_512.pth"),
        "relation_checkpoint": str(out / "checkpoint0149.pth"),
        "sam_checkpoint": str(out / "sam_vit_b_01ec64.pth"),
        "sam_type": "tiny",
        "extractor_kwargs": {
            "face": {"face_size": ex["face"].face_size},
            "background": {"points_per_side": ex["background"].points_per_side},
            "action": {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(hrnet).items()},
                       "input_size": 64, "nms_kernel": 3},
            "object": {"min_size": 96, "max_size": 160},
        },  # fmt: skip
    }

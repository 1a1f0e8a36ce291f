"""Zero-shot scoring of off-the-shelf transformers Video-LLMs on Omni-SILA (the baselines of paper Tables 1-2).

``zero_shot_predictions(model, data_dir, config_name, split, out_dir)`` asks any video model that transformers ships
(Video-LLaVA, LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, and others whose processor takes videos and
has a chat template) the question ICM is asked, under the same conditions:

* the same clips and frames: ``num_frames`` (8, §4.1) frames sampled uniformly by ``processing.video.sample_frames``,
  as the ICM data pipeline samples them;
* the same instruction: the paper's combined test-time instruction (``modeling_icm.templates.combined_instruction``,
  §4.1) preceded by the frames' timestamps, written as ICM's prompt writes them ("The frames are sampled at 0s,
  1.25s, ... ."), so that every model can answer in seconds;
* each model's own conversation format: one user turn ``[video, text]`` rendered by
  ``processor.apply_chat_template(..., add_generation_prompt=True)``;
* batched greedy generation (left padding), the shared answer parser and the omnisila metrics (``icm evaluate``).

Predictions are written as they complete (``{"id", "answer"}`` JSON Lines) and a rerun continues where a previous
one stopped; a clip that cannot be decoded is skipped, reported and counted as a missing (wrong) answer.

``build_tiny_video_llm(model_type, out_dir)`` saves a tiny *random* model of each supported architecture with an
offline tokenizer and a chat template in the format of the family's released checkpoints (timm-style test variants:
the tests and the CPU comparison runner use them; their answers are noise).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inference.generation import greedy_generate


class BaselineError(ValueError):
    """A model or a data folder that a zero-shot baseline cannot use; the message names it (``icm baseline`` prints
    it as one line and exits with code 2)."""


#: Architectures with a tiny offline test variant (``build_tiny_video_llm``); any other video model of transformers
#: is loaded the same way.
TINY_VIDEO_LLMS: tuple[str, ...] = ("video_llava", "llava_next_video", "llava_onevision", "qwen2_vl", "qwen2_5_vl")

PREDICTIONS_FILE = "predictions.jsonl"
REFERENCES_FILE = "references.jsonl"


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------


def load_video_llm(model_ref: str | os.PathLike, device: str = "cpu", dtype: str | None = None):
    """``(model, processor)`` of a transformers Video-LLM (a Hub id or a local folder), in eval mode.

    Raises :class:`BaselineError` naming the model when it cannot be loaded, when it is not a video model (its processor
    takes no video) or when it has no chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    ref = str(model_ref)
    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as err:
        raise BaselineError(f"--model {ref}: cannot load its config: {str(err).splitlines()[0]}") from err
    model_type = getattr(config, "model_type", None)
    if model_type == "icm":
        raise BaselineError(f"--model {ref}: an ICM checkpoint, not a zero-shot baseline; train/evaluate it with a recipe")
    try:
        processor = AutoProcessor.from_pretrained(ref)
    except (OSError, ValueError, TypeError) as err:
        raise BaselineError(f"--model {ref}: cannot load its processor: {str(err).splitlines()[0]}") from err
    if getattr(processor, "video_processor", None) is None:
        raise BaselineError(
            f"--model {ref}: not a video model: its processor ({type(processor).__name__}, model type "
            f"{model_type!r}) takes no video"
        )
    if not getattr(processor, "chat_template", None):
        raise BaselineError(
            f"--model {ref}: no chat template (processor {type(processor).__name__}); the baseline asks every model "
            "in its own conversation format, so add chat_template.jinja to the model folder"
        )
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        model = AutoModelForImageTextToText.from_pretrained(ref, dtype=torch_dtype)
    except ValueError as err:
        raise BaselineError(f"--model {ref}: not an image/video-text-to-text model ({model_type!r}): {err}") from err
    except OSError as err:
        raise BaselineError(f"--model {ref}: cannot load its weights: {str(err).splitlines()[0]}") from err
    processor.tokenizer.padding_side = "left"  # batched generation
    return model.to(device).eval(), processor


# ----------------------------------------------------------------------------------------------------------------
# prompting and generation
# ----------------------------------------------------------------------------------------------------------------


def baseline_text(instruction: str, timestamps: Sequence[float]) -> str:
    """The user text: the sampled frames' timestamps, then the paper's instruction (as ICM's prompt writes them)."""
    from modeling_icm import templates as T

    return f"The frames are sampled at {T.format_frame_times(timestamps)}. {instruction}"


def chat_prompt(processor, instruction: str, timestamps: Sequence[float]) -> str:
    """One user turn ``[video, text]`` in the model's own chat template, ending with the assistant's turn."""
    conversation = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": baseline_text(instruction, timestamps)}],
        }
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def generate_video_llm_answers(
    model,
    processor,
    frames: Sequence[Any],
    timestamps: Sequence[Sequence[float]],
    instruction: str,
    max_new_tokens: int = 128,
) -> list[str]:
    """Greedy answers of a batch of clips (one left-padded ``generate`` call); ``frames`` are ``[T, H, W, 3]`` uint8."""
    import numpy as np
    import torch

    prompts = [chat_prompt(processor, instruction, t) for t in timestamps]
    videos = [np.asarray(f.numpy() if hasattr(f, "numpy") else f) for f in frames]
    inputs = processor(text=prompts, videos=videos, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {k: (v.to(device, dtype) if torch.is_floating_point(v) else v.to(device)) if torch.is_tensor(v) else v
              for k, v in inputs.items()}  # fmt: skip
    generated = greedy_generate(model, inputs, processor.tokenizer, max_new_tokens)
    return [row.text.strip() for row in generated]


# ----------------------------------------------------------------------------------------------------------------
# a whole split
# ----------------------------------------------------------------------------------------------------------------


def read_answers(path: str | os.PathLike) -> dict[str, str]:
    """``{id: answer}`` of a predictions file (JSON Lines ``{"id", "answer"}``); missing file: empty. A line cut by an
    interruption is left out, so a resumed run asks that clip again."""
    answers: dict[str, str] = {}
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("answer"), str) and row.get("id") is not None:
                answers[str(row["id"])] = row["answer"]
    return answers


def write_references(records, path: Path) -> Path:
    """The metric references of clip records as ``icm evaluate`` reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from evaluate_metrics.functions import reference_of

    rows = [{"id": r.id, **reference_of(r)} for r in records]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def zero_shot_predictions(
    model_ref: str | os.PathLike,
    data_dir: str | os.PathLike,
    config_name: str,
    split: str,
    out_dir: str | os.PathLike,
    *,
    num_frames: int = 8,
    batch_size: int = 4,
    max_new_tokens: int = 128,
    max_clips: int | None = None,
    clip_ids: Sequence[str] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    model_and_processor=None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Ask ``model_ref`` the combined instruction on every clip of a split; write ``predictions.jsonl`` and
    ``references.jsonl`` in ``out_dir``. Clips answered by an earlier run are not asked again. ``clip_ids`` keeps
    those clips (in that order), ``max_clips`` the first ones.

    Returns ``{"predictions", "references", "asked", "reused", "skipped": ["clip: reason"]}``."""
    from modeling_icm import templates as T
    from processing.video import VideoDecodeError, sample_frames

    from .data import read_clip_records

    log = log or (lambda line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        records = read_clip_records(data_dir, config_name, split)
    except (OSError, ValueError) as err:
        raise BaselineError(f"--data {data_dir}: {err}") from err
    if clip_ids is not None:  # these clips, in this order (the comparison runner's evaluation clips)
        by_id = {r.id: r for r in records}
        unknown = [c for c in clip_ids if c not in by_id]
        if unknown:
            raise BaselineError(f"--data {data_dir}: no {config_name!r} clip(s) {unknown[:5]} in split {split!r}")
        records = [by_id[c] for c in clip_ids]
    if max_clips is not None:
        records = records[: int(max_clips)]
    references = write_references(records, out / REFERENCES_FILE)
    predictions = out / PREDICTIONS_FILE
    done = read_answers(predictions)
    todo = [r for r in records if r.id not in done]
    with predictions.open("w", encoding="utf-8") as handle:  # rewrite what is kept (drops a cut last line)
        for r in records:
            if r.id in done:
                handle.write(json.dumps({"id": r.id, "answer": done[r.id]}) + "\n")
    skipped: list[str] = []
    asked = 0
    if todo:
        model, processor = model_and_processor or load_video_llm(model_ref, device=device, dtype=dtype)
        instruction = T.combined_instruction(config_name)
        size = max(1, int(batch_size))
        for start in range(0, len(todo), size):
            clips = []
            for record in todo[start : start + size]:
                try:
                    clip = sample_frames(record.video, num_frames=num_frames)
                except (VideoDecodeError, OSError, ValueError) as err:
                    skipped.append(f"{record.id}: {err}")
                    log(f"skipped clip {record.id}: {err}")
                    continue
                origin = float(clip.start or 0.0)
                clips.append((record, clip.frames, [float(t) - origin for t in clip.timestamps]))
            if not clips:
                continue
            answers = generate_video_llm_answers(
                model, processor, [c[1] for c in clips], [c[2] for c in clips], instruction, max_new_tokens
            )
            with predictions.open("a", encoding="utf-8") as handle:
                for (record, _, _), answer in zip(clips, answers):
                    handle.write(json.dumps({"id": record.id, "answer": answer}) + "\n")
            asked += len(clips)
            log(f"{min(start + size, len(todo))}/{len(todo)} clips answered")
    return {
        "predictions": str(predictions),
        "references": str(references),
        "asked": asked,
        "reused": len(done),
        "skipped": skipped,
    }


# ----------------------------------------------------------------------------------------------------------------
# tiny random variants of each architecture (offline)
# ----------------------------------------------------------------------------------------------------------------

_LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<video>\n{% elif c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_CHATML_TEMPLATE = (  # LLaVA-OneVision (Qwen2 LLM): <|im_start|>user <video>\n...<|im_end|>
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<video>\n{% elif c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_VL_TEMPLATE = (  # Qwen2-VL / Qwen2.5-VL: system turn, <|vision_start|><|video_pad|><|vision_end|>
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% for message in messages %}<|im_start|>"
    "{{ message['role'] }}\n{% for c in message['content'] %}{% if c['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _family_tokenizer(special: dict[str, str], eos: str, corpus: Sequence[str]):
    """The tiny offline BPE of ``trainers.presets`` with a family's special tokens (``{role: token}``)."""
    from transformers import PreTrainedTokenizerFast

    from trainers.presets import build_tiny_tokenizer

    backend = build_tiny_tokenizer(list(corpus)).backend_tokenizer
    backend.add_special_tokens(sorted(set(special.values()) | {eos}))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token=eos,
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=dict(special),
        padding_side="left",
        model_max_length=4096,
    )


def _tiny_text(model_type: str, tokenizer, hidden: int = 64, **extra) -> dict:
    return {
        "model_type": model_type,
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **extra,
    }


def _tiny_clip(image_size: int = 32, patch_size: int = 8) -> dict:
    return {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size, "projection_dim": 32}  # fmt: skip


def _tiny_parts(model_type: str, corpus: Sequence[str]):
    """``(config, processor)`` of a tiny random ``model_type``."""
    import transformers as tr

    from modeling_icm import templates as T

    size = 32
    if model_type in ("video_llava", "llava_next_video", "llava_onevision"):
        chatml = model_type == "llava_onevision"
        eos = "<|im_end|>" if chatml else "</s>"
        extra = {"im_start": "<|im_start|>"} if chatml else {}
        tok = _family_tokenizer({"image_token": T.IMAGE_TOKEN, "video_token": T.VIDEO_TOKEN, **extra}, eos, corpus)
        image_id, video_id = tok.convert_tokens_to_ids(T.IMAGE_TOKEN), tok.convert_tokens_to_ids(T.VIDEO_TOKEN)
        template = _CHATML_TEMPLATE if chatml else _LLAVA_TEMPLATE
        if model_type == "video_llava":
            config = tr.VideoLlavaConfig(
                text_config=_tiny_text("llama", tok), vision_config=_tiny_clip(), image_token_index=image_id,
                video_token_index=video_id, vision_feature_layer=-2, image_seq_length=16, video_seq_length=8 * 17,
            )  # fmt: skip
            crop = {"shortest_edge": size}, {"height": size, "width": size}
            processor = tr.VideoLlavaProcessor(
                image_processor=tr.VideoLlavaImageProcessor(size=crop[0], crop_size=crop[1]),
                video_processor=tr.VideoLlavaVideoProcessor(size=crop[0], crop_size=crop[1]),
                tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", chat_template=template,
            )  # fmt: skip
        elif model_type == "llava_next_video":
            config = tr.LlavaNextVideoConfig(
                text_config=_tiny_text("llama", tok), vision_config=_tiny_clip(), image_token_index=image_id,
                video_token_index=video_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
                image_grid_pinpoints=[[size, size]], spatial_pool_stride=2, image_seq_length=16, video_seq_length=8 * 4,
            )  # fmt: skip
            crop = {"shortest_edge": size}, {"height": size, "width": size}
            processor = tr.LlavaNextVideoProcessor(
                video_processor=tr.LlavaNextVideoVideoProcessor(size=crop[0], crop_size=crop[1]),
                image_processor=tr.LlavaNextImageProcessor(size=crop[0], crop_size=crop[1],
                                                           image_grid_pinpoints=[[size, size]]),
                tokenizer=tok, chat_template=template, patch_size=8, vision_feature_select_strategy="default",
                num_additional_image_tokens=1,
            )  # fmt: skip
        else:
            siglip = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                      "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": size, "patch_size": 8}  # fmt: skip
            config = tr.LlavaOnevisionConfig(
                text_config=_tiny_text("qwen2", tok), vision_config=siglip, image_token_index=image_id,
                video_token_index=video_id, vision_feature_layer=-1, vision_feature_select_strategy="full",
                image_grid_pinpoints=[[size, size]],
            )  # fmt: skip
            square = {"height": size, "width": size}
            processor = tr.LlavaOnevisionProcessor(
                image_processor=tr.LlavaOnevisionImageProcessor(size=square, image_grid_pinpoints=[[size, size]]),
                video_processor=tr.LlavaOnevisionVideoProcessor(size=square),
                tokenizer=tok, num_image_tokens=16, vision_feature_select_strategy="full", chat_template=template,
            )  # fmt: skip
        return config, processor
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        special = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                   "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
                   "im_start_token": "<|im_start|>"}  # fmt: skip
        tok = _family_tokenizer(special, "<|im_end|>", corpus)
        ids = {f"{k}_id": tok.convert_tokens_to_ids(v) for k, v in special.items() if k != "im_start_token"}
        # head_dim 16 -> 8 rotary frequencies split over (time, height, width)
        text = _tiny_text(model_type, tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                            "mrope_section": [2, 3, 3]})  # fmt: skip
        pixels = {"shortest_edge": 16 * 16, "longest_edge": 32 * 32}
        common = {"patch_size": 8, "merge_size": 2, "size": pixels}
        if model_type == "qwen2_vl":
            vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2, "patch_size": 8,
                      "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
            config = tr.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
            processor = tr.Qwen2VLProcessor(
                image_processor=tr.Qwen2VLImageProcessor(**common), video_processor=tr.Qwen2VLVideoProcessor(**common),
                tokenizer=tok, chat_template=_QWEN_VL_TEMPLATE,
            )  # fmt: skip
        else:
            vision = {"depth": 2, "hidden_size": 32, "out_hidden_size": 64, "intermediate_size": 64, "num_heads": 2,
                      "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32,
                      "fullatt_block_indexes": [1]}  # fmt: skip
            config = tr.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
            processor = tr.Qwen2_5_VLProcessor(
                image_processor=tr.Qwen2VLImageProcessor(**common), video_processor=tr.Qwen2VLVideoProcessor(**common),
                tokenizer=tok, chat_template=_QWEN_VL_TEMPLATE,
            )  # fmt: skip
        return config, processor
    raise ValueError(f"no tiny variant for model type {model_type!r}; choose from {list(TINY_VIDEO_LLMS)}")


def build_tiny_video_llm(
    model_type: str, out_dir: str | os.PathLike, seed: int = 0, corpus: Sequence[str] = ()
) -> Path:
    """Save a tiny random ``model_type`` (one of :data:`TINY_VIDEO_LLMS`) and its processor to ``out_dir``."""
    import torch
    from transformers import AutoModelForImageTextToText

    config, processor = _tiny_parts(model_type, corpus)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


__all__ = [
    "TINY_VIDEO_LLMS",
    "BaselineError",
    "baseline_text",
    "read_answers",
    "build_tiny_video_llm",
    "chat_prompt",
    "generate_video_llm_answers",
    "load_video_llm",
    "write_references",
    "zero_shot_predictions",
]

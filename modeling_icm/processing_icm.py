"""IcmProcessor: video + instruction (+ answer) -> the inputs of `IcmForVideoSentiment`.

It wraps the tokenizer, the Video-LLaVA video processor and the scene-extraction settings. For each example it

1. samples ``num_frames`` frames of the video uniformly with their timestamps (or takes given frames),
2. gets the scene features — given (e.g. read from the feature cache) or computed by the four frozen
   extractors of ``processing/`` (imported lazily: loading this processor as Hub remote code needs neither them
   nor their packages),
3. writes the prompt (``modeling_icm.templates.build_prompt``): ``num_scene_tokens`` ``<scene>`` placeholders,
   the ``<video>`` placeholder expanded to frames × (patches + 1) tokens, the frame timestamps in seconds and the
   instruction, in Video-LLaVA's ``USER: ... ASSISTANT:`` form,
4. tokenises with left padding for generation, or — when ``answers`` are given — right padding with ``labels``
   that are -100 on the prompt, the placeholders and the padding. Truncation never cuts through placeholders:
   only the answer's tail may be cut, and a prompt longer than ``max_length`` is an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from . import templates as T
from .scene_contract import collate_scene_features

SCENE_INSTALL_HINT = "pip install 'omnisila-icm[scene]'"


class IcmBatch(BatchFeature):
    """A `BatchFeature` whose ``.to()`` also moves the nested scene feature/mask dicts (dtype casts touch
    floating-point tensors only)."""

    def to(self, *args, **kwargs):
        device = kwargs.get("device") or next((a for a in args if isinstance(a, (str, torch.device))), None)

        def move(value):
            if not torch.is_tensor(value):
                return value
            if value.is_floating_point():
                return value.to(*args, **kwargs)
            return value.to(device) if device is not None else value

        self.data = {
            key: ({k: move(v) for k, v in value.items()} if isinstance(value, dict) else move(value))
            for key, value in self.items()
        }
        return self


def _import_processing(what: str):
    try:
        import processing.pipeline as pipeline  # noqa: F401
        import processing.video as video  # noqa: F401
    except ImportError as err:  # the extractors live in the omnisila-icm package, not in the remote code
        raise ImportError(
            f"{what} needs the scene extractors of omnisila-icm and their packages ({err}). Install them with: "
            f"{SCENE_INSTALL_HINT} (or pass precomputed scene_features)"
        ) from err
    return video, pipeline


#: Files a Video-LLaVA checkpoint folder must hold for its processor (``LanguageBind/Video-LLaVA-7B-hf`` layout):
#: one of each group.
VIDEO_LLAVA_PROCESSOR_FILES: tuple[tuple[str, ...], ...] = (
    ("tokenizer_config.json",),
    ("tokenizer.json", "tokenizer.model"),
    ("preprocessor_config.json", "video_preprocessor_config.json"),
)


def check_video_llava_folder(path: str | os.PathLike, need_weights: bool = False) -> None:
    """Raise naming the file when the local folder ``path`` is not a Video-LLaVA checkpoint: ``config.json`` missing
    or of another architecture, a processor file missing, or (``need_weights``) no safetensors/bin weights. A path
    that is not a local folder (a Hub id) is left to ``from_pretrained``.

    Two layouts hold the image/video processor settings, and both load with ``AutoProcessor``: the Hub's
    (``LanguageBind/Video-LLaVA-7B-hf``: ``preprocessor_config.json``) and the one ``VideoLlavaProcessor.
    save_pretrained`` writes under transformers 5 (no ``preprocessor_config.json``: ``processor_config.json`` holds
    the ``image_processor`` / ``video_processor`` entries)."""
    import json

    def holds_processors(name: str) -> bool:  # the layout recent transformers' save_pretrained writes
        try:
            data = json.loads(open(os.path.join(folder, name), encoding="utf-8").read())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and any(isinstance(data.get(k), dict) for k in ("video_processor", "image_processor"))

    folder = os.fspath(path)
    if not os.path.isdir(folder):
        return
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: not found; {folder} is not a Video-LLaVA checkpoint folder")
    try:
        config = json.loads(open(config_file, encoding="utf-8").read())
    except ValueError as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    model_type = config.get("model_type")
    if model_type != "video_llava":
        raise ValueError(
            f"{config_file}: model_type {model_type!r} (architectures {config.get('architectures')}) is not a "
            "Video-LLaVA checkpoint (model_type 'video_llava', VideoLlavaForConditionalGeneration)"
        )
    for group in VIDEO_LLAVA_PROCESSOR_FILES:
        if not any(os.path.isfile(os.path.join(folder, name)) for name in group):
            names = " or ".join(group)
            if "preprocessor_config.json" in group:
                if holds_processors("processor_config.json"):
                    continue
                names += " (or a processor_config.json holding video_processor, as save_pretrained writes it)"
            raise FileNotFoundError(f"{os.path.join(folder, group[0])}: not found; a Video-LLaVA processor needs {names}")
    if need_weights:
        names = os.listdir(folder)
        if not any(n.endswith((".safetensors", ".bin")) or n.endswith(".index.json") for n in names):
            raise FileNotFoundError(f"{folder}: no model weights (model*.safetensors or model.safetensors.index.json)")


def _check_scene_token(tokenizer, where: str) -> int | None:
    """The id of an existing ``<scene>`` token (None if absent), after checking that it is an added special token
    apart from the other placeholders (a ``<scene>`` inside the base vocabulary would overwrite a text token)."""
    scene_id = tokenizer.convert_tokens_to_ids(T.SCENE_TOKEN)
    if scene_id is None or scene_id == tokenizer.unk_token_id:
        return None
    taken = {
        T.IMAGE_TOKEN: tokenizer.convert_tokens_to_ids(T.IMAGE_TOKEN),
        T.VIDEO_TOKEN: tokenizer.convert_tokens_to_ids(T.VIDEO_TOKEN),
        "pad": tokenizer.pad_token_id,
    }
    clash = [name for name, token_id in taken.items() if token_id == scene_id]
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    if clash or scene_id not in added:
        why = f"the id of {clash[0]}" if clash else "a token of the base vocabulary, not an added special token"
        raise ValueError(
            f"{where}: the tokenizer already has {T.SCENE_TOKEN} with id {scene_id}, {why}; remove it from the "
            "tokenizer files (ICM adds its own <scene> token)"
        )
    return scene_id


class IcmProcessor(ProcessorMixin):
    r"""Processor of ICM (Omni-SILA).

    Args:
        video_processor (`VideoLlavaVideoProcessor`): resizes/crops/normalises the sampled frames.
        tokenizer (`PreTrainedTokenizerFast`): must know ``<video>`` and ``<scene>``.
        num_frames (`int`, defaults to 8): frames sampled per clip (paper §4.1).
        num_scene_tokens (`int`, defaults to 8): ``<scene>`` placeholders per prompt (= the model's
            ``num_scene_placeholders``; 0 for a model without scene tokens, which then needs no scene features).
        patch_size (`int`, defaults to 14): the vision tower's patch size (video tokens per frame = patches + 1).
        scene_extraction (`dict`, *optional*): how to build the scene extractors when features are not given:
            ``{"pipeline": "pretrained", ...kwargs of processing.pipeline.ScenePipeline.from_pretrained}`` or
            ``{"pipeline": "tiny", "seed": 0}`` or ``{"pipeline": "lite"}`` (the real offline extractors).
        use_video (`bool`, defaults to `True`): write the ``<video>`` placeholder and return ``pixel_values_videos``;
            `False` for a scene-only model (``IcmConfig.use_video_tokens=False``), whose prompt has no video tokens.
        max_side (`int`, defaults to 1024): decoded frames are downscaled so their longer side is at most this.
        max_length (`int`, *optional*): token budget; only answers are ever truncated.
        chat_template (`str`, *optional*): unused; kept for the ProcessorMixin contract.
    """

    def __init__(
        self,
        video_processor=None,
        tokenizer=None,
        num_frames: int = 8,
        num_scene_tokens: int = 8,
        patch_size: int = 14,
        scene_extraction: dict | None = None,
        max_side: int = 1024,
        max_length: int | None = None,
        chat_template=None,
        use_video: bool = True,
        **kwargs,
    ):
        self.num_frames = int(num_frames)
        self.use_video = bool(use_video)
        self.num_scene_tokens = int(num_scene_tokens)
        self.patch_size = int(patch_size)
        self.scene_extraction = dict(scene_extraction or {"pipeline": "pretrained"})
        self.max_side = int(max_side)
        self.max_length = max_length
        self._scene_pipeline = None
        super().__init__(video_processor, tokenizer, chat_template=chat_template)
        for token in (T.VIDEO_TOKEN, T.SCENE_TOKEN):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token} token; add it as a special token")
        self.video_token_id = tokenizer.convert_tokens_to_ids(T.VIDEO_TOKEN)
        self.scene_token_id = tokenizer.convert_tokens_to_ids(T.SCENE_TOKEN)

    @classmethod
    def from_video_llava(
        cls,
        pretrained,
        num_frames: int = 8,
        num_scene_tokens: int | None = None,
        scene_extraction: dict | None = None,
        max_length: int | None = None,
        patch_size: int | None = None,
        **from_pretrained_kwargs,
    ) -> IcmProcessor:
        """The ICM processor of a Video-LLaVA checkpoint (e.g. ``LanguageBind/Video-LLaVA-7B-hf``).

        The tokenizer, the video processor (resize / crop / CLIP normalisation), the patch size and the chat template
        come from the checkpoint's ``VideoLlavaProcessor`` (``pretrained``: its folder / Hub id, or the processor
        itself); ``<scene>`` is added as a special token after the checkpoint's own tokens (7B: id 32003, right after
        ``<image>`` 32000, ``<video>`` 32001, ``<pad>`` 32002) unless the tokenizer already has it as an added token.
        The prompt keeps the backbone's conversation format ``USER: ... ASSISTANT:`` (a warning says so when the
        checkpoint's chat template writes another one).

        Raises ``FileNotFoundError`` / ``ValueError`` naming the file when the checkpoint is not a Video-LLaVA one
        (another architecture, a processor file missing, a tokenizer without ``<video>``), or when its tokenizer has a
        ``<scene>`` token that is not a separate added token.
        """
        import copy

        from transformers import AddedToken, AutoProcessor

        if isinstance(pretrained, (str, os.PathLike)):
            where = os.fspath(pretrained)
            check_video_llava_folder(where)
            try:
                backbone = AutoProcessor.from_pretrained(where, **from_pretrained_kwargs)
            except (OSError, ValueError, KeyError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(f"{where}: cannot load the Video-LLaVA processor: {first}") from err
        else:
            where, backbone = f"the given {type(pretrained).__name__}", pretrained
        tokenizer = getattr(backbone, "tokenizer", None)
        video_processor = getattr(backbone, "video_processor", None)
        if tokenizer is None or video_processor is None:
            raise ValueError(
                f"{where}: {type(backbone).__name__} is not a Video-LLaVA processor (it needs a tokenizer and a video "
                "processor: tokenizer_config.json, tokenizer.json, preprocessor_config.json)"
            )
        video_id = tokenizer.convert_tokens_to_ids(T.VIDEO_TOKEN)
        if video_id is None or video_id == tokenizer.unk_token_id:
            raise ValueError(
                f"{where}: the tokenizer (tokenizer.json / tokenizer_config.json) has no {T.VIDEO_TOKEN} token: not a "
                "Video-LLaVA tokenizer"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{where}: the tokenizer has no pad token (Video-LLaVA's is <pad>)")
        if not isinstance(pretrained, (str, os.PathLike)):
            tokenizer = copy.deepcopy(tokenizer)  # adding <scene> must not change the caller's tokenizer
        if _check_scene_token(tokenizer, where) is None:
            tokenizer.add_tokens([AddedToken(T.SCENE_TOKEN, special=True, normalized=False)], special_tokens=True)
        chat_template = getattr(backbone, "chat_template", None)
        if isinstance(chat_template, str):
            _warn_if_other_conversation_format(chat_template, where)
        return cls(
            video_processor,
            tokenizer,
            num_frames=num_frames,
            num_scene_tokens=num_scene_tokens or num_frames,
            patch_size=patch_size or getattr(backbone, "patch_size", None) or 14,
            scene_extraction=scene_extraction,
            max_length=max_length,
            chat_template=chat_template,
        )

    # -- scene extraction -------------------------------------------------------------------------------------------
    @property
    def scene_pipeline(self):
        """The four frozen extractors (built lazily from ``scene_extraction``)."""
        if self._scene_pipeline is None:
            _, pipeline = _import_processing("extracting scene features")
            settings = dict(self.scene_extraction)
            kind = settings.pop("pipeline", "pretrained")
            if kind not in pipeline.PIPELINE_KINDS:
                raise ValueError(f"scene_extraction['pipeline'] must be one of {list(pipeline.PIPELINE_KINDS)}, got {kind!r}")
            self._scene_pipeline = pipeline.ScenePipeline.from_kind(kind, **settings)
        return self._scene_pipeline

    @scene_pipeline.setter
    def scene_pipeline(self, value) -> None:
        self._scene_pipeline = value

    @property
    def video_tokens_per_frame(self) -> int:
        crop = getattr(self.video_processor, "crop_size", None) or {}
        height = crop.get("height") if isinstance(crop, dict) else None
        width = crop.get("width") if isinstance(crop, dict) else None
        if not height or not width:
            size = self.video_processor.size
            height = width = size.get("shortest_edge") or size.get("height")
        return (height // self.patch_size) * (width // self.patch_size) + 1

    def sample_video(self, video: str | os.PathLike, start: float | None = None, end: float | None = None):
        """Decode and uniformly sample ``num_frames`` frames of ``video`` (see ``processing.video.sample_frames``)."""
        video_mod, _ = _import_processing("decoding videos")
        return video_mod.sample_frames(video, num_frames=self.num_frames, start=start, end=end, max_side=self.max_side)

    # -- main entry ----------------------------------------------------------------------------------------------
    def __call__(
        self,
        videos: Sequence[Any] | Any = None,
        text: str | Sequence[str] | None = None,
        answers: str | Sequence[str] | None = None,
        scene_features: Sequence[dict] | dict | None = None,
        scene_masks: Sequence[dict] | dict | None = None,
        frame_timestamps: Sequence[Sequence[float]] | None = None,
        padding_side: str | None = None,
        max_length: int | None = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> IcmBatch:
        """Build a batch.

        Args:
            videos: one or a list of video paths, or of frame arrays ``[T, H, W, 3]`` uint8 RGB (already sampled;
                give ``frame_timestamps`` then, else frames are assumed 1 s apart).
            text: one instruction per video (e.g. ``templates.combined_instruction("implicit")``). A text that
                already holds ``<scene>``/``<video>`` placeholders is used as the full prompt.
            answers: target answers (training): switches to right padding and adds ``labels``.
            scene_features / scene_masks: precomputed per-clip features ``{scene: [T, items, dim]}`` (a list, one
                dict per video, or one batched dict ``{scene: [B, T, items, dim]}``); when omitted the extractors
                run on the sampled frames.
            frame_timestamps: seconds of each given frame (relative to the clip start).
        """
        if return_tensors not in ("pt", None):
            raise ValueError(f"IcmProcessor returns torch tensors; return_tensors={return_tensors!r} is not supported")
        if videos is None:
            raise ValueError("IcmProcessor needs videos (paths or frame arrays)")
        single = isinstance(videos, (str, os.PathLike)) or (hasattr(videos, "ndim") and videos.ndim == 4)
        videos = [videos] if single else list(videos)
        batch = len(videos)
        texts = self._per_example(text, batch, "text", default=None)
        answers_list = None if answers is None else self._per_example(answers, batch, "answers")

        frames_list, times_list, starts = [], [], []
        for index, video in enumerate(videos):
            if isinstance(video, (str, os.PathLike)):
                clip = self.sample_video(video)
                frames = clip.frames
                times = [float(t) - float(clip.start or 0.0) for t in clip.timestamps]
                starts.append(float(clip.start or 0.0))
            else:
                frames = torch.as_tensor(np.asarray(video))
                if frames.dim() != 4 or frames.shape[-1] != 3:
                    raise ValueError(
                        f"videos[{index}] must be a path or a [T, H, W, 3] frame array, got {tuple(frames.shape)}"
                    )
                times = (
                    [float(t) for t in frame_timestamps[index]]
                    if frame_timestamps is not None
                    else [float(i) for i in range(frames.shape[0])]
                )
                starts.append(0.0)
            if frames.shape[0] != self.num_frames:
                raise ValueError(
                    f"videos[{index}] has {frames.shape[0]} frames but the processor samples num_frames="
                    f"{self.num_frames} (frame count mismatch)"
                )
            if len(times) != frames.shape[0]:
                raise ValueError(f"frame_timestamps[{index}] has {len(times)} entries for {frames.shape[0]} frames")
            frames_list.append(frames)
            times_list.append(times)

        if self.num_scene_tokens == 0 and scene_features is None:  # the backbone alone: no scene to extract
            feats = masks = None
        else:
            feats, masks = collate_scene_features(self._scene_inputs(scene_features, scene_masks, frames_list))

        pixel = None
        if self.use_video:
            pixel = self.video_processor(
                [f.numpy() if torch.is_tensor(f) else f for f in frames_list], return_tensors="pt"
            )["pixel_values_videos"]

        prompts = [self.build_prompt(texts[i], times_list[i]) for i in range(batch)]
        encoded = self._tokenize(prompts, answers_list, padding_side, max_length or self.max_length)
        data = dict(encoded)
        data["pixel_values_videos"] = pixel
        data["frame_timestamps"] = torch.tensor(times_list, dtype=torch.float32)
        data["clip_start"] = torch.tensor(starts, dtype=torch.float32)
        data["scene_features"] = feats
        data["scene_masks"] = masks
        return IcmBatch(data=data)

    @staticmethod
    def _per_example(value, batch: int, name: str, default=...):
        if value is None:
            if default is ...:
                raise ValueError(f"{name} is required")
            return [default] * batch
        values = [value] if isinstance(value, str) else list(value)
        if len(values) == 1 and batch > 1:
            values = values * batch
        if len(values) != batch:
            raise ValueError(f"{name} has {len(values)} entries for {batch} videos")
        return values

    def _scene_inputs(self, scene_features, scene_masks, frames_list):
        batch = len(frames_list)
        if scene_features is None:
            pipeline = self.scene_pipeline
            return [pipeline.extract(frames) for frames in frames_list]
        if isinstance(scene_features, dict):  # one batched dict {scene: [B, T, N, D]}
            per_clip = []
            for i in range(batch):
                f = {s: torch.as_tensor(v)[i] for s, v in scene_features.items()}
                m = {s: torch.as_tensor(v)[i] for s, v in (scene_masks or {}).items()} or None
                per_clip.append((f, m))
            return per_clip
        scene_features = list(scene_features)
        if len(scene_features) != batch:
            raise ValueError(f"scene_features has {len(scene_features)} entries for {batch} videos")
        masks = list(scene_masks) if scene_masks is not None else [None] * batch
        if len(masks) != batch:
            raise ValueError(f"scene_masks has {len(masks)} entries for {batch} videos")
        return list(zip(scene_features, masks))

    def build_prompt(self, instruction: str | None, timestamps: Sequence[float]) -> str:
        """The full prompt of one example, with the ``<video>`` placeholder expanded."""
        if instruction is None:
            instruction = T.combined_instruction("implicit")
        if T.SCENE_TOKEN in instruction or T.VIDEO_TOKEN in instruction:
            prompt = instruction
        else:
            prompt = T.build_prompt(instruction, timestamps, self.num_scene_tokens, with_video=self.use_video)
        n_scene = prompt.count(T.SCENE_TOKEN)
        if n_scene != self.num_scene_tokens:
            raise ValueError(
                f"the prompt has {n_scene} {T.SCENE_TOKEN} placeholders but num_scene_tokens={self.num_scene_tokens}"
            )
        wanted = 1 if self.use_video else 0
        if prompt.count(T.VIDEO_TOKEN) != wanted:
            raise ValueError(
                f"the prompt must hold exactly {wanted} {T.VIDEO_TOKEN} placeholder(s) before expansion "
                f"(use_video={self.use_video})"
            )
        return prompt.replace(T.VIDEO_TOKEN, T.VIDEO_TOKEN * (self.video_tokens_per_frame * self.num_frames))

    def _tokenize(self, prompts, answers, padding_side, max_length):
        tok = self.tokenizer
        training = answers is not None
        side = padding_side or ("right" if training else "left")
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        rows, label_rows = [], []
        for i, prompt in enumerate(prompts):
            prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
            if max_length is not None and len(prompt_ids) > max_length:
                raise ValueError(
                    f"example {i}: the prompt needs {len(prompt_ids)} tokens (with its video and scene placeholders) "
                    f"but max_length={max_length}; placeholders are never truncated"
                )
            if training:
                answer_ids = tok(" " + answers[i].strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                if max_length is not None:
                    answer_ids = answer_ids[: max_length - len(prompt_ids)]
                rows.append(prompt_ids + answer_ids)
                label_rows.append([-100] * len(prompt_ids) + answer_ids)
            else:
                rows.append(prompt_ids)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long) if training else None
        for i, row in enumerate(rows):
            sl = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
            input_ids[i, sl] = torch.tensor(row)
            attention[i, sl] = 1
            if training:
                labels[i, sl] = torch.tensor(label_rows[i])
        out = {"input_ids": input_ids, "attention_mask": attention}
        if training:
            out["labels"] = labels
        return out

    # -- decoding --------------------------------------------------------------------------------------------------
    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values_videos", "scene_features", "scene_masks"]


def _warn_if_other_conversation_format(chat_template: str, where: str) -> None:
    """ICM writes Video-LLaVA's ``USER: <video>\\n... ASSISTANT:`` itself (``templates.build_prompt``); say so when the
    backbone's chat template renders a user turn differently."""
    import warnings

    try:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered = render_jinja_template(
            conversations=[[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "X"}]}]],
            chat_template=chat_template,
            add_generation_prompt=True,
        )[0][0]
    except Exception:  # noqa: BLE001 - a template we cannot render says nothing about the format
        return
    if not (rendered.strip().startswith("USER:") and rendered.strip().endswith("ASSISTANT:")):
        warnings.warn(
            f"{where}: the chat template renders {rendered!r}, not Video-LLaVA's 'USER: ... ASSISTANT:' that ICM's "
            "prompts use (modeling_icm.templates.build_prompt)",
            stacklevel=3,
        )


IcmProcessor.register_for_auto_class("AutoProcessor")

if __name__.startswith("modeling_icm."):  # imported as the library (not as Hub remote code): register for Auto*
    from transformers import AutoProcessor

    from .configuration_icm import IcmConfig

    AutoProcessor.register(IcmConfig, IcmProcessor, exist_ok=True)

__all__ = ["IcmProcessor", "IcmBatch", "check_video_llava_folder"]

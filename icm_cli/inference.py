"""Inference for the ``icm`` command: load a model + processor (local folder or Hub id), batched greedy generation
with token probabilities, and the windowed analysis of a long video with partial results written as windows
complete.

Deterministic by default: greedy decoding, ``torch.manual_seed(seed)`` before each run, and the processor's
scene extractors are seeded by its ``scene_extraction`` settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .analysis import (
    WindowResult,
    answer_confidence,
    frame_scene_weights,
    merge_windows,
    plan_windows,
    to_video_segments,
)
from .errors import CliError

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
ANALYSIS_FORMAT = "icm-analysis/1"


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_model_dir(path: Path) -> str:
    """``"merged"`` or ``"adapter"`` for a loadable model folder; :class:`CliError` naming what is missing."""
    if not path.is_dir():
        raise CliError(f"--model {path}: not a directory (give a model folder or a Hub id org/name)")
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return "adapter"
    if not (path / "config.json").is_file():
        raise CliError(f"model directory {path} has no config.json (is it a saved ICM model?)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CliError(f"model directory {path} has no weights (expected model.safetensors)")
    if not any((path / name).is_file() for name in PROCESSOR_FILES):
        raise CliError(f"model directory {path} has no processor (processor_config.json); save the processor with it")
    return "merged"


def load_model(reference: str | os.PathLike, device: str = "cpu"):
    """``(model, processor)`` from a local folder or a Hub id, both from the same place, loaded with
    ``trust_remote_code=True``. Every failure is a one-line :class:`CliError`."""
    from transformers import AutoModel, AutoProcessor

    ref = os.fspath(reference)
    path = Path(ref).expanduser()
    if path.exists():
        layout = check_model_dir(path)
        try:
            if layout == "adapter":
                from trainers.saving import load_icm_adapter

                model = load_icm_adapter(path)
            else:
                model = AutoModel.from_pretrained(str(path), trust_remote_code=True)
            processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=True)
        except (OSError, ValueError, KeyError) as err:
            raise CliError(f"cannot load the model in {path}: {_first_line(err)}") from err
    elif HUB_ID_RE.match(ref):
        try:
            model = AutoModel.from_pretrained(ref, trust_remote_code=True)
            processor = AutoProcessor.from_pretrained(ref, trust_remote_code=True)
        except Exception as err:  # noqa: BLE001 - any Hub/network failure is one clear line
            if _offline():
                raise CliError(
                    f"cannot load model '{ref}' from the Hub: offline (HF_HUB_OFFLINE=1) and not in the local cache; "
                    "give a local model folder instead"
                ) from err
            raise CliError(f"cannot load model '{ref}' from the Hub: {_first_line(err)}") from err
    else:
        raise CliError(f"--model {ref}: no such directory, and not a Hub id of the form org/name")
    return model.to(device).eval(), processor


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


# ----------------------------------------------------------------------------------------------------------------
# Generation with token probabilities
# ----------------------------------------------------------------------------------------------------------------


def _token_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it (prefix decoding, exact for BPE)."""
    spans, previous = [], 0
    for k in range(1, len(ids) + 1):
        length = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        spans.append((previous, max(previous, length)))
        previous = max(previous, length)
    return tokenizer.decode(ids, skip_special_tokens=True), spans


def placeholder_token_ids(model) -> list[int]:
    """The ``<scene>``/``<video>``/``<image>`` placeholder ids: an answer must never contain them (a generated
    placeholder would be read as a slot for features on the next step), so generation suppresses them."""
    config = model.config
    ids = [config.scene_token_id, config.backbone_config.video_token_index, config.backbone_config.image_token_index]
    return sorted({int(i) for i in ids if i is not None})


def generate_answers(
    model,
    processor,
    frames: Sequence[Any],
    timestamps: Sequence[Sequence[float]],
    instruction: str,
    config_name: str,
    scene_features: Sequence[dict] | None = None,
    scene_masks: Sequence[dict] | None = None,
    max_new_tokens: int = 96,
) -> list[dict[str, Any]]:
    """Greedy answers of a batch of clips (one left-padded ``generate`` call).

    Returns per clip ``{"answer", "sentiment", "segments" (clip time), "attribution", "confidence",
    "confidence_method", "router_probs" [[per expert] per frame], "scenes"}``."""
    import torch

    from evaluate_metrics.parser import parse_answer

    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    batch = processor(
        [f.numpy() if hasattr(f, "numpy") else f for f in frames],
        text=[instruction] * len(frames),
        scene_features=scene_features,
        scene_masks=scene_masks,
        frame_timestamps=[list(t) for t in timestamps],
    ).to(device)
    with torch.no_grad():
        out = model.generate(
            **batch,
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            suppress_tokens=placeholder_token_ids(model),
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        encoding = model.encode_scenes(batch["scene_features"], batch["scene_masks"])
    new_tokens = out.sequences[:, batch["input_ids"].shape[1] :]
    logits = torch.stack(out.logits, dim=1).float()  # [B, steps, vocab]
    token_probs = torch.softmax(logits, dim=-1).gather(-1, new_tokens[..., None])[..., 0]
    router = encoding.router_probs
    scenes = list(model.config.active_scenes)
    results = []
    for i in range(new_tokens.shape[0]):
        ids = new_tokens[i].tolist()
        stop = next((k for k, t in enumerate(ids) if t in (tokenizer.eos_token_id, tokenizer.pad_token_id)), len(ids))
        ids, probs = ids[:stop], token_probs[i, :stop].tolist()
        text, spans = _token_spans(tokenizer, ids)
        parsed = parse_answer(text, config_name)
        confidence, method = answer_confidence(text, spans, probs, parsed.sentiment)
        results.append(
            {
                "answer": text.strip(),
                "sentiment": parsed.sentiment,
                "segments": parsed.segments,
                "attribution": parsed.attribution,
                "confidence": round(confidence, 6),
                "confidence_method": method,
                "router_probs": router[i].float().tolist() if router is not None else [],
                "scenes": scenes,
            }
        )
    return results


# ----------------------------------------------------------------------------------------------------------------
# Windowed analysis of a long video
# ----------------------------------------------------------------------------------------------------------------


def _video_signature(video: Path) -> dict[str, Any]:
    stat = video.stat()
    return {"path": str(video.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_partial(partial: Path, header: dict) -> dict[int, WindowResult]:
    """Windows already analysed by an interrupted run with the same video, model and settings."""
    if not partial.is_file():
        return {}
    lines = partial.read_text(encoding="utf-8").splitlines()
    try:
        if not lines or json.loads(lines[0]) != header:
            return {}
    except json.JSONDecodeError:
        return {}
    done = {}
    for line in lines[1:]:
        try:
            window = WindowResult.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            break  # a line cut by the interruption: redo from there
        done[window.index] = window
    return done


def analysis_document(
    header: dict, info, windows: Sequence[WindowResult], total: int, complete: bool, gap: float
) -> dict[str, Any]:
    ordered = sorted(windows, key=lambda w: w.index)
    return {
        "format": ANALYSIS_FORMAT,
        "video": header["video"]["path"],
        "duration": info.duration,
        "fps": info.fps,
        "model": header["model"],
        "config": header["config"],
        "window": header["window"],
        "overlap": header["overlap"],
        "scenes": header["scenes"],
        "num_windows": total,
        "windows_done": len(ordered),
        "complete": complete,
        "segments": merge_windows(ordered, gap=gap),
        "windows": [w.to_dict() for w in ordered],
    }


def analyze_video(
    video: str | os.PathLike,
    model,
    processor,
    *,
    model_name: str,
    out_json: str | os.PathLike,
    config_name: str = "implicit",
    window: float = 10.0,
    overlap: float | None = None,
    batch_size: int = 4,
    max_new_tokens: int = 96,
    gap: float = 0.0,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    on_update: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Analyse ``video`` window by window (see :mod:`icm_cli.analysis`) and return the analysis document.

    Memory stays flat in the video's length: each window decodes only its ``num_frames`` frames, and results are
    small. After every batch of windows, the per-window results are appended to ``<out_json>.partial.jsonl`` and
    ``out_json`` is rewritten with ``"complete": false``; a run interrupted and started again with the same video,
    model and settings continues from the windows already done (``resume``)."""
    import torch
    from tqdm.auto import tqdm

    from modeling_icm.templates import combined_instruction
    from processing.video import probe_video, sample_frames

    video = Path(video)
    out_json = Path(out_json)
    info = probe_video(video)
    overlap = window / 2 if overlap is None else overlap
    windows = plan_windows(info.duration, window, overlap)
    header = {
        "format": ANALYSIS_FORMAT,
        "video": _video_signature(video),
        "model": model_name,
        "config": config_name,
        "window": window,
        "overlap": overlap,
        "num_frames": processor.num_frames,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "scenes": list(model.config.active_scenes),
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    partial = out_json.with_name(out_json.name + ".partial.jsonl")
    done = _read_partial(partial, header) if resume else {}
    if not done:
        partial.write_text(json.dumps(header) + "\n", encoding="utf-8")
    instruction = combined_instruction(config_name)
    pending = [(i, w) for i, w in enumerate(windows) if i not in done]
    torch.manual_seed(seed)
    bar = tqdm(total=len(windows), initial=len(done), desc=f"analyse {video.name}", unit="window", disable=not progress)
    try:
        for b in range(0, len(pending), max(1, int(batch_size))):
            chunk = pending[b : b + batch_size]
            clips = [
                sample_frames(video, num_frames=processor.num_frames, start=s, end=e, max_side=processor.max_side)
                for _, (s, e) in chunk
            ]
            answers = generate_answers(
                model,
                processor,
                [c.frames for c in clips],
                [[t - c.start for t in c.timestamps] for c in clips],
                instruction,
                config_name,
                max_new_tokens=max_new_tokens,
            )
            with partial.open("a", encoding="utf-8") as handle:
                for (index, (start, end)), clip, answer in zip(chunk, clips, answers):
                    result = WindowResult(
                        index=index,
                        start=start,
                        end=end,
                        answer=answer["answer"],
                        sentiment=answer["sentiment"],
                        segments=to_video_segments(answer["segments"], start, end, info.duration),
                        confidence=answer["confidence"],
                        attribution=answer["attribution"],
                        frame_times=[round(float(t), 4) for t in clip.timestamps],
                        frame_weights=frame_scene_weights(answer["router_probs"], answer["scenes"]),
                        confidence_method=answer["confidence_method"],
                    )
                    done[index] = result
                    handle.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            document = analysis_document(header, info, list(done.values()), len(windows), False, gap)
            _atomic_write_json(out_json, document)
            if on_update is not None:
                on_update(document)
            bar.update(len(chunk))
    finally:
        bar.close()
    document = analysis_document(header, info, list(done.values()), len(windows), True, gap)
    _atomic_write_json(out_json, document)
    partial.unlink(missing_ok=True)
    return document


__all__ = ["analyze_video", "check_model_dir", "generate_answers", "load_model"]

"""Greedy generation: the one routine every caller of a model's ``generate`` goes through.

* :func:`greedy_generate` — one left-padded batch -> the new tokens of each row (cut at the first end or pad token),
  their text and, when asked, the probability the model gave each token. The model's input placeholders
  (``<scene>``, ``<video>``, ``<image>``) are suppressed: a generated placeholder would be read as a slot for
  features on the next step. Training-time evaluation (``trainers.evaluation``), the Video-LLM baselines
  (``trainers.baselines``), lmms-eval (``inference.lmms_eval_model``) and window analysis (``inference.analysis``)
  all call it.
* :func:`generate_answers` — a batch of ICM clips (frames, timestamps, one instruction) -> parsed answers with their
  confidence and the router's weights; what window analysis and lmms-eval call.
* :func:`answer_confidence` — the probability of the generated label's tokens (see ``inference.analysis``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SENTIMENT_SPAN_RE = r"sentiment\s+(?:is|was|:)\s*({label})"


def answer_confidence(
    answer: str,
    token_spans: Sequence[tuple[int, int]],
    token_probs: Sequence[float],
    sentiment: str,
) -> tuple[float, str]:
    """Confidence of a generated answer's judgement (see the module docstring) and how it was computed
    (``"label_tokens"`` or ``"mean_token"``; ``"none"`` without tokens).

    Args:
        answer: the decoded answer text.
        token_spans: ``(start, end)`` character span in ``answer`` of each generated token (empty for special
            tokens).
        token_probs: the probability the model gave each generated token.
        sentiment: the label parsed from the answer (``""`` when unreadable).
    """
    if len(token_spans) != len(token_probs):
        raise ValueError(f"{len(token_spans)} token spans for {len(token_probs)} token probabilities")
    probs = [min(max(float(p), 1e-12), 1.0) for p in token_probs]
    if not probs:
        return 0.0, "none"
    if sentiment:
        match = re.search(_SENTIMENT_SPAN_RE.format(label=re.escape(sentiment)), answer, re.IGNORECASE)
        if match is None:
            match = re.search(re.escape(sentiment), answer, re.IGNORECASE)
        if match is not None:
            lo, hi = match.span(1) if match.re.groups else match.span()
            chosen = [p for (s, e), p in zip(token_spans, probs) if e > lo and s < hi and e > s]
            if chosen:
                return float(math.exp(sum(math.log(p) for p in chosen))), "label_tokens"
    return float(math.exp(sum(math.log(p) for p in probs) / len(probs))), "mean_token"


def _token_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it (prefix decoding, exact for BPE)."""
    spans, previous = [], 0
    for k in range(1, len(ids) + 1):
        length = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        spans.append((previous, max(previous, length)))
        previous = max(previous, length)
    return tokenizer.decode(ids, skip_special_tokens=True), spans


def placeholder_token_ids(model) -> list[int]:
    """The input placeholder ids an answer must never contain: an ICM's ``placeholder_token_ids`` (``<scene>``,
    ``<video>``, ``<image>``), else a Video-LLM config's image / video token ids."""
    own = getattr(model, "placeholder_token_ids", None)
    if own is not None:
        return sorted({int(i) for i in own if i is not None})
    config = model.config
    ids = set()
    for name in ("image_token_id", "video_token_id", "image_token_index", "video_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= 0:
            ids.add(value)
    return sorted(ids)


@dataclass
class GeneratedText:
    """One row's generation: the new token ids (up to the first end / pad token), their decoded text (special tokens
    skipped) and, with ``with_probs``, each token's probability."""

    ids: list[int]
    text: str
    probs: list[float] = field(default_factory=list)


def greedy_generate(model, inputs: Mapping[str, Any], tokenizer, max_new_tokens: int = 96,
                    with_probs: bool = False) -> list[GeneratedText]:
    """Greedy answers of one left-padded batch ``inputs`` (already on the model's device), in the order of its rows.

    Args:
        model: any model with ``generate`` (an ``IcmForVideoSentiment``, a ``PeftModel`` around it, a Video-LLM).
        inputs: what the model's ``generate`` takes (``input_ids``, ``attention_mask``, pixels, scene features...).
        tokenizer: decodes the new tokens; its pad token (else its end token) pads finished rows.
        max_new_tokens: the longest answer.
        with_probs: also return the probability of each generated token (from the step's logits).
    """
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = {tokenizer.eos_token_id, pad} - {None}
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            suppress_tokens=placeholder_token_ids(model) or None,
            output_logits=with_probs,
            return_dict_in_generate=with_probs,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
    sequences = out.sequences if with_probs else out
    new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
    token_probs = None
    if with_probs:
        logits = torch.stack(out.logits, dim=1).float()  # [B, steps, vocab]
        token_probs = torch.softmax(logits, dim=-1).gather(-1, new_tokens[..., None])[..., 0]
    results = []
    for i in range(new_tokens.shape[0]):
        ids = new_tokens[i].tolist()
        stop = next((k for k, t in enumerate(ids) if t in stops), len(ids))
        ids = ids[:stop]
        probs = token_probs[i, :stop].tolist() if token_probs is not None else []
        results.append(GeneratedText(ids, tokenizer.decode(ids, skip_special_tokens=True), probs))
    return results


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
    """Greedy answers of a batch of clips (one left-padded ``generate`` call); ``timestamps`` are clip time.

    Returns per clip ``{"answer", "sentiment", "segments" (clip time), "attribution", "confidence",
    "confidence_method", "router_probs" [[per expert] per frame], "scenes"}``."""
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
    # the router's weights come from the SBM call of the prompt's forward pass, not from running SBM and IEC again
    routed: list = []
    sbm = getattr(model, "sbm", None)
    hook = sbm.register_forward_hook(lambda _m, _i, out: routed.append(out.router_probs)) if sbm is not None else None
    try:
        generated = greedy_generate(model, batch, tokenizer, max_new_tokens, with_probs=True)
    finally:
        if hook is not None:
            hook.remove()
    router = routed[0] if routed else None
    scenes = list(model.config.active_scenes)
    results = []
    for i, row in enumerate(generated):
        text, spans = _token_spans(tokenizer, row.ids)
        parsed = parse_answer(text, config_name)
        confidence, method = answer_confidence(text, spans, row.probs, parsed.sentiment)
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


__all__ = ["GeneratedText", "answer_confidence", "generate_answers", "greedy_generate", "placeholder_token_ids"]

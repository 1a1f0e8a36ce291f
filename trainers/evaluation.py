"""Evaluation through generation (paper §4.4): generate an answer to the combined instruction ("inferring three tasks
with the same instruction", §4.1), parse it, and score it with the omnisila metric functions
(``evaluate_metrics.functions.compute_omnisila``: Acc, F2, mAP@tIoU 0.1/0.2/0.3, FNRs, Sem-R, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from inference.generation import greedy_generate
from inference.loading import icm_base_model

from .collator import IcmDataCollator


@torch.no_grad()
def generate_example_answers(
    model,
    processor,
    examples: Sequence[dict[str, Any]],
    batch_size: int = 8,
    max_new_tokens: int = 96,
) -> list[str]:
    """Greedy answers (decoded, special tokens skipped) of ``examples`` (left-padded prompts, no labels), in batches
    of ``batch_size`` through :func:`inference.generation.greedy_generate`."""
    collator = IcmDataCollator(processor, with_answers=False)
    was_training = model.training
    model.eval()
    device = next(icm_base_model(model).parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(examples), max(1, int(batch_size))):
            chunk = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
            generated = greedy_generate(model, collator(chunk).to(device), processor.tokenizer, max_new_tokens)
            answers += [row.text.strip() for row in generated]
    finally:
        model.train(was_training)
    return answers


def answer_examples(
    model,
    processor,
    examples: Sequence[dict[str, Any]],
    config_name: str,
    batch_size: int = 8,
    max_new_tokens: int = 96,
) -> list[dict[str, Any]]:
    """Parsed answers of Omni-SILA ``examples`` (``omnisila_examples`` rows: frames, timestamps, scene features and
    masks, instruction) with each clip's router weights per frame — :func:`inference.generation.generate_answers`
    in batches of at most ``batch_size`` clips that share an instruction. One dict per example, in order (see
    ``generate_answers`` for the keys)."""
    from inference.generation import generate_answers

    def flush(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return generate_answers(
            model, processor, [e["frames"] for e in chunk], [e["timestamps"] for e in chunk], chunk[0]["instruction"],
            config_name, scene_features=[e["scene_features"] for e in chunk],
            scene_masks=[e["scene_masks"] for e in chunk], max_new_tokens=max_new_tokens,
        )  # fmt: skip

    results: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    for index in range(len(examples)):
        example = examples[index]  # a datasets row is formatted once
        if chunk and (len(chunk) >= max(1, int(batch_size)) or example["instruction"] != chunk[0]["instruction"]):
            results += flush(chunk)
            chunk = []
        chunk.append(example)
    if chunk:
        results += flush(chunk)
    return results


def references_of(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metric references ``{"sentiment", "segments", "cause", "duration"}`` of examples."""
    from evaluate_metrics.functions import reference_of

    refs = []
    for index, example in enumerate(examples):
        for field_name in ("label", "segments", "duration"):
            if field_name not in example:
                raise ValueError(f"evaluation example {index} ({example.get('clip_id', '?')}) has no {field_name!r}")
        refs.append(reference_of(example))
    return refs


def evaluate_generation(
    model,
    processor,
    examples: Sequence[dict[str, Any]],
    batch_size: int = 8,
    max_new_tokens: int = 96,
    attribution_metrics: Sequence[str] | None = ("sem_r",),
    config_name: str | None = None,
) -> dict[str, Any]:
    """Generate, parse and score. ``examples`` are Omni-SILA rows of one config (use the ``combined`` task).

    Returns ``{"metrics": {...}, "predictions": [texts], "references": [...]}``; ``metrics`` is what
    ``compute_omnisila`` returns (numbers only)."""
    from evaluate_metrics.functions import compute_omnisila

    if len(examples) == 0:
        raise ValueError("evaluate_generation got no examples")
    configs = {e.get("config") for e in examples}
    if config_name is None:
        if len(configs) != 1 or None in configs:
            raise ValueError(f"evaluation examples must share one Omni-SILA config, got {sorted(map(str, configs))}")
        config_name = configs.pop()
    predictions = generate_example_answers(model, processor, examples, batch_size, max_new_tokens)
    references = references_of(examples)
    kwargs = {} if attribution_metrics is None else {"attribution_metrics": tuple(attribution_metrics)}
    metrics = compute_omnisila(predictions, references, config_name, **kwargs)
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"metrics": numbers, "predictions": predictions, "references": references}


__all__ = ["answer_examples", "evaluate_generation", "generate_example_answers", "references_of"]

"""Bridges from the HF ``Trainer`` to the Omni-SILA metrics: ``Trainer(compute_metrics=make_compute_metrics(...))``.

The Trainer hands ``compute_metrics`` an ``EvalPrediction`` of token ids (generated answers) or logits (teacher
forcing) and the label ids; the metrics need answer texts and the references (segments in seconds, cause, duration),
which token ids do not carry. So the eval set's references are given once, in eval order, either as the dataset's
reference dicts or rebuilt from the gold answer texts with :func:`references_from_answers`.

No torch here: arrays are handled with numpy, the tokenizer only decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from modeling_icm.templates import check_config_name

from .functions import compute_omnisila
from .parser import parse_answer

__all__ = ["IGNORE_INDEX", "decode_predictions", "make_compute_metrics", "references_from_answers"]

#: Label id of the positions the loss ignores (prompt, padding), as in transformers.
IGNORE_INDEX = -100


def references_from_answers(answers: Sequence[str], durations: Sequence[float], config_name: str) -> list[dict]:
    """References rebuilt from gold answer texts (the templates of ``modeling_icm.templates``) and durations.

    The cause is the gold attribution. A gold answer without a readable label raises ``ValueError`` naming its index.
    """
    check_config_name(config_name)
    if len(answers) != len(durations):
        raise ValueError(f"{len(answers)} gold answers for {len(durations)} durations")
    references = []
    for i, (answer, duration) in enumerate(zip(answers, durations)):
        parsed = parse_answer(answer, config_name)
        if not parsed.sentiment:
            raise ValueError(f"answers[{i}]: no {config_name} label readable in the gold answer {answer[:120]!r}")
        references.append(
            {"sentiment": parsed.sentiment, "segments": parsed.segments, "cause": parsed.attribution,
             "duration": float(duration)}
        )  # fmt: skip
    return references


def decode_predictions(tokenizer, predictions, label_ids=None) -> list[str]:
    """Answer texts of generated token ids ``[N, T]`` or of logits ``[N, T, V]`` (greedy, teacher-forced).

    With logits, position t predicts token t + 1, so only positions whose next label is not ``IGNORE_INDEX`` (the
    answer) are decoded. Negative ids (padding written as -100 by the Trainer) become the pad token.
    """
    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        predictions = predictions[0]  # (logits, *extra outputs)
    array = np.asarray(predictions)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if array.ndim == 3:
        if label_ids is None:
            raise ValueError("decoding logits needs the label ids (to find the answer positions)")
        labels = np.asarray(label_ids)
        if labels.shape != array.shape[:2]:
            raise ValueError(f"label_ids shape {labels.shape} does not match logits {array.shape[:2]}")
        tokens = array.argmax(-1)[:, :-1]
        keep = labels[:, 1:] != IGNORE_INDEX
        return [tokenizer.decode(row[mask].tolist(), skip_special_tokens=True) for row, mask in zip(tokens, keep)]
    if array.ndim != 2:
        raise ValueError(f"predictions must be token ids [N, T] or logits [N, T, V], got shape {array.shape}")
    array = np.where(array < 0, pad, array)
    return tokenizer.batch_decode(array.tolist(), skip_special_tokens=True)


def make_compute_metrics(
    tokenizer, references: Sequence[Mapping], config_name: str, **metric_kwargs
) -> Callable[[object], dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer``: decode, parse, score against ``references``.

    ``metric_kwargs`` go to :func:`evaluate_metrics.compute_omnisila` (e.g. ``attribution_metrics=("sem_r",)`` to
    keep evaluation during training cheap). Only numbers are returned (the Trainer logs them).
    """
    check_config_name(config_name)
    references = list(references)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        if isinstance(eval_prediction, tuple):
            predictions, label_ids = eval_prediction[0], eval_prediction[1]
        else:
            predictions, label_ids = eval_prediction.predictions, eval_prediction.label_ids
        texts = decode_predictions(tokenizer, predictions, label_ids)
        if len(texts) != len(references):
            raise ValueError(f"the Trainer evaluated {len(texts)} examples but {len(references)} references were given")
        result = compute_omnisila(texts, references, config_name, **metric_kwargs)
        return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}

    return compute_metrics

"""Scoring files (what ``icm evaluate`` runs): read prediction and reference files, score them with the omnisila metric functions
(``evaluate_metrics.score_omnisila``), and write the JSON, the table and the per-label charts (paper Figure 3).

File formats (JSON Lines, or one JSON list):

* predictions — one per example: the raw answer text (a JSON string), or ``{"id", "answer"}`` (also ``prediction``
  / ``text``), or a parsed ``{"id", "sentiment", "segments", "scores", "attribution"}``;
* references — ``{"id", "sentiment", "segments", "cause", "duration"}``, or clip records of the annotation schema
  (``explicit.jsonl`` / ``implicit.jsonl``: ``label`` is the sentiment). ``--split`` keeps one split of them.

Matching never guesses: within each file the rows carry ids (``id`` or ``clip_id``) all or none; a file that mixes
them is an error naming its first row without an id. When both sides carry ids, predictions are matched to
references by id; otherwise by order (the document's ``matched_by`` and the command's output say which).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .functions import MISSING_ANSWER


class EvaluationInputError(ValueError):
    """A prediction or reference file that cannot be scored; the message is one line naming the file, the row and
    the field (``icm evaluate`` prints it and exits with code 2)."""


EVALUATION_FORMAT = "icm-evaluation/1"


def read_rows(path: str | os.PathLike, what: str) -> list[Any]:
    """Rows of a JSON Lines file or a JSON list (a ``{"predictions": [...]}``-style object is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{what} file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise EvaluationInputError(f"{what} file {path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                       f"{err.start}); save it as UTF-8") from err  # fmt: skip
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvaluationInputError(f"{what} file {path} is not valid JSON: {err.msg} (line {err.lineno})") from err
        return list(rows)
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise EvaluationInputError(f"{what} file {path}, line {line_no}: not JSON ({err.msg})") from err
    if len(rows) == 1 and isinstance(rows[0], Mapping):
        for key in ("predictions", "references", "rows", "data"):
            if isinstance(rows[0].get(key), list):
                return list(rows[0][key])
    return rows


def _row_id(row: Any) -> str | None:
    if isinstance(row, Mapping):
        for key in ("id", "clip_id"):
            if row.get(key) is not None:
                return str(row[key])
    return None


def to_reference(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise EvaluationInputError(f"{where}: a reference must be an object, got {type(row).__name__}")
    sentiment = row.get("sentiment", row.get("label"))
    if sentiment is None:
        raise EvaluationInputError(f"{where}: missing field 'sentiment' (or 'label')")
    return {
        "sentiment": sentiment,
        "segments": row.get("segments", []),
        "cause": row.get("cause", "") or "",
        "duration": row.get("duration"),
    }


def to_prediction(row: Any, where: str) -> str | dict[str, Any]:
    if isinstance(row, str):
        return row
    if not isinstance(row, Mapping):
        raise EvaluationInputError(f"{where}: a prediction must be a text or an object, got {type(row).__name__}")
    for key in ("answer", "prediction", "text"):
        if isinstance(row.get(key), str):
            return row[key]
    return {k: row[k] for k in ("sentiment", "segments", "scores", "attribution") if k in row}




def _ids_all_or_none(ids: Sequence[str | None], rows: Sequence[Any], path, what: str) -> bool:
    """Whether the rows of one file carry ids (all of them); a file where some do and some do not is an error naming
    the first row without one: matching such a file by order would pair the wrong rows without a word."""
    if all(ids):
        return True
    given = next((i for i, x in enumerate(ids) if x), None)
    if given is None:
        return False
    first = ids.index(None)
    shown = json.dumps(rows[first], ensure_ascii=False)[:80]
    raise EvaluationInputError(f"{what} file {path}: row {first + 1} has no id ({shown}) but row {given + 1} has one "
                   f"({ids[given]!r}); give every row an id (matched by id) or none (matched by order)")  # fmt: skip


def load_pairs(
    predictions_path: str | os.PathLike,
    references_path: str | os.PathLike,
    split: str | None = None,
    *,
    require_all: bool = False,
) -> tuple[list, list[dict], list[str | None], list[Any], list[str]]:
    """``(predictions, references, ids, raw_references, missing, matched_by)`` aligned by id when both files carry
    ids, else by order (``matched_by``: ``"id"`` or ``"order"``); a file that mixes rows with and without ids is an
    error naming its first row without one.

    Every reference is scored: matched by id (in prediction order), a reference without a prediction gets the empty
    answer (wrong for every metric), comes last and its id is listed in ``missing``; ``require_all`` makes that an error instead. Matched by order,
    the two files must have the same length. An empty predictions file is an error.
    """
    predictions = read_rows(predictions_path, "predictions")
    references = read_rows(references_path, "references")
    if split is not None:
        references = [r for r in references if not isinstance(r, Mapping) or r.get("split", split) == split]
    if not references:
        raise EvaluationInputError(f"references file {references_path} holds no reference" + (f" in split {split!r}" if split else ""))
    if not predictions:
        raise EvaluationInputError(f"predictions file {predictions_path} holds no prediction ({len(references)} references to score)")
    pred_ids = [_row_id(p) for p in predictions]
    ref_ids = [_row_id(r) for r in references]
    missing: list[str] = []
    by_id = _ids_all_or_none(pred_ids, predictions, predictions_path, "predictions")
    by_id = _ids_all_or_none(ref_ids, references, references_path, "references") and by_id
    if by_id:
        seen: set[str] = set()
        for rid in ref_ids:
            if rid in seen:
                raise EvaluationInputError(f"references file {references_path}: duplicate id {rid!r}")
            seen.add(rid)
        by_id: dict[str, Any] = {}
        for i, pid in enumerate(pred_ids):
            if pid not in seen:
                raise EvaluationInputError(f"predictions[{i}]: id {pid!r} has no reference in {references_path}")
            if pid in by_id:
                raise EvaluationInputError(f"predictions file {predictions_path}: duplicate id {pid!r} (predictions[{i}])")
            by_id[pid] = predictions[i]
        missing = [rid for rid in ref_ids if rid not in by_id]
        if missing and require_all:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise EvaluationInputError(
                f"{len(missing)} of {len(references)} references have no prediction in {predictions_path}: {shown}"
            )
        # prediction order (recorded judge scores follow it), then the references without a prediction
        by_ref = dict(zip(ref_ids, references))
        ids = pred_ids + missing
        references = [by_ref[i] for i in ids]
        predictions = list(predictions) + [MISSING_ANSWER] * len(missing)
    else:
        if len(predictions) != len(references):
            raise EvaluationInputError(
                f"{len(predictions)} predictions in {predictions_path} but {len(references)} references in "
                f"{references_path}, and no ids to match them by"
            )
        ids = ref_ids
    preds = [to_prediction(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
    refs = [to_reference(r, f"references[{i}]") for i, r in enumerate(references)]
    return preds, refs, ids, references, missing, "id" if by_id else "order"


def infer_config(raw_references: Sequence[Any], given: str | None) -> str:
    from modeling_icm.templates import CONFIG_NAMES

    if given:
        return given
    configs = {r.get("config") for r in raw_references if isinstance(r, Mapping) and r.get("config")}
    if len(configs) == 1:
        config = configs.pop()
        if config in CONFIG_NAMES:
            return config
    if len(configs) > 1:
        raise EvaluationInputError(f"the references mix configs {sorted(configs)}; pick one with --config explicit|implicit")
    return "implicit"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_files(
    predictions_path: str | os.PathLike,
    references_path: str | os.PathLike,
    *,
    config_name: str | None = None,
    split: str | None = None,
    attribution_metrics: Sequence[str] = ("sem_r", "sem_c", "sen_a"),
    judge=None,
    judge_scores: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    dataset: Mapping[str, str] | None = None,
    require_all: bool = False,
    clip_segments: bool = False,
) -> dict[str, Any]:
    """Score a predictions file against a references file; the evaluation document (JSON-able, NaN -> null).
    ``judge`` is an Atr-R judge callable; ``judge_scores`` a file of recorded per-example Atr-R scores. A reference
    without a prediction scores as an empty answer and is counted in ``metrics.num_missing`` / listed under
    ``missing`` (``require_all``: an error instead). ``clip_segments``: clip segments to [0, duration] before
    matching (off by default: TSL-300's official scoring; ``evaluate_metrics.functions`` says why one would)."""
    from evaluate_metrics.functions import score_omnisila
    from evaluate_metrics.parser import parse_answer

    preds, refs, ids, raw, missing, matched_by = load_pairs(predictions_path, references_path, split,
                                                            require_all=require_all)  # fmt: skip
    config = infer_config(raw, config_name)
    if judge_scores is not None:
        if judge is not None:
            raise EvaluationInputError("give either a judge or recorded judge scores, not both")
        attributions = [
            parse_answer(p, config).attribution if isinstance(p, str) else str(p.get("attribution", "") or "")
            for p in preds
        ]
        present = len(preds) - len(missing)  # the recorded scores are those of the given predictions
        judge = recorded_judge_for(judge_scores, [bool(a.strip()) for a in attributions[:present]])
    try:
        result = score_omnisila(
            preds,
            refs,
            config,
            attribution_metrics=tuple(attribution_metrics),
            judge=judge,
            on_invalid="skip" if skip_invalid else "raise",
            clip_segments=clip_segments,
        )
    except ValueError as err:
        raise EvaluationInputError(f"cannot score {predictions_path} against {references_path}: {err}") from err
    dataset = dict(dataset or {})
    dataset.setdefault("name", f"Omni-SILA {config}")
    dataset.setdefault("type", "omni-sila")
    dataset.setdefault("config", config)
    if split:
        dataset.setdefault("split", split)
    metrics = {k: _finite(float(v)) for k, v in result.summary.items() if isinstance(v, (int, float))}
    metrics["num_missing"] = len(missing)
    return {
        "format": EVALUATION_FORMAT,
        "config": config,
        "predictions": str(predictions_path),
        "references": str(references_path),
        "dataset": dataset,
        "metrics": metrics,
        "missing": missing,
        "matched_by": matched_by,
        "clip_segments": bool(clip_segments),
        "per_label": {label: {k: _finite(v) for k, v in values.items()} for label, values in result.per_label.items()},
        "invalid": list(result.invalid),
        "has_judge_scores": "atr_r" in result.summary,
    }




def recorded_judge_for(path: str | os.PathLike, attributions_nonempty: Sequence[bool]):
    """A judge callable replaying per-example scores of ``path`` (JSON list or JSON Lines of numbers or
    ``{"atr_r": x}``) for the examples whose attribution is not empty (empty ones score 1 without the judge)."""
    rows = read_rows(path, "judge scores")
    scores = []
    for i, row in enumerate(rows):
        value = row.get("atr_r", row.get("score")) if isinstance(row, Mapping) else row
        try:
            scores.append(float(value))
        except (TypeError, ValueError) as err:
            raise EvaluationInputError(f"judge scores file {path}, entry {i}: expected a number, got {value!r}") from err
    if len(scores) != len(attributions_nonempty):
        raise EvaluationInputError(f"judge scores file {path} has {len(scores)} scores for {len(attributions_nonempty)} examples")
    asked = [s for s, keep in zip(scores, attributions_nonempty) if keep]

    def judge(prompts: Sequence[str]) -> list[str]:
        if len(prompts) != len(asked):
            raise EvaluationInputError(f"judge scores file {path}: {len(asked)} scores for {len(prompts)} judged attributions")
        return [f"Score: {s:g}" for s in asked]

    return judge


__all__ = [
    "EVALUATION_FORMAT",
    "EvaluationInputError",
    "evaluate_files",
    "load_pairs",
    "read_rows",
    "recorded_judge_for",
]

"""The ``utils.py`` of the lmms-eval task ``omni_sila`` (copied verbatim into the task folder by
``evaluate_metrics.lmms_eval_task.export_lmms_eval_task`` / ``icm push --lmms-eval DIR``).

lmms-eval (0.7) calls, per document (one Omni-SILA clip ``{"id", "config", "video", "duration", "label",
"segments", "cause"}``): ``doc_to_visual`` (the clip's video path), ``doc_to_text`` (the paper's combined test-time
instruction, §4.1, after the clip's length in seconds, so that a model that samples its own frames can still answer in
seconds), ``doc_to_target`` (the reference answer in the paper's format) and ``process_results`` (the model's answer
kept with its reference, one entry per metric); then, per metric, the aggregation over all documents, which scores
them together with omnisila-icm's answer parser and metric functions (``evaluate_metrics.compute_omnisila``):
acc, f2, map@0.1/0.2/0.3, map_avg, f2_tsl, fnr (FNRs, lower is better) and sem_r. Requires ``omnisila-icm`` to be
installed where lmms-eval runs.
"""

from __future__ import annotations

import hashlib
import json
import os

from evaluate_metrics.functions import compute_omnisila, reference_of
from modeling_icm import templates as T

#: metric -> higher is better (what the task yaml's metric_list declares)
METRICS: dict[str, bool] = {
    "acc": True, "f2": True, "map@0.1": True, "map@0.2": True, "map@0.3": True, "map_avg": True,
    "f2_tsl": True, "fnr": False, "sem_r": True,
}  # fmt: skip
_SCORES: dict[str, dict] = {}


def doc_to_visual(doc):
    video = doc["video"]
    if not os.path.isfile(video):
        raise FileNotFoundError(f"omni_sila document {doc.get('id')}: video not found: {video}")
    return [video]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    length = f"The video is {T.format_seconds(doc['duration'])}s long. "
    return f"{kwargs.get('pre_prompt', '')}{length}{T.combined_instruction(doc['config'])}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc):
    return T.combined_answer(doc["config"], doc["label"], doc["segments"], doc["cause"])


def process_results(doc, results):
    item = {
        "id": doc["id"],
        "config": doc["config"],
        "prediction": results[0] if results else "",
        "reference": reference_of(doc),
    }  # fmt: skip
    return {metric: item for metric in METRICS}


def omnisila_scores(items) -> dict:
    """Every metric of the documents' answers at once (memoised: each metric's aggregation asks for the same set)."""
    key = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _SCORES:
        configs = {item["config"] for item in items}
        if len(configs) != 1:
            raise ValueError(f"omni_sila: one task scores one Omni-SILA config, got {sorted(configs)}")
        _SCORES[key] = compute_omnisila(
            [item["prediction"] for item in items], [item["reference"] for item in items], configs.pop(),
            attribution_metrics=("sem_r",),
        )  # fmt: skip
    return _SCORES[key]


def _aggregation(metric: str):
    def aggregate(items):
        return omnisila_scores(items)[metric]

    aggregate.__name__ = aggregate.__qualname__ = f"aggregate_{metric}"
    return aggregate


# lmms-eval's `!function utils.<name>` looks these names up in this module
aggregate_acc = _aggregation("acc")
aggregate_f2 = _aggregation("f2")
aggregate_map_01 = _aggregation("map@0.1")
aggregate_map_02 = _aggregation("map@0.2")
aggregate_map_03 = _aggregation("map@0.3")
aggregate_map_avg = _aggregation("map_avg")
aggregate_f2_tsl = _aggregation("f2_tsl")
aggregate_fnr = _aggregation("fnr")
aggregate_sem_r = _aggregation("sem_r")

AGGREGATIONS: dict[str, str] = {
    "acc": "aggregate_acc", "f2": "aggregate_f2", "map@0.1": "aggregate_map_01", "map@0.2": "aggregate_map_02",
    "map@0.3": "aggregate_map_03", "map_avg": "aggregate_map_avg", "f2_tsl": "aggregate_f2_tsl",
    "fnr": "aggregate_fnr", "sem_r": "aggregate_sem_r",
}  # fmt: skip

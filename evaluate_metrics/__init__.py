"""Omni-SILA evaluation (paper §4.4): the answer parser, the metric functions, the ``omnisila`` evaluate module.

* ``parse_answer`` — the model's answer text -> ``ParsedAnswer(sentiment, segments, attribution)``;
* ``compute_omnisila`` — every metric as a dict (what ``evaluate.load("evaluate_metrics/omnisila", config)``
  returns, and what the Trainer's ``compute_metrics`` reuses); ``score_omnisila`` adds per-example scores and
  per-label FNR / Atr-R; ``paired_t_test`` compares two systems; ``make_compute_metrics`` plugs them into the
  ``Trainer``;
* ``OpenAIJudge`` / ``TransformersJudge`` — Atr-R judges; ``export_space`` — the Hub Space folder;
* ``METRIC_NAMES`` / ``metrics_table`` — the metrics' display names and the markdown table of results.

Importing this package never imports torch (sentence-transformers and the local judge load it lazily).
"""

from .attribution import classify_by_embedding, classify_by_lexicon, sem_c_scores, sem_r_scores, sen_a_scores
from .compute_metrics import make_compute_metrics, references_from_answers
from .functions import (
    DEFAULT_TIOU_THRESHOLDS,
    OmnisilaBatch,
    OmnisilaResult,
    acc,
    compute_omnisila,
    f2,
    fnr,
    map_at_tiou,
    paired_t_test,
    prepare_batch,
    reference_of,
    score_omnisila,
    tiou_matrix,
)
from .judges import ATR_R_PROMPT, OpenAIJudge, TransformersJudge, atr_r_scores, judge_from_spec, parse_judge_score
from .parser import ParsedAnswer, parse_answer
from .space import export_space
from .tables import METRIC_NAMES, metrics_table

__all__ = [
    "ATR_R_PROMPT",
    "DEFAULT_TIOU_THRESHOLDS",
    "METRIC_NAMES",
    "OmnisilaBatch",
    "OmnisilaResult",
    "OpenAIJudge",
    "ParsedAnswer",
    "TransformersJudge",
    "acc",
    "atr_r_scores",
    "classify_by_embedding",
    "classify_by_lexicon",
    "compute_omnisila",
    "export_space",
    "f2",
    "fnr",
    "judge_from_spec",
    "make_compute_metrics",
    "map_at_tiou",
    "metrics_table",
    "paired_t_test",
    "parse_answer",
    "parse_judge_score",
    "prepare_batch",
    "reference_of",
    "references_from_answers",
    "score_omnisila",
    "sem_c_scores",
    "sem_r_scores",
    "sen_a_scores",
    "tiou_matrix",
]

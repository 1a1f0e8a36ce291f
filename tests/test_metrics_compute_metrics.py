"""``Trainer(compute_metrics=make_compute_metrics(...))``: decoding generated ids and teacher-forced logits."""

from __future__ import annotations

import numpy as np
import pytest

from evaluate_metrics.compute_metrics import (
    IGNORE_INDEX,
    decode_predictions,
    make_compute_metrics,
    references_from_answers,
)
from modeling_icm.templates import combined_answer

GOLD = [
    combined_answer("implicit", "Fire", [[4, 18]], "smoke rises from the roof"),
    combined_answer("implicit", "Theft", [[2, 9], [12, 15]], "a man steals a bag"),
    combined_answer("implicit", "Normal", [], "people walk"),
]
DURATIONS = [30, 20, 10]


@pytest.fixture(scope="module")
def tokenizer():
    """A real word-level fast tokenizer over the words of the gold answers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "</s>": 2}
    for text in GOLD:
        for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


def test_references_from_gold_answers():
    references = references_from_answers(GOLD, DURATIONS, "implicit")
    assert references[1] == {"sentiment": "Theft", "segments": [[2.0, 9.0], [12.0, 15.0]],
                             "cause": "a man steals a bag.", "duration": 20.0}  # fmt: skip
    assert references[2]["segments"] == []
    with pytest.raises(ValueError, match=r"answers\[1\]: no implicit label"):
        references_from_answers([GOLD[0], "garbage"], [1, 2], "implicit")


def test_generated_ids_padded_with_ignore_index(tokenizer):
    ids = [tokenizer(text)["input_ids"] for text in GOLD]
    width = max(map(len, ids))
    predictions = np.array([row + [IGNORE_INDEX] * (width - len(row)) for row in ids])
    compute_metrics = make_compute_metrics(
        tokenizer, references_from_answers(GOLD, DURATIONS, "implicit"), "implicit", attribution_metrics=("sem_r",)
    )
    metrics = compute_metrics((predictions, None))
    for key in ("acc", "f2", "map@0.1", "map@0.3", "sem_r"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["fnr"] == 0.0 and all(isinstance(v, float) for v in metrics.values())
    wrong = predictions.copy()
    wrong[0] = predictions[2]  # first example answered "Normal ... none"
    assert make_compute_metrics(tokenizer, references_from_answers(GOLD, DURATIONS, "implicit"), "implicit",
                                attribution_metrics=())((wrong, None))["acc"] == pytest.approx(2 / 3)  # fmt: skip


def test_teacher_forced_logits_decode_only_the_answer(tokenizer):
    prompt = tokenizer("USER: what happens ? ASSISTANT:")["input_ids"]
    answer = tokenizer(GOLD[0])["input_ids"]
    sequence = prompt + answer
    labels = np.array([[IGNORE_INDEX] * len(prompt) + answer])
    logits = np.full((1, len(sequence), len(tokenizer)), -5.0)
    for t in range(len(sequence) - 1):  # a perfect teacher-forced model: position t predicts token t + 1
        logits[0, t, sequence[t + 1]] = 5.0
    texts = decode_predictions(tokenizer, logits, labels)
    assert texts == [tokenizer.decode(answer)]
    with pytest.raises(ValueError, match="label ids"):
        decode_predictions(tokenizer, logits)


def test_count_mismatch_is_reported(tokenizer):
    compute_metrics = make_compute_metrics(tokenizer, references_from_answers(GOLD, DURATIONS, "implicit"), "implicit")
    with pytest.raises(ValueError, match="evaluated 1 examples but 3 references"):
        compute_metrics((np.array([tokenizer(GOLD[0])["input_ids"]]), None))

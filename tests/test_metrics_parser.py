"""The answer parser reads the paper's templates (§4.1), their drifted variants, and never raises."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evaluate_metrics.parser import MAX_ANSWER_CHARS, ParsedAnswer, _parse, parse_answer, parse_segments, parse_time
from modeling_icm.templates import LABELS, combined_answer

CASES = [
    # (config, text, sentiment, segments, attribution)
    (
        "implicit",
        "The implicit visual sentiment is Fire. The location of Fire is from 4s to 18s. The attribution is smoke.",
        "Fire",
        [[4.0, 18.0]],
        "smoke.",
    ),
    (
        "implicit",
        "The implicit visual sentiment is Traffic Accidents. The location of Traffic Accidents is from 4s to 18s "
        "and from 25s to 30.5s. The attribution is a car hits a truck.",
        "Traffic Accidents",
        [[4.0, 18.0], [25.0, 30.5]],
        "a car hits a truck.",
    ),
    (
        "explicit",
        "The explicit visual sentiment is negative. The location of negative is none. The attribution is none.",
        "negative",
        [],
        "",
    ),
    ("explicit", "The location of negative is from 4 s to 18 s.", "negative", [[4.0, 18.0]], ""),
    ("explicit", "The explicit visual sentiment is Negative, I think. It lasts 4-18s.", "negative", [[4.0, 18.0]], ""),
    ("explicit", "The location of positive is 00:04 to 00:18.", "positive", [[4.0, 18.0]], ""),
    ("explicit", "The location of positive is 1:00:02 - 1:00:05.", "positive", [[3602.0, 3605.0]], ""),
    ("explicit", "The location of neutral is from 18s to 4s.", "neutral", [[4.0, 18.0]], ""),
    ("explicit", "The location of neutral is between 2.5 and 7.25 seconds.", "neutral", [[2.5, 7.25]], ""),
    ("explicit", "The location of neutral is 1-2 min.", "neutral", [[60.0, 120.0]], ""),
    ("implicit", "Sure! The implicit visual sentiment is a fire in the kitchen.", "Fire", [], ""),
    ("implicit", "The implicit visual sentiment is Fighting.\nThe location of Fighting is from 1s to 2s.", "Fighting",
     [[1.0, 2.0]], ""),
    (
        "implicit",
        "The implicit visual sentiment is Theft. The location of Theft is from 3s to 9s. "
        "The attribution is a man walks 2 - 5 steps at 5 pm.",
        "Theft",
        [[3.0, 9.0]],
        "a man walks 2 - 5 steps at 5 pm.",
    ),
    ("implicit", "The implicit visual sentiment is Happiness. The attribution is nothing.", "", [], "nothing."),
    ("explicit", "negative", "negative", [], ""),
    ("explicit", "", "", [], ""),
    ("explicit", "I cannot answer that.", "", [], ""),
    ("explicit", "The location of negative is from 99999999999s to 1e999s.", "negative", [], ""),
]  # fmt: skip


@pytest.mark.parametrize("config,text,sentiment,segments,attribution", CASES)
def test_parse_answer_cases(config, text, sentiment, segments, attribution):
    parsed = parse_answer(text, config)
    assert parsed == ParsedAnswer(sentiment, segments, attribution)


@pytest.mark.parametrize(
    "text,seconds",
    [("4s", 4.0), ("4 s", 4.0), ("4.5 seconds", 4.5), ("00:04", 4.0), ("1:02:03", 3723.0), ("2 min", 120.0),
     ("abc", None), ("", None), ("-3s", None)],
)  # fmt: skip
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("value", [None, 3, 4.5, ["The location of negative is from 1s to 2s."], b"bytes"])
def test_non_string_answers_are_empty(value):
    assert parse_answer(value, "explicit") == ParsedAnswer()


def test_unknown_config_raises():
    with pytest.raises(ValueError, match="config name"):
        parse_answer("negative", "emotions")


_seconds = st.floats(min_value=0, max_value=5000, allow_nan=False).map(lambda x: round(x, 2))


@settings(max_examples=150, deadline=None)
@given(
    config=st.sampled_from(["explicit", "implicit"]),
    data=st.data(),
    segments=st.lists(st.tuples(_seconds, _seconds).map(lambda p: [min(p), max(p)]), max_size=4),
    cause=st.text(alphabet=st.characters(categories=["L", "Zs"]), max_size=60),
)
def test_round_trip_of_the_templates(config, data, segments, cause):
    """Whatever ``templates.combined_answer`` writes, the parser reads back."""
    expected = " ".join(cause.split())
    # "The attribution is none." is the template's own "no attribution": such a cause reads back as empty.
    assume(re.sub(r"\W", " ", expected).split() not in (["none"], ["nowhere"], ["no", "segment"], ["not", "found"]))
    label = data.draw(st.sampled_from(LABELS[config]))
    text = combined_answer(config, label, segments, cause)
    parsed = parse_answer(text, config)
    assert parsed.sentiment == label
    assert parsed.segments == [[float(s), float(e)] for s, e in segments]
    assert parsed.attribution.rstrip(".") == expected.rstrip(".")


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300), config=st.sampled_from(["explicit", "implicit"]))
def test_fuzz_never_raises(text, config):
    parsed = parse_answer(text, config)
    assert parsed.sentiment in ("", *LABELS[config])
    for start, end in parsed.segments:
        assert 0 <= start <= end < float("inf")
    assert isinstance(parsed.attribution, str)


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet="0123456789:.-s tofrmandbetweenlocationisThe", max_size=200),
    config=st.sampled_from(["explicit", "implicit"]),
)
def test_fuzz_time_like_text_never_raises(text, config):
    """Text full of digits, colons and range words: the segment reader itself does not raise (parse_answer's
    catch-all is not what keeps it quiet), and what both readers return is well formed."""
    answer = "The location of negative is " + text
    parsed = parse_answer(answer, config)
    assert parsed == _parse(answer[:MAX_ANSWER_CHARS], config)  # read, not the empty answer of the catch-all
    assert parsed.sentiment in ("", *LABELS[config])
    segments = parse_segments(text)
    for start, end in [*parsed.segments, *segments]:
        assert 0 <= start <= end < float("inf")
    assert all(segment in segments for segment in parse_segments(answer))

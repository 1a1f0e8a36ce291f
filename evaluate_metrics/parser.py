"""The answer parser: the model's free text -> ``{sentiment, segments, attribution}`` (paper §4.1 answer templates).

The model answers in the templates of ``modeling_icm.templates`` ("The implicit visual sentiment is Fire. The
location of Fire is from 4s to 18s and from 25s to 30s. The attribution is ..."). Real generations drift, so the
parser also reads:

* segments written "from 4s to 18s", "4 s to 18 s", "4.5-18.25s", "between 4 and 18 seconds", "00:04 to 00:18",
  "0:01:05 - 0:01:10", "1 min to 2 min", several of them joined by "and" or commas, ranges in either order
  ("from 18s to 4s" is read as [4, 18]);
* "The location of X is none." (``templates.NO_SEGMENT_PHRASE``) as no segment;
* the sentiment after "... sentiment is", or, failing that, the label of "The location of X is";
* the attribution after "The attribution is" / "Attribution:" / "because";
* extra text before, between and after the sentences.

Whatever cannot be read becomes an empty field (``""`` or ``[]``); the metrics count it as wrong. The parser never
raises on any input (it is fuzzed with hypothesis in ``tests/test_metrics_parser.py``). Segment times are searched
only outside the attribution sentence, so numbers in an explanation ("two men at 5 pm") are not read as times.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from modeling_icm.templates import LABELS, NO_SEGMENT_PHRASE, check_config_name, normalize_label

__all__ = ["ParsedAnswer", "parse_answer", "parse_segments", "parse_time"]

#: Longest text the parser looks at; longer generations are cut (a runaway generation is unreadable anyway).
MAX_ANSWER_CHARS = 20_000


@dataclass
class ParsedAnswer:
    """One parsed answer. ``sentiment`` is a canonical label of the config or ``""`` when unreadable."""

    sentiment: str = ""
    segments: list[list[float]] = field(default_factory=list)
    attribution: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# A time: hh:mm:ss(.f), mm:ss(.f), or a number with an optional unit (seconds by default, minutes when said).
# Lookarounds keep a time from starting or ending inside a longer number ("99999999999", "1e999").
_NUMBER = r"(?<![\d.])\d{1,9}(?:\.\d{1,9})?(?![\d])"
_CLOCK = r"(?<![\d.:])\d{1,4}(?::\d{1,2}){1,2}(?:\.\d{1,9})?(?![\d:])"
_UNIT = r"(?:seconds?|secs?|s|minutes?|mins?)"
_TIME = rf"(?:{_CLOCK}|{_NUMBER}(?:\s?{_UNIT}\b)?)"
_TIME_RE = re.compile(rf"(?P<value>{_CLOCK}|{_NUMBER})\s?(?P<unit>{_UNIT})?", re.IGNORECASE)
_RANGE_RE = re.compile(
    rf"(?:\bbetween\s+(?P<b1>{_TIME})\s*(?:and|to|-)\s*(?P<b2>{_TIME}))"
    rf"|(?:(?P<r1>{_TIME})\s*(?:to|until|till|through|[-\u2013\u2014~])\s*(?P<r2>{_TIME}))",
    re.IGNORECASE,
)
_SENTIMENT_RE = re.compile(r"sentiment\s+(?:is|was|:)\s*(?P<value>[^.,;:\n]{1,80})", re.IGNORECASE)
_LOCATION_RE = re.compile(r"\blocation\s+of\s+(?P<label>[^.\n]{0,80}?)\s+(?:is|was|:)\s*", re.IGNORECASE)
_ATTRIBUTION_RE = re.compile(r"(?:\battribution\s*(?:is|:)|\bbecause\b)\s*(?P<value>.*)", re.IGNORECASE | re.DOTALL)
_NONE_RE = re.compile(rf"^\W*(?:{NO_SEGMENT_PHRASE}|nowhere|no\s+segment|not\s+found)\W*$", re.IGNORECASE)


def parse_time(text: str) -> float | None:
    """Seconds of one written time ("4s", "4.5 seconds", "00:04", "1:02:03", "2 min"), or None if unreadable."""
    try:
        match = _TIME_RE.fullmatch(str(text).strip())
        if match is None:
            return None
        value, unit = match.group("value"), (match.group("unit") or "").lower()
        if ":" in value:
            seconds = 0.0
            for part in value.split(":"):
                seconds = seconds * 60 + float(part)
        else:
            seconds = float(value)
            if unit.startswith("m"):
                seconds *= 60
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except (ValueError, OverflowError):
        return None


def parse_segments(text: str) -> list[list[float]]:
    """Every time range in ``text`` as ``[start, end]`` with start <= end, in order of appearance."""
    segments: list[list[float]] = []
    for match in _RANGE_RE.finditer(str(text)):
        first = match.group("b1") if match.group("b1") is not None else match.group("r1")
        second = match.group("b2") if match.group("b2") is not None else match.group("r2")
        start, end = parse_time(first), parse_time(second)
        if start is None or end is None:
            continue
        # "4-18s": the unit written once applies to both ends.
        if _TIME_RE.fullmatch(first.strip()).group("unit") is None and ":" not in first:
            unit = (_TIME_RE.fullmatch(second.strip()).group("unit") or "").lower()
            if unit.startswith("m"):
                start *= 60
        segments.append([min(start, end), max(start, end)])
    return segments


def _match_label(text: str, config_name: str) -> str:
    """The label ``text`` names: an exact (normalised) label, else the longest label it starts with."""
    label = normalize_label(text, config_name)
    if label is not None:
        return label
    words = re.sub(r"^(?:a|an|the)\s+", "", " ".join(re.sub(r"[^\w\s]", " ", text).split()).lower())
    for candidate in sorted(LABELS[config_name], key=len, reverse=True):  # "Traffic Accidents" before "Theft"...
        key = candidate.lower()
        if words == key or words.startswith(key + " "):
            return candidate
    return ""


def parse_answer(text: object, config_name: str) -> ParsedAnswer:
    """Parse one generated answer of the ``config_name`` ("explicit" / "implicit") config.

    Never raises on the text (a non-string gives an empty answer); an unknown ``config_name`` is a programming
    error and raises ``ValueError``.
    """
    check_config_name(config_name)
    if not isinstance(text, str):
        return ParsedAnswer()
    text = text[:MAX_ANSWER_CHARS]
    try:
        return _parse(text, config_name)
    except Exception:  # noqa: BLE001 - the contract is "never raises": unreadable text is an empty answer
        return ParsedAnswer()


def _parse(text: str, config_name: str) -> ParsedAnswer:
    attribution_match = _ATTRIBUTION_RE.search(text)
    head = text[: attribution_match.start()] if attribution_match else text
    attribution = ""
    if attribution_match:
        attribution = " ".join(attribution_match.group("value").split())
        if _NONE_RE.match(attribution):
            attribution = ""

    sentiment = ""
    sentiment_match = _SENTIMENT_RE.search(head)
    if sentiment_match:
        sentiment = _match_label(sentiment_match.group("value"), config_name)

    location_match = _LOCATION_RE.search(head)
    if location_match:
        if not sentiment:
            sentiment = _match_label(location_match.group("label"), config_name)
        body = head[location_match.end() :]
        segments = [] if _NONE_RE.match(body) else parse_segments(body)
    else:
        if not sentiment and normalize_label(head, config_name):  # the bare label, e.g. "negative"
            sentiment = normalize_label(head, config_name) or ""
        # No location sentence: read ranges anywhere outside the identify sentence and the attribution.
        rest = head[sentiment_match.end() :] if sentiment_match else head
        segments = parse_segments(rest)
    return ParsedAnswer(sentiment=sentiment, segments=segments, attribution=attribution)

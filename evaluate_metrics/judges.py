"""Atr-R (attribution rationality, paper §4.4): an LLM judge scores each generated attribution from 1 to 10.

The paper asks ChatGPT to score "based on two criteria: sentiment overlap and sentiment clue overlap, on a scale of 1
to 10" and averages the scores. Here the judge is pluggable:

* :class:`OpenAIJudge` — any OpenAI-compatible chat-completions endpoint through the ``openai`` client with a
  configurable ``base_url`` (OpenAI, vLLM, Ollama, llama.cpp server, TGI ...);
* :class:`TransformersJudge` — a local transformers causal LM (chat template when the tokenizer has one), greedy;
* any callable ``prompts: list[str] -> list[str]`` returning the judge's raw answers.

The prompt is :data:`ATR_R_PROMPT`; :func:`parse_judge_score` reads "Score: 7", "7/10", ``{"score": 7}``, "I'd give
it 7.5" ... and returns None for anything else (a score outside 1–10 included). Unparsed answers are NaN in the
per-example scores, excluded from the mean and counted (``atr_r_unparsed``). An empty attribution gets 1 (the
minimum) without asking the judge. Without a judge, Atr-R is omitted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "ATR_R_PROMPT",
    "ATR_R_SYSTEM_PROMPT",
    "OpenAIJudge",
    "TransformersJudge",
    "atr_r_scores",
    "build_judge_prompt",
    "is_openai_available",
    "judge_from_spec",
    "parse_judge_score",
]

ATR_R_SYSTEM_PROMPT = "You are a careful evaluator of video sentiment explanations. You answer with a score only."

ATR_R_PROMPT = """\
Rate how rational a generated attribution of a video's visual sentiment is, compared with the ground truth.

Ground-truth visual sentiment: {label}
Ground-truth cause: {cause}
Generated attribution: {attribution}

Judge two criteria together:
1. Sentiment overlap: does the generated attribution express the same visual sentiment as the ground truth?
2. Sentiment clue overlap: does it give the same clues (facial expression, human action, object relations, visual \
background) as the ground-truth cause?

Give one integer score from 1 to 10, where 1 means completely wrong and 10 means fully consistent with the ground \
truth. Answer in the form "Score: N"."""

EVAL_INSTALL_HINT = "pip install 'omnisila-icm[eval]'"


@lru_cache
def is_openai_available() -> bool:
    return importlib.util.find_spec("openai") is not None


def build_judge_prompt(attribution: str, cause: str, label: str, template: str = ATR_R_PROMPT) -> str:
    return template.format(attribution=attribution.strip(), cause=cause.strip(), label=label)


_NUM = r"(?<![-\d.])(\d{1,2}(?:\.\d+)?)"  # not part of a negative or longer number
_SCORE_PATTERNS = (
    re.compile(r"score\W{0,3}(?:is|of|:|=)?\s*\**\s*" + _NUM + r"(?!\d)", re.IGNORECASE),
    re.compile(_NUM + r"\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE),
    re.compile(_NUM + r"(?![\d.]|\s*/\s*\d)"),
)


def parse_judge_score(text: object) -> float | None:
    """The 1–10 score in a judge's answer, or None when there is no readable score in range."""
    if not isinstance(text, str):
        return None
    text = text.strip()[:2000]
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            obj = next((v for k, v in obj.items() if str(k).lower() in ("score", "rating")), None)
        if isinstance(obj, (int, float)) and not isinstance(obj, bool) and 1 <= obj <= 10:
            return float(obj)
    except (ValueError, TypeError):
        pass
    for pattern in _SCORE_PATTERNS:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            return value if 1 <= value <= 10 else None
    return None


class OpenAIJudge:
    """An Atr-R judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        model: the model name the endpoint serves (the paper used ChatGPT).
        base_url: endpoint root, e.g. ``http://localhost:8000/v1`` (vLLM) or ``http://localhost:11434/v1`` (Ollama);
            ``None`` is OpenAI (or ``$OPENAI_BASE_URL``).
        api_key: key; default ``$OPENAI_API_KEY``, else ``"EMPTY"`` (local servers ignore it).
        temperature, max_tokens, timeout, max_retries: request settings (deterministic and short by default).
        system_prompt: the system message.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 16,
        timeout: float = 60.0,
        max_retries: int = 2,
        system_prompt: str = ATR_R_SYSTEM_PROMPT,
    ):
        if not is_openai_available():
            raise ImportError(f"OpenAIJudge needs the package 'openai', which is not installed: {EVAL_INSTALL_HINT}")
        import openai

        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            max_retries=max_retries,
        )

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        import openai

        answers, errors = [], []
        for prompt in prompts:
            try:
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}],
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                )
                answers.append(response.choices[0].message.content or "")
            except openai.APIError as error:  # a failed item is unparsed (counted), the run goes on
                errors.append(error)
                answers.append(f"error: {error}")
        if prompts and len(errors) == len(prompts):  # nothing got through: a wrong URL, key or model, not bad items
            raise RuntimeError(f"the Atr-R judge at {self.client.base_url} failed on every prompt: {errors[0]}")
        return answers


class TransformersJudge:
    """An Atr-R judge run locally with a transformers causal LM (greedy decoding).

    Args:
        model: a ``PreTrainedModel`` or a name/path for ``AutoModelForCausalLM.from_pretrained``.
        tokenizer: its tokenizer (default: loaded from ``model``'s name/path).
        max_new_tokens: answer length (a score needs few tokens).
        batch_size: prompts per ``generate`` call (left padding).
        device: where to run (``"cpu"`` by default).
        system_prompt: the system message when the tokenizer has a chat template.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        max_new_tokens: int = 8,
        batch_size: int = 4,
        device: str = "cpu",
        system_prompt: str = ATR_R_SYSTEM_PROMPT,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, (str, os.PathLike)):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if tokenizer is None:
            raise ValueError("TransformersJudge: give the tokenizer when the model is an instance")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = device
        self.system_prompt = system_prompt

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{self.system_prompt}\n\n{prompt}\n\nScore:"

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        answers: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [self._text(p) for p in prompts[i : i + self.batch_size]]
            inputs = tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
            with torch.no_grad():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return answers


def judge_from_spec(spec: str, base_url: str | None = None):
    """The Atr-R judge a command line names: ``openai:MODEL`` (an OpenAI-compatible server; ``base_url`` for a local
    one) or ``local:PATH`` (a transformers chat model folder, e.g. SmolLM2-Instruct). A malformed spec raises a
    ``ValueError`` naming it; a local model that cannot be loaded raises ``OSError``."""
    kind, _, target = str(spec).partition(":")
    if kind not in ("openai", "local") or not target:
        raise ValueError(f"judge {spec!r}: expected openai:MODEL or local:PATH")
    if kind == "openai":
        return OpenAIJudge(target, base_url=base_url)
    if not os.path.isdir(target):
        raise FileNotFoundError(f"judge {spec!r}: {target} is not a model folder")
    return TransformersJudge(target)


def atr_r_scores(
    attributions: Sequence[str],
    causes: Sequence[str],
    labels: Sequence[str],
    judge: Callable[[list[str]], list[str]],
    template: str = ATR_R_PROMPT,
) -> np.ndarray:
    """Per-example judge scores on 1–10 (1 for an empty attribution, NaN where the answer had no readable score)."""
    if not (len(attributions) == len(causes) == len(labels)):
        raise ValueError(f"{len(attributions)} attributions, {len(causes)} causes and {len(labels)} labels")
    scores = np.full(len(attributions), math.nan)
    ask = [i for i, a in enumerate(attributions) if a.strip()]
    scores[[i for i, a in enumerate(attributions) if not a.strip()]] = 1.0
    if ask:
        prompts = [build_judge_prompt(attributions[i], causes[i], labels[i], template) for i in ask]
        answers = list(judge(prompts))
        if len(answers) != len(prompts):
            raise ValueError(f"the judge returned {len(answers)} answers for {len(prompts)} prompts")
        for i, answer in zip(ask, answers):
            value = parse_judge_score(answer)
            if value is not None:
                scores[i] = value
    return scores

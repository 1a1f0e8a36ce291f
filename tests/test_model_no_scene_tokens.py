"""The Video-LLaVA baseline switch (``IcmConfig.use_scene_tokens=False``, recipe ``video-llava``): the backbone
alone — no ICM parameter, no ``<scene>`` placeholder, and exactly the backbone's own logits."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, random_frames, random_scene_inputs

from modeling_icm import templates as T
from modeling_icm.configuration_icm import IcmConfig
from modeling_icm.modeling_icm import IcmForVideoSentiment
from trainers.presets import tiny_icm, tiny_icm_config, tiny_processor
from trainers.recipe import load_recipe


@pytest.fixture(scope="module")
def baseline(tiny_tokenizer):
    config = tiny_icm_config(tiny_tokenizer, use_scene_tokens=False)
    return make_tiny_model(config), tiny_processor(tiny_tokenizer, num_scene_tokens=config.num_scene_placeholders)


def test_no_icm_parameters_and_the_config_round_trips(baseline, tmp_path):
    model, _ = baseline
    assert model.sbm is None and model.iec is None and model.scene_projector is None and model.scene_norm is None
    assert all(name.startswith("backbone.") for name, _ in model.named_parameters())
    assert model.config.active_scenes == [] and model.config.num_scene_placeholders == 0
    parts = model.num_parameters_by_part()
    assert parts["icm_total"] == 0 and parts["total"] == parts["backbone"]
    model.save_pretrained(tmp_path)
    assert IcmConfig.from_pretrained(tmp_path).use_scene_tokens is False
    reloaded = IcmForVideoSentiment.from_pretrained(tmp_path)
    assert reloaded.sbm is None
    for (name, p), (_, q) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(p, q), name


def test_the_logits_are_the_backbones_own(baseline):
    model, processor = baseline
    batch = processor(random_frames(2), text=[T.combined_instruction("implicit")] * 2)
    assert not bool((batch["input_ids"] == processor.scene_token_id).any())  # no <scene> placeholder at all
    assert batch["scene_features"] is None  # and no extractor ran
    with torch.no_grad():
        ours = model(**batch).logits
        backbone = model.backbone(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            pixel_values_videos=batch["pixel_values_videos"],
        ).logits  # fmt: skip
    torch.testing.assert_close(ours, backbone)


def test_scene_features_are_ignored_and_the_loss_is_the_lm_loss(baseline):
    model, processor = baseline
    feats, masks = random_scene_inputs(model.config)
    answers = [T.combined_answer("implicit", "Fire", [[1, 3]], "flames")] * 2
    frames = random_frames(2)
    text = [T.combined_instruction("implicit")] * 2
    with_scenes = processor(frames, text=text, answers=answers, scene_features=feats, scene_masks=masks)
    without = processor(frames, text=text, answers=answers)
    with torch.no_grad():
        a, b = model(**with_scenes), model(**without)
    torch.testing.assert_close(a.logits, b.logits)
    assert a.router_loss is None and a.loss == a.lm_loss


def test_placeholders_for_a_model_without_scene_tokens_are_named(baseline, tiny_tokenizer):
    model, _ = baseline
    full = tiny_processor(tiny_tokenizer)  # writes 8 <scene> placeholders
    batch = full(random_frames(1), text=[T.combined_instruction("implicit")], **dict(zip(
        ("scene_features", "scene_masks"), random_scene_inputs(model.config, num_items=(2,)))))  # fmt: skip
    with pytest.raises(ValueError, match="scene token count mismatch"):
        model(**batch)


def test_generation_runs_without_scene_tokens(tiny_tokenizer):
    from inference.generation import generate_answers

    model, processor = tiny_icm(seed=0, use_scene_tokens=False)
    assert processor.num_scene_tokens == 0
    answers = generate_answers(model.eval(), processor, random_frames(2), [list(range(8))] * 2,
                               T.combined_instruction("implicit"), "implicit", max_new_tokens=6)  # fmt: skip
    assert len(answers) == 2 and answers[0]["router_probs"] == [] and answers[0]["scenes"] == []


def test_the_video_llava_recipe_is_the_paper_recipe_without_scene_tokens():
    baseline, paper = load_recipe("video-llava"), load_recipe("paper")
    assert baseline["ablation"]["scene_tokens"] is False and paper["ablation"]["scene_tokens"] is True
    for key in ("data", "training", "stages", "features", "evaluate"):
        assert baseline[key] == paper[key], key
    assert {k: v for k, v in baseline["ablation"].items() if k != "scene_tokens"} == {
        k: v for k, v in paper["ablation"].items() if k != "scene_tokens"
    }


def test_kmeans_initialisation_is_skipped_and_says_why(baseline):
    from trainers.kmeans_init import initialize_iec_dictionary

    model, _ = baseline
    assert initialize_iec_dictionary(model, []) == {"skipped": "use_scene_tokens=False"}

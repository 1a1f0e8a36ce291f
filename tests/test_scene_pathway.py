"""The scene pathway: the scene-only ablation (``IcmConfig.use_video_tokens=False``, ``ablation.video_tokens``), the
readings of Eq. 2 and of the scene normalisation, and the diagnostics that tell whether the clip reaches the answer
through the scene tokens (``trainers.diagnostics``)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_model, random_frames, random_scene_inputs

from modeling_icm import templates as T
from modeling_icm.configuration_icm import IcmConfig
from modeling_icm.modeling_icm import IcmForVideoSentiment, router_balance_loss
from trainers.presets import tiny_icm_config, tiny_processor

LABELS = ["Fighting", "Fire", "Theft", "Robbery"]
DIMS = {"face": 24, "action": 20, "object": 28, "background": 16}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"use_scene_tokens": False, "use_video_tokens": False}, "both False"),
        ({"router_balance": "even"}, "router_balance must be"),
        ({"scene_norm_type": "group"}, "scene_norm_type must be"),
        ({"scene_feature_norm": "minmax"}, "scene_feature_norm must be"),
    ],
)
def test_bad_pathway_settings_are_named(tiny_tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_icm_config(tiny_tokenizer, **kwargs)


@pytest.fixture(scope="module")
def scene_only(tiny_tokenizer):
    config = tiny_icm_config(tiny_tokenizer, use_video_tokens=False)
    processor = tiny_processor(tiny_tokenizer, num_scene_tokens=config.num_scene_placeholders, use_video=False)
    return make_tiny_model(config), processor


def _batch(processor, config, count=2, seed=0):
    feats, masks = random_scene_inputs(config, num_items=(3, 2)[:count], seed=seed)
    return processor(random_frames(count), text=[T.identify_instruction("implicit")] * count,
                     scene_features=feats, scene_masks=masks)  # fmt: skip


def test_scene_only_prompt_has_no_video_tokens_and_the_tower_never_runs(scene_only):
    model, processor = scene_only
    batch = _batch(processor, model.config)
    assert batch.get("pixel_values_videos") is None
    assert not bool((batch["input_ids"] == processor.video_token_id).any())
    assert int((batch["input_ids"] == processor.scene_token_id).sum()) == 2 * model.config.num_scene_placeholders
    tower = model.backbone.model.video_tower
    calls = []
    handle = tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            plain = model(**batch).logits
            # pixel values given anyway are ignored: same logits, and still no tower call
            full = tiny_processor(processor.tokenizer)(random_frames(2), text=["x"] * 2)
            ignored = model(**{**batch, "pixel_values_videos": full["pixel_values_videos"]}).logits
    finally:
        handle.remove()
    assert calls == []
    torch.testing.assert_close(plain, ignored)
    # the answer depends on the scene features: they are the only clip input
    other = _batch(processor, model.config, seed=1)
    with torch.no_grad():
        assert not torch.allclose(model(**other).logits, plain)


def test_a_video_prompt_for_a_scene_only_processor_is_named(scene_only):
    _, processor = scene_only
    with pytest.raises(ValueError, match="use_video=False"):
        processor.build_prompt(T.build_prompt("say", [0.0], processor.num_scene_tokens, with_video=True), [0.0])


def test_scene_only_model_and_processor_round_trip(scene_only, tmp_path):
    from modeling_icm.processing_icm import IcmProcessor

    model, processor = scene_only
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert IcmConfig.from_pretrained(tmp_path).use_video_tokens is False
    assert IcmProcessor.from_pretrained(tmp_path).use_video is False
    reloaded = IcmForVideoSentiment.from_pretrained(tmp_path).eval()
    batch = _batch(processor, model.config)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


def test_scene_only_recipes_and_grid_rows():
    from trainers.compare import load_grid
    from trainers.recipe import load_recipe

    assert load_recipe("demo-scene-only")["ablation"]["video_tokens"] is False
    demo = load_recipe("demo")
    assert demo["ablation"]["video_tokens"] is True
    for grid in ("mini", "paper"):
        rows = {s["name"]: s for s in load_grid(grid)["systems"]}
        assert "w/o video" in rows, grid


# ---- Eq. 2 ----------------------------------------------------------------------------------------------------


def _loss(probs, dims, reading):
    share = torch.tensor(dims, dtype=torch.float32) / sum(dims)
    return float(router_balance_loss(probs, share, alpha=0.0, beta=1.0, reading=reading))


@pytest.mark.parametrize(
    "dims,probs,expected",
    [
        # even load over equal experts: L * sum_j (1/L * 1/L) * L ... = 1
        ([8, 8], [[0.9, 0.1], [0.1, 0.9]], 1.0),
        # every token on expert 0 (equal dims): G = (1, 0) so L * H_0 = 2 * 0.9
        ([8, 8], [[0.9, 0.1], [0.9, 0.1]], 1.8),
        # every token on the larger expert costs more than on the smaller one
        ([4, 12], [[0.1, 0.9], [0.1, 0.9]], 2 * 1.5 * 0.9),
        ([4, 12], [[0.9, 0.1], [0.9, 0.1]], 2 * 0.5 * 0.9),
    ],
)
def test_dispatch_reading_of_eq2(dims, probs, expected):
    assert math.isclose(_loss(torch.tensor(probs), dims, "dispatch"), expected, rel_tol=1e-5)


def test_dimension_share_reading_is_smallest_on_the_smallest_expert():
    """The paper's constant G_j: the balance term is lowest with every token on the smallest scene, whatever the
    load -- the reading under which the router ends on one expert (docs/scene-pathway.md)."""
    dims = [32, 187]
    on_small = _loss(torch.tensor([[0.99, 0.01]] * 4), dims, "dimension_share")
    even = _loss(torch.tensor([[0.5, 0.5]] * 4), dims, "dimension_share")
    assert on_small < even
    with pytest.raises(ValueError, match="router balance reading"):
        _loss(torch.tensor([[0.5, 0.5]]), dims, "nope")


def test_dispatch_reading_gradient_reaches_the_router_probabilities():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]], requires_grad=True)
    share = torch.tensor([0.5, 0.5])
    router_balance_loss(probs, share, alpha=0.0, beta=1.0, reading="dispatch").backward()
    # every token dispatched to expert 0: only H_0 is penalised, pushing its probability down
    assert probs.grad[:, 0].gt(0).all() and probs.grad[:, 1].eq(0).all()


# ---- the normalisation of the scene tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,module", [
    ("scene_norm_type", "batch", "scene_norm"),
    ("iec_output_norm", True, "iec.output_norm"),
    ("scene_feature_norm", "standardize", "sbm.feature_norms"),
])  # fmt: skip
def test_normalisation_options_build_load_and_keep_the_default_keys(tiny_tokenizer, tmp_path, field, value, module):
    default = make_tiny_model(tiny_icm_config(tiny_tokenizer))
    model = make_tiny_model(tiny_icm_config(tiny_tokenizer, **{field: value}))
    assert model.get_submodule(module) is not None
    extra = set(model.state_dict()) - set(default.state_dict())
    assert all(k.startswith(module) for k in extra), extra
    model.save_pretrained(tmp_path)
    reloaded = IcmForVideoSentiment.from_pretrained(tmp_path).eval()
    processor = tiny_processor(tiny_tokenizer)
    feats, masks = random_scene_inputs(model.config)
    batch = processor(random_frames(2), text=["say"] * 2, scene_features=feats, scene_masks=masks)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


def test_iec_output_norm_bounds_y_iec(tiny_tokenizer):
    model = make_tiny_model(tiny_icm_config(tiny_tokenizer, iec_output_norm=True))
    with torch.no_grad():
        model.iec.ffn.apply(lambda m: m.bias.fill_(50.0) if isinstance(m, torch.nn.Linear) else None)
        feats, masks = random_scene_inputs(model.config)
        from modeling_icm.scene_contract import collate_scene_features

        f, m = collate_scene_features(list(zip(feats, masks)))
        encoding = model.encode_scenes(f, m)
    width = model.config.expert_hidden_size
    assert encoding.y_iec.norm(dim=-1).max() < 2 * math.sqrt(width)


def test_iec_attention_shares_are_the_self_sampling_attention_the_model_uses(tiny_tokenizer):
    from modeling_icm.scene_contract import collate_scene_features
    from trainers.diagnostics import iec_attention_shares, iec_self_sampling_weights

    model = make_tiny_model(tiny_icm_config(tiny_tokenizer))
    feats, masks = random_scene_inputs(model.config, num_items=(3, 2, 4))
    f, m = collate_scene_features(list(zip(feats, masks)))
    attention = model.iec.self_sampling
    used = {}
    hook = attention.register_forward_hook(lambda mod, args, out: used.setdefault("out", out))
    weights, values = iec_self_sampling_weights(model, f, m)
    hook.remove()
    b, heads, frames, _ = weights.shape
    recomputed = attention.o_proj((weights @ values).transpose(1, 2).reshape(b, frames, -1))
    torch.testing.assert_close(recomputed, used["out"], rtol=1e-4, atol=1e-5)  # the weights the module applied
    shares = iec_attention_shares(model, f, m)
    experts = len(model.config.active_scenes)
    assert shares.shape == (3, 1 + experts)
    torch.testing.assert_close(shares.sum(-1), torch.ones(3))
    absent = [j for j, s in enumerate(model.config.active_scenes) if not any(mk[s].any() for mk in masks)]
    assert all(float(shares[:, 1 + j].max()) == 0.0 for j in absent)  # a scene absent everywhere is never read


def test_iec_attention_shares_name_a_model_without_iec(tiny_tokenizer):
    from trainers.diagnostics import iec_attention_shares

    model = make_tiny_model(tiny_icm_config(tiny_tokenizer, use_iec=False))
    feats, masks = random_scene_inputs(model.config)
    with pytest.raises(ValueError, match="no IEC"):
        iec_attention_shares(model, {s: feats[0][s][None] for s in feats[0]}, {s: masks[0][s][None] for s in masks[0]})


def _examples_from(config, count=6, seed=0):
    """Example dicts (scene_features / scene_masks per clip) of random scene inputs, scaled per dimension."""
    feats, masks = random_scene_inputs(config, num_items=tuple(range(1, count + 1)), seed=seed)
    scale = {s: torch.logspace(-3, 1, config.scene_dims[s]) for s in config.scene_dims}
    return [
        {"clip_id": f"c{i}", "scene_features": {s: v * scale[s] + 5.0 for s, v in f.items()}, "scene_masks": m}
        for i, (f, m) in enumerate(zip(feats, masks))
    ]


@pytest.mark.parametrize("use_sbm", [True, False])
def test_scene_standardization_is_fitted_on_present_items_and_saved(tiny_tokenizer, tmp_path, use_sbm):
    from trainers.scene_stats import fit_scene_standardization

    config = tiny_icm_config(tiny_tokenizer, scene_feature_norm="standardize", use_sbm=use_sbm)
    model = make_tiny_model(config)
    examples = _examples_from(config)
    counts = fit_scene_standardization(model, examples + examples)  # a clip seen twice counts once
    for scene in config.active_scenes:
        rows = torch.cat([
            torch.as_tensor(e["scene_features"][scene]).reshape(-1, config.scene_dims[scene])[
                torch.as_tensor(e["scene_masks"][scene]).reshape(-1).bool()]
            for e in examples
        ])  # fmt: skip
        assert counts[scene] == len(rows)
        norm = model.sbm.feature_norms[scene]
        torch.testing.assert_close(norm.mean, rows.mean(0).float(), rtol=1e-5, atol=1e-5)
        standardised = norm(rows.float())
        spread = standardised.std(0, unbiased=False)
        assert spread.max() < 1.0 + 1e-3 and spread[-1] > 0.99  # unit where the variance is well above the floor
        assert spread[0] < 0.2  # a dimension of std 1e-3 is scaled by at most 1/sqrt(VARIANCE_FLOOR)
        assert standardised.mean(0).abs().max() < 1e-3
    model.save_pretrained(tmp_path)
    reloaded = IcmForVideoSentiment.from_pretrained(tmp_path)
    for scene in config.active_scenes:
        torch.testing.assert_close(reloaded.sbm.feature_norms[scene].std, model.sbm.feature_norms[scene].std)


def test_scene_standardization_skips_a_model_that_does_not_standardise(tiny_tokenizer):
    from trainers.scene_stats import fit_scene_standardization

    model = make_tiny_model(tiny_icm_config(tiny_tokenizer))
    assert model.sbm.feature_norms is None
    assert "skipped" in fit_scene_standardization(model, _examples_from(model.config))


# ---- diagnostics -------------------------------------------------------------------------------------------------


def test_relative_spread():
    from trainers.diagnostics import relative_spread

    same = torch.ones(4, 3, 5)
    assert relative_spread(same) == 0.0
    assert relative_spread(torch.ones(1, 3)) == 0.0
    varied = torch.stack([torch.full((3,), 1.0), torch.full((3,), 3.0)])  # mean 2, std sqrt(2)
    assert math.isclose(relative_spread(varied), math.sqrt(2) / 2, rel_tol=1e-6)


def test_diagnostics_tell_a_collapsed_scene_pathway_from_a_working_one(scene_only):
    """A fresh model: spread and sensitivity > 0. The same model with its scene projector forced to one constant
    output: spread 0, sensitivity 0 and the collapse warning."""
    import copy

    from trainers.diagnostics import collapse_warning, scene_diagnostics
    from trainers.presets import label_coded_scene_examples

    model, processor = scene_only
    examples = label_coded_scene_examples(model.config.scene_dims, LABELS, 6, seed=0)
    fresh = scene_diagnostics(model, processor, examples, batch_size=3)
    assert fresh["clips"] == 6 and fresh["scene_spread"] > 0.05 and fresh["scene_sensitivity"] > 0
    assert set(fresh) >= {"scene_norm_ratio", "scene_token_norm", "text_embedding_norm"}
    assert math.isclose(sum(v for k, v in fresh.items() if k.startswith("router_weight/")), 1.0, rel_tol=1e-4)
    assert collapse_warning(fresh) is None

    collapsed = copy.deepcopy(model)
    with torch.no_grad():
        collapsed.scene_projector.linear_2.weight.zero_()
        collapsed.scene_projector.linear_2.bias.normal_()
    found = scene_diagnostics(collapsed, processor, examples, batch_size=3)
    assert found["scene_spread"] < 1e-6 and found["scene_sensitivity"] < 1e-6
    warning = collapse_warning(found, before=fresh)
    assert warning and "at initialisation" in warning


def test_scene_probe_reads_the_label_from_the_scene_features():
    from trainers.diagnostics import pooled_scene_features, scene_probe
    from trainers.presets import label_coded_scene_examples

    train = label_coded_scene_examples(DIMS, LABELS, 24, seed=1)
    test = label_coded_scene_examples(DIMS, LABELS, 12, seed=2)
    pooled = pooled_scene_features(train[0], list(DIMS))
    assert pooled.shape == (2 * sum(DIMS.values()),)
    assert not pooled[: 2 * DIMS["face"]].any()  # an absent scene pools to zeros
    found = scene_probe(train + train, test, list(DIMS))  # a clip seen twice (two tasks) counts once
    assert found["train_clips"] == 24 and found["eval_clips"] == 12 and found["chance"] == 0.25
    assert found["probe_acc"] == 1.0
    # features that carry no label: the probe stays near chance
    noise = label_coded_scene_examples(DIMS, LABELS, 12, seed=3, noise=50.0)
    assert scene_probe(train, noise, list(DIMS))["probe_acc"] <= 0.5
    assert scene_probe(train[:1], test, list(DIMS)) is None  # one label: nothing to learn


@pytest.mark.parametrize(
    "statistics, expected",
    [
        (("mean", "max"), [2.0, 4.0, 3.0, 6.0]),  # the default: the recipes' and the event probe's pooling
        (("min",), [1.0, 2.0]),
        (("std",), [1.0, 2.0]),  # population std over the present items
        (("mean", "max", "min", "std"), [2.0, 4.0, 3.0, 6.0, 1.0, 2.0, 1.0, 2.0]),
    ],
)
def test_pooled_scene_features_takes_each_statistic_over_the_present_items(statistics, expected):
    from inference.events import pooled_scene_features

    # two frames, two item slots; the slot masked out holds a value that would change every statistic
    feats = torch.tensor([[[1.0, 2.0], [99.0, 99.0]], [[3.0, 6.0], [-99.0, -99.0]]])
    example = {"scene_features": {"face": feats}, "scene_masks": {"face": torch.tensor([[True, False], [True, False]])}}
    assert pooled_scene_features(example, ["face"], statistics).tolist() == expected
    absent = {"scene_features": {"face": feats}, "scene_masks": {"face": torch.zeros(2, 2, dtype=torch.bool)}}
    assert pooled_scene_features(absent, ["face"], statistics).tolist() == [0.0] * len(expected)
    if statistics == ("mean", "max"):
        assert pooled_scene_features(example, ["face"]).tolist() == expected


def test_pooled_scene_features_names_an_unknown_statistic():
    from inference.events import pooled_scene_features

    example = {"scene_features": {"face": torch.ones(1, 1, 2)}}
    with pytest.raises(ValueError, match=r"'median'.*one of \['mean', 'max', 'min', 'std'\]"):
        pooled_scene_features(example, ["face"], ("mean", "median"))


# ---- the scene-only test of the pathway: the label is only in the scene features ----------------------------------


def test_scene_only_training_carries_the_scene_to_the_answer(tmp_path):
    """A tiny ICM trained scene-only on clips whose label is written only in their scene features answers held-out
    clips well above chance (1/4), and its trained scene tokens still differ across clips."""
    from trainers import IcmTrainer, IcmTrainingArguments
    from trainers.diagnostics import scene_diagnostics
    from trainers.evaluation import generate_example_answers
    from trainers.kmeans_init import initialize_iec_dictionary
    from trainers.presets import label_coded_scene_examples, tiny_icm

    train = label_coded_scene_examples(DIMS, LABELS, 32, seed=1, noise=2.0)
    test = label_coded_scene_examples(DIMS, LABELS, 16, seed=2, noise=2.0)
    model, processor = tiny_icm(DIMS, corpus=[e["answer"] for e in train], seed=0, use_video_tokens=False)
    before = scene_diagnostics(model, processor, test)
    initialize_iec_dictionary(model, train, seed=0)
    args = IcmTrainingArguments(
        output_dir=str(tmp_path), max_steps=100, per_device_train_batch_size=8, learning_rate=3e-3,
        lr_scheduler_type="constant_with_warmup", warmup_steps=0.03, logging_steps=50,
        lora_modules_to_save=["embed_tokens", "lm_head"], save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True, report_to="none",
    )  # fmt: skip
    trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=train)
    trainer.train()
    after = scene_diagnostics(trainer.model, processor, test)
    answers = generate_example_answers(trainer.model, processor, test, batch_size=16, max_new_tokens=12)
    correct = sum(T.identify_answer("implicit", e["label"]) in a for a, e in zip(answers, test))
    assert correct / len(test) >= 0.75, answers
    assert after["scene_spread"] >= 0.5 * before["scene_spread"], (before, after)
    assert after["scene_sensitivity"] > 0.05, after
    logged = [h for h in trainer.state.log_history if "scene_spread" in h]
    assert len(logged) == 2

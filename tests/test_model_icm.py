"""The ICM model: config, SBM, IEC, the Video-LLaVA wiring, save/load and generation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_tiny_model, random_frames, random_scene_inputs

from modeling_icm import templates as T
from modeling_icm.configuration_icm import IcmConfig
from modeling_icm.modeling_icm import (
    IcmForVideoSentiment,
    ImplicitEnhancedCausal,
    SceneBalancedMoE,
    router_balance_loss,
)
from trainers.presets import tiny_icm_config


def make_batch(processor, config, n=2, seed=0, answers=None, num_items=None):
    feats, masks = random_scene_inputs(config, num_items=num_items or tuple(3 - i % 2 for i in range(n)), seed=seed)
    return processor(
        random_frames(n, seed=seed),
        text=[T.combined_instruction("implicit")] * n,
        answers=answers,
        scene_features=feats,
        scene_masks=masks,
    )


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


def test_default_config_reproduces_the_paper():
    cfg = IcmConfig()
    bb = cfg.backbone_config
    assert type(bb).__name__ == "VideoLlavaConfig"
    assert (bb.image_token_index, bb.video_token_index) == (32000, 32001)
    assert bb.text_config.pad_token_id == 32002 and bb.text_config.vocab_size == 32064
    assert bb.text_config.hidden_size == 4096 and bb.text_config.num_hidden_layers == 32
    assert bb.vision_config.hidden_size == 1024 and bb.vision_config.patch_size == 14
    assert bb.vision_feature_layer == -2
    assert cfg.enabled_scenes == ["face", "action", "object", "background"]
    assert cfg.expert_num_layers == 8 and cfg.router_alpha == 1e-4 and cfg.router_beta == 1e-2
    assert cfg.use_sbm and cfg.use_iec and cfg.num_frames == 8


def test_config_round_trip(tmp_path):
    cfg = IcmConfig(enabled_scenes=["action", "face"], use_iec=False, router_alpha=0.5)
    cfg.save_pretrained(tmp_path)
    back = IcmConfig.from_pretrained(tmp_path)
    assert back.to_dict() == cfg.to_dict()
    assert back.enabled_scenes == ["face", "action"]  # paper order


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"scene_dims": {"face": 0}}, "scene_dims['face']"),
        ({"scene_dims": {"smell": 3}}, "scene_dims has unknown scene"),
        ({"enabled_scenes": []}, "enabled_scenes"),
        ({"enabled_scenes": ["face", "face"]}, "duplicates"),
        ({"enabled_scenes": ["sound"]}, "enabled_scenes has unknown scene"),
        ({"expert_num_layers": 0}, "expert_num_layers"),
        ({"expert_hidden_size": 100, "expert_num_heads": 16}, "expert_hidden_size"),
        ({"num_scene_tokens": 9}, "num_scene_tokens"),
        ({"router_alpha": -1.0}, "router_alpha"),
        ({"router_beta": "big"}, "router_beta"),
        ({"scene_token_id": 32001}, "scene_token_id"),
        ({"scene_token_id": 99999}, "scene_token_id"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        IcmConfig(**kwargs)


def test_7b_preset_on_meta_device_counts_parameters():
    with torch.device("meta"):
        model = IcmForVideoSentiment(IcmConfig())
    parts = model.num_parameters_by_part()
    print("7B preset parameters:", {k: f"{v / 1e6:.1f}M" for k, v in parts.items()})
    assert 7.0e9 < parts["backbone"] < 7.5e9  # LLaMA-7B + two CLIP ViT-L/14 towers
    # four experts of 8 layers at width 1024: ~12.6M per layer
    assert 3.5e8 < parts["sbm"] < 4.5e8
    assert parts["iec"] > 0 and parts["icm_total"] < 0.1 * parts["backbone"]


# ---------------------------------------------------------------------------------------------------------------
# SBM router loss (Eq. 2) and ablations
# ---------------------------------------------------------------------------------------------------------------


def test_router_loss_equals_eq2_on_known_probabilities():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0]])
    share = torch.tensor([512.0, 595.0, 868.0, 768.0])
    share = share / share.sum()
    alpha, beta = 1e-4, 1e-2
    entropy = [-(p * torch.log(p)).nansum() for p in probs]  # 0·log 0 = 0
    h_mean = sum(entropy) / 3
    mean_gate = probs.mean(0)
    expected = alpha * h_mean + beta * 4 * (share * mean_gate).sum()
    got = router_balance_loss(probs, share, alpha, beta)
    assert torch.allclose(got, expected, atol=1e-7)
    assert router_balance_loss(probs, share, 0.0, 0.0) == 0
    # invalid tokens do not count
    valid = torch.tensor([True, True, False])
    sub = router_balance_loss(probs[:2], share, alpha, beta)
    assert torch.allclose(router_balance_loss(probs, share, alpha, beta, valid), sub)


def test_model_router_loss_matches_eq2_on_its_own_probabilities(tiny_config):
    model = make_tiny_model(tiny_config)
    feats, masks = random_scene_inputs(tiny_config, num_items=(3,))
    batch = {s: f.unsqueeze(0) for s, f in feats[0].items()}
    mbatch = {s: m.unsqueeze(0) for s, m in masks[0].items()}
    enc = model.encode_scenes(batch, mbatch)
    assert torch.allclose(enc.router_probs.sum(-1)[enc.frame_valid], torch.ones(int(enc.frame_valid.sum())))
    expected = router_balance_loss(
        enc.router_probs, model.sbm.dimension_share, tiny_config.router_alpha, tiny_config.router_beta, enc.frame_valid
    )
    assert torch.allclose(enc.router_loss, expected)
    zero = make_tiny_model(
        tiny_icm_config(None, router_alpha=0.0, router_beta=0.0, scene_token_id=tiny_config.scene_token_id)
    )
    assert zero.encode_scenes(batch, mbatch).router_loss == 0


def test_router_dimension_share_sets_g_j_by_hand(tiny_config):
    """G_j of Eq. 2 is each scene's share of the input dimension unless the config gives the shares; the shares
    given are normalised, kept in the saved config, and a share for an enabled scene that is missing or not positive
    is refused naming the field."""
    dims = torch.tensor([float(tiny_config.scene_dims[s]) for s in tiny_config.enabled_scenes])
    assert torch.allclose(make_tiny_model(tiny_config).sbm.dimension_share, dims / dims.sum())
    given = {s: float(i + 1) for i, s in enumerate(tiny_config.enabled_scenes)}
    config = tiny_icm_config(None, router_dimension_share=given, scene_token_id=tiny_config.scene_token_id)
    share = make_tiny_model(config).sbm.dimension_share
    expected = torch.tensor(list(given.values()))
    assert torch.allclose(share, expected / expected.sum())
    assert IcmConfig.from_dict(config.to_dict()).router_dimension_share == given
    for bad in ({tiny_config.enabled_scenes[0]: 1.0}, {**given, tiny_config.enabled_scenes[0]: 0.0}):
        with pytest.raises(ValueError, match="router_dimension_share"):
            tiny_icm_config(None, router_dimension_share=bad)


def test_absent_scene_gets_no_router_weight(tiny_config):
    model = make_tiny_model(tiny_config)
    feats, masks = random_scene_inputs(tiny_config, num_items=(2,))
    masks[0]["face"][:] = False  # no face anywhere in the clip
    masks[0]["action"][3] = False  # no person in frame 3
    enc = model.encode_scenes(
        {s: f.unsqueeze(0) for s, f in feats[0].items()}, {s: m.unsqueeze(0) for s, m in masks[0].items()}
    )
    scenes = tiny_config.active_scenes
    assert torch.all(enc.router_probs[0, :, scenes.index("face")] == 0)
    assert enc.router_probs[0, 3, scenes.index("action")] == 0
    assert torch.isfinite(enc.scene_tokens).all()


def _param_prefixes(model):
    return {
        name.split(".")[0] + "." + name.split(".")[1]
        for name, _ in model.named_parameters()
        if not name.startswith("backbone")
    }


@pytest.mark.parametrize(
    "overrides, absent, present",
    [
        ({"use_iec": False}, ["iec."], ["sbm.experts", "sbm.router"]),
        ({"use_sbm": False}, ["sbm.experts", "sbm.router"], ["sbm.projections", "iec."]),
        ({"enabled_scenes": ["action", "object", "background"]}, ["sbm.experts.face"], ["sbm.experts.action"]),
        ({"enabled_scenes": ["face"]}, ["sbm.experts.action", "sbm.experts.object"], ["sbm.experts.face"]),
    ],
)
def test_each_ablation_switch_removes_exactly_its_part(tiny_tokenizer, overrides, absent, present):
    full = make_tiny_model(tiny_icm_config(tiny_tokenizer))
    ablated = make_tiny_model(tiny_icm_config(tiny_tokenizer, **overrides))
    full_names = {n for n, _ in full.named_parameters()}
    ablated_names = {n for n, _ in ablated.named_parameters()}
    removed = full_names - ablated_names
    for prefix in absent:
        assert any(n.startswith(prefix) for n in removed), prefix
        assert not any(n.startswith(prefix) for n in ablated_names), prefix
    for prefix in present:
        assert any(n.startswith(prefix) for n in ablated_names), prefix
    # nothing outside the ablated part is removed: the backbone and the projector are untouched
    assert not any(n.startswith(("backbone.", "scene_projector.", "scene_norm.")) for n in removed)
    if overrides.get("use_sbm") is False:
        added = ablated_names - full_names
        assert added and all(n.startswith(("sbm.projections", "sbm.frame_embedding")) for n in added)
    else:
        assert ablated_names <= full_names


def test_ablated_models_run(tiny_tokenizer, tiny_processor):
    for overrides in ({"use_iec": False}, {"use_sbm": False}, {"enabled_scenes": ["background"]}):
        cfg = tiny_icm_config(tiny_tokenizer, **overrides)
        model = make_tiny_model(cfg)
        out = model(**make_batch(tiny_processor, cfg))
        assert torch.isfinite(out.logits).all()
        if overrides.get("use_sbm") is False:
            assert out.router_probs is None and out.router_loss == 0
        else:
            assert out.router_probs.shape[-1] == len(cfg.active_scenes)


# ---------------------------------------------------------------------------------------------------------------
# IEC dictionary
# ---------------------------------------------------------------------------------------------------------------


def test_iec_dictionary_kmeans_init(tiny_config):
    model = make_tiny_model(tiny_config)
    k, d = model.iec.dictionary.shape
    centres = torch.randn(k, d) * 5
    emb = torch.cat([c + 0.01 * torch.randn(50, d) for c in centres])
    assert not bool(model.iec.dictionary_initialized)
    model.iec.initialize_dictionary_from_embeddings(emb, seed=0)
    assert bool(model.iec.dictionary_initialized)
    # every true centre is recovered by one dictionary row
    dist = torch.cdist(centres, model.iec.dictionary)
    assert dist.min(1).values.max() < 0.1
    with pytest.raises(ValueError, match="shape"):
        model.iec.fill_dictionary(torch.zeros(k + 1, d))
    with pytest.raises(ValueError, match="expert_hidden_size"):
        model.iec.initialize_dictionary_from_embeddings(torch.zeros(10, d + 1))


def test_dictionary_changes_the_output(tiny_config, tiny_processor):
    model = make_tiny_model(tiny_config)
    batch = make_batch(tiny_processor, tiny_config)
    with torch.no_grad():
        before = model(**batch).logits
        model.iec.fill_dictionary(torch.randn_like(model.iec.dictionary))
        after = model(**batch).logits
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------------------------------------------------------
# Forward, gradients, batching, generation
# ---------------------------------------------------------------------------------------------------------------


def test_loss_is_lm_plus_router(tiny_model, tiny_config, tiny_processor):
    answers = [
        T.combined_answer("implicit", "Fire", [[1, 3]], "a fire burns."),
        "The implicit visual sentiment is Normal.",
    ]
    out = tiny_model(**make_batch(tiny_processor, tiny_config, answers=answers))
    assert torch.allclose(out.loss, out.lm_loss + out.router_loss)
    assert out.router_probs.shape == (2, tiny_config.num_frames, 4)


def _unused_by_design(name: str, config) -> bool:
    """Video-LLaVA's image branch is unused for videos, and its video features come from vision layer -2, so the
    last vision layer and the post-layernorm never touch the output."""
    vision = config.backbone_config.vision_config
    last = vision.num_hidden_layers + config.backbone_config.vision_feature_layer + 1
    unused_layers = tuple(
        f"backbone.model.video_tower.encoder.layers.{i}." for i in range(last, vision.num_hidden_layers)
    )
    return (
        "image_tower" in name
        or name.startswith(unused_layers)
        or name.startswith("backbone.model.video_tower.post_layernorm")
    )


def test_every_trainable_parameter_gets_a_gradient(tiny_config, tiny_processor):
    model = make_tiny_model(tiny_config).train()
    answers = ["The implicit visual sentiment is Fire.", "The implicit visual sentiment is Theft."]
    out = model(**make_batch(tiny_processor, tiny_config, answers=answers))
    out.loss.backward()
    named = dict(model.named_parameters())
    missing = [
        n
        for n, p in named.items()
        if not _unused_by_design(n, tiny_config) and (p.grad is None or not torch.any(p.grad != 0))
    ]
    assert missing == [], missing
    assert any(_unused_by_design(n, tiny_config) for n in named)  # the exclusion is not vacuous


def test_batched_equals_single(tiny_model, tiny_config, tiny_processor):
    feats, masks = random_scene_inputs(tiny_config, num_items=(4, 1, 2), seed=3)
    frames = random_frames(3, seed=3)
    texts = [T.combined_instruction("implicit"), T.identify_instruction("explicit"), T.combined_instruction("explicit")]
    with torch.no_grad():
        batched = tiny_processor(frames, text=texts, scene_features=feats, scene_masks=masks)
        out = tiny_model(**batched).logits
        for i in range(3):
            one = tiny_processor([frames[i]], text=[texts[i]], scene_features=[feats[i]], scene_masks=[masks[i]])
            single = tiny_model(**one).logits[0]
            length = single.shape[0]
            assert torch.allclose(out[i, -length:], single, atol=1e-4), (out[i, -length:] - single).abs().max()


def test_left_padded_generation_equals_one_by_one(tiny_model, tiny_config, tiny_processor):
    feats, masks = random_scene_inputs(tiny_config, num_items=(4, 1, 2), seed=5)
    frames = random_frames(3, seed=5)
    texts = [T.combined_instruction("implicit"), T.identify_instruction("implicit"), "Describe."]
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tiny_processor.tokenizer.pad_token_id)
    with torch.no_grad():
        batch = tiny_processor(frames, text=texts, scene_features=feats, scene_masks=masks)
        assert batch["attention_mask"][:, 0].sum() < 3  # really left padded
        gen = tiny_model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1] :]
        for i in range(3):
            one = tiny_processor([frames[i]], text=[texts[i]], scene_features=[feats[i]], scene_masks=[masks[i]])
            single = tiny_model.generate(**one, **kwargs)[0, one["input_ids"].shape[1] :]
            assert gen[i, : single.shape[0]].tolist() == single.tolist()


def test_gradient_checkpointing_runs_and_matches(tiny_config, tiny_processor):
    answers = ["The implicit visual sentiment is Fire.", "The implicit visual sentiment is Theft."]
    batch = make_batch(tiny_processor, tiny_config, answers=answers)
    plain = make_tiny_model(tiny_config).train()
    ckpt = make_tiny_model(tiny_config).train()
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert ckpt.sbm.experts["face"].layers[0].gradient_checkpointing
    plain(**batch).loss.backward()
    ckpt(**batch).loss.backward()
    g1 = plain.sbm.experts["face"].input_proj.weight.grad
    g2 = ckpt.sbm.experts["face"].input_proj.weight.grad
    assert torch.allclose(g1, g2, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_bit_exact_with_dictionary(tmp_path, tiny_config, tiny_processor):
    model = make_tiny_model(tiny_config)
    model.iec.fill_dictionary(torch.randn_like(model.iec.dictionary))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "iec.dictionary" in f.keys() and "iec.dictionary_initialized" in f.keys()
    back = IcmForVideoSentiment.from_pretrained(tmp_path).eval()
    assert torch.equal(back.iec.dictionary, model.iec.dictionary) and bool(back.iec.dictionary_initialized)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    # G_j of Eq. 2 is a non-persistent buffer: from_pretrained must rebuild it, not leave uninitialised memory
    assert torch.equal(back.sbm.dimension_share, model.sbm.dimension_share)
    batch = make_batch(tiny_processor, tiny_config, answers=ROUND_TRIP_ANSWERS)
    with torch.no_grad():
        out, out_back = model(**batch), back(**batch)
    assert torch.equal(out.logits, out_back.logits)
    assert torch.equal(out.router_loss, out_back.router_loss) and torch.equal(out.loss, out_back.loss)


ROUND_TRIP_ANSWERS = [
    T.combined_answer("implicit", "Fire", [[1, 3]], "a fire burns."),
    "The implicit visual sentiment is Normal.",
]

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("modeling_icm", "processing", "trainers", "datasets_scripts", "evaluate_metrics", "icm_cli"):
        sys.modules[name] = None  # this repository must not be importable
    import torch
    from transformers import AutoModel, AutoProcessor
    path = sys.argv[1]
    ref = torch.load(path + "/reference.pt", weights_only=False)
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    assert type(model).__name__ == "IcmForVideoSentiment", type(model)
    assert type(processor).__name__ == "IcmProcessor", type(processor)
    assert "transformers_modules" in type(model).__module__
    with torch.no_grad():
        out = model(**ref["batch"])
    same = torch.equal(out.logits, ref["logits"]) and torch.equal(out.loss, ref["loss"])
    print("IDENTICAL" if same else f"DIFF logits {(out.logits - ref['logits']).abs().max()} loss {out.loss} vs {ref['loss']}")
    """
)


def test_remote_code_load_in_fresh_process_is_bit_identical(tmp_path, tiny_config, tiny_processor):
    model = make_tiny_model(tiny_config)
    model.iec.fill_dictionary(torch.randn_like(model.iec.dictionary))
    batch = make_batch(tiny_processor, tiny_config, answers=ROUND_TRIP_ANSWERS)
    with torch.no_grad():
        out = model(**batch)
    model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    assert '"auto_map"' in config and "modeling_icm.IcmForVideoSentiment" in config
    for name in ("modeling_icm.py", "configuration_icm.py", "processing_icm.py", "templates.py", "scene_contract.py"):
        assert (tmp_path / name).exists(), name
    torch.save({"batch": dict(batch), "logits": out.logits, "loss": out.loss}, tmp_path / "reference.pt")
    script = tmp_path / "remote_check.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path.parent
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IDENTICAL" in result.stdout, result.stdout + result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_bad_scene_dim_is_named(tiny_model, tiny_config, tiny_processor):
    batch = make_batch(tiny_processor, tiny_config)
    batch["scene_features"]["object"] = torch.zeros(2, 8, 3, tiny_config.scene_dims["object"] + 1)
    with pytest.raises(ValueError, match=r"scene_features\['object'\].*scene_dims\['object'\]"):
        tiny_model(**batch)


def test_missing_scene_is_named(tiny_model, tiny_config, tiny_processor):
    batch = make_batch(tiny_processor, tiny_config)
    del batch["scene_features"]["action"]
    with pytest.raises(ValueError, match="action"):
        tiny_model(**batch)


def test_scene_token_count_mismatch(tiny_model, tiny_config, tiny_processor):
    batch = make_batch(tiny_processor, tiny_config)
    ids = batch["input_ids"].clone()
    first = (ids[0] == tiny_config.scene_token_id).nonzero()[0, 0]
    ids[0, first] = tiny_processor.tokenizer.convert_tokens_to_ids("<unk>")
    batch["input_ids"] = ids
    with pytest.raises(ValueError, match="scene token count mismatch"):
        tiny_model(**batch)


def test_video_token_count_mismatch(tiny_model, tiny_config, tiny_processor):
    batch = make_batch(tiny_processor, tiny_config)
    ids = batch["input_ids"].clone()
    video_id = tiny_config.backbone_config.video_token_index
    first = (ids[1] == video_id).nonzero()[0, 0]
    ids[1, first] = tiny_processor.tokenizer.convert_tokens_to_ids("<unk>")
    batch["input_ids"] = ids
    with pytest.raises(ValueError, match="video token count mismatch"):
        tiny_model(**batch)


def test_frame_count_mismatch(tiny_model, tiny_config, tiny_processor):
    batch = make_batch(tiny_processor, tiny_config)
    batch["scene_features"] = {s: f[:, :6] for s, f in batch["scene_features"].items()}
    batch["scene_masks"] = {s: m[:, :6] for s, m in batch["scene_masks"].items()}
    with pytest.raises(ValueError, match="frame count mismatch"):
        tiny_model(**batch)


def test_scene_placeholders_without_features(tiny_model, tiny_config, tiny_processor):
    batch = make_batch(tiny_processor, tiny_config)
    del batch["scene_features"]
    with pytest.raises(ValueError, match="no scene_features"):
        tiny_model(**batch)


def test_sbm_and_iec_are_standalone_modules(tiny_config):
    sbm = SceneBalancedMoE(tiny_config)
    iec = ImplicitEnhancedCausal(tiny_config)
    feats, masks = random_scene_inputs(tiny_config, num_items=(2,))
    out = sbm({s: f.unsqueeze(0) for s, f in feats[0].items()}, {s: m.unsqueeze(0) for s, m in masks[0].items()})
    assert out.y_moe.shape == (1, tiny_config.num_frames, tiny_config.expert_hidden_size)
    y = iec(out.y_moe, out.expert_outputs.flatten(1, 2), out.available.flatten(1, 2))
    assert y.shape == out.y_moe.shape


def test_generation_never_emits_placeholder_tokens(tiny_config, tiny_processor):
    """A generated <scene>/<video> would ask the next step for features nobody gave: placeholders are suppressed."""
    model = make_tiny_model(tiny_config)

    def favour_scene(module, inputs, output):  # make <scene> the model's favourite next token everywhere
        output[..., tiny_config.scene_token_id] += 1000.0
        return output

    model.backbone.lm_head.register_forward_hook(favour_scene)
    batch = make_batch(tiny_processor, tiny_config)
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
        assert (logits.argmax(-1) == tiny_config.scene_token_id).all()
        new = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1] :]
    assert not set(new.flatten().tolist()) & set(model.placeholder_token_ids)

"""IcmTrainingArguments, LoRA placement, IcmTrainer (L = L_lm + L_rb, logging, trainable split), the collator and the
K-means dictionary initialisation — on a tiny random ICM with synthetic inputs (fast)."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_icm import templates as T

DIMS = {"face": 24, "action": 20, "object": 28, "background": 16}
ANSWERS = [
    T.combined_answer("implicit", "Fire", [[1, 3]], "orange flames flicker"),
    T.combined_answer("implicit", "Theft", [[2, 5]], "a purple box is carried away"),
]


@pytest.fixture(scope="module")
def tiny():
    from trainers.presets import synthetic_examples, tiny_icm

    torch.set_num_threads(1)  # tiny matrices: one thread is fastest
    model, processor = tiny_icm(DIMS, seed=0)
    examples = synthetic_examples(DIMS, 8, ANSWERS, T.combined_instruction("implicit"))
    return model, processor, examples


def _fresh(tiny):
    from modeling_icm.modeling_icm import IcmForVideoSentiment

    model, processor, examples = tiny
    torch.manual_seed(0)
    return IcmForVideoSentiment(model.config), processor, examples


def _args(tmp_path, **kw):
    from trainers.args import IcmTrainingArguments

    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    base.update(kw)
    return IcmTrainingArguments(**base)


@pytest.mark.parametrize(
    "field,value",
    [
        ("learning_rate", 2e-5),
        ("warmup_steps", 0.03),
        ("num_train_epochs", 3.0),
        ("per_device_train_batch_size", 8),
        ("lora_r", 16),
        ("lora_alpha", 64),
        ("lora_dropout", 0.05),
        ("router_alpha", 1e-4),
        ("router_beta", 1e-2),
        ("optim", "adamw_torch"),
        ("stage", "omnisila"),
    ],
)
def test_arguments_default_to_the_paper_recipe(tmp_path, field, value):
    from trainers.args import IcmTrainingArguments

    args = IcmTrainingArguments(output_dir=str(tmp_path))
    assert getattr(args, field) == value
    help_text = next(f.metadata.get("help", "") for f in IcmTrainingArguments.__dataclass_fields__.values()
                     if f.name == field)
    assert "§" in help_text or "Eq." in help_text  # every recipe field cites the paper


@pytest.mark.parametrize(
    "kwargs,message",
    [({"stage": "pretrain"}, "stage"), ({"router_alpha": -1.0}, "router_alpha"), ({"kmeans_backend": "x"}, "kmeans"),
     ({"icm_learning_rate": 0.0}, "icm_learning_rate")],
)
def test_bad_arguments_name_the_field(tmp_path, kwargs, message):
    from trainers.args import IcmTrainingArguments

    with pytest.raises(ValueError, match=message):
        IcmTrainingArguments(output_dir=str(tmp_path), **kwargs)


def test_warmup_ratio_sets_warmup_steps(tmp_path):
    from trainers.args import IcmTrainingArguments

    assert IcmTrainingArguments(output_dir=str(tmp_path), warmup_ratio=0.1).warmup_steps == 0.1


@pytest.mark.parametrize("icm_rate", [None, 3e-3])
def test_icm_learning_rate_gives_the_icm_modules_their_own_rate(tiny, tmp_path, icm_rate):
    from inference.loading import icm_base_model
    from trainers.trainer import IcmTrainer

    model, processor, examples = _fresh(tiny)
    args = _args(tmp_path, learning_rate=1e-4, icm_learning_rate=icm_rate, lr_scheduler_type="constant")
    trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=examples)
    trainer.train()
    base = icm_base_model(trainer.model)
    icm_ids = {id(p) for name in base.icm_module_names for p in getattr(base, name).parameters()}
    rates = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert set(rates) == trainable and sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(rates)
    assert icm_ids and icm_ids <= trainable and trainable - icm_ids  # LoRA and the ICM modules both train
    assert {rates[i] for i in icm_ids} == {icm_rate or 1e-4}
    assert {rates[i] for i in trainable - icm_ids} == {1e-4}


def test_lora_wraps_only_the_llm_projections(tiny):
    from trainers.lora import apply_lora, trainable_summary

    model, _, _ = _fresh(tiny)
    peft_model = apply_lora(model)
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and n.endswith("proj")]
    assert wrapped and all(".language_model.layers." in n for n in wrapped)
    suffixes = {n.rsplit(".", 1)[-1] for n in wrapped}
    assert suffixes == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    parts = trainable_summary(peft_model)
    assert {"lora", "sbm", "iec", "scene_norm", "scene_projector", "frozen"} <= set(parts)
    for name, param in peft_model.get_base_model().named_parameters():
        if "video_tower" in name or "image_tower" in name or "multi_modal_projector" in name:
            assert not param.requires_grad, name


def test_collator_masks_prompt_and_placeholders(tiny):
    from trainers.collator import IcmDataCollator

    _, processor, examples = tiny
    batch = IcmDataCollator(processor)(examples[:2])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    placeholder = (ids == processor.video_token_id) | (ids == processor.scene_token_id)
    assert bool((labels[placeholder] == -100).all())
    assert bool((labels[mask == 0] == -100).all())
    assert bool((mask[:, 0] == 1).all())  # right padding for training
    for row in range(2):  # the supervised tokens are exactly the answer (+ eos)
        answer = processor.tokenizer.decode(labels[row][labels[row] != -100], skip_special_tokens=True)
        assert answer.strip() == ANSWERS[row]
    gen = IcmDataCollator(processor, with_answers=False)(examples[:2])
    assert "labels" not in gen and bool((gen["attention_mask"][:, -1] == 1).all())  # left padding


def test_collator_names_the_missing_field(tiny):
    from trainers.collator import IcmDataCollator

    _, processor, examples = tiny
    broken = dict(examples[0])
    del broken["scene_features"]
    with pytest.raises(ValueError, match="scene_features"):
        IcmDataCollator(processor)([broken])


@pytest.fixture(scope="module")
def trained_run(tiny, tmp_path_factory):
    """One short training (4 steps) shared by the tests below: parameters before/after, logs, router records."""
    from trainers.trainer import IcmTrainer

    model, processor, examples = _fresh(tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # large router weights so that L_rb is far from 0; they must reach the model's config (one source of truth)
    args = _args(tmp_path_factory.mktemp("run"), router_alpha=0.3, router_beta=0.7, num_train_epochs=2)
    trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=examples, record_router_probs=True)
    config_weights = (model.config.router_alpha, model.config.router_beta)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    return {"trainer": trainer, "model": model, "before": before, "lora_before": lora_before,
            "config_weights": config_weights}


def test_train_updates_lora_sbm_iec_and_leaves_frozen_weights(trained_run):
    trainer, before, lora_before = trained_run["trainer"], trained_run["before"], trained_run["lora_before"]
    # PEFT renames a wrapped layer's own weight to ``<layer>.base_layer.weight``
    after = {n.replace(".base_layer", ""): p for n, p in trainer.model.get_base_model().named_parameters()}
    changed = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    for part in ("sbm.experts", "sbm.router", "iec.self_sampling", "iec.cross_sampling", "iec.ffn", "scene_projector"):
        assert any(n.startswith(part) for n in changed), f"{part} did not change"
    frozen_changed = [n for n in changed if n.startswith("backbone.")]
    assert frozen_changed == [], f"frozen backbone weights changed: {frozen_changed[:5]}"
    lora_after = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_before and all(not torch.equal(lora_before[n], lora_after[n].detach()) for n in lora_before)


def test_router_loss_logged_and_equals_eq2_on_logged_probs(trained_run):
    from modeling_icm.modeling_icm import router_balance_loss

    trainer, model = trained_run["trainer"], trained_run["model"]
    assert trained_run["config_weights"] == (0.3, 0.7)
    logged = [h for h in trainer.state.log_history if "router_loss" in h and "train_runtime" not in h]
    assert len(logged) == 4
    for entry in logged:
        assert {"lm_loss", "router_loss", "loss"} <= set(entry)
        # the scene-pathway diagnostics of the batch (trainers.diagnostics), at every logging step
        assert {"scene_spread", "scene_norm_ratio", "scene_sensitivity"} <= set(entry)
        assert entry["scene_spread"] > 0 and entry["scene_norm_ratio"] > 0 and 0 <= entry["scene_sensitivity"] <= 1
        assert {f"router_weight/{s}" for s in DIMS} <= set(entry)
        assert math.isclose(sum(entry[f"router_weight/{s}"] for s in DIMS), 1.0, rel_tol=1e-4)
    assert len(trainer.router_records) == len(logged)
    share = model.sbm.dimension_share
    for record, entry in zip(trainer.router_records, logged):
        probs = record["router_probs"]
        valid = probs.sum(-1) > 0
        expected = float(router_balance_loss(probs, share, 0.3, 0.7, valid))
        assert record["step"] == entry["step"]
        assert math.isclose(entry["router_loss"], expected, rel_tol=1e-4), (entry["router_loss"], expected)
        # L = L_lm + L_rb
        assert math.isclose(entry["loss"], entry["lm_loss"] + entry["router_loss"], rel_tol=1e-3)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_kmeans_fills_the_iec_dictionary(tiny, backend):
    from trainers.kmeans_init import collect_dictionary_embeddings, initialize_iec_dictionary

    model, _, examples = _fresh(tiny)
    assert not bool(model.iec.dictionary_initialized)
    embeddings = collect_dictionary_embeddings(model, examples)
    assert embeddings.shape[1] == model.config.expert_hidden_size and embeddings.shape[0] > 16
    info = initialize_iec_dictionary(model, examples, backend=backend)
    assert info["k"] == model.config.iec_dictionary_size and info["num_embeddings"] == embeddings.shape[0]
    assert bool(model.iec.dictionary_initialized)
    # every centre lies inside the embeddings' bounding box (a mean of embeddings), and they are distinct
    lo, hi = embeddings.min(0).values, embeddings.max(0).values
    centres = model.iec.dictionary
    assert bool(((centres >= lo - 1e-5) & (centres <= hi + 1e-5)).all())
    assert torch.unique(centres, dim=0).shape[0] == centres.shape[0]


def test_kmeans_skips_a_model_without_iec(tiny):
    from modeling_icm.modeling_icm import IcmForVideoSentiment
    from trainers.kmeans_init import initialize_iec_dictionary

    model, _, examples = tiny
    no_iec = IcmForVideoSentiment(type(model.config)(**{**model.config.to_dict(), "use_iec": False}))
    assert initialize_iec_dictionary(no_iec, examples) == {"skipped": "use_iec=False"}


def test_answer_only_logits_keeps_the_loss(tiny):
    """The trainer's default LM head over the answer positions only gives exactly the full-sequence L_lm."""
    from trainers.collator import IcmDataCollator
    from trainers.trainer import answer_only_logits

    model, processor, examples = _fresh(tiny)
    model.eval()
    batch = dict(IcmDataCollator(processor)(examples[:3]))
    sliced = answer_only_logits(batch)
    assert sliced["logits_to_keep"] < batch["input_ids"].shape[1]
    with torch.no_grad():
        full, part = model(**batch), model(**sliced)
    assert part.logits.shape[1] == sliced["logits_to_keep"]
    assert torch.allclose(full.lm_loss, part.lm_loss, rtol=1e-6, atol=1e-7)
    assert answer_only_logits({k: v for k, v in batch.items() if k != "labels"}).get("logits_to_keep") is None

"""The paper's own path: ICM from a Video-LLaVA-7B-hf checkpoint — model *and* processor — and the shipped
``paper.yaml`` end to end on stand-ins of every real file (``tests/checkpoint_standins.py``): ``icm extract --recipe``
with the pretrained extractors, both training stages, K-means, evaluation, saving, a clean-interpreter reload and
``icm analyze``. Plus the bad inputs, each named in one line before any work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoint_standins import save_scene_extractor_standins, save_video_llava_7b_standin

RECIPES = Path(__file__).resolve().parents[1] / "trainers" / "recipes"
ROOT = Path(__file__).resolve().parents[1]
SMALL_ICM = {  # the ICM modules shrunk in width/depth only
    "expert_hidden_size": 32, "expert_num_layers": 1, "expert_num_heads": 2, "expert_intermediate_size": 64,
    "iec_num_heads": 2, "iec_dictionary_size": 4, "iec_intermediate_size": 64,
}  # fmt: skip


@pytest.fixture(scope="module")
def video_llava(tmp_path_factory) -> Path:
    return save_video_llava_7b_standin(tmp_path_factory.mktemp("hub") / "Video-LLaVA-7B-hf")


def _small_config(**kw):
    from modeling_icm.configuration_icm import IcmConfig

    return IcmConfig(scene_dims={"face": 24, "action": 20, "object": 28, "background": 16}, num_frames=2,
                     num_scene_tokens=2, **SMALL_ICM, **kw)  # fmt: skip


# ------------------------------------------------------------------------------------------ the stand-in itself
def test_standin_has_the_published_layout_and_loads_with_no_missing_keys(video_llava):
    from safetensors import safe_open
    from transformers import AutoProcessor, VideoLlavaForConditionalGeneration, VideoLlavaProcessor

    files = sorted(p.name for p in video_llava.iterdir())
    assert files == sorted([
        "added_tokens.json", "chat_template.json", "config.json", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "preprocessor_config.json", "processor_config.json", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json",
    ])  # fmt: skip
    keys = set()
    for shard in video_llava.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            keys |= set(handle.keys())
    prefixes = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("language_model") else "") for k in keys}
    assert prefixes == {"language_model.model", "language_model.lm_head", "video_tower", "image_tower",
                        "multi_modal_projector"}  # fmt: skip
    processor = AutoProcessor.from_pretrained(video_llava)
    assert isinstance(processor, VideoLlavaProcessor)
    tok = processor.tokenizer
    assert [tok.convert_tokens_to_ids(t) for t in ("<image>", "<video>", "<pad>")] == [32000, 32001, 32002]
    assert len(tok) == 32003 and tok.convert_tokens_to_ids("<scene>") == tok.unk_token_id
    model, info = VideoLlavaForConditionalGeneration.from_pretrained(video_llava, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.get_input_embeddings().weight.shape[0] == 32064


# ------------------------------------------------------------------------------------------ from_video_llava
def test_from_video_llava_gives_model_and_processor_with_scene_in_a_spare_row(video_llava, caplog):
    from modeling_icm.modeling_icm import IcmForVideoSentiment
    from modeling_icm.processing_icm import IcmProcessor

    model, processor = IcmForVideoSentiment.from_video_llava(video_llava, _small_config(), dtype=torch.float32)
    assert isinstance(processor, IcmProcessor)
    assert processor.scene_token_id == model.config.scene_token_id == 32003  # the first spare row of 32,064
    assert model.get_input_embeddings().weight.shape[0] == 32064 and "resized" not in caplog.text
    assert processor.video_token_id == model.config.backbone_config.video_token_index == 32001
    assert processor.video_tokens_per_frame == 257 and processor.patch_size == 14
    prompt = processor.build_prompt("Describe.", [0.0, 1.0])
    assert prompt.startswith("USER: <scene><scene>\n<video>") and prompt.endswith("Describe. ASSISTANT:")
    frames = torch.randint(0, 256, (2, 2, 40, 56, 3), dtype=torch.uint8)
    feats = [{s: torch.randn(2, 3, d) for s, d in model.config.scene_dims.items()} for _ in range(2)]
    batch = processor(videos=list(frames), text=["Describe."] * 2, answers=["Fire.", "A man."], scene_features=feats)
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.router_loss is not None
    assert model.dtype == torch.float32


def test_a_checkpoint_without_spare_rows_is_resized_and_says_so(tmp_path, caplog):
    import logging

    from modeling_icm.modeling_icm import IcmForVideoSentiment

    path = save_video_llava_7b_standin(tmp_path / "vl", shards=1)
    config = json.loads((path / "config.json").read_text())
    from safetensors.torch import load_file, save_file

    shard = path / "model-00001-of-00001.safetensors"
    state = load_file(str(shard))
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        state[key] = state[key][:32003].clone()  # a checkpoint whose rows end at its last token
    save_file(state, str(shard), metadata={"format": "pt"})
    config["text_config"]["vocab_size"] = config["vocab_size"] = 32003
    (path / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        model, processor = IcmForVideoSentiment.from_video_llava(path, _small_config(), dtype=torch.float32)
    assert "resized" in caplog.text and "32003 to 32004" in caplog.text.replace(" rows", "")
    assert model.get_input_embeddings().weight.shape[0] == 32004 == model.config.vocab_size
    assert model.config.scene_token_id == 32003


def test_a_scene_token_the_tokenizer_already_has_is_used(tmp_path):
    from modeling_icm.modeling_icm import IcmForVideoSentiment

    path = save_video_llava_7b_standin(tmp_path / "vl", shards=1, with_scene=True)
    model, processor = IcmForVideoSentiment.from_video_llava(path, _small_config(), dtype=torch.float32)
    assert processor.scene_token_id == model.config.scene_token_id == 32003
    assert len(processor.tokenizer) == 32004 and model.get_input_embeddings().weight.shape[0] == 32064  # not re-added


def test_an_icm_checkpoint_whose_tokenizer_disagrees_on_scene_is_named(tmp_path, tiny_tokenizer):
    from trainers.presets import tiny_icm
    from trainers.recipe import RecipeError, load_recipe, preflight

    model, processor = tiny_icm({"face": 24, "action": 20, "object": 28, "background": 16})
    model.save_pretrained(tmp_path / "icm")
    processor.save_pretrained(tmp_path / "icm")
    config = json.loads((tmp_path / "icm" / "config.json").read_text())
    config["scene_token_id"] = processor.scene_token_id + 1  # not where the tokenizer has <scene>
    (tmp_path / "icm" / "config.json").write_text(json.dumps(config))
    recipe = load_recipe({"model": {"preset": "pretrained", "pretrained": str(tmp_path / "icm")}})
    with pytest.raises(RecipeError, match=rf"already has <scene> with id {processor.scene_token_id} but config"):
        preflight(recipe)


def _break(folder: Path, how: str) -> str:
    if how == "architecture":
        config = json.loads((folder / "config.json").read_text())
        config.update(model_type="llava", architectures=["LlavaForConditionalGeneration"])
        (folder / "config.json").write_text(json.dumps(config))
        return r"config\.json: model_type 'llava'"
    if how == "no-preprocessor":
        (folder / "preprocessor_config.json").unlink()
        return r"preprocessor_config\.json: not found"
    if how == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
        return r"tokenizer\.json: not found"
    if how == "no-video-token":
        for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json"):
            (folder / name).write_text((folder / name).read_text().replace("<video>", "<clip>"))
        return r"has no <video> token"
    if how == "scene-in-base-vocab":
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        vocab = tokenizer["model"]["vocab"]
        victim = next(k for k, v in vocab.items() if v == 31999)
        vocab["<scene>"] = vocab.pop(victim)
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        return r"already has <scene> with id 31999"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["architecture", "no-preprocessor", "no-tokenizer", "no-video-token", "scene-in-base-vocab"]
)
def test_bad_checkpoints_are_named_in_one_line(video_llava, tmp_path, how):
    import shutil

    from modeling_icm.processing_icm import IcmProcessor

    folder = tmp_path / "broken"
    shutil.copytree(video_llava, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    match = _break(folder, how)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        IcmProcessor.from_video_llava(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_a_chat_template_of_another_conversation_format_is_said(video_llava, tmp_path):
    import shutil

    from modeling_icm.processing_icm import IcmProcessor

    folder = tmp_path / "other-format"
    shutil.copytree(video_llava, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    template = "{% for m in messages %}<|{{ m['role'] }}|>{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}"
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    with pytest.warns(UserWarning, match=r"other-format: the chat template renders '<\|user\|><\|bot\|>'"):
        IcmProcessor.from_video_llava(folder)


# ------------------------------------------------------------------------------------------ recipe inheritance
def test_an_explicit_empty_mapping_or_null_replaces_what_the_base_holds(tmp_path):
    from trainers.recipe import load_recipe

    base = load_recipe("paper")
    assert base["features"]["pipeline_kwargs"]["sam_checkpoint"].endswith("sam_vit_b_01ec64.pth")
    cleared = load_recipe({"base": "paper.yaml", "features": {"pipeline_kwargs": {}}})
    assert cleared["features"]["pipeline_kwargs"] == {}
    nulled = load_recipe({"base": "paper.yaml", "features": {"pipeline_kwargs": None}, "training": None})
    assert nulled["features"]["pipeline_kwargs"] == {} and nulled["training"] == {}
    kept = load_recipe({"base": "paper.yaml", "features": {"pipeline_kwargs": {"sam_type": "vit_b"}}})
    assert kept["features"]["pipeline_kwargs"]["sam_type"] == "vit_b"
    assert kept["features"]["pipeline_kwargs"]["action_checkpoint"].endswith("pose_higher_hrnet_w32_512.pth")
    assert load_recipe({"base": "paper.yaml", "evaluate": {"attribution_metrics": None}})["evaluate"][
        "attribution_metrics"] is None  # fmt: skip
    assert load_recipe({"base": "paper.yaml", "data": None})["data"]["configs"] == ["implicit"]  # the defaults


@pytest.mark.parametrize("command", ["extract", "train"])
def test_the_shipped_paper_recipe_names_its_missing_files_before_any_work(tmp_path, monkeypatch, capsys, command):
    from icm_cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main([command, "--recipe", "paper"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'data.data_dir': data/omnisila is not a folder" in err, err
    (tmp_path / "data" / "omnisila").mkdir(parents=True)
    assert main([command, "--recipe", "paper", "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "'features.pipeline_kwargs.action_checkpoint': checkpoints/pose_higher_hrnet_w32_512.pth: file not found" in err
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_recipe_with_a_missing_or_wrong_checkpoint_is_named(tmp_path, video_llava):
    from trainers.recipe import RecipeError, load_recipe, preflight

    kwargs = save_scene_extractor_standins(tmp_path / "checkpoints")
    recipe = {"base": "paper.yaml", "data": {"data_dir": str(tmp_path)}, "features": {"pipeline_kwargs": kwargs}}
    for pretrained, match in (
        (tmp_path / "nowhere", r"model\.pretrained.*nowhere.*not a local folder"),
        (tmp_path / "checkpoints", r"model\.pretrained.*config\.json: file not found"),
    ):
        with pytest.raises(RecipeError, match=match):
            preflight(load_recipe({**recipe, "model": {"pretrained": str(pretrained)}}))
    preflight(load_recipe({**recipe, "model": {"pretrained": str(video_llava)}}))  # complete: passes


# ------------------------------------------------------------------------------------------ end to end
def _paper_overrides(tmp: Path, video_llava: Path, data_dir: Path, kwargs: dict) -> dict:
    """paper.yaml with only its sizes (and the CPU settings) and its data overridden."""
    return {
        "base": str(RECIPES / "paper.yaml"),
        "output_dir": str(tmp / "run"),
        "threads": 1,
        "data": {"data_dir": str(data_dir), "max_train_clips": 1, "max_eval_clips": 1, "max_scene_items": 1},
        "features": {"pipeline_kwargs": kwargs},  # num_frames: the paper's 8
        "model": {"pretrained": str(video_llava), "config_overrides": SMALL_ICM},
        "training": {"bf16": False, "use_cpu": True, "per_device_train_batch_size": 2, "num_train_epochs": 1,
                     "logging_steps": 1},  # bf16 / gradient checkpointing / LoRA / lr ...: the paper's
        "evaluate": {"max_new_tokens": 6, "batch_size": 2},  # attribution_metrics: the paper's (all)
    }


@pytest.mark.slow
def test_paper_recipe_end_to_end_from_a_video_llava_checkpoint(tmp_path, video_llava, capsys):
    import yaml

    from datasets_scripts.mini_set import generate_mini_set
    from icm_cli.main import main

    data_dir = tmp_path / "data"
    generate_mini_set(data_dir, seed=0, size="tiny")
    kwargs = save_scene_extractor_standins(tmp_path / "checkpoints")
    recipe = tmp_path / "my-paper.yaml"
    recipe.write_text(yaml.safe_dump(_paper_overrides(tmp_path, video_llava, data_dir, kwargs)))

    assert main(["extract", "--recipe", str(recipe)]) == 0
    assert main(["train", "--recipe", str(recipe)]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {k: v["steps"] for k, v in results["stages"].items()} == {"scene": 2, "omnisila": 4}
    assert all(v["train_loss"] == v["train_loss"] for v in results["stages"].values())  # finite, not NaN
    assert results["dictionary"]["k"] == SMALL_ICM["iec_dictionary_size"]
    assert set(results["metrics"]["trained"]) == {"explicit", "implicit"}
    assert {"acc", "map_avg", "fnr", "sem_r", "sem_c", "sen_a"} <= set(results["metrics"]["trained"]["implicit"]["metrics"])
    model_dir = Path(results["model_dir"])
    processor_config = json.loads((model_dir / "processor_config.json").read_text())
    assert processor_config["scene_extraction"]["pipeline"] == "pretrained"

    # a clean interpreter (no PYTHONPATH, no project on sys.path) loads it through the Auto classes alone
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModel, AutoProcessor\n"
        "d = sys.argv[1]\n"
        "m = AutoModel.from_pretrained(d, trust_remote_code=True)\n"
        "p = AutoProcessor.from_pretrained(d, trust_remote_code=True)\n"
        "assert 'modeling_icm' not in sys.modules, 'the project leaked into the clean interpreter'\n"
        "frames = torch.randint(0, 256, (8, 40, 56, 3), dtype=torch.uint8)\n"
        "feats = {s: torch.randn(8, 2, d) for s, d in m.config.scene_dims.items()}\n"
        "b = p(videos=[frames], text=['Describe.'], scene_features=[feats])\n"
        "out = m.generate(**b, max_new_tokens=3, do_sample=False)\n"
        "print(json.dumps({'model': type(m).__name__, 'processor': type(p).__name__, 'scene': p.scene_token_id,"
        " 'config_scene': m.config.scene_token_id, 'rows': m.get_input_embeddings().weight.shape[0],"
        " 'vocab': len(p.tokenizer), 'new_tokens': out.shape[1] - b['input_ids'].shape[1]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", script, str(model_dir)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"model": "IcmForVideoSentiment", "processor": "IcmProcessor", "scene": 32003,
                      "config_scene": 32003, "rows": 32064, "vocab": 32004, "new_tokens": 3}  # fmt: skip

    video = next((data_dir / "videos").rglob("*.mp4"))
    out = tmp_path / "analysis.json"
    assert main(["analyze", str(video), "--model", str(model_dir), "--out", str(out), "--window", "2",
                 "--max-new-tokens", "6", "--no-progress"]) == 0  # fmt: skip
    document = json.loads(out.read_text())
    assert document["num_windows"] >= 1

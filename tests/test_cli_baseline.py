"""``icm baseline``: zero-shot transformers Video-LLMs on Omni-SILA, with tiny random models of each architecture
saved locally (no Hub): the model's own chat template with the paper's instruction and the frame timestamps,
batched generation equal to one-by-one, predictions that resume, and bad input as one clear line (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from icm_cli.main import main
from modeling_icm import templates as T
from trainers.baselines import (
    TINY_VIDEO_LLMS,
    build_tiny_video_llm,
    chat_prompt,
    generate_video_llm_answers,
    load_video_llm,
)

PLACEHOLDER = {"video_llava": "<video>", "llava_next_video": "<video>", "llava_onevision": "<video>",
               "qwen2_vl": "<|vision_start|><|video_pad|><|vision_end|>",
               "qwen2_5_vl": "<|vision_start|><|video_pad|><|vision_end|>"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_llms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video-llms")
    return {name: build_tiny_video_llm(name, root / name) for name in TINY_VIDEO_LLMS}


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    from datasets_scripts.mini_set import generate_mini_set

    out = tmp_path_factory.mktemp("mini")
    generate_mini_set(out, seed=0, size="tiny")
    return out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("model_type", TINY_VIDEO_LLMS)
def test_each_architecture_answers_in_its_chat_template_batched_as_one_by_one(tiny_llms, model_type):
    model, processor = load_video_llm(tiny_llms[model_type])
    assert model.config.model_type == model_type
    instruction = T.combined_instruction("implicit")
    prompt = chat_prompt(processor, instruction, [0.0, 1.25, 2.5])
    assert PLACEHOLDER[model_type] in prompt
    assert "The frames are sampled at 0s, 1.25s, 2.5s. " + instruction in prompt
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8) for _ in range(2)]
    times = [[float(i) for i in range(8)], [0.5 * i for i in range(8)]]  # different prompt lengths: left padding
    batched = generate_video_llm_answers(model, processor, frames, times, instruction, max_new_tokens=6)
    single = [generate_video_llm_answers(model, processor, [f], [t], instruction, max_new_tokens=6)[0]
              for f, t in zip(frames, times)]  # fmt: skip
    assert batched == single and all(isinstance(a, str) for a in batched)


def test_icm_baseline_end_to_end_resumes_and_scores_every_clip(capsys, tmp_path, tiny_llms, mini):
    out = tmp_path / "run"
    argv = ("baseline", "--model", tiny_llms["video_llava"], "--data", mini, "--config", "explicit",
            "--out", out, "--max-new-tokens", "8", "--batch-size", "2")  # fmt: skip
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    refs = [json.loads(line) for line in (out / "references.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in refs] and len(refs) == 3  # 3 explicit test clips
    document = json.loads((out / "metrics.json").read_text())
    assert document["metrics"]["num_examples"] == 3 and document["metrics"]["num_missing"] == 0
    assert "3 clips asked, 0 reused" in stdout and "| Acc |" in stdout
    # an interrupted run (last answer lost) continues: only that clip is asked again
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + '{"id": "cut')
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    assert "1 clips asked, 2 reused" in stdout
    again = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert again == rows  # greedy: the same answer


def test_an_undecodable_clip_is_skipped_reported_and_scored_as_missing(capsys, tmp_path, tiny_llms, mini):
    data = tmp_path / "data"
    shutil.copytree(mini, data)
    first = json.loads(next(line for line in (data / "explicit.jsonl").read_text().splitlines()
                            if json.loads(line)["split"] == "test"))  # fmt: skip
    (data / first["video"]).write_bytes(b"not a video")
    code, stdout, err = run(capsys, "baseline", "--model", tiny_llms["qwen2_vl"], "--data", data, "--config",
                            "explicit", "--out", tmp_path / "run", "--max-new-tokens", "4")  # fmt: skip
    assert code == 0, err
    assert f"skipped clip: {first['id']}" in err and "1 without an answer" in stdout
    document = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert document["missing"] == [first["id"]] and document["metrics"]["num_examples"] == 3
    code, _, err = run(capsys, "baseline", "--model", tiny_llms["qwen2_vl"], "--data", data, "--config",
                       "explicit", "--out", tmp_path / "run", "--require-all")  # fmt: skip
    assert code == 2 and "have no prediction" in err


def _text_only_model(path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.presets import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(path)  # fmt: skip
    tok.save_pretrained(path)
    return path


def _image_only_model(path: Path) -> Path:
    import transformers as tr

    from trainers.presets import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    config = tr.LlavaConfig(
        text_config={"model_type": "llama", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    tr.LlavaForConditionalGeneration(config).save_pretrained(path)
    tr.LlavaProcessor(image_processor=tr.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), tokenizer=tok,
                      patch_size=8, chat_template="{{ messages }}").save_pretrained(path)  # fmt: skip
    return path


@pytest.mark.parametrize("kind, expected", [
    ("missing", "cannot load its config"),
    ("text-only", "not a video model"),
    ("image-only", "not a video model"),
    ("no-chat-template", "no chat template"),
])  # fmt: skip
def test_bad_models_are_one_clear_line(capsys, tmp_path, tiny_llms, mini, kind, expected):
    if kind == "missing":
        model = tmp_path / "nope"
    elif kind == "text-only":
        model = _text_only_model(tmp_path / "llama")
    elif kind == "image-only":
        model = _image_only_model(tmp_path / "llava")
    else:
        model = tmp_path / "no-template"
        shutil.copytree(tiny_llms["video_llava"], model)
        (model / "chat_template.jinja").unlink()
    code, _, err = run(capsys, "baseline", "--model", model, "--data", mini, "--out", tmp_path / "run")
    assert code == 2, err
    assert expected in err and str(model) in err and len(err.strip().splitlines()) == 1

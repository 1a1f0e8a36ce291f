"""save_icm: the merged save reloads with AutoModel(trust_remote_code=True) in a fresh process where the repository is
not importable and generates the same answers; the adapter save reloads with load_icm_adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_icm import templates as T

DIMS = {"face": 24, "action": 20, "object": 28, "background": 16}
ANSWERS = [
    T.combined_answer("implicit", "Fire", [[1, 3]], "orange flames flicker"),
    T.combined_answer("implicit", "Theft", [[2, 5]], "a purple box is carried away"),
]

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_icm", "processing", "trainers", "datasets_scripts", "evaluate_metrics", "icm_cli"):
        sys.modules[name] = None  # the repository must not be importable: only the saved remote code may run
    import torch
    from transformers import AutoModel, AutoProcessor
    model_dir, batch_file, out_file = sys.argv[1:4]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    batch = torch.load(batch_file, weights_only=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    texts = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    dictionary = model.iec.dictionary
    json.dump({"texts": texts, "module": type(model).__module__, "dictionary_sum": float(dictionary.sum()),
               "dictionary_initialized": bool(model.iec.dictionary_initialized)}, open(out_file, "w"))
    """
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ICM with LoRA (+ modules_to_save), a K-means dictionary and a few training steps."""
    from trainers.args import IcmTrainingArguments
    from trainers.kmeans_init import initialize_iec_dictionary
    from trainers.presets import synthetic_examples, tiny_icm
    from trainers.trainer import IcmTrainer

    torch.set_num_threads(1)  # tiny matrices: one thread is fastest
    model, processor = tiny_icm(DIMS, seed=0)
    examples = synthetic_examples(DIMS, 4, ANSWERS, T.combined_instruction("implicit"))
    initialize_iec_dictionary(model, examples)
    args = IcmTrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("out")),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=2e-2,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        lora_modules_to_save=["lm_head"],
        report_to="none",
    )
    trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=examples)
    trainer.train()
    return trainer.model, processor, examples


def _generate(model, processor, batch):
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    return processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def test_merged_save_reloads_as_remote_code_and_generates_the_same(trained, tmp_path):
    from trainers.collator import IcmDataCollator
    from trainers.saving import save_icm

    peft_model, processor, examples = trained
    peft_model.eval()
    batch = IcmDataCollator(processor, with_answers=False)(examples[:2])
    expected = _generate(peft_model, processor, batch)
    model_dir = save_icm(peft_model, tmp_path / "merged", merge_lora=True, processor=processor)
    files = set(os.listdir(model_dir))
    assert {"config.json", "model.safetensors", "modeling_icm.py", "configuration_icm.py"} <= files
    assert not any(f.startswith("adapter_") for f in files)
    # the PEFT model given to save_icm is intact (a copy was merged)
    assert _generate(peft_model, processor, batch) == expected
    torch.save(dict(batch), tmp_path / "batch.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(model_dir), str(tmp_path / "batch.pt"),
         str(tmp_path / "out.json")],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert "transformers_modules" in result["module"]  # the saved remote code ran, not the repository
    assert result["texts"] == expected
    assert result["dictionary_initialized"]
    base = peft_model.get_base_model()
    assert result["dictionary_sum"] == pytest.approx(float(base.iec.dictionary.sum()), rel=1e-6)


def test_adapter_save_reloads_with_the_documented_loader(trained, tmp_path):
    from inference.loading import load_icm_adapter
    from trainers.collator import IcmDataCollator
    from trainers.saving import save_icm

    peft_model, processor, examples = trained
    peft_model.eval()
    batch = IcmDataCollator(processor, with_answers=False)(examples[:2])
    expected = _generate(peft_model, processor, batch)
    # the base model (untrained backbone + untrained ICM modules) as a user would have it on disk
    from modeling_icm.modeling_icm import IcmForVideoSentiment

    torch.manual_seed(123)  # deliberately different ICM module weights: the adapter save must bring its own
    base = IcmForVideoSentiment(peft_model.get_base_model().config)
    base_state = {k.replace(".base_layer", ""): v for k, v in peft_model.get_base_model().state_dict().items()
                  if k.startswith("backbone.") and "lora_" not in k and "modules_to_save" not in k}
    base_state = {k.replace(".original_module", ""): v for k, v in base_state.items()}
    missing, unexpected = base.load_state_dict(base_state, strict=False)
    assert not unexpected and all(not k.startswith("backbone.") for k in missing)
    out = save_icm(peft_model, tmp_path / "adapter", merge_lora=False, processor=processor)
    files = set(os.listdir(out))
    assert {"adapter_config.json", "adapter_model.safetensors", "icm_modules.safetensors"} <= files
    assert "model.safetensors" not in files
    reloaded = load_icm_adapter(out, base_model=base)
    assert _generate(reloaded, processor, batch) == expected


def test_adapter_loader_names_the_missing_file(tmp_path):
    from inference.loading import load_icm_adapter

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="icm_modules.safetensors"):
        load_icm_adapter(tmp_path)

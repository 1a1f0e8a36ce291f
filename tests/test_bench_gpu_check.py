"""bench/gpu_check.py: its CPU mode end to end (so the GPU check never rots), the no-CUDA exit, OOM rows, the
extrapolation model and the peak table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=ROOT)


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_cpu_tiny_mode_runs_every_section(tmp_path):
    out = tmp_path / "report.json"
    proc = _run("--device", "cpu", "--tiny", "--batch", "2", "--dtype", "bf16", "--json", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["header"]["attention"] == "sdpa" and report["header"]["dtype"] == "bf16"
    # train: bare and ICM at the tiny preset and at the three slice depths, all measured
    settings = ["tiny", "tiny-slice 1+1", "tiny-slice 2+1", "tiny-slice 1+2"]
    assert [(r["setting"], r["model"]) for r in report["train"]] == [(s, m) for s in settings for m in ("bare", "icm")]
    for row in report["train"]:
        assert row["status"] == "ok", row
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0 and row["tflop_per_step"] > 0
        assert row["mfu"] is None  # no published peak for a CPU
        assert row["checkpointing"] is True and row["attention"] == "sdpa"
        assert row["seq_len"] == 16 + 8 + 8 * 17 + (8 if row["model"] == "icm" else 0)
    # ICM does more work than the bare backbone on the same batch (scene tokens + SBM + IEC)
    by = {(r["setting"], r["model"]): r for r in report["train"]}
    for setting in settings:
        assert by[(setting, "icm")]["tflop_per_step"] > by[(setting, "bare")]["tflop_per_step"]
    # a deeper slice costs more FLOPs: the extrapolation's inputs are real per-layer differences
    assert by[("tiny-slice 2+1", "bare")]["tflop_per_step"] > by[("tiny-slice 1+1", "bare")]["tflop_per_step"]
    assert set(report["p2_ratio"]) == {"tiny", "tiny-slice 1+1", "full depth (extrapolated)"}
    assert report["p2_ratio"]["tiny"] == pytest.approx(by[("tiny", "icm")]["step_s"] / by[("tiny", "bare")]["step_s"])
    # generation with the KV cache: exactly the requested new tokens for both models
    assert [(r["setting"], r["model"]) for r in report["generate"]] == [
        (s, m) for s in settings[:2] for m in ("bare", "icm")]
    for row in report["generate"]:
        assert row["status"] == "ok", row
        assert row["new_tokens"] == 4 and row["first_token_s"] > 0 and row["decode_tokens_per_s"] > 0
    # FSDP went through accelerate launch with the shipped config (accelerate cannot shard on CPU: it says so)
    fsdp, zero2 = report["distributed"]
    assert fsdp["config_file"] == "trainers/accelerate_configs/fsdp.yaml"
    assert fsdp["status"].startswith("needs CUDA") and fsdp["step_s"] > 0, fsdp
    assert zero2["config_file"] == "trainers/accelerate_configs/deepspeed_zero2.yaml"
    if importlib.util.find_spec("deepspeed") is None:
        assert zero2["status"] == "deepspeed not installed (pip install deepspeed)"
    ext = report["extrapolation"]
    assert ext["target"] == [2, 2] and ext["slices"] == ["1+1", "2+1", "1+2"]
    for model in ("bare", "icm"):  # the linear model through (1,1), (2,1), (1,2), evaluated at (2,2)
        f = {d: by[(f"tiny-slice {d}", model)] for d in ("1+1", "2+1", "1+2")}
        for key in ("step_s", "peak_gib"):
            expected = f["2+1"][key] + f["1+2"][key] - f["1+1"][key]
            assert ext[model][key] == pytest.approx(expected), (model, key)
    paper = report["paper_setting"]
    assert paper["a100_step_s"] is None  # no peak to scale from on a CPU
    assert paper["paper_s_per_clip"] == pytest.approx(62 * 3600 / (154_000 * 3))
    text = proc.stdout
    for needle in ("train: LoRA", "ICM / backbone step time (P2", "generate: greedy with the KV cache",
                   "distributed:", "full depth (2 LLM + 2 vision layers)", "paper's setting (1 x A100 40 GB",
                   "0.483 s/clip"):
        assert needle in text, needle


def test_no_cuda_device_is_one_line_and_exit_2():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present, so the no-CUDA error path cannot be reached")
    proc = _run("--device", "cuda", timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no CUDA device" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_out_of_memory_at_a_setting_is_a_row_and_the_check_goes_on(gpu_check):
    args = gpu_check.parse_args(["--device", "cpu", "--tiny", "--batch", "2", "--skip-distributed"])
    rows, _ = gpu_check.settings(True, args.base, args.step)
    setting = rows[1]  # the smallest slice
    setting["flops"] = gpu_check.train_flops(setting["config"], args)
    meter = gpu_check.Meter(torch.device("cpu"))
    started = gpu_check.time.perf_counter()
    huge = gpu_check.parse_args(["--device", "cpu", "--tiny", "--batch", str(10**9)])  # a real allocation failure
    oom = gpu_check.guarded({"setting": "huge"}, meter,
                            lambda: gpu_check.train_row("bare", setting, huge, meter, torch.float32, None),
                            started, 600)
    assert oom["status"] == "OOM"
    after = gpu_check.guarded({"setting": "next"}, meter,
                              lambda: gpu_check.train_row("bare", setting, args, meter, torch.float32, None),
                              started, 600)
    assert after["status"] == "ok" and after["step_s"] > 0
    late = gpu_check.guarded({"setting": "late"}, meter, lambda: {}, started - 1000, 600)
    assert late["status"].startswith("skipped")


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-40GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),
        ("NVIDIA A10G", 125.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Some Future Accelerator", None),
    ],
)
def test_peak_table(gpu_check, name, peak):
    assert gpu_check.peak_tflops(name) == peak


def test_extrapolation_recovers_a_linear_cost_and_the_paper_setting(gpu_check):
    cost = lambda layers, vision: 0.3 + 0.05 * layers + 0.01 * vision  # noqa: E731
    points = {d: cost(*d) for d in ((2, 2), (4, 2), (2, 4))}
    assert gpu_check.extrapolate(points, 2, 4, (32, 24)) == pytest.approx(cost(32, 24))
    assert gpu_check.extrapolate({**points, (4, 2): None}, 2, 4, (32, 24)) is None  # an OOM slice: no prediction
    paper = gpu_check.paper_setting(2.0, 30.0, 989.0, 8)
    assert paper["a100_step_s"] == pytest.approx(2.0 * 989 / 312)
    assert paper["a100_s_per_clip"] == pytest.approx(2.0 * 989 / 312 / 8)
    assert paper["fits_40gb"] is True and gpu_check.paper_setting(None, 41.0, None, 8)["fits_40gb"] is False


def test_depth_slice_keeps_the_widths_and_the_icm_modules():
    from trainers.presets import depth_slice, icm_7b_config

    full = icm_7b_config()
    part = depth_slice(full, 2, 3)
    text, vision = part.backbone_config.text_config, part.backbone_config.vision_config
    assert (text.num_hidden_layers, vision.num_hidden_layers) == (2, 3)
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.vocab_size) == (4096, 11008, 32, 32064)
    assert (vision.hidden_size, vision.intermediate_size, vision.num_attention_heads, vision.patch_size,
            vision.image_size) == (1024, 4096, 16, 14, 224)
    assert (part.expert_num_layers, part.expert_hidden_size, part.scene_dims) == (8, 1024, full.scene_dims)
    assert full.backbone_config.text_config.num_hidden_layers == 32  # the original is untouched
    with pytest.raises(ValueError, match="text_layers=0"):
        depth_slice(full, 0, 1)

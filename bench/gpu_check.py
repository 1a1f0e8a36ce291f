"""GPU check: ICM and the bare Video-LLaVA backbone, trained and sampled side by side on one CUDA GPU (< 8 minutes).

What runs (bf16 weights, SDPA attention, the paper's batch of 8 clips x 8 frames, a typical prompt of
``--prompt-tokens`` text tokens plus an ``--answer-tokens`` answer):

* settings: (a) the mid preset (``trainers.presets.mid_icm_config``) and (b) 7B-shaped slices
  (``presets.depth_slice(icm_7b_config(), L, V)``: LLaMA-7B widths — hidden 4096, MLP 11008, 32 heads, vocabulary
  32064 — and CLIP ViT-L/14 — hidden 1024, 16 heads, MLP 4096, patch 14, 224 px — with only L LLM and V vision layers;
  the ICM modules are whole, as in the 7B model);
* train: LoRA (r 16, α 64, dropout 0.05 on the LLM, ``trainers.lora``; ICM also trains SBM + IEC + projector),
  gradient checkpointing, AdamW, the trainer's answer-only logits (``trainers.trainer.answer_only_logits``). Per
  model: median step time, tokens/s, model FLOP utilisation (FLOPs of forward + backward counted on the meta device,
  ``bench_p1_p2_overhead.count_flops``, recomputation by checkpointing not counted, over the device's published dense
  bf16 peak, ``PEAK_BF16_TFLOPS``) and peak memory; the ICM / backbone step-time ratio is P2 on GPU (goal <= 1.15);
* generate: greedy decoding with the KV cache on the same clips — first-token latency (prefill + one token) and
  decode tokens/s over ``--new-tokens`` tokens;
* distributed: one training step (mid preset) through the shipped ``trainers/accelerate_configs/fsdp.yaml`` and
  ``deepspeed_zero2.yaml`` with ``accelerate launch --num_processes 1``;
* extrapolation: a linear per-layer model ``f(L, V) = c + a·L + b·V`` through the slices (base, base), (step, base),
  (base, step) predicts step time and peak memory at the full 32 LLM + 24 vision layers. For the paper's setting
  (1 x A100 40 GB, batch 8, §4.3) the full-depth step time is scaled by the ratio of the bf16 peaks, i.e. the A100 is
  assumed to reach the MFU measured here, and printed per clip next to the paper's own 62 h for 154K clips x 3 epochs.

Out of memory at a setting makes that row read OOM and the check goes on; no CUDA device: one line, exit code 2.
``--device cpu --tiny`` runs the same code at tiny sizes (the test suite does; figures exercise the code only).

    python bench/gpu_check.py [--json gpu_check.json]
    python bench/gpu_check.py --device cpu --tiny --json out.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from bench_p7_memory import _status_kib  # VmRSS / VmHWM from /proc/self/status

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = {
    "fsdp": REPO / "trainers" / "accelerate_configs" / "fsdp.yaml",
    "zero2": REPO / "trainers" / "accelerate_configs" / "deepspeed_zero2.yaml",
}

#: Published dense (non-sparse) bf16 tensor-core peaks in TFLOP/s per GPU, from NVIDIA's datasheets (the "with
#: sparsity" figures there are twice these). Matched in order as substrings of the lower-cased
#: ``torch.cuda.get_device_name()``; more specific names first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("gh200", 989.0),
    ("h200", 989.0),
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.0),  # SXM
    ("h800", 989.0),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("a800", 312.0),
    ("l40s", 362.0),
    ("l40", 181.0),
    ("a10g", 125.0),  # approx.: AWS's A10G; NVIDIA publishes the A10's figure
    ("a10", 125.0),
    ("l4", 121.0),
    ("rtx 4090", 165.0),  # GeForce figure with FP32 accumulation
    ("rtx 3090", 71.0),
)
A100_PEAK_TFLOPS = 312.0
A100_MEMORY_GIB = 40.0
#: §4.3: 62 h of training on one A100 for 154K clips x 3 epochs.
PAPER_SECONDS_PER_CLIP = 62 * 3600 / (154_000 * 3)


def peak_tflops(device_name: str) -> float | None:
    name = device_name.lower()
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value
    return None


def is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(
        marker in text for marker in ("out of memory", "can't allocate memory", "alloc_failed")))


# ----------------------------------------------------------------------------------------------------------------
# Measuring on the device
# ----------------------------------------------------------------------------------------------------------------


class Meter:
    """Synchronised wall time and peak memory since ``reset_peak``: allocated bytes on CUDA; on CPU the process's
    peak resident set (Linux ``/proc``, None elsewhere) — weights, optimizer state and the rest of the process."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._rss_before = None

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            self._rss_before = _status_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
        except OSError:
            self._rss_before = None

    def peak_gib(self) -> float | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        if self._rss_before is None:
            return None
        return _status_kib("VmHWM") / 2**20

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Models and the batch
# ----------------------------------------------------------------------------------------------------------------


def settings(tiny: bool, base: int, step: int) -> tuple[list[dict], object]:
    """The settings to run and the full-depth config the slices extrapolate to."""
    from trainers.presets import depth_slice, icm_7b_config, mid_icm_config, tiny_icm_config

    full = tiny_icm_config() if tiny else icm_7b_config()
    prefix = "tiny-slice" if tiny else "7B-slice"
    rows = [{"name": "tiny" if tiny else "mid", "config": tiny_icm_config() if tiny else mid_icm_config(),
             "generate": True, "depth": None}]
    for depth in ((base, base), (step, base), (base, step)):
        rows.append({"name": f"{prefix} {depth[0]}+{depth[1]}", "config": depth_slice(full, *depth),
                     "generate": depth == (base, base), "depth": depth})
    return rows, full


def use_sdpa(config) -> None:
    for sub in (config.backbone_config, config.backbone_config.text_config, config.backbone_config.vision_config):
        sub._attn_implementation = "sdpa"


def build(kind: str, config, device, dtype) -> torch.nn.Module:
    """``kind`` "icm": ``IcmForVideoSentiment``; "bare": ``VideoLlavaForConditionalGeneration`` of the same backbone
    config (built on its own, so each model's memory is its own)."""
    from transformers import VideoLlavaForConditionalGeneration

    from modeling_icm.modeling_icm import IcmForVideoSentiment

    use_sdpa(config)
    torch.manual_seed(0)
    with torch.device(device):
        model = IcmForVideoSentiment(config) if kind == "icm" else VideoLlavaForConditionalGeneration(config.backbone_config)
    return model.to(dtype)


def make_batch(kind: str, config, batch: int, prompt_tokens: int, answer_tokens: int, device, with_answer: bool):
    """Model inputs: ``<s>`` + 3 text tokens, (ICM) the ``<scene>`` placeholders, the ``<video>`` placeholders, the
    rest of the prompt and (training) the answer, whose positions alone carry labels — the processor's layout."""
    from modeling_icm.scene_contract import DEFAULT_SCENE_ITEMS

    bb = config.backbone_config
    vision = bb.vision_config
    video_tokens = config.num_frames * ((vision.image_size // vision.patch_size) ** 2 + 1)
    gen = torch.Generator().manual_seed(0)
    specials = {config.scene_token_id, bb.video_token_index, bb.image_token_index, bb.text_config.pad_token_id}
    text = torch.randint(10, config.vocab_size, (batch, prompt_tokens + answer_tokens), generator=gen)
    for special in specials:
        text[text == special] = 10
    parts = [text[:, :4]]
    if kind == "icm":
        parts.append(torch.full((batch, config.num_scene_tokens), config.scene_token_id))
    parts += [torch.full((batch, video_tokens), bb.video_token_index), text[:, 4:prompt_tokens]]
    if with_answer:
        parts.append(text[:, prompt_tokens:])
    input_ids = torch.cat(parts, 1)
    pixels = torch.randn(batch, config.num_frames, 3, vision.image_size, vision.image_size, generator=gen)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values_videos": pixels}
    if kind == "icm":
        inputs["scene_features"] = {
            s: torch.randn(batch, config.num_frames, DEFAULT_SCENE_ITEMS[s], d, generator=gen)
            for s, d in config.scene_dims.items() if s in config.active_scenes
        }
        inputs["scene_masks"] = {
            s: torch.ones(batch, config.num_frames, DEFAULT_SCENE_ITEMS[s], dtype=torch.bool)
            for s in inputs["scene_features"]
        }
    if with_answer:
        labels = torch.full_like(input_ids, -100)
        labels[:, -answer_tokens:] = input_ids[:, -answer_tokens:]
        inputs["labels"] = labels
    return _to(inputs, device)


def _to(value, device):
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else value


def prepare_training(kind: str, config, args, device, dtype):
    """(LoRA-wrapped model in train mode with gradient checkpointing, its trainable parameters, the training inputs)."""
    from peft import LoraConfig, get_peft_model

    from trainers.args import LLM_LORA_TARGET_REGEX
    from trainers.lora import apply_lora
    from trainers.trainer import answer_only_logits

    model = build(kind, config, device, dtype)
    if kind == "icm":
        model = apply_lora(model)  # LoRA on the LLM + the ICM modules trained in full (§4.3)
    else:  # the bare backbone: the same LoRA on the same LLM projections, nothing else trains
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=64, lora_dropout=0.05,
                                                 target_modules=LLM_LORA_TARGET_REGEX, bias="none"))
    base = model.get_base_model()
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    inputs = make_batch(kind, config, args.batch, args.prompt_tokens, args.answer_tokens, device, with_answer=True)
    inputs = answer_only_logits({**inputs, "use_cache": False})
    return model, [p for p in model.parameters() if p.requires_grad], inputs


# ----------------------------------------------------------------------------------------------------------------
# The rows
# ----------------------------------------------------------------------------------------------------------------


def train_flops(config, args) -> tuple[int | None, int | None]:
    """(bare, ICM) FLOPs of one training step, counted on the meta device; the answer-only logits cover the answer and
    the position before it (``trainers.trainer.answer_only_logits``). A failed count is reported, and MFU is n/a."""
    from bench_p1_p2_overhead import count_flops

    try:
        return count_flops(config, True, batch=args.batch, text_tokens=args.prompt_tokens + args.answer_tokens,
                           logits_tokens=args.answer_tokens + 1)
    except Exception as error:  # noqa: BLE001 - the timings are still worth having
        print(f"gpu_check: FLOP count failed ({type(error).__name__}: {error}); MFU n/a", file=sys.stderr)
        return None, None


def train_row(kind: str, setting: dict, args, meter: Meter, dtype, peak: float | None) -> dict:
    config = setting["config"]
    model, params, inputs = prepare_training(kind, config, args, meter.device, dtype)
    optimizer = torch.optim.AdamW(params, lr=2e-5)

    def step():
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, allocator, optimizer state
    meter.reset_peak()
    times = [meter.time(step) for _ in range(args.repeats)]
    seconds = statistics.median(times)
    memory = meter.peak_gib()
    seq = inputs["input_ids"].shape[1]
    attention = llm_attention(model)
    checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    flops = setting["flops"][0 if kind == "bare" else 1]
    return {
        "seq_len": seq,
        "step_s": seconds,
        "tokens_per_s": args.batch * seq / seconds,
        "tflop_per_step": flops / 1e12 if flops else None,
        "mfu": flops / seconds / (peak * 1e12) if (peak and flops) else None,
        "peak_gib": memory,
        "attention": attention,
        "checkpointing": checkpointing,
    }


def llm_attention(model: torch.nn.Module) -> str:
    """The attention implementation the LLM's layers actually run."""
    for module in model.modules():
        if type(module).__name__ == "LlamaAttention":
            return module.config._attn_implementation
    return "?"


class TokenClock:
    """A ``generate`` streamer that only records when each ``put`` arrives: first the prompt, then every new token
    (transformers hands each one to the host as it is produced)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate_row(kind: str, setting: dict, args, meter: Meter, dtype) -> dict:
    config = setting["config"]
    model = build(kind, config, meter.device, dtype).eval()
    inputs = make_batch(kind, config, args.batch, args.prompt_tokens, 0, meter.device, with_answer=False)
    prompt_len = inputs["input_ids"].shape[1]

    def generate(n: int, streamer=None):
        with torch.no_grad():
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                  pad_token_id=config.backbone_config.text_config.pad_token_id, streamer=streamer)

    generate(2)  # warm-up
    meter.reset_peak()
    firsts, decodes = [], []
    for _ in range(args.repeats):
        clock = TokenClock()
        meter.sync()
        start = time.perf_counter()
        ids = generate(args.new_tokens, clock)
        firsts.append(clock.times[1] - start)  # prefill (video tower, scenes, the whole prompt) + the first token
        decodes.append(args.batch * (len(clock.times) - 2) / (clock.times[-1] - clock.times[1]))
    new = ids.shape[1] - prompt_len
    memory = meter.peak_gib()
    return {
        "prompt_len": prompt_len,
        "new_tokens": new,
        "first_token_s": statistics.median(firsts),
        "decode_tokens_per_s": statistics.median(decodes),
        "peak_gib": memory,
    }


def guarded(row: dict, meter: Meter, fn, started: float, budget: float) -> dict:
    """Run ``fn`` for ``row``: OOM (and any other failure) is reported in the row, and the check goes on."""
    if time.perf_counter() - started > budget:
        row["status"] = f"skipped (past the {budget:.0f} s budget)"
        return row
    try:
        row.update(fn())
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - one failed setting must not end the check
        row["status"] = "OOM" if is_oom(error) else f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
    meter.free()
    print(f"gpu_check [{time.perf_counter() - started:5.0f} s] {row.get('section', '')} {row.get('setting', '')} "
          f"{row.get('model', '')}: {row['status']}", file=sys.stderr, flush=True)
    return row


# ----------------------------------------------------------------------------------------------------------------
# FSDP / DeepSpeed through accelerate launch
# ----------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_distributed(kind: str, args, started: float) -> dict:
    config_file = ACCELERATE_CONFIGS[kind]
    row = {"section": "distributed", "setting": kind, "config_file": str(config_file.relative_to(REPO))}
    if time.perf_counter() - started > args.budget_s:
        row["status"] = f"skipped (past the {args.budget_s:.0f} s budget)"
        return row
    if kind == "zero2" and importlib.util.find_spec("deepspeed") is None:
        row["status"] = "deepspeed not installed (pip install deepspeed)"
        return row
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "--num_processes", "1", "--num_machines", "1", "--main_process_port", str(_free_port()),
               str(Path(__file__).resolve()), "--worker", kind, "--worker-out", str(result),
               "--device", args.device, "--batch", str(args.batch), "--prompt-tokens", str(args.prompt_tokens),
               "--answer-tokens", str(args.answer_tokens)] + (["--tiny"] if args.tiny else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
        except subprocess.TimeoutExpired:
            row["status"] = f"failed: timed out after {args.worker_timeout} s"
            return row
        if result.exists():
            row.update(json.loads(result.read_text()))
        else:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            row["status"] = f"failed (exit {proc.returncode}): {lines[-1][:200] if lines else 'no output'}"
    return row


def worker(kind: str, args) -> None:
    """Inside ``accelerate launch``: one warm-up and one timed ICM training step of the mid (or tiny) preset, weights
    in fp32 and bf16 compute from the config's ``mixed_precision``; the result goes to ``--worker-out`` as JSON."""
    from trainers.presets import mid_icm_config, tiny_icm_config

    result = {}
    try:
        if args.device == "cpu" and kind == "fsdp":
            # cpu_ram_efficient_loading forces sync_module_states, which accelerate can only do on an accelerator
            # device; off on CPU so that the rest of the step still runs (accelerate then does not shard on CPU)
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
            os.environ["FSDP_SYNC_MODULE_STATES"] = "false"
        from accelerate import Accelerator

        accelerator = Accelerator()
        if kind == "zero2":  # no dataloader goes through prepare(), so DeepSpeed is told the micro-batch here
            accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = args.batch
        config = tiny_icm_config() if args.tiny else mid_icm_config()
        model, params, inputs = prepare_training("icm", config, args, "cpu", torch.float32)
        optimizer = torch.optim.AdamW(params, lr=2e-5)
        model, optimizer = accelerator.prepare(model, optimizer)
        inputs = _to(inputs, accelerator.device)
        meter = Meter(accelerator.device)

        def step():
            accelerator.backward(model(**inputs).loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        meter.reset_peak()
        seconds = meter.time(step)
        expected = {"fsdp": "FSDP", "zero2": "DEEPSPEED"}[kind]
        distributed = accelerator.distributed_type.name
        result = {"distributed_type": distributed, "step_s": seconds, "peak_gib": meter.peak_gib(),
                  "preset": "tiny" if args.tiny else "mid"}
        result["status"] = "ok" if distributed == expected else (
            f"needs CUDA: accelerate ran {distributed} on {accelerator.device.type} (the step ran unsharded)")
    except Exception as error:  # noqa: BLE001 - reported in the parent's row
        result["status"] = "OOM" if is_oom(error) else f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
    if accelerator_is_main():
        Path(args.worker_out).write_text(json.dumps(result))


def accelerator_is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------------------------------------------
# Extrapolation to full depth and the paper's setting
# ----------------------------------------------------------------------------------------------------------------


def extrapolate(points: dict[tuple[int, int], float | None], base: int, step: int,
                target: tuple[int, int]) -> float | None:
    """``f(L, V) = c + a·L + b·V`` through f(base, base), f(step, base), f(base, step), evaluated at ``target``."""
    f0, fl, fv = points.get((base, base)), points.get((step, base)), points.get((base, step))
    if None in (f0, fl, fv):
        return None
    a = (fl - f0) / (step - base)
    b = (fv - f0) / (step - base)
    c = f0 - a * base - b * base
    return c + a * target[0] + b * target[1]


def paper_setting(full_step_s: float | None, full_peak_gib: float | None, device_peak: float | None,
                  batch: int) -> dict:
    """The predicted 1 x A100 40 GB figures: step time scaled by the bf16 peaks (same MFU assumed), per clip."""
    step = full_step_s * device_peak / A100_PEAK_TFLOPS if ((full_step_s or 0) > 0 and device_peak) else None
    return {
        "a100_step_s": step,
        "a100_s_per_clip": step / batch if step else None,
        "peak_gib": full_peak_gib,
        "fits_40gb": None if full_peak_gib is None else full_peak_gib <= A100_MEMORY_GIB,
        "paper_s_per_clip": PAPER_SECONDS_PER_CLIP,
        "paper_hours": 62,
    }


# ----------------------------------------------------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------------------------------------------------


def _f(value, fmt: str, none: str = "n/a") -> str:
    return none if value is None else format(value, fmt)


def _table(rows: list[dict], columns) -> None:
    """``columns``: (title, key, width, format); a row that did not run prints its status instead."""
    print(f"{'setting':<18}{'model':<7}" + "".join(f"{title:>{width}}" for title, _, width, _ in columns))
    for row in rows:
        cells = (f"  {row['status']}" if row["status"] != "ok" else
                 "".join(f"{_f(row[key], fmt):>{width}}" for _, key, width, fmt in columns))
        print(f"{row['setting']:<18}{row['model']:<7}{cells}")


def print_report(report: dict) -> None:
    head = report["header"]
    print(f"gpu_check: {head['device_name']} ({head['peak']}), torch {head['torch']}, {head['dtype']}, "
          f"attention {head['attention']}")
    print(f"batch {head['batch']} x {head['frames']} frames, {head['prompt_tokens']} prompt + {head['answer_tokens']} "
          f"answer text tokens, {head['video_tokens']} video tokens (+{head['scene_tokens']} scene tokens for ICM)"
          + ("   [--tiny: tiny shapes, the figures only exercise the code]" if head["tiny"] else ""))
    print("\ntrain: LoRA r 16 / alpha 64 on the LLM, gradient checkpointing, AdamW, answer-only logits "
          f"(median of {head['repeats']} steps after a warm-up)")
    _table(report["train"], (("seq", "seq_len", 6, "d"), ("step s", "step_s", 10, ".4f"),
                             ("tokens/s", "tokens_per_s", 12, ".0f"), ("TFLOP", "tflop_per_step", 10, ".3g"),
                             ("MFU", "mfu", 8, ".1%"), ("peak GiB", "peak_gib", 10, ".2f")))
    ratios = "  ".join(f"{name} {_f(value, '.3f')}x" for name, value in report["p2_ratio"].items())
    print(f"ICM / backbone step time (P2 on {head['device_type']}, goal <= 1.15): {ratios}")
    print(f"\ngenerate: greedy with the KV cache, {head['new_tokens']} new tokens, batch {head['batch']}")
    _table(report["generate"], (("prompt", "prompt_len", 7, "d"), ("first token s", "first_token_s", 15, ".4f"),
                                ("decode tokens/s", "decode_tokens_per_s", 17, ".1f"), ("peak GiB", "peak_gib", 10, ".2f")))
    print("\ndistributed: one ICM training step, accelerate launch --num_processes 1"
          + ("" if report["distributed"] else " (skipped: --skip-distributed)"))
    for row in report["distributed"]:
        figures = (f"; {row['preset']} preset, step {row['step_s']:.4f} s, peak {_f(row.get('peak_gib'), '.2f')} GiB"
                   if "step_s" in row else "")
        print(f"{row['setting']:<7}{row['config_file']:<50}{row['status']}{figures}")
    ext = report["extrapolation"]
    print(f"\nfull depth ({ext['target'][0]} LLM + {ext['target'][1]} vision layers), linear per-layer model through "
          f"the slices {', '.join(ext['slices'])}:")
    for model in ("bare", "icm"):
        print(f"  {model:<5} step {_f(ext[model]['step_s'], '.3f')} s, peak {_f(ext[model]['peak_gib'], '.1f')} GiB, "
              f"MFU {_f(ext[model]['mfu'], '.1%')}")
    paper = report["paper_setting"]
    fits = {None: "n/a", True: "fits", False: "does not fit"}[paper["fits_40gb"]]
    print(f"paper's setting (1 x A100 40 GB, batch {head['batch']}), ICM predicted: step "
          f"{_f(paper['a100_step_s'], '.2f')} s = {_f(paper['a100_s_per_clip'], '.3f')} s/clip (this GPU's step x "
          f"{head['peak_tflops'] or 'n/a'}/{A100_PEAK_TFLOPS:.0f} TFLOP/s), memory {_f(paper['peak_gib'], '.1f')} GiB "
          f"({fits} in 40 GB)  |  paper: {paper['paper_hours']} h / (154K clips x 3 epochs) = "
          f"{paper['paper_s_per_clip']:.3f} s/clip")
    print(f"\ntotal {report['elapsed_s']:.0f} s (budget {head['budget_s']:.0f} s)")


# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the CPU mode of the test suite)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--batch", type=int, default=8, help="clips per step (paper §4.3: 8)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="text tokens of the prompt (default 96; tiny 16)")
    parser.add_argument("--answer-tokens", type=int, default=None, help="answer tokens (default 32; tiny 8)")
    parser.add_argument("--new-tokens", type=int, default=None, help="generated tokens (default 32; tiny 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per row (default 3; tiny 1)")
    parser.add_argument("--slice-layers", default=None,
                        help="BASE,STEP: slice depths (default 2,4; tiny 1,2): slices (B,B), (S,B), (B,S)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="rows after this many seconds are skipped")
    parser.add_argument("--worker-timeout", type=int, default=240, help="seconds for each accelerate launch")
    parser.add_argument("--skip-distributed", action="store_true", help="no FSDP / ZeRO-2 rows")
    parser.add_argument("--json", default=None, help="also write the report here as JSON")
    parser.add_argument("--worker", choices=sorted(ACCELERATE_CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tiny = args.tiny
    for name, normal, small in (("prompt_tokens", 96, 16), ("answer_tokens", 32, 8), ("new_tokens", 32, 4),
                                ("repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else normal)
    if args.slice_layers is None:
        args.slice_layers = "1,2" if tiny else "2,4"
    try:
        args.base, args.step = (int(x) for x in args.slice_layers.split(","))
    except ValueError:
        parser.error(f"--slice-layers must be BASE,STEP (two integers), got {args.slice_layers!r}")
    if not 1 <= args.base < args.step:
        parser.error(f"--slice-layers needs 1 <= BASE < STEP, got {args.slice_layers!r}")
    if args.prompt_tokens < 5 or args.answer_tokens < 1 or args.new_tokens < 2 or args.batch < 1 or args.repeats < 1:
        parser.error("--prompt-tokens >= 5, --answer-tokens >= 1, --new-tokens >= 2, --batch >= 1, --repeats >= 1")
    if args.device not in ("cuda", "cpu") and not args.device.startswith("cuda:"):
        parser.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if args.dtype is None:
        args.dtype = "fp32" if args.device == "cpu" else "bf16"
    return args


def run_settings(rows: list[dict], args, meter: Meter, dtype, peak, started: float) -> tuple[list, list]:
    """The train rows (bare, then ICM, per setting) and the generate rows, each guarded."""
    train, generate = [], []
    for setting in rows:
        setting["flops"] = train_flops(setting["config"], args)
        for kind in ("bare", "icm"):
            row = {"section": "train", "setting": setting["name"], "model": kind, "depth": setting["depth"]}
            measure = partial(train_row, kind, setting, args, meter, dtype, peak)
            train.append(guarded(row, meter, measure, started, args.budget_s))
            if setting["generate"]:
                row = {"section": "generate", "setting": setting["name"], "model": kind}
                measure = partial(generate_row, kind, setting, args, meter, dtype)
                generate.append(guarded(row, meter, measure, started, args.budget_s))
    return train, generate


def extrapolate_to_full_depth(rows: list[dict], train: list[dict], full_config, args, peak) -> dict:
    """Step time and peak memory of each model at the full depth, and the MFU that step time would mean."""
    target = (full_config.backbone_config.text_config.num_hidden_layers,
              full_config.backbone_config.vision_config.num_hidden_layers)
    full_flops = train_flops(full_config, args)
    out = {"target": list(target), "slices": [f"{r['depth'][0]}+{r['depth'][1]}" for r in rows[1:]]}
    for index, kind in enumerate(("bare", "icm")):
        fitted = {}
        for key in ("step_s", "peak_gib"):
            points = {tuple(r["depth"]): r.get(key) if r["status"] == "ok" else None
                      for r in train if r["model"] == kind and r["depth"]}
            fitted[key] = extrapolate(points, args.base, args.step, target)
        flops = full_flops[index]
        fitted["mfu"] = flops / fitted["step_s"] / (peak * 1e12) if (peak and flops and fitted["step_s"]) else None
        out[kind] = fitted
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False); "
              "the CPU mode is --device cpu --tiny", file=sys.stderr)
        return 2
    started = time.perf_counter()
    device = torch.device(args.device)
    meter = Meter(device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = peak_tflops(name) if device.type == "cuda" else None
    rows, full_config = settings(args.tiny, args.base, args.step)
    config = rows[0]["config"]
    vision = config.backbone_config.vision_config
    header = {
        "device_name": name, "device_type": device.type, "peak_tflops": peak, "torch": torch.__version__,
        "peak": f"dense bf16 peak {peak:.0f} TFLOP/s" if peak else f"no published bf16 peak known for {name}: MFU n/a",
        "dtype": args.dtype, "batch": args.batch, "frames": config.num_frames,
        "prompt_tokens": args.prompt_tokens, "answer_tokens": args.answer_tokens, "new_tokens": args.new_tokens,
        "video_tokens": config.num_frames * ((vision.image_size // vision.patch_size) ** 2 + 1),
        "scene_tokens": config.num_scene_tokens, "repeats": args.repeats, "tiny": args.tiny, "budget_s": args.budget_s,
    }
    train, generate = run_settings(rows, args, meter, dtype, peak, started)
    header["attention"] = ",".join(sorted({r["attention"] for r in train if "attention" in r})) or "n/a"
    extrapolation = extrapolate_to_full_depth(rows, train, full_config, args, peak)
    by = {(r["setting"], r["model"]): r for r in train}
    p2 = {}
    for setting in rows[:2]:
        bare, icm = by[(setting["name"], "bare")], by[(setting["name"], "icm")]
        p2[setting["name"]] = icm["step_s"] / bare["step_s"] if bare["status"] == icm["status"] == "ok" else None
    bare_full, icm_full = extrapolation["bare"]["step_s"], extrapolation["icm"]["step_s"]
    p2["full depth (extrapolated)"] = icm_full / bare_full if (bare_full or 0) > 0 and (icm_full or 0) > 0 else None
    distributed = [] if args.skip_distributed else [launch_distributed(kind, args, started) for kind in ("fsdp", "zero2")]
    report = {
        "header": header, "train": train, "generate": generate, "p2_ratio": p2, "distributed": distributed,
        "extrapolation": extrapolation,
        "paper_setting": paper_setting(icm_full, extrapolation["icm"]["peak_gib"], peak, args.batch),
        "elapsed_s": time.perf_counter() - started,
    }
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

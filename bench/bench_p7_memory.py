"""P7: peak memory of one ICM training step with gradient checkpointing on vs off (goal: on/off <= 0.6x).

Model: ``trainers.presets.mid_icm_config()`` (the 7B model's widths / 8 and depths / 4, 224 px video of 8 frames,
2056 video tokens) with LoRA on the LLM (``trainers.lora.apply_lora``), the paper's default scene dimensions and item
counts, batch ``--batch``. Each mode runs in its own fresh subprocess: the model and the batch are built, the kernel's
peak-RSS counter is reset (``/proc/self/clear_refs`` 5), and one forward + backward step runs; the step's peak is
``VmHWM - RSS before the step`` (the first step: after it the allocator keeps freed activations resident). The two processes run one after
the other in the same invocation and the ratio is printed.

The step is the trainer's: the LM head runs only over the answer positions (``IcmTrainingArguments.
answer_only_logits``, default); ``--full-logits`` measures the head over all ~2100 positions instead, whose
``tokens × 32064`` logits and their gradient are not checkpointable activations and cap the ratio.

    python bench/bench_p7_memory.py [--batch 1] [--threads 2] [--full-logits]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(checkpointing: bool, batch: int, threads: int, full_logits: bool) -> dict:
    import torch

    from modeling_icm.modeling_icm import IcmForVideoSentiment
    from modeling_icm.scene_contract import DEFAULT_SCENE_ITEMS
    from trainers.lora import apply_lora
    from trainers.presets import mid_icm_config
    from trainers.trainer import answer_only_logits

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = mid_icm_config()
    model = IcmForVideoSentiment(config)
    model = apply_lora(model)
    if checkpointing:
        model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    bb = config.backbone_config
    patches = (bb.vision_config.image_size // bb.vision_config.patch_size) ** 2 + 1
    video_tokens = config.num_frames * patches
    prompt_text = 60
    answer = 40
    seq = config.num_scene_tokens + video_tokens + prompt_text + answer
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 30000, (batch, seq), generator=generator)
    input_ids[:, : config.num_scene_tokens] = config.scene_token_id
    input_ids[:, config.num_scene_tokens : config.num_scene_tokens + video_tokens] = bb.video_token_index
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer:] = input_ids[:, -answer:]
    pixel = torch.randn(batch, config.num_frames, 3, bb.vision_config.image_size, bb.vision_config.image_size)
    feats = {s: torch.randn(batch, config.num_frames, DEFAULT_SCENE_ITEMS[s], d) for s, d in config.scene_dims.items()}
    masks = {s: torch.ones(batch, config.num_frames, DEFAULT_SCENE_ITEMS[s], dtype=torch.bool) for s in feats}
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values_videos=pixel,
                  scene_features=feats, scene_masks=masks, labels=labels, use_cache=False)
    if not full_logits:  # what IcmTrainer does by default (IcmTrainingArguments.answer_only_logits)
        inputs = answer_only_logits(inputs)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        out = model(**inputs)
        (out.lm_loss + out.router_loss).backward()
        for p in params:
            p.grad = None
        return out

    # Measure the FIRST step: after a warm-up step the allocator keeps the freed activations resident (glibc does not
    # return them), so a second step's growth above RSS would not show the activation peak at all.
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS


    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    logits_bytes = batch * (seq if full_logits else answer + 1) * config.vocab_size * 4
    return {
        "checkpointing": checkpointing,
        "rss_before_mib": before / 1024,
        "peak_mib": peak / 1024,
        "step_peak_mib": (peak - before) / 1024,
        "step_s": seconds,
        "seq_len": seq,
        "logits_mib": logits_bytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["on", "off"], default=None)
    parser.add_argument("--full-logits", action="store_true",
                        help="LM head over every position (the trainer's default is the answer positions only)")
    ns = parser.parse_args()
    if ns.child is not None:
        print("RESULT " + json.dumps(child(ns.child == "on", ns.batch, ns.threads, ns.full_logits)))
        return
    if not os.path.exists("/proc/self/clear_refs"):
        sys.exit("bench_p7_memory needs Linux /proc (peak-RSS reset)")
    results = {}
    for mode in ("off", "on"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--batch", str(ns.batch), "--threads", str(ns.threads)]
            + (["--full-logits"] if ns.full_logits else []),
            capture_output=True, text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"the {mode} run failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(lines[-1][len("RESULT "):])
        r = results[mode]
        print(f"gradient checkpointing {mode:3s}: step peak {r['step_peak_mib']:8.1f} MiB above {r['rss_before_mib']:.0f} "
              f"MiB resident (process peak {r['peak_mib']:.0f} MiB), step {r['step_s']:.1f} s, {r['seq_len']} tokens")
    ratio = results["on"]["step_peak_mib"] / results["off"]["step_peak_mib"]
    print(f"P7 step peak memory on/off: {ratio:.2f}x (goal <= 0.6x); time on/off: "
          f"{results['on']['step_s'] / results['off']['step_s']:.2f}x; logits alone (not checkpointable): "
          f"{results['off']['logits_mib']:.0f} MiB per copy")


if __name__ == "__main__":
    main()

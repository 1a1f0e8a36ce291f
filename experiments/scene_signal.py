"""The smallest test of ICM's scene pathway: clips whose label is written *only* in their scene features.

A tiny ICM is trained scene-only (``use_video_tokens=False``) on synthetic clips: each label has a random prototype
per scene, and a clip's features are its label's prototypes plus noise (``--noise``); nothing else tells the
labels apart. Held-out clips are answered by generation. A scene pathway that works answers well above chance and
keeps its scene tokens different across clips; a collapsed one gives one answer to every clip.

    python experiments/scene_signal.py --seeds 0,1,2 --set scene_norm_type=layer

Prints one JSON line per run: held-out accuracy, a linear probe's accuracy on the same features, and the scene
diagnostics (``trainers.diagnostics``) before and after training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS = ("Fighting", "Fire", "Theft", "Robbery")
DIMS = {"face": 24, "action": 20, "object": 28, "background": 16}


def label_coded_examples(count: int, seed: int, noise: float = 1.0, clip_noise: float = 0.0) -> list[dict]:
    from trainers.presets import label_coded_scene_examples

    return label_coded_scene_examples(DIMS, list(LABELS), count, seed=seed, noise=noise, clip_noise=clip_noise)


def probe_accuracy(train, test, scenes=("action", "background")) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def x(rows):
        return np.stack([np.concatenate([r["scene_features"][s].mean((0, 1)).numpy() for s in scenes]) for r in rows])

    clf = LogisticRegression(max_iter=5000).fit(x(train), [r["label"] for r in train])
    return float(clf.score(x(test), [r["label"] for r in test]))


def run(seed: int, overrides: dict, steps: int, noise: float, clip_noise: float = 0.0, train_count: int = 48, test_count: int = 24,
        learning_rate: float = 3e-3, out_dir: str = "/tmp/scene-signal") -> dict:
    import torch

    from trainers import IcmTrainer, IcmTrainingArguments
    from trainers.diagnostics import scene_diagnostics
    from trainers.evaluation import generate_example_answers
    from trainers.kmeans_init import initialize_iec_dictionary
    from trainers.presets import tiny_icm

    torch.manual_seed(seed)
    train = label_coded_examples(train_count, seed=100 + seed, noise=noise, clip_noise=clip_noise)
    test = label_coded_examples(test_count, seed=200 + seed, noise=noise, clip_noise=clip_noise)
    corpus = [e["answer"] for e in train]
    model, processor = tiny_icm(DIMS, corpus=corpus, seed=seed, use_video_tokens=False, **overrides)
    before = scene_diagnostics(model, processor, test)
    initialize_iec_dictionary(model, train, seed=seed)
    args = IcmTrainingArguments(
        output_dir=f"{out_dir}/seed{seed}", max_steps=steps, per_device_train_batch_size=8, learning_rate=learning_rate,
        lr_scheduler_type="constant_with_warmup", warmup_steps=0.03, logging_steps=max(1, steps // 5),
        lora_modules_to_save=["embed_tokens", "lm_head"], save_strategy="no", use_cpu=True, seed=seed,
        disable_tqdm=True, report_to="none",
    )
    started = time.perf_counter()
    trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=train)
    trainer.train()
    after = scene_diagnostics(trainer.model, processor, test)
    answers = generate_example_answers(trainer.model, processor, test, batch_size=12, max_new_tokens=12)
    predicted = [a.split(" is ", 1)[1].split(".")[0].strip() if " is " in a else "" for a in answers]
    acc = sum(p == e["label"] for p, e in zip(predicted, test)) / len(test)
    return {
        "seed": seed, "acc": acc, "chance": 1 / len(LABELS), "probe": probe_accuracy(train, test),
        "distinct_answers": len(set(predicted)), "spread_init": before.get("scene_spread"),
        "spread": after.get("scene_spread"), "sensitivity_init": before.get("scene_sensitivity"),
        "sensitivity": after.get("scene_sensitivity"), "norm_ratio": after.get("scene_norm_ratio"),
        "train_s": time.perf_counter() - started, "overrides": overrides,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip-noise", type=float, default=0.0, help="std of a per-clip nuisance vector")
    parser.add_argument("--set", action="append", default=[], help="IcmConfig field=value")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    for seed in [int(s) for s in args.seeds.split(",")]:
        print(json.dumps(run(seed, overrides, args.steps, args.noise, args.clip_noise, learning_rate=args.lr)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

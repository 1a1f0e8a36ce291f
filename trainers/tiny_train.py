"""A deterministic tiny ICM training on synthetic inputs — the smallest complete run of the training machinery
(LoRA + SBM + IEC with a K-means dictionary, ``IcmTrainer``, checkpoints). Used by the resume and DDP tests and
handy for checking a set-up::

    python -m trainers.tiny_train --output-dir /tmp/tiny --max-steps 6
    accelerate launch --num_processes 2 --cpu -m trainers.tiny_train --output-dir /tmp/tiny-ddp --per-device-batch 2

Writes ``<output-dir>/log_history.json`` (main process) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from modeling_icm import templates as T

DIMS = {"face": 24, "action": 20, "object": 28, "background": 16}
#: answers of equal token length, so that DDP ranks average equally weighted token means
ANSWERS = [
    T.combined_answer("implicit", "Fire", [[1, 3]], "orange flames flicker near the ground"),
    T.combined_answer("implicit", "Theft", [[2, 5]], "a purple box is carried away quietly"),
]


class _PauseAfterSave:
    """Sleep after the first checkpoint is written (and leave a marker), so that a test can SIGKILL the run there."""

    def __init__(self, marker: Path, seconds: float):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                marker.write_text(str(state.global_step))
                time.sleep(seconds)

        self.callback = Callback()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--per-device-batch", type=int, default=4)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: never)")
    parser.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    parser.add_argument("--no-kmeans", action="store_true", help="skip K-means (the dictionary must come from --resume)")
    parser.add_argument("--pause-after-save", type=float, default=0.0, help="sleep this long after the first save")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    ns = parser.parse_args(argv)

    import torch

    torch.set_num_threads(ns.threads)
    from .args import IcmTrainingArguments
    from .kmeans_init import initialize_iec_dictionary
    from .presets import synthetic_examples, tiny_icm
    from .trainer import IcmTrainer

    model, processor = tiny_icm(DIMS, seed=ns.seed)
    examples = synthetic_examples(DIMS, ns.examples, ANSWERS, T.combined_instruction("implicit"), seed=ns.seed)
    if not ns.no_kmeans:
        initialize_iec_dictionary(model, examples, seed=ns.seed)
    args = IcmTrainingArguments(
        output_dir=ns.output_dir,
        per_device_train_batch_size=ns.per_device_batch,
        max_steps=ns.max_steps,
        learning_rate=5e-3,
        warmup_steps=0.2,
        logging_steps=1,
        save_strategy="steps" if ns.save_steps else "no",
        save_steps=ns.save_steps or 500,
        use_cpu=True,
        seed=ns.seed,
        data_seed=ns.seed,
        disable_tqdm=True,
        gradient_checkpointing=ns.gradient_checkpointing,
        ddp_find_unused_parameters=False,
        lora_modules_to_save=["lm_head"],
    )
    router_init = float(model.sbm.router.weight.detach().sum())
    callbacks = []
    if ns.pause_after_save:
        callbacks.append(_PauseAfterSave(Path(ns.output_dir) / "saved.marker", ns.pause_after_save).callback)
    trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=examples, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=ns.resume)
    history = trainer.state.log_history
    if trainer.is_world_process_zero():
        os.makedirs(ns.output_dir, exist_ok=True)
        base = trainer.model.get_base_model()
        summary = {
            "log_history": history,
            "world_size": trainer.accelerator.num_processes,
            "dictionary_sum": float(base.iec.dictionary.sum()),
            "router_weight_sum": float(base.sbm.router.weight.detach().sum()),
            "router_weight_sum_init": router_init,
        }
        (Path(ns.output_dir) / "log_history.json").write_text(json.dumps(summary, indent=1))
    return history


if __name__ == "__main__":
    main()

"""``IcmTrainer``: the HF ``Trainer`` with ``L = L_lm + L_rb`` (paper §3.4, Eq. 2), LoRA, logged loss parts and router
weights, checkpoints that keep the ICM modules and the IEC dictionary, and evaluation through generation.

Logging (trl style): every training step adds ``lm_loss``, ``router_loss`` and the router's mean expert weights
``router_weight/<scene>`` (mean of P_j over the frames where some scene is present) to a metrics buffer; the
``log()`` override averages the buffer into the Trainer's logs and clears it. At every logging step
(``scene_diagnostics=True``) the scene pathway of the current batch is measured too (``trainers.diagnostics``:
``scene_spread``, ``scene_norm_ratio``, ``scene_sensitivity``), with a warning when the scene tokens collapse. With ``record_router_probs=True`` the
trainer also keeps, per optimisation step, the router probabilities themselves (``trainer.router_records``), so Eq. 2
can be recomputed from what was logged.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from inference.loading import ICM_MODULES_NAME, icm_base_model, load_icm_module_state_dict

from .args import IcmTrainingArguments
from .collator import IcmDataCollator
from .lora import apply_lora, mark_icm_trainable

logger = logging.getLogger(__name__)



def icm_module_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the ICM modules (SBM, IEC incl. its dictionary buffer, scene_norm, scene_projector), keyed as in
    ``IcmForVideoSentiment.state_dict()``."""
    base = icm_base_model(model)
    out = {}
    for name, tensor in base.state_dict().items():
        if not name.startswith("backbone."):
            out[name] = tensor.detach().cpu().contiguous()
    return out


def answer_only_logits(inputs: dict[str, Any]) -> dict[str, Any]:
    """Restrict the LM head to the positions that predict a label (from the token before the first supervised one to
    the end) with ``logits_to_keep`` and the labels sliced alike. The loss is unchanged (the other positions are -100)
    but the ``tokens × vocab`` logits — thousands of video tokens long — shrink to the answer's length."""
    labels = inputs.get("labels")
    if labels is None or "logits_to_keep" in inputs:
        return inputs
    supervised = labels != -100
    rows = supervised.any(1)
    if not bool(rows.any()):
        return inputs
    first = int(supervised.float().argmax(1)[rows].min())
    keep = labels.shape[1] - max(first - 1, 0)
    if keep >= labels.shape[1]:
        return inputs
    return {**inputs, "labels": labels[:, -keep:], "logits_to_keep": keep}


class IcmTrainer(Trainer):
    """``Trainer`` for ICM.

    Args:
        model: an ``IcmForVideoSentiment`` (LoRA is applied here when ``args.use_lora`` and it is not yet a
            ``PeftModel``) or a ``PeftModel`` around one.
        args: :class:`~trainers.args.IcmTrainingArguments`.
        processor: the ``IcmProcessor`` (the default collator uses it; saved with checkpoints).
        generation_eval_dataset: examples (``trainers.data``) with the combined instruction and the reference
            fields; :meth:`evaluate` then also generates answers and reports the omnisila metrics
            (``eval_acc``, ``eval_map_avg``, ...).
        attribution_metrics: which attribution metrics the generation evaluation computes (default ``("sem_r",)``:
            Sem-C/Sen-A load a sentence encoder; pass ``None`` for all of them).
        record_router_probs: keep each step's router probabilities in ``self.router_records``.
    """

    def __init__(
        self,
        model: nn.Module,
        args: IcmTrainingArguments,
        processor=None,
        data_collator=None,
        generation_eval_dataset=None,
        attribution_metrics: tuple[str, ...] | None = ("sem_r",),
        record_router_probs: bool = False,
        **kwargs,
    ):
        if not isinstance(args, IcmTrainingArguments):
            raise TypeError(f"IcmTrainer needs IcmTrainingArguments, got {type(args).__name__}")
        from peft import PeftModel

        base = icm_base_model(model)
        # One source of truth for Eq. 2's weights: the arguments, written into the config the SBM reads.
        base.config.router_alpha = float(args.router_alpha)
        base.config.router_beta = float(args.router_beta)
        if getattr(base.sbm, "config", None) is not None and base.sbm.config is not base.config:
            base.sbm.config.router_alpha = float(args.router_alpha)
            base.sbm.config.router_beta = float(args.router_beta)
        if args.use_lora and not isinstance(model, PeftModel):
            model = apply_lora(
                model,
                r=args.lora_r,
                lora_alpha=args.lora_alpha,
                lora_dropout=args.lora_dropout,
                target_modules=args.lora_target_modules,
                modules_to_save=args.lora_modules_to_save,
            )
        elif isinstance(model, PeftModel):
            mark_icm_trainable(model)
        else:  # no LoRA: the backbone is frozen entirely, the ICM modules train
            for name, param in model.named_parameters():
                param.requires_grad = not name.startswith("backbone.")
        if args.gradient_checkpointing:
            base.config.use_cache = False
        if data_collator is None:
            if processor is None:
                raise ValueError("IcmTrainer needs a processor (or a data_collator)")
            data_collator = IcmDataCollator(processor)
        super().__init__(model=model, args=args, data_collator=data_collator, processing_class=processor, **kwargs)
        # the model's forward takes **kwargs, but its loss is a per-batch mean: do not hand it num_items_in_batch
        self.model_accepts_loss_kwargs = False
        self.processor = processor
        self.generation_eval_dataset = generation_eval_dataset
        self.attribution_metrics = attribution_metrics
        self.record_router_probs = record_router_probs
        self.router_records: list[dict[str, Any]] = []
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._step_router: list[torch.Tensor] = []
        self._collapse_warned = False

    # -- optimizer ----------------------------------------------------------------------------------------------
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; with ``args.icm_learning_rate`` the ICM modules' parameters form their own
        groups at that rate (weight-decay groups kept)."""
        optimizer = super().create_optimizer(model)
        rate = self.args.icm_learning_rate
        if rate is None or getattr(optimizer, "_icm_groups", False):
            return optimizer
        base = icm_base_model(self.model)
        icm_ids = {id(p) for name in base.icm_module_names for p in getattr(base, name).parameters()}
        groups = []
        for group in optimizer.param_groups:
            for is_icm in (False, True):
                params = [p for p in group["params"] if (id(p) in icm_ids) == is_icm]
                if params:
                    groups.append({**group, "params": params, **({"lr": float(rate)} if is_icm else {})})
        optimizer.param_groups.clear()  # before any step: no optimizer state refers to the old groups
        for group in groups:
            optimizer.add_param_group(group)
        optimizer._icm_groups = True
        return optimizer

    # -- loss ---------------------------------------------------------------------------------------------------
    @property
    def scene_names(self) -> list[str]:
        return list(icm_base_model(self.model).config.active_scenes)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """``L = L_lm + L_rb`` (§3.4); both parts and the router's mean expert weights go to the metrics buffer."""
        if model.training and self.args.scene_diagnostics and self._is_logging_step():
            self._log_scene_diagnostics(model, inputs)
        if self.args.answer_only_logits:
            inputs = answer_only_logits(inputs)
        outputs = model(**inputs)
        if outputs.lm_loss is None:
            raise ValueError("the batch has no labels: IcmTrainer trains on answers (collator with_answers=True)")
        router_loss = outputs.router_loss if outputs.router_loss is not None else outputs.lm_loss.new_zeros(())
        loss = outputs.lm_loss + router_loss
        mode = "train" if model.training else "eval"
        buffer = self._metrics[mode]
        buffer["lm_loss"].append(self._gathered_mean(outputs.lm_loss))
        buffer["router_loss"].append(self._gathered_mean(router_loss))
        probs = outputs.router_probs
        if probs is not None:
            probs = probs.detach().float()
            valid = probs.sum(-1) > 0
            if bool(valid.any()):
                mean = probs[valid].mean(0)
                for scene, value in zip(self.scene_names, mean.tolist()):
                    buffer[f"router_weight/{scene}"].append(value)
            if mode == "train" and self.record_router_probs:
                self._step_router.append(probs.cpu())
        return (loss, outputs) if return_outputs else loss

    def _is_logging_step(self) -> bool:
        """The optimisation step now running ends with a log (``logging_strategy='steps'``)."""
        steps = self.state.logging_steps or self.args.logging_steps
        if self.args.logging_strategy != "steps" or not steps or steps < 1:
            return False
        return (self.state.global_step + 1) % int(steps) == 0

    def _log_scene_diagnostics(self, model, inputs) -> None:
        """Scene-pathway diagnostics of the current batch into the metrics buffer (``trainers.diagnostics``), and
        one warning per training run when the scene tokens collapse to one vector."""
        from .diagnostics import batch_scene_diagnostics, collapse_warning

        # measured on the unwrapped model: a forward through DDP outside the training step would disturb its
        # gradient synchronisation, and the measurement is per process anyway
        found = batch_scene_diagnostics(self.accelerator.unwrap_model(model), inputs, self.scene_names)
        buffer = self._metrics["train"]
        for key in ("scene_spread", "scene_norm_ratio", "scene_sensitivity"):
            if key in found:
                buffer[key].append(found[key])
        warning = collapse_warning(found)
        if warning and not self._collapse_warned:
            self._collapse_warned = True
            logger.warning(f"step {self.state.global_step + 1}: {warning}")

    def _gathered_mean(self, value: torch.Tensor) -> float:
        value = value.detach().float().reshape(1)
        if self.accelerator.num_processes > 1:
            value = self.accelerator.gather_for_metrics(value)
        return float(value.mean())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        buffer = self._metrics[mode]
        averaged = {key: sum(values) / len(values) for key, values in buffer.items() if values}
        if mode == "eval":
            averaged = {f"eval_{key}": value for key, value in averaged.items()}
        elif self.record_router_probs and self._step_router:
            self.router_records.append(
                {
                    "step": self.state.global_step,
                    "router_probs": torch.cat([p.reshape(-1, p.shape[-1]) for p in self._step_router]),
                    "router_loss": averaged.get("router_loss"),
                    "lm_loss": averaged.get("lm_loss"),
                    "num_micro_batches": len(self._step_router),
                }
            )
            self._step_router = []
        logs = {**logs, **averaged}
        buffer.clear()
        super().log(logs, start_time)

    # -- checkpoints: the adapter (PEFT) + the ICM modules -----------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=None if self._is_peft() else state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save and self._is_peft():
            from safetensors.torch import save_file

            save_file(icm_module_state_dict(self.model), os.path.join(output_dir, ICM_MODULES_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = model if model is not None else self.model
        path = os.path.join(resume_from_checkpoint, ICM_MODULES_NAME)
        if self._is_peft():
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"checkpoint {resume_from_checkpoint} has no {ICM_MODULES_NAME}: it was not written by IcmTrainer"
                )
            load_icm_module_state_dict(target, path)
            mark_icm_trainable(target)

    def _is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.accelerator.unwrap_model(self.model), PeftModel)

    # -- evaluation through generation ----------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.generation_eval_dataset is not None:
            from .evaluation import evaluate_generation

            scores = evaluate_generation(
                self.model,
                self.processor,
                self.generation_eval_dataset,
                batch_size=self.args.per_device_eval_batch_size,
                max_new_tokens=self.args.generation_max_new_tokens,
                attribution_metrics=self.attribution_metrics,
            )
            gen_metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores["metrics"].items()}
            metrics.update(gen_metrics)
            super().log(dict(gen_metrics))
        return metrics


__all__ = ["ICM_MODULES_NAME", "IcmTrainer", "icm_module_state_dict", "load_icm_module_state_dict"]

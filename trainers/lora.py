"""LoRA on the LLM and the trainable/frozen split of ICM (paper §4.3).

* the backbone (LLM, vision tower, multimodal projector) is frozen, except the LoRA matrices on the LLM's attention
  and MLP projections (and any ``modules_to_save`` a recipe adds);
* the ICM modules — SBM (experts + router), IEC, ``scene_norm`` and ``scene_projector`` — are trained in full;
* the scene extractors never enter the model (features come from the cache), so they cannot be trained.

The ICM modules are deliberately *not* PEFT ``modules_to_save``: PEFT would wrap them in copies, and the IEC's
methods (``initialize_dictionary_from_embeddings``) would then act on the wrong copy. They stay plain modules with
``requires_grad=True`` and are saved next to the adapter (``trainers.saving``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from inference.loading import icm_base_model


def mark_icm_trainable(model: nn.Module) -> None:
    """Freeze the backbone's own weights (LoRA and modules_to_save excepted) and unfreeze the ICM modules."""
    base = icm_base_model(model)
    for name, param in base.named_parameters():
        if name.startswith("backbone."):
            param.requires_grad = ("lora_" in name) or ("modules_to_save" in name)
        else:
            param.requires_grad = True


def apply_lora(
    model: nn.Module,
    r: int = 16,
    lora_alpha: int = 64,
    lora_dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    modules_to_save: list[str] | None = None,
) -> Any:
    """Wrap an ``IcmForVideoSentiment`` with LoRA on its LLM (§4.3: r 16, α 64, dropout 0.05) and set the
    trainable split (see the module docstring). Returns the ``PeftModel``."""
    from peft import LoraConfig, get_peft_model

    from .args import LLM_LORA_TARGET_REGEX

    config = LoraConfig(
        r=int(r),
        lora_alpha=int(lora_alpha),
        lora_dropout=float(lora_dropout),
        target_modules=target_modules or LLM_LORA_TARGET_REGEX,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    if not wrapped:
        raise ValueError(f"LoRA target_modules {config.target_modules!r} matched no module of the model")
    outside = [n for n in wrapped if ".language_model." not in n]
    if outside:
        raise ValueError(f"LoRA target_modules must match only the LLM, but also matched {outside[:5]}")
    mark_icm_trainable(peft_model)
    return peft_model


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts per part: ``lora``, ``modules_to_save``, each ICM module, ``frozen``."""
    out: dict[str, int] = {}
    base = icm_base_model(model)
    for name, param in base.named_parameters():
        if not param.requires_grad:
            part = "frozen"
        elif "lora_" in name:
            part = "lora"
        elif "modules_to_save" in name:
            part = "modules_to_save"
        else:
            part = name.split(".")[0]
        out[part] = out.get(part, 0) + param.numel()
    return out


__all__ = ["apply_lora", "icm_base_model", "mark_icm_trainable", "trainable_summary"]

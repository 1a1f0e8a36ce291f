"""Saving a trained ICM (paper §3.4) so that it loads back and generates the same answers.

Two layouts:

* **merged** (``merge_lora=True``, the default): LoRA is merged into the LLM (``merge_and_unload``) and the whole
  ``IcmForVideoSentiment`` — backbone, SBM, IEC with its K-means dictionary, scene_norm, scene_projector — is written
  with ``save_pretrained`` in safetensors together with its remote code (``configuration_icm.py``,
  ``modeling_icm.py``, ...) and the processor. It loads anywhere with::

      model = AutoModel.from_pretrained(out_dir, trust_remote_code=True)
      processor = AutoProcessor.from_pretrained(out_dir, trust_remote_code=True)

  or, running none of the folder's code, with the installed package's classes (``processing.trust``;
  ``processing.analysis.load_model`` does this).

* **adapter** (``merge_lora=False``): the PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``:
  the LoRA matrices and any ``modules_to_save``), the ICM modules (``icm_modules.safetensors``: SBM, IEC with its
  dictionary, scene_norm, scene_projector), the ICM config and the processor. Small (the backbone is not copied);
  it needs the base model to load. The loader is :func:`load_icm_adapter`::

      from trainers.saving import load_icm_adapter
      model = load_icm_adapter(out_dir, base_model="path/to/base-icm")  # or an IcmForVideoSentiment instance

  ``base_model`` is required: the ``base_model_name_or_path`` recorded in ``adapter_config.json`` is named in the
  error, and loaded only when the caller names it.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from torch import nn

from .lora import icm_base_model
from .trainer import ICM_MODULES_NAME, icm_module_state_dict, load_icm_module_state_dict

SAVE_FORMAT_FILE = "icm_save.json"


def save_icm(model: nn.Module, out_dir: str | os.PathLike, merge_lora: bool = True, processor=None,
             inplace: bool = False) -> Path:
    """Write a trained ICM to ``out_dir`` (see the module docstring). ``inplace=True`` merges LoRA into ``model``
    itself instead of a copy (saves memory for 7B models; the given ``PeftModel`` is unusable afterwards)."""
    from peft import PeftModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_peft = isinstance(model, PeftModel)
    if merge_lora or not is_peft:
        merged = model
        if is_peft:
            merged = (model if inplace else copy.deepcopy(model)).merge_and_unload()
        merged.save_pretrained(out)
        layout = "merged"
    else:
        from safetensors.torch import save_file

        model.save_pretrained(out)  # adapter_config.json + adapter_model.safetensors
        save_file(icm_module_state_dict(model), out / ICM_MODULES_NAME)
        icm_base_model(model).config.save_pretrained(out / "icm_config")
        layout = "adapter"
    if processor is not None:
        processor.save_pretrained(out)
    (out / SAVE_FORMAT_FILE).write_text(json.dumps({"layout": layout, "icm_modules": ICM_MODULES_NAME}, indent=1))
    return out


def load_icm_adapter(adapter_dir: str | os.PathLike, base_model=None, merge: bool = True,
                     trust_remote_code: bool = False, **from_pretrained_kwargs):
    """Load an adapter-layout save (:func:`save_icm` with ``merge_lora=False``).

    Args:
        adapter_dir: the folder written by ``save_icm(..., merge_lora=False)``.
        base_model: the base ``IcmForVideoSentiment``: an instance, or a path / Hub id the caller names. Required:
            the ``base_model_name_or_path`` recorded in ``adapter_config.json`` is someone else's choice (a
            downloaded adapter could name any model), so it is loaded only when the caller names it here too; the
            error says which one is recorded.
        merge: merge LoRA into the weights and return a plain ``IcmForVideoSentiment`` (else the ``PeftModel``).
        trust_remote_code: let the base model's folder run its own code (``processing.trust``); without it a base
            saved by this package loads with the installed classes and one whose code differs is refused.
    """
    from peft import PeftModel

    from processing.trust import model_from_pretrained

    adapter_dir = Path(adapter_dir)
    icm_file = adapter_dir / ICM_MODULES_NAME
    for needed in ("adapter_config.json", ICM_MODULES_NAME):
        if not (adapter_dir / needed).is_file():
            raise FileNotFoundError(f"{adapter_dir} is not an ICM adapter save: {needed} is missing")
    if base_model is None:
        recorded = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not recorded:
            raise ValueError(f"{adapter_dir}/adapter_config.json records no base_model_name_or_path; pass base_model")
        raise ValueError(
            f"{adapter_dir}/adapter_config.json names the base model {recorded}; load it only if you mean it: pass "
            f"base_model={recorded!r} (icm: --adapter-base {recorded})"
        )
    if isinstance(base_model, (str, os.PathLike)):
        base_model = model_from_pretrained(base_model, trust_remote_code=trust_remote_code, **from_pretrained_kwargs)
    model = PeftModel.from_pretrained(base_model, os.fspath(adapter_dir))
    load_icm_module_state_dict(model, icm_file)
    if merge:
        model = model.merge_and_unload()
    return model.eval()


__all__ = ["load_icm_adapter", "save_icm"]

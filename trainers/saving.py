"""Saving a trained ICM (paper §3.4) so that it loads back and generates the same answers.

Two layouts:

* **merged** (``merge_lora=True``, the default): LoRA is merged into the LLM (``merge_and_unload``) and the whole
  ``IcmForVideoSentiment`` — backbone, SBM, IEC with its K-means dictionary, scene_norm, scene_projector — is written
  with ``save_pretrained`` in safetensors together with its remote code (``configuration_icm.py``,
  ``modeling_icm.py``, ...) and the processor. It loads anywhere with::

      model = AutoModel.from_pretrained(out_dir, trust_remote_code=True)
      processor = AutoProcessor.from_pretrained(out_dir, trust_remote_code=True)

  or, running none of the folder's code, with the installed package's classes (``inference.trust``;
  ``inference.loading.load_model`` does this).

* **adapter** (``merge_lora=False``): the PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``:
  the LoRA matrices and any ``modules_to_save``), the ICM modules (``icm_modules.safetensors``: SBM, IEC with its
  dictionary, scene_norm, scene_projector), the ICM config and the processor. Small (the backbone is not copied);
  it needs the base model to load. The loader is :func:`inference.loading.load_icm_adapter`::

      from inference.loading import load_icm_adapter
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

from inference.loading import ICM_MODULES_NAME, icm_base_model, load_icm_adapter

from .trainer import icm_module_state_dict

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


__all__ = ["load_icm_adapter", "save_icm"]

"""Loading a trained model: ``(model, processor)`` from a model folder (merged or LoRA adapter) or a Hub id.

* :func:`load_model` — what ``icm analyze``, ``icm serve``, the pipeline and lmms-eval call; every failure is one
  :class:`ModelLoadError` line naming the folder or Hub id.
* :func:`check_model_dir` / :func:`check_safetensors` — what a folder must hold, checked before anything loads.
* :func:`load_icm_adapter` — the adapter layout ``trainers.save_icm(..., merge_lora=False)`` writes: LoRA weights,
  ``icm_modules.safetensors`` (the ICM modules' tensors) and the base model the caller names.

No code from a model's folder runs unless ``trust_remote_code`` (:mod:`inference.trust`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from torch import nn

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
#: the ICM modules' tensors (SBM, IEC with its dictionary, scene_norm, scene_projector) beside a LoRA adapter
ICM_MODULES_NAME = "icm_modules.safetensors"


class ModelLoadError(ValueError):
    """A model reference that cannot be loaded: the message names the folder or Hub id and what is missing."""


def icm_base_model(model: nn.Module) -> nn.Module:
    """The ``IcmForVideoSentiment`` inside a DDP / DataParallel and a PEFT wrapper (or the model itself)."""
    from peft import PeftModel

    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    if isinstance(model, PeftModel):
        return model.get_base_model()
    return model


def load_icm_module_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ``icm_modules.safetensors`` into the ICM modules of ``model`` (strictly: every ICM tensor must be there)."""
    from safetensors.torch import load_file

    base = icm_base_model(model)
    state = load_file(os.fspath(path))
    expected = {k for k in base.state_dict() if not k.startswith("backbone.")}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: ICM module tensors do not match the model (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]})")
    base.load_state_dict(state, strict=False)



def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def check_model_dir(path: str | os.PathLike) -> str:
    """``"merged"`` or ``"adapter"`` for a loadable model folder; :class:`ModelLoadError` naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"model {path}: not a directory (give a model folder or a Hub id org/name)")
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        for weights in sorted(path.glob("*.safetensors")):
            check_safetensors(weights)
        return "adapter"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {path} has no config.json (is it a saved ICM model?)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"model directory {path} has no weights (expected model.safetensors)")
    if not any((path / name).is_file() for name in PROCESSOR_FILES):
        raise ModelLoadError(f"model directory {path} has no processor (processor_config.json); save the processor with it")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"model directory {path} has no tokenizer: {path / TOKENIZER_FILES[0]} not found; save the "
                             "processor (its tokenizer) with the model")  # fmt: skip
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
    return "merged"


def check_safetensors(path: str | os.PathLike) -> None:
    """:class:`ModelLoadError` naming ``path`` when it is not a whole safetensors file (a truncated download or copy
    fails later inside the loader with a message that names no file). Reads the header only."""
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            problem = "truncated or not a safetensors file (its header is incomplete)"
        else:
            try:
                header = json.loads(handle.read(length))
                end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError):
                problem = "not a safetensors file (its header is not valid)"
            else:
                if 8 + length + end > size:
                    problem = f"truncated: {size:,} bytes, its header describes {8 + length + end:,}"
    if problem:
        raise ModelLoadError(f"{path}: {problem}; copy or download it again")


def load_model(reference: str | os.PathLike, device: str = "cpu", trust_remote_code: bool = False,
               base_model: str | os.PathLike | None = None):
    """``(model, processor)`` from a local folder (merged model or LoRA adapter) or a Hub id, both from the same
    place, the model in eval mode on ``device``. No code from the model's folder runs unless ``trust_remote_code``
    (``inference.trust``): a model saved by this package loads with the installed package's classes, one whose
    code files differ is refused. An adapter's base model is ``base_model`` (the user's choice); the one recorded in
    ``adapter_config.json`` is used only when it is given here too. Every failure is a one-line
    :class:`ModelLoadError` naming the reference."""
    from .trust import UntrustedCodeError, model_from_pretrained, processor_from_pretrained

    ref = os.fspath(reference)
    path = Path(ref).expanduser()
    if path.exists():
        layout = check_model_dir(path)
        try:
            if layout == "adapter":
                model = load_icm_adapter(path, base_model=base_model, trust_remote_code=trust_remote_code)
            else:
                model = model_from_pretrained(path, trust_remote_code=trust_remote_code)
            processor = processor_from_pretrained(path, trust_remote_code=trust_remote_code)
        except UntrustedCodeError as err:
            raise ModelLoadError(str(err)) from err
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"cannot load the model in {path}: {_first_line(err)}") from err
    elif HUB_ID_RE.match(ref):
        try:
            model = model_from_pretrained(ref, trust_remote_code=trust_remote_code)
            processor = processor_from_pretrained(ref, trust_remote_code=trust_remote_code)
        except UntrustedCodeError as err:
            raise ModelLoadError(str(err)) from err
        except Exception as err:  # noqa: BLE001 - any Hub/network failure is one clear line
            if _offline():
                raise ModelLoadError(
                    f"cannot load model '{ref}' from the Hub: offline (HF_HUB_OFFLINE=1) and not in the local cache; "
                    "give a local model folder instead"
                ) from err
            raise ModelLoadError(f"cannot load model '{ref}' from the Hub: {_first_line(err)}") from err
    else:
        raise ModelLoadError(f"model {ref}: no such directory, and not a Hub id of the form org/name")
    return model.to(device).eval(), processor


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
        trust_remote_code: let the base model's folder run its own code (:mod:`inference.trust`); without it a base
            saved by this package loads with the installed classes and one whose code differs is refused.
    """
    from peft import PeftModel

    from inference.trust import model_from_pretrained

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


__all__ = [
    "HUB_ID_RE",
    "ICM_MODULES_NAME",
    "ModelLoadError",
    "check_model_dir",
    "check_safetensors",
    "icm_base_model",
    "load_icm_adapter",
    "load_icm_module_state_dict",
    "load_model",
]

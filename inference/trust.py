"""Whether loading a model may run Python code from its folder (transformers' ``trust_remote_code``), decided once.

A folder written by this package's ``save_pretrained`` carries copies of the package's Hub remote code
(``configuration_icm.py``, ``modeling_icm.py``, ...) and a config whose ``auto_map`` names its classes.
``trust_remote_code=True`` imports those copies and runs whatever they hold: a downloaded folder could hold anything.
The rule here (every loader of the package goes through it):

* **without trust** (the default): a model whose config names this package's classes (``model_type`` ``icm``,
  ``auto_map`` -> ``IcmConfig`` / ``IcmForVideoSentiment`` / ``IcmProcessor``) loads with the *installed* package's
  classes, provided each of its code files (``*.py`` beside ``config.json``) is the installed package's file to the
  byte. A code file that differs (another version of the model, or planted code) or a config that names other code
  is refused with :class:`UntrustedCodeError`, one line naming the files and ``--trust-remote-code``. A model with no
  ``auto_map`` (a stock transformers checkpoint) loads as transformers loads it, with ``trust_remote_code=False``.
* **with trust** (``--trust-remote-code`` on the command line, ``trust_remote_code=True`` in Python): transformers'
  own remote-code loading, as the user asked; the folder's code runs.

A Hub id is judged the same way on its ``config.json`` and code files (fetched without importing them; offline, from
the local cache).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: ``auto_map`` entries that name this package's classes (as ``save_pretrained`` writes them).
PACKAGE_AUTO_MAP = {
    "AutoConfig": "configuration_icm.IcmConfig",
    "AutoModel": "modeling_icm.IcmForVideoSentiment",
    "AutoProcessor": "processing_icm.IcmProcessor",
}
PACKAGE_MODEL_TYPE = "icm"
TRUST_FLAG = "--trust-remote-code"


class UntrustedCodeError(ValueError):
    """A model would run code from its folder and the user did not trust it."""


@dataclass(frozen=True)
class CodeCheck:
    """What a model folder's code files and config say: ``package`` — the config names this package's classes;
    ``differing`` — code files that are not the installed package's (or auto_map entries naming other code)."""

    package: bool
    differing: tuple[str, ...] = field(default=())
    has_auto_map: bool = False


def installed_code_dir() -> Path:
    """The folder of the installed package's remote code (``modeling_icm``)."""
    import modeling_icm

    return Path(modeling_icm.__file__).resolve().parent


def _auto_map_entries(config: dict) -> dict[str, str]:
    entries: dict[str, str] = {}
    for holder in (config, config.get("video_processor") or {}, config.get("image_processor") or {}):
        auto_map = holder.get("auto_map") if isinstance(holder, dict) else None
        if isinstance(auto_map, dict):
            for key, value in auto_map.items():
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    if item:
                        entries[str(key)] = str(item)
    return entries


def check_code(folder: str | os.PathLike) -> CodeCheck:
    """Compare the code files and the ``auto_map`` of a local model folder with the installed package's."""
    folder = Path(folder)
    configs = []
    for name in ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json",
                 "video_preprocessor_config.json"):  # fmt: skip
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # the loader reports a broken file; nothing of it runs here
            if isinstance(data, dict):
                configs.append((name, data))
    entries = {}
    for _, data in configs:
        entries.update(_auto_map_entries(data))
    model_type = next((d.get("model_type") for n, d in configs if n == "config.json"), None)
    installed = installed_code_dir()
    differing = []
    for key, value in sorted(entries.items()):
        if "--" in value or value not in PACKAGE_AUTO_MAP.values():  # "org/repo--module.Class": code from elsewhere
            differing.append(f"auto_map {key}={value}")
    for path in sorted(folder.glob("*.py")):
        mine = installed / path.name
        if not mine.is_file() or mine.read_bytes() != path.read_bytes():
            differing.append(path.name)
    package = model_type == PACKAGE_MODEL_TYPE or bool(entries) and set(entries.values()) <= set(PACKAGE_AUTO_MAP.values())
    return CodeCheck(package=package, differing=tuple(differing), has_auto_map=bool(entries))


def _local_copy(reference: str) -> Path:
    """A local folder holding the configs and code files of ``reference`` (the folder itself, or for a Hub id the
    cached snapshot of its ``*.json`` and ``*.py`` files, fetched without importing anything)."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(reference, allow_patterns=["*.json", "*.py"]))


def code_policy(reference: str | os.PathLike, trust_remote_code: bool = False) -> str:
    """How to load ``reference`` (a folder or a Hub id): ``"remote"`` (trusted: the folder's code runs),
    ``"package"`` (the installed package's classes), or ``"transformers"`` (no code of the folder: a stock
    checkpoint). Raises :class:`UntrustedCodeError` when untrusted code would be needed."""
    if trust_remote_code:
        return "remote"
    reference = os.fspath(reference)
    check = check_code(_local_copy(reference))
    if check.differing:
        shown = ", ".join(check.differing[:4]) + (" ..." if len(check.differing) > 4 else "")
        what = "its code differs from the installed omnisila-icm's" if check.package else "it needs its own code"
        raise UntrustedCodeError(
            f"model {reference}: {what} ({shown}); that code would run on loading. Pass {TRUST_FLAG} "
            "(trust_remote_code=True in Python) only if you trust it"
        )
    return "package" if check.package else "transformers"


def config_from_pretrained(reference: str | os.PathLike, trust_remote_code: bool = False, **kwargs):
    """``AutoConfig.from_pretrained`` under :func:`code_policy`."""
    policy = code_policy(reference, trust_remote_code)
    if policy == "package":
        from modeling_icm.configuration_icm import IcmConfig

        return IcmConfig.from_pretrained(os.fspath(reference), **kwargs)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(os.fspath(reference), trust_remote_code=policy == "remote", **kwargs)


def model_from_pretrained(reference: str | os.PathLike, trust_remote_code: bool = False, **kwargs):
    """``AutoModel.from_pretrained`` under :func:`code_policy`."""
    policy = code_policy(reference, trust_remote_code)
    if policy == "package":
        from modeling_icm.modeling_icm import IcmForVideoSentiment

        return IcmForVideoSentiment.from_pretrained(os.fspath(reference), **kwargs)
    from transformers import AutoModel

    return AutoModel.from_pretrained(os.fspath(reference), trust_remote_code=policy == "remote", **kwargs)


def processor_from_pretrained(reference: str | os.PathLike, trust_remote_code: bool = False, **kwargs):
    """``AutoProcessor.from_pretrained`` under :func:`code_policy`."""
    policy = code_policy(reference, trust_remote_code)
    if policy == "package":
        from modeling_icm.processing_icm import IcmProcessor

        return IcmProcessor.from_pretrained(os.fspath(reference), **kwargs)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(os.fspath(reference), trust_remote_code=policy == "remote", **kwargs)


__all__ = [
    "PACKAGE_AUTO_MAP",
    "TRUST_FLAG",
    "CodeCheck",
    "UntrustedCodeError",
    "check_code",
    "code_policy",
    "config_from_pretrained",
    "model_from_pretrained",
    "processor_from_pretrained",
]

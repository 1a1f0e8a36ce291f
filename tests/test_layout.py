"""The layout rule: the library packages form one-way layers (``LAYERS``, bottom up) and never import the command
line (``icm_cli``), a thin layer over the library that re-exports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("modeling_icm", "processing", "datasets_scripts", "evaluate_metrics", "inference", "trainers")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in a source file, at any depth (lazy imports inside functions
    too); text that merely mentions a module (a docstring, a template written for a Space) is not an import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend([(node.lineno, node.module)])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def library_files() -> list[Path]:
    return sorted(p for package in LIBRARY for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_library_module_imports_the_cli():
    files = library_files()
    assert len(files) > 50 and {p.relative_to(ROOT).parts[0] for p in files} == set(LIBRARY)
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if module == "icm_cli" or module.startswith("icm_cli.")
    ]
    assert offenders == [], "the library must not import the CLI:\n" + "\n".join(offenders)


def test_the_import_scanner_sees_lazy_imports_and_ignores_text(tmp_path):
    """The scanner can fail: a lazy import inside a function is found, a template string is not an import."""
    source = tmp_path / "m.py"
    source.write_text(
        'TEMPLATE = "from icm_cli.app import launch_app"\n'
        "def f():\n    from icm_cli.demo import run_demo\n    import icm_cli.main\n"
        "    import importlib\n    importlib.import_module('icm_cli.app')\n"
    )
    assert [m for _, m in imported_modules(source) if m.startswith("icm_cli")] == [
        "icm_cli.demo",
        "icm_cli.main",
        "icm_cli.app",
    ]
    hub = {m for _, m in imported_modules(ROOT / "trainers" / "hub.py")}
    assert "evaluate_metrics.tables" in hub and "inference.loading" in hub


def test_metrics_table_of_the_library():
    from evaluate_metrics import METRIC_NAMES, metrics_table

    table = metrics_table({"icm": {"acc": 0.5, "fnr": 0.25, "atr_r": 6.5, "map@0.1": float("nan")}, "base": {"acc": 0.1}})
    lines = table.splitlines()
    assert lines[0] == "| metric | icm | base |"
    assert "| Acc | 50.00 | 10.00 |" in lines and "| FNRs ↓ | 25.00 | – |" in lines and "| Atr-R | 6.50 | – |" in lines
    assert "| mAP@0.1 | – | – |" in lines and lines[-1].startswith("Values in %")
    assert [line.split(" | ")[0][2:] for line in lines[2:6]] == [METRIC_NAMES[k] for k in ("acc", "map@0.1")] + [
        "FNRs ↓",
        "Atr-R",
    ]


#: The layers, bottom up (docs/architecture.md): a package may import the packages below it, never those above.
LAYERS = ("modeling_icm", "processing", "datasets_scripts", "evaluate_metrics", "inference", "trainers", "icm_cli")
#: The upward imports that exist, each named by its file: the remote code's two documented lazy calls into the
#: installed package — the processor runs the extractors when it is given videos (``processing``), and the
#: ``video-sentiment-analysis`` pipeline decodes a video (``processing``) and cuts it into windows with the window
#: analysis (``inference``). All are
#: imported inside a function, so the Hub folder loads without them. No other upward import is allowed; an entry that
#: no longer imports upward must be removed (the test says so).
UPWARD_IMPORTS: dict[str, set[str]] = {
    "modeling_icm/processing_icm.py": {"processing"},
    "modeling_icm/pipeline_icm.py": {"processing", "inference"},
}


def package_edges() -> dict[str, set[str]]:
    """``{file: {package it imports from another layer}}`` over every package of :data:`LAYERS`."""
    edges: dict[str, set[str]] = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            for _, module in imported_modules(path):
                top = module.split(".")[0]
                if top in LAYERS and top != package:
                    edges.setdefault(str(path.relative_to(ROOT)), set()).add(top)
    return edges


def test_imports_go_down_the_layers_except_the_named_ones():
    rank = {package: i for i, package in enumerate(LAYERS)}
    upward: dict[str, set[str]] = {}
    for path, targets in package_edges().items():
        up = {t for t in targets if rank[t] > rank[path.split("/")[0]]}
        if up:
            upward[path] = up
    new = {p: sorted(t - UPWARD_IMPORTS.get(p, set())) for p, t in upward.items() if t - UPWARD_IMPORTS.get(p, set())}
    assert not new, f"imports that go up the layers {LAYERS}: {new}"
    stale = {p: sorted(t - upward.get(p, set())) for p, t in UPWARD_IMPORTS.items() if t - upward.get(p, set())}
    assert not stale, f"UPWARD_IMPORTS lists imports that are gone (remove them): {stale}"


def test_the_layer_check_can_fail(tmp_path, monkeypatch):
    """An upward import that is not named fails the check."""
    import test_layout as layout

    fake = dict(layout.package_edges())
    fake["datasets_scripts/new.py"] = {"trainers"}
    monkeypatch.setattr(layout, "package_edges", lambda: fake)
    with pytest.raises(AssertionError, match="datasets_scripts/new.py"):
        layout.test_imports_go_down_the_layers_except_the_named_ones()

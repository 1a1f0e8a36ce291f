"""The set-up path a fresh machine takes: README commands, .ci/run, the virtualenv, the lower bounds."""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "the README opens with a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_second():
    demo, tests = _readme_commands()
    assert demo.startswith("bash scripts/setup.sh && ") and " demo" in demo
    assert tests.startswith("bash scripts/setup.sh && ") and "pytest tests" in tests
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == tests, "the last line of .ci/run is the README's test command, verbatim"
    # both run inside the project's own virtualenv, never the machine's interpreter
    assert ".venv/bin/" in demo and ".venv/bin/" in tests


def test_setup_script_makes_its_own_virtualenv_without_system_site_packages():
    script = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r"-m venv \"\$VENV\"", script) and "--system-site-packages" not in script
    # torch is pinned and installed before anything that could let a resolver choose another torch
    assert script.index("torch==2.14.1 torchvision==0.29.1") < script.index('-e ".[dev]"')


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="checks CI's fresh virtualenv, which exists only when CI=true")
def test_ci_runs_inside_a_virtualenv_isolated_from_the_system():
    assert sys.prefix != sys.base_prefix, "CI's interpreter is a virtualenv"
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    assert "include-system-site-packages = false" in cfg.read_text()


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("omnisila-icm")]
    return reqs


def test_installed_versions_satisfy_the_declared_lower_bounds():
    """The suite runs with what is installed; every declared lower bound must admit it (bounds are versions the
    suite has passed with). scripts/setup.sh installs every extra (``.[dev]`` plus the ``--no-deps`` ones), so a
    declared package that is missing fails here: a broken install does not hide behind skipped tests."""
    from packaging.requirements import Requirement

    checked = 0
    for line in _requirements():
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            pytest.fail(f"{req.name} ({line}) is declared in pyproject.toml and installed by scripts/setup.sh, "
                        "but it is not installed")  # fmt: skip
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} does not satisfy {line}"
        checked += 1
    assert checked >= 20


def test_the_licence_pyproject_declares_is_shipped():
    declared = re.search(r'^license = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert declared and declared.group(1) == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text

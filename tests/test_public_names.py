"""Every public name resolves: ``from <package> import *`` works for each library package, and every name that a
package or one of its modules lists in ``__all__`` is an attribute it really has."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

PACKAGES = [name for name in ("modeling_icm", "processing", "datasets_scripts", "evaluate_metrics", "inference",
                              "trainers", "icm_cli") if importlib.util.find_spec(name) is not None]  # fmt: skip


def _modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    return [package] + sorted(
        info.name
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        if not info.name.endswith("__main__")
    )


def test_the_library_packages_are_found():
    assert {"modeling_icm", "processing", "datasets_scripts", "evaluate_metrics", "trainers"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import_works(package):
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # noqa: S102 - the statement under test
    module = sys.modules[package]
    assert set(getattr(module, "__all__", ())) <= set(namespace)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_resolves(package):
    missing = []
    for name in _modules(package):
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            continue
        assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
        missing += [f"{name}.{attr}" for attr in exported if not hasattr(module, attr)]
    assert not missing, missing

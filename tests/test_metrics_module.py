"""The ``omnisila`` evaluate module: offline loading, its doctests, its inputs, and the self-contained Hub Space."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import evaluate
import pytest

from evaluate_metrics.functions import compute_omnisila
from evaluate_metrics.space import VENDORED_MODULES, export_space

REPO = Path(__file__).resolve().parents[1]
MODULE = str(REPO / "evaluate_metrics" / "omnisila")

PREDICTIONS = [
    "The implicit visual sentiment is Fire. The location of Fire is from 4s to 18s and from 20s to 22s. "
    "The attribution is thick smoke and flames rise from the roof.",
    "The implicit visual sentiment is Theft. The location of Theft is 00:02 to 00:09. The attribution is a man "
    "takes a bag.",
    "I am not sure what happens here.",
]
REFERENCES = [
    {"sentiment": "Fire", "segments": [[4.0, 18.0]], "cause": "flames and smoke rise from the roof", "duration": 30.0},
    {"sentiment": "Theft", "segments": [[1.0, 10.0]], "cause": "a man steals a bag", "duration": 12.0},
    {"sentiment": "Normal", "segments": [], "cause": "people walk", "duration": 10.0},
]


@pytest.fixture(scope="module")
def implicit_module():
    return evaluate.load(MODULE, "implicit")


def test_module_loads_offline_and_matches_the_functions(implicit_module):
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    result = implicit_module.compute(predictions=PREDICTIONS, references=REFERENCES, attribution_metrics=["sem_r"])
    assert result == compute_omnisila(PREDICTIONS, REFERENCES, "implicit", attribution_metrics=["sem_r"])
    assert result["acc"] == pytest.approx(2 / 3) and result["num_examples"] == 3


def test_kwargs_description_doctests_pass(monkeypatch):
    import importlib.util

    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location("omnisila_script", REPO / "evaluate_metrics/omnisila/omnisila.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name in ("_DESCRIPTION", "_KWARGS_DESCRIPTION", "_CITATION"):
        assert getattr(script, name).strip()
    test = doctest.DocTestParser().get_doctest(
        script._KWARGS_DESCRIPTION, {"evaluate": evaluate}, "omnisila._KWARGS_DESCRIPTION", None, 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 6
    assert runner.summarize(verbose=False).failed == 0


def test_structured_predictions_with_and_without_scores():
    module = evaluate.load(MODULE, "explicit")
    references = [{"sentiment": "negative", "segments": [[0.0, 10.0]], "cause": "she cries", "duration": 20.0}] * 2
    with_scores = [
        {"sentiment": "negative", "segments": [[12.0, 15.0], [0.0, 10.0]], "scores": [0.1, 0.9], "attribution": ""},
        {"sentiment": "negative", "segments": [], "scores": [], "attribution": "she cries"},
    ]
    without = [{k: v for k, v in p.items() if k != "scores"} for p in with_scores]
    first = module.compute(predictions=with_scores, references=references, attribution_metrics=[])
    second = module.compute(predictions=without, references=references, attribution_metrics=[])
    assert first["map@0.1"] == pytest.approx(0.5)  # one of two ground-truth segments found, first in score order
    assert second["map@0.1"] == pytest.approx(0.25)  # without scores the false positive comes first
    for prediction, reference in zip(without, references):
        module.add(prediction=prediction, reference=reference)
    assert module.compute(attribution_metrics=[]) == second


@pytest.mark.parametrize(
    "references,message",
    [([{"sentiment": "Joy", "segments": [], "cause": "", "duration": 5.0}], r"references\[0\]\.sentiment"),
     ([{"sentiment": "Fire", "segments": [[5.0, 1.0]], "cause": "", "duration": 5.0}], r"references\[0\]\.segments\[0\]"),
     ([{"sentiment": "Fire", "segments": [], "cause": "", "duration": float("nan")}], r"references\[0\]\.duration")],
)  # fmt: skip
def test_bad_input_through_the_module(implicit_module, references, message):
    with pytest.raises(ValueError, match=message):
        implicit_module.compute(predictions=["x"], references=references, attribution_metrics=[])


def test_importing_the_package_imports_no_heavy_framework():
    code = (
        "import sys, evaluate_metrics, evaluate_metrics.functions, evaluate_metrics.judges, evaluate_metrics.space;"
        "import evaluate_metrics.attribution, evaluate_metrics.compute_metrics;"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'openai') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_unknown_config_is_refused():
    with pytest.raises(ValueError, match="config name"):
        evaluate.load(MODULE, "emotions")


_ISOLATED = textwrap.dedent(
    """
    import importlib.abc, json, sys
    REPO_PACKAGES = {"evaluate_metrics", "modeling_icm", "processing", "trainers", "datasets_scripts", "icm_cli"}

    class BlockRepo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in REPO_PACKAGES:
                raise ModuleNotFoundError(f"blocked: {name} comes from the repository")

    sys.meta_path.insert(0, BlockRepo())
    import evaluate

    module = evaluate.load(sys.argv[1] + "/omnisila.py", "implicit")
    args = json.loads(sys.argv[2])
    result = module.compute(predictions=args["predictions"], references=args["references"], attribution_metrics=["sem_r"])
    # a module loaded from the checkout's own code; the virtualenv may live inside the checkout (.venv/): not a leak
    files = {n: str(getattr(m, "__file__", None) or "") for n, m in list(sys.modules.items())}
    leaked = [n for n, f in files.items() if f.startswith(sys.argv[3]) and not f.startswith(sys.prefix)]
    print(json.dumps({"result": result, "leaked": leaked}))
    """
)


@pytest.mark.slow  # a fresh interpreter importing evaluate/datasets/rouge: ~10 s of CPU
def test_exported_space_works_without_the_repository(tmp_path):
    space = export_space(tmp_path / "space" / "omnisila", repo_id="omnisila-org/omnisila")
    names = {p.name for p in space.iterdir()}
    assert {"omnisila.py", "README.md", "app.py", "requirements.txt"} <= names
    assert {f"{name}.py" for name in VENDORED_MODULES} <= names
    card = (space / "README.md").read_text()
    assert card.startswith("---\n") and "app_file: app.py" in card and "- evaluate" in card
    assert 'evaluate.load("omnisila-org/omnisila", "implicit")' in (space / "omnisila.py").read_text()
    for path in space.glob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.startswith(("from evaluate_metrics", "from modeling_icm", "import evaluate_metrics")), path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1")
    payload = json.dumps({"predictions": PREDICTIONS, "references": REFERENCES})
    run = subprocess.run(
        [sys.executable, "-I", "-c", _ISOLATED, str(space), payload, str(REPO)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []
    assert out["result"] == compute_omnisila(PREDICTIONS, REFERENCES, "implicit", attribution_metrics=["sem_r"])


def test_export_refuses_code_that_needs_the_repository(tmp_path, monkeypatch):
    import evaluate_metrics.space as space_module

    leaky = tmp_path / "leaky.py"
    leaky.write_text("import numpy\nfrom evaluate_metrics.cli import main\n")
    monkeypatch.setitem(space_module.VENDORED_MODULES, "leaky", leaky)
    with pytest.raises(ValueError, match="leaky.py: imports 'cli'"):
        export_space(tmp_path / "out")

"""The README, ``docs/``, the code, its comments and the tests describe the package, not the way it was made: the
wording listed in ``tests/data/development_wording.json`` (with examples that must be caught) is not allowed; say "on
a 2-core CPU" or "an offline machine". Commit hashes are not allowed either, except a pin of an upstream repository
(a hash that follows ``owner/repo @`` or ``owner/repo`` ... ``commit``), which is a reference."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
PACKAGES = ("modeling_icm", "processing", "datasets_scripts", "evaluate_metrics", "inference", "trainers", "icm_cli",
            "tests", "bench")  # fmt: skip

# the disallowed wording: (what it is, a case-insensitive pattern), and examples each pattern must catch
WORDING = json.loads((REPO / "tests" / "data" / "development_wording.json").read_text(encoding="utf-8"))
HISTORY = [(entry["what"], entry["pattern"]) for entry in WORDING["patterns"]]
HISTORY_RE = [(what, re.compile(pattern, re.IGNORECASE)) for what, pattern in HISTORY]
# 7 to 40 hex digits with at least one letter and one digit
COMMIT_RE = re.compile(r"(?<![\w-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
# what precedes an upstream pin: "owner/repo @ <hash>", "owner/repo** (commit `<hash>`"
UPSTREAM_PIN_RE = re.compile(r"[\w.-]+/[\w.-]+\W{0,4}(?:@|\(?commit)\W{0,3}$", re.IGNORECASE)
# technical names the patterns would otherwise catch: pytest's fixture scope and session objects of libraries
ALLOWED = re.compile(r"""scope=["']session["']|\b\w*Session\b|session_id|sessionmaker""")


def _files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.splitlines()  # fmt: skip
    out = []
    for name in tracked:
        path = REPO / name
        top = name.split("/", 1)[0]
        if name == "README.md" or (top == "docs" and name.endswith(".md")):
            out.append(path)
        elif top in PACKAGES and name.endswith((".py", ".yaml", ".yml", ".md")):
            out.append(path)
        elif name in ("pyproject.toml", "scripts/setup.sh"):
            out.append(path)
    return [p for p in out if p.resolve() != THIS_FILE and p.is_file()]


def _findings(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        checked = ALLOWED.sub("", line)
        for what, pattern in HISTORY_RE:
            for match in pattern.finditer(checked):
                found.append(f"{number}: {what}: {match.group(0).strip()!r}")
    for match in COMMIT_RE.finditer(text):
        if not UPSTREAM_PIN_RE.search(text[max(0, match.start() - 80) : match.start()]):
            found.append(f"{text.count(chr(10), 0, match.start()) + 1}: a commit hash: {match.group(0)!r}")
    return found


def test_the_scan_covers_the_readme_docs_code_and_tests():
    names = {p.relative_to(REPO).as_posix() for p in _files()}
    assert "README.md" in names and any(n.startswith("docs/") for n in names)
    for package in ("modeling_icm", "processing", "datasets_scripts", "evaluate_metrics", "trainers", "tests"):
        assert any(n.startswith(f"{package}/") and n.endswith(".py") for n in names), package


@pytest.mark.parametrize(
    "text",
    WORDING["caught_examples"],
)  # fmt: skip
def test_history_wording_is_caught(text):
    assert _findings(text), text


@pytest.mark.parametrize(
    "text",
    ['@pytest.fixture(scope="session")', "onnxruntime.InferenceSession(path)", "on a 2-core CPU",
     "an offline machine", "yrcong/RelTR @ fca7397", "**nku/TSL300** (commit\n`ed5158d576b9f8ae68ad306adcf8378d0db9c217`", "caption#tokens#from#to, 0.0#0.0", "# 12 frames",
     "sha256 " + "ab12" * 16, "3e-4", "a fresh machine takes", "the windows done so far"],
)  # fmt: skip
def test_technical_wording_is_not_caught(text):
    assert not _findings(text), _findings(text)


def test_readme_docs_code_and_tests_do_not_speak_of_the_development_history():
    problems = []
    for path in _files():
        for finding in _findings(path.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{path.relative_to(REPO)}:{finding}")
    assert not problems, "\n".join(problems)

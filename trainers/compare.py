"""The comparison runner (``icm compare``): paper Tables 1-3 and Figure 3 from one grid file. The command in
``icm_cli`` only parses the arguments, prints progress and sets the exit code.

A *grid* names the systems to compare on one data set and evaluation split:

.. code-block:: yaml

    name: mini-tables
    recipe: demo                  # the recipe every trained system starts from (trainers/recipes/ or a path)
    override: {...}               # merged into every trained system's recipe (data, stages, evaluate, ...)
    reference: ICM                # the row every other row is t-tested against
    attribution_metrics: [sem_r]  # which of sem_r, sem_c, sen_a to score (null: all three)
    zero_shot: {batch_size: 4, max_new_tokens: 96, device: cpu, dtype: null}   # settings of zero-shot systems
    systems:
      - {name: Video-LLaVA, ablation: {scene_tokens: false}}        # the fine-tuned backbone alone
      - {name: ICM, tables: [1, 2, 3]}
      - {name: w/o SBM, recipe: paper-wo-sbm}                        # a shipped ablation recipe ...
      - {name: w/o IEC, ablation: {iec: false}}                      # ... or the switch itself
      - {name: w/o face, ablation: {scenes: [action, object, background]}, tables: [3]}
      - {name: Qwen2-VL-7B (zero-shot), zero_shot: Qwen/Qwen2-VL-7B-Instruct}   # or tiny:qwen2_vl (offline)

A system is trained with ``trainers.run_recipe`` (its ``recipe`` or the grid's, then the grid's ``override``, then
its own ``override`` and ``ablation``) or asked zero-shot (``trainers.baselines``). Every trained system gets the
grid's data (one data folder; one feature cache per extractor set-up under ``<out>/cache/``, so the Table 1 rows share
one and each Table 3 row has its own) and every system is scored on the same evaluation clips: those the grid's
recipe selects (``data.eval_split``, ``data.max_eval_clips``).

Each run is cached in ``<out>/runs/<slug>/`` with a fingerprint of what defines it (the resolved recipe or the
zero-shot settings, and the evaluation clips): a rerun re-scores cached predictions and only runs what changed or
failed. A run that fails is recorded, marked in the tables, and the others complete. Every evaluation clip is
scored; a clip without an answer counts as an empty (wrong) answer and the tables say how many were missing.

Outputs in ``<out>``: ``tables.md`` (Tables 1-3 as Markdown), ``table1.csv``/``table2.csv``/``table3.csv``,
``significance.csv`` (every per-example metric of every row against the reference), ``scores.json`` and the
Figure 3 charts (per-label FNRs and, with judge scores, Atr-R across systems).

Significance (paper §4.4: "t-test is used to evaluate the significance"): a paired t-test
(``evaluate_metrics.paired_t_test``) of each row's per-example scores against the reference's on the same clips:
VSI on per-example accuracy, VSL on the per-example localisation score ``tiou`` (``evaluate_metrics.functions``),
VSA on per-example Sem-R. p-values are written as the paper writes them: ``<0.01``, ``<0.05``, else two decimals.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


class GridError(ValueError):
    """A grid that cannot run: a missing file, an unknown field, a bad system entry (the message names it)."""


GRIDS_DIR = Path(__file__).resolve().parent / "grids"
GRID_FIELDS = {"name", "recipe", "override", "reference", "attribution_metrics", "zero_shot", "systems", "output_dir"}
SYSTEM_FIELDS = {"name", "recipe", "override", "ablation", "zero_shot", "tables"}
ZERO_SHOT_DEFAULTS = {"batch_size": 4, "max_new_tokens": 96, "device": "cpu", "dtype": None, "num_frames": None}
#: task -> the per-example score its p-value is computed on
P_METRICS: dict[str, str] = {"VSI": "acc", "VSL": "tiou", "VSA": "sem_r"}
TABLE_COLUMNS: dict[int, list[tuple[str, str]]] = {
    1: [("acc", "Acc"), ("f2", "F2"), ("fnr", "FNRs↓"), ("map@0.1", "mAP@0.1"), ("map@0.2", "mAP@0.2"),
        ("map@0.3", "mAP@0.3"), ("map_avg", "mAP@tIoU"), ("p:VSI", "p VSI"), ("p:VSL", "p VSL")],
    2: [("sem_r", "Sem-R"), ("sem_c", "Sem-C"), ("sen_a", "Sen-A"), ("atr_r", "Atr-R"), ("p:VSA", "p VSA")],
    3: [("acc", "Acc"), ("f2", "F2"), ("fnr", "FNRs↓"), ("map_avg", "mAP@tIoU"), ("sen_a", "Sen-A"),
        ("atr_r", "Atr-R"), ("p:VSI", "p VSI"), ("p:VSL", "p VSL"), ("p:VSA", "p VSA")],
}  # fmt: skip
TABLE_TITLES = {
    1: "Table 1: identifying (VSI) and locating (VSL)",
    2: "Table 2: attributing (VSA)",
    3: "Table 3: the scenes captured",
}


# ----------------------------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "system"


def load_grid(grid: str | os.PathLike | Mapping) -> dict:
    """Read and check a grid (a path, the name of a grid in ``trainers/grids/``, or a mapping)."""
    if isinstance(grid, Mapping):
        data = dict(grid)
    else:
        path = Path(grid)
        if not path.is_file() and (GRIDS_DIR / f"{grid}.yaml").is_file():
            path = GRIDS_DIR / f"{grid}.yaml"
        if not path.is_file():
            raise GridError(f"grid file not found: {grid} (shipped grids: {sorted(p.stem for p in GRIDS_DIR.glob('*.yaml'))})")
        import yaml

        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as err:
            raise GridError(f"grid file {path} cannot be parsed: {err}") from err
        if not isinstance(data, dict):
            raise GridError(f"grid file {path} must hold a mapping")
        data.setdefault("name", path.stem)
    unknown = set(data) - GRID_FIELDS
    if unknown:
        raise GridError(f"unknown grid field(s) {sorted(unknown)}; known: {sorted(GRID_FIELDS)}")
    systems = data.get("systems")
    if not isinstance(systems, list) or not systems:
        raise GridError("grid field 'systems' must be a non-empty list")
    names = []
    for i, system in enumerate(systems):
        if not isinstance(system, Mapping) or not system.get("name"):
            raise GridError(f"grid systems[{i}]: a mapping with a 'name' is required")
        bad = set(system) - SYSTEM_FIELDS
        if bad:
            raise GridError(f"grid systems[{i}] ({system['name']}): unknown field(s) {sorted(bad)}; known: {sorted(SYSTEM_FIELDS)}")
        if system.get("zero_shot") and (system.get("recipe") or system.get("ablation") or system.get("override")):
            raise GridError(f"grid systems[{i}] ({system['name']}): a zero_shot system takes no recipe/ablation/override")
        tables = system.get("tables", [1, 2])
        if not isinstance(tables, list) or any(t not in TABLE_COLUMNS for t in tables):
            raise GridError(f"grid systems[{i}] ({system['name']}): tables must be a list of 1, 2, 3")
        names.append(system["name"])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or len({_slug(n) for n in names}) != len(names):
        raise GridError(f"grid system names must be distinct (also as folder names): {duplicates or names}")
    reference = data.get("reference", "ICM")
    if reference not in names:
        raise GridError(f"grid field 'reference': {reference!r} is not one of the systems {names}")
    data["reference"] = reference
    data.setdefault("recipe", "demo")
    data["zero_shot"] = {**ZERO_SHOT_DEFAULTS, **(data.get("zero_shot") or {})}
    return data


def _recipe_path(name) -> str:
    """A recipe file, or the name of a recipe shipped in ``trainers/recipes/``, as a path ``load_recipe`` reads."""
    from .recipe import RECIPES_DIR

    candidate = Path(str(name))
    if not candidate.is_file() and (RECIPES_DIR / f"{name}.yaml").is_file():
        candidate = RECIPES_DIR / f"{name}.yaml"
    return str(candidate.resolve()) if candidate.is_file() else str(name)


def _base_recipe(g: dict) -> dict:
    """The grid's recipe with its override (unresolved): data, configs and evaluation clips of every system."""
    from .recipe import _merge

    return _merge({"base": _recipe_path(g["recipe"])}, g.get("override") or {})


def _recipe_for(grid: dict, system: Mapping, base: dict, data_dir: Path, cache_dir: Path) -> dict:
    """The resolved recipe of a trained system (see the module docstring for the order of the overrides); its data
    and evaluation clips are the grid's (``base``, resolved)."""
    from .recipe import _merge, load_recipe

    data: dict = {"base": _recipe_path(system.get("recipe") or grid["recipe"])}
    data = _merge(data, grid.get("override") or {})
    data = _merge(data, system.get("override") or {})
    if system.get("ablation"):
        data = _merge(data, {"ablation": dict(system["ablation"])})
    shared = {k: base["data"][k] for k in ("configs", "eval_split", "max_eval_clips")}
    data = _merge(data, {"name": _slug(system["name"]), "data": {"data_dir": str(data_dir), "mini_set": None, **shared}})
    recipe = load_recipe(data)
    # one feature cache per extractor set-up: the cache keeps one entry per video, so systems with other scenes
    # (Table 3) get their own instead of replacing each other's
    features = recipe["features"]
    setup = (features["pipeline"], features["pipeline_kwargs"], recipe["ablation"]["scenes"], features["num_frames"])
    features["cache_dir"] = str(cache_dir / _fingerprint(*setup))
    return recipe


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------


def _evaluation_clips(recipe: dict, data_dir: Path) -> dict[str, list]:
    from .recipe import _clip_records

    return {
        config: _clip_records(recipe, data_dir, config, recipe["data"]["eval_split"], "max_eval_clips")
        for config in recipe["data"]["configs"]
    }


def _zero_shot_model(spec: str, out: Path) -> str:
    """A model id/folder, or ``tiny:<arch>``: a tiny random model of that architecture built once under ``out``."""
    if not str(spec).startswith("tiny:"):
        return str(spec)
    from .baselines import build_tiny_video_llm

    arch = str(spec).split(":", 1)[1]
    folder = out / "tiny-models" / arch
    if not (folder / "config.json").is_file():
        build_tiny_video_llm(arch, folder)
    return str(folder)


def _run_system(grid, system, sys_dir: Path, recipe, clips, data_dir, out, log) -> dict[str, str]:
    """Run one system; returns ``{config: predictions path}``."""
    if system.get("zero_shot"):
        from .baselines import zero_shot_predictions

        settings = grid["zero_shot"]
        model_ref = _zero_shot_model(system["zero_shot"], out)
        paths = {}
        for config, records in clips.items():
            run = zero_shot_predictions(
                model_ref, data_dir, config, recipe["data"]["eval_split"], sys_dir / config,
                num_frames=int(settings["num_frames"] or recipe["features"]["num_frames"]),
                batch_size=int(settings["batch_size"]), max_new_tokens=int(settings["max_new_tokens"]),
                clip_ids=[r.id for r in records], device=settings["device"], dtype=settings["dtype"],
                log=lambda line: log(f"  {line}"),
            )  # fmt: skip
            paths[config] = run["predictions"]
        return paths
    from .recipe import run_recipe

    run_recipe(recipe, output_dir=sys_dir / "train", log=lambda line: log(f"  {line}"))
    return {config: str(sys_dir / "train" / f"predictions-trained-{config}.jsonl") for config in clips}


def _read_answers(path: str | os.PathLike) -> dict[str, str]:
    answers: dict[str, str] = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("answer"), str) and row.get("id") is not None:
                answers[str(row["id"])] = row["answer"]
    return answers


def _references(records) -> tuple[list[str], list[dict]]:
    ids = [r.id for r in records]
    refs = [{"sentiment": r.label, "segments": [list(map(float, s)) for s in r.segments], "cause": r.cause,
             "duration": float(r.duration)} for r in records]  # fmt: skip
    return ids, refs


def score_system(
    answers: Mapping[str, str], ids: Sequence[str], refs: Sequence[dict], config: str, attribution_metrics, judge=None
):
    """Score one system's answers on the references (every reference: a missing answer is the empty answer).
    Returns ``(OmnisilaResult, number missing)``."""
    from evaluate_metrics.functions import MISSING_ANSWER, score_omnisila

    predictions = [answers.get(i, MISSING_ANSWER) for i in ids]
    missing = sum(1 for i in ids if i not in answers)
    kwargs = {} if attribution_metrics is None else {"attribution_metrics": tuple(attribution_metrics)}
    return score_omnisila(predictions, list(refs), config, judge=judge, **kwargs), missing


def format_p(p: float | None) -> str:
    """A p-value as the paper writes it."""
    if p is None or not math.isfinite(p):
        return "–"
    if p < 0.01:
        return "<0.01"
    if p < 0.05:
        return "<0.05"
    return f"{p:.2f}"


def run_grid(
    grid: str | os.PathLike | Mapping,
    out_dir: str | os.PathLike | None = None,
    *,
    only: Sequence[str] | None = None,
    rerun: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or reuse) every system of a grid, score them, write the tables and charts. Returns the scores document.

    ``only`` restricts the run to these system names (the others are still scored from their caches when present);
    ``rerun`` forces these systems to run again."""
    log = log or (lambda line: None)
    g = load_grid(grid)
    out = Path(out_dir or g.get("output_dir") or Path("runs") / f"compare-{_slug(g['name'])}")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    from .recipe import _prepare_data, load_recipe

    started = time.perf_counter()
    try:
        base = load_recipe(_base_recipe(g))
    except ValueError as err:
        raise GridError(f"grid {g['name']}: its recipe {g['recipe']!r}: {err}") from err
    data_dir = _prepare_data(base, out, log)
    cache_dir = out / "cache"
    clips = _evaluation_clips(base, data_dir)
    references = {config: _references(records) for config, records in clips.items()}
    for config, (ids, refs) in references.items():
        _write_if_changed(out / f"references-{config}.jsonl", "".join(json.dumps({"id": i, **r}) + "\n" for i, r in zip(ids, refs)))
    timings["prepare_s"] = time.perf_counter() - started

    runs: dict[str, dict] = {}
    for system in g["systems"]:
        name = system["name"]
        sys_dir = out / "runs" / _slug(name)
        sys_dir.mkdir(parents=True, exist_ok=True)
        record_path = sys_dir / "run.json"
        try:
            recipe = base if system.get("zero_shot") else _recipe_for(g, system, base, data_dir, cache_dir)
            spec = {"zero_shot": system["zero_shot"], **g["zero_shot"]} if system.get("zero_shot") else recipe
            fingerprint = _fingerprint(spec, {c: i for c, (i, _) in references.items()})
        except Exception as err:  # noqa: BLE001 - a bad entry is marked; the others complete
            runs[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            log(f"{name}: cannot resolve: {err}")
            continue
        previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
        cached = previous.get("status") == "done" and previous.get("fingerprint") == fingerprint
        if cached and name not in rerun:
            runs[name] = previous
            log(f"{name}: cached ({sys_dir})")
            continue
        if only is not None and name not in only:
            runs[name] = {"status": "not run", "error": "not selected (--only)"}
            continue
        log(f"{name}: running ({'zero-shot ' + str(system['zero_shot']) if system.get('zero_shot') else 'training'})")
        step = time.perf_counter()
        record = {"name": name, "fingerprint": fingerprint, "kind": "zero_shot" if system.get("zero_shot") else "trained",
                  "scenes": None if system.get("zero_shot") else list(recipe["ablation"]["scenes"])}  # fmt: skip
        try:
            record["predictions"] = _run_system(g, system, sys_dir, recipe, clips, data_dir, out, log)
            record["status"] = "done"
        except Exception as err:  # noqa: BLE001 - recorded and marked in the tables; the grid carries on
            record["status"] = "failed"
            record["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            record["traceback"] = traceback.format_exc()[-4000:]
            log(f"{name}: FAILED: {record['error']}")
        record["runtime_s"] = round(time.perf_counter() - step, 2)
        record_path.write_text(json.dumps(record, indent=1))
        runs[name] = record

    for system in g["systems"]:  # the scene-pathway diagnostics of every trained run (results.json)
        run = runs.get(system["name"], {})
        if run.get("status") == "done" and not system.get("zero_shot"):
            run["diagnostics"] = _trained_diagnostics(out / "runs" / _slug(system["name"]) / "train" / "results.json")

    started = time.perf_counter()
    document = score_grid(g, runs, references)
    document["timings"] = {**timings, "score_s": time.perf_counter() - started}
    started = time.perf_counter()
    write_outputs(document, out)
    document["timings"]["write_s"] = time.perf_counter() - started
    # the timings change on every run: kept in the returned document, not in scores.json (a cached rerun of the
    # same scores rewrites nothing)
    saved = {k: v for k, v in document.items() if k != "timings"}
    _write_if_changed(out / "scores.json", json.dumps(saved, default=_json_default))
    return document


def _trained_diagnostics(results_path: Path) -> dict:
    """``{config: scene diagnostics of the trained model}`` from a run's ``results.json`` (``trainers.diagnostics``;
    the probe's accuracy added as ``probe_acc``); empty when the run wrote none."""
    try:
        diagnostics = json.loads(results_path.read_text()).get("diagnostics") or {}
    except (OSError, ValueError):
        return {}
    out = {}
    for config, found in (diagnostics.get("trained") or {}).items():
        probe = (diagnostics.get("scene_probe") or {}).get(config, {})
        out[config] = {**found, **({"probe_acc": probe["probe_acc"]} if "probe_acc" in probe else {})}
    return out


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (a cached rerun rewrites nothing). Compared as bytes: a text
    read would turn the CSVs' ``\r\n`` into ``\n`` and never match, so every rerun rewrote them."""
    data = text.encode("utf-8")
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    path.write_bytes(data)


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


# ----------------------------------------------------------------------------------------------------------------
# scoring and tables
# ----------------------------------------------------------------------------------------------------------------


def score_grid(g: dict, runs: Mapping[str, dict], references: Mapping[str, tuple[list, list]]) -> dict[str, Any]:
    """Scores, per-label figures and the significance of every row against the reference."""
    from evaluate_metrics.functions import paired_t_test

    systems: dict[str, dict] = {}
    per_example: dict[str, dict[str, dict]] = {}
    for system in g["systems"]:
        name = system["name"]
        run = runs.get(name, {"status": "not run"})
        entry: dict[str, Any] = {"status": run.get("status"), "tables": system.get("tables", [1, 2]),
                                 "kind": "zero_shot" if system.get("zero_shot") else "trained",
                                 "scenes": run.get("scenes"), "configs": {}}  # fmt: skip
        if run.get("error"):
            entry["error"] = run["error"]
        if run.get("diagnostics"):
            entry["diagnostics"] = run["diagnostics"]
        if run.get("status") == "done":
            per_example[name] = {}
            for config, (ids, refs) in references.items():
                answers = _read_answers(run["predictions"][config])
                result, missing = score_system(answers, ids, refs, config, g.get("attribution_metrics", ["sem_r"]))
                entry["configs"][config] = {
                    "metrics": {k: float(v) for k, v in result.summary.items()},
                    "per_label": result.per_label,
                    "missing": missing,
                }
                per_example[name][config] = result.per_example
        systems[name] = entry
    reference = g["reference"]
    significance = []
    for name, entry in systems.items():
        if name == reference or reference not in per_example or name not in per_example:
            continue
        for config in references:
            ref_scores, scores = per_example[reference][config], per_example[name][config]
            entry["configs"][config]["p"] = {}
            for metric in sorted(set(ref_scores) & set(scores)):
                try:
                    test = paired_t_test(scores[metric], ref_scores[metric])
                except ValueError:
                    continue  # fewer than 2 finite pairs
                significance.append({"system": name, "config": config, "metric": metric, **test})
                for task, chosen in P_METRICS.items():
                    if chosen == metric:
                        entry["configs"][config]["p"][task] = test["pvalue"]
    return {"grid": g["name"], "reference": reference, "configs": list(references), "systems": systems,
            "significance": significance}  # fmt: skip


def _cell(entry: dict, config: str, key: str) -> str:
    if entry["status"] != "done":
        return "failed" if entry["status"] == "failed" else "–"
    values = entry["configs"][config]
    if key.startswith("p:"):
        return format_p(values.get("p", {}).get(key[2:]))
    value = values["metrics"].get(key)
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if key == "atr_r" else f"{100 * value:.2f}"


def table_rows(document: dict, table: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one table (``table`` 1, 2 or 3)."""
    from modeling_icm.templates import SCENE_NAMES

    configs = document["configs"]
    columns = TABLE_COLUMNS[table]
    head = ["Approach"]
    if table == 3:
        head += ["Fac", "Act", "Obj", "Back"]
    multi = len(configs) > 1
    head += [f"{c} {label}" if multi else label for c in configs for _, label in columns]
    head.append("missing")
    rows = []
    for name, entry in document["systems"].items():
        if table not in entry["tables"] and name != document["reference"]:
            continue
        row = [name]
        if table == 3:
            scenes = entry.get("scenes") or ()
            row += ["✓" if s in scenes else "" for s in SCENE_NAMES]
        row += [_cell(entry, c, key) for c in configs for key, _ in columns]
        row.append(str(sum(v.get("missing", 0) for v in entry["configs"].values())) if entry["status"] == "done" else "–")
        rows.append(row)
    return head, rows


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(document: dict, out: Path) -> dict[str, str]:
    """``tables.md``, ``table{1,2,3}.csv``, ``significance.csv`` and the Figure 3 charts."""
    import csv

    from evaluate_metrics.charts import write_charts

    files: dict[str, str] = {}
    parts = [f"# {document['grid']}: Omni-SILA comparison", "",
             f"Values in %, except Atr-R (judge score 1–10); FNRs: lower is better. p: paired t-test of the row "
             f"against {document['reference']} on the same clips (VSI: per-clip accuracy, VSL: per-clip tIoU, VSA: "
             f"per-clip Sem-R). missing: clips without an answer, scored as wrong.", ""]  # fmt: skip
    for table in (1, 2, 3):
        head, rows = table_rows(document, table)
        if len(rows) <= 1 and table == 3 and not any(3 in e["tables"] for e in document["systems"].values()):
            continue
        parts += [f"## {TABLE_TITLES[table]}", "", markdown_table(head, rows), ""]
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(head)
        writer.writerows(rows)
        path = out / f"table{table}.csv"
        _write_if_changed(path, buffer.getvalue())
        files[f"table{table}"] = str(path)
    pathway = [(name, config, found) for name, e in document["systems"].items()
               for config, found in (e.get("diagnostics") or {}).items()]  # fmt: skip
    if pathway:
        parts += ["## The scene pathway of the trained systems", "",
                  "Does the clip reach the answer through the scene tokens (`trainers.diagnostics`, on the evaluation "
                  "clips)? spread: relative spread of the scene tokens across clips (near 0: one vector for every clip); "
                  "sensitivity: change of the answer distribution when two clips' scene features are swapped; probe: a "
                  "linear probe's accuracy on the same scene features.", ""]  # fmt: skip
        head = ["Approach", "config", "spread", "norm ratio", "sensitivity", "router weights", "probe acc"]
        rows = []
        for name, config, found in pathway:
            routers = ", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in found.items()
                                if k.startswith("router_weight/") and v > 0.005)  # fmt: skip
            probe = f"{100 * found['probe_acc']:.2f}" if "probe_acc" in found else "–"
            rows.append([name, config, f"{found.get('scene_spread', float('nan')):.4f}",
                         f"{found.get('scene_norm_ratio', float('nan')):.2f}",
                         f"{found.get('scene_sensitivity', float('nan')):.4f}", routers or "–", probe])  # fmt: skip
        parts += [markdown_table(head, rows), ""]
    failed = {n: e.get("error", "") for n, e in document["systems"].items() if e["status"] == "failed"}
    if failed:
        parts += ["Failed runs (marked `failed`; rerun `icm compare` to retry them):", ""]
        parts += [f"* {name}: {error}" for name, error in failed.items()] + [""]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, ["system", "config", "metric", "statistic", "pvalue", "mean_difference", "num_pairs"])
    writer.writeheader()
    writer.writerows(document["significance"])
    path = out / "significance.csv"
    _write_if_changed(path, buffer.getvalue())
    files["significance"] = str(path)
    for config in document["configs"]:
        docs = {
            name: {"config": config, "per_label": e["configs"][config]["per_label"],
                   "has_judge_scores": "atr_r" in e["configs"][config]["metrics"]}
            for name, e in document["systems"].items()
            if e["status"] == "done" and (1 in e["tables"] or name == document["reference"])
        }  # fmt: skip
        if docs:
            # the charts are redrawn only when what they show changed (a rerun of cached runs re-scores, no redraw)
            key = _fingerprint(docs)
            sidecar = out / f"figure3-{config}.json"
            previous = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
            charts = previous.get("charts", {})
            if previous.get("key") != key or not all(Path(v).is_file() for v in charts.values()):
                charts = write_charts(docs, out, prefix=f"figure3-{config}-")
                sidecar.write_text(json.dumps({"key": key, "charts": charts}))
            files.update({f"figure3-{config}-{k}": v for k, v in charts.items()})
            parts += [f"Figure 3 ({config}): " + ", ".join(f"[{k}]({Path(v).name})" for k, v in charts.items()), ""]
    _write_if_changed(out / "tables.md", "\n".join(parts))
    files["tables"] = str(out / "tables.md")
    document["files"] = files
    return files


__all__ = ["GridError", "format_p", "load_grid", "markdown_table", "run_grid", "score_grid", "score_system", "table_rows",
           "write_outputs"]  # fmt: skip

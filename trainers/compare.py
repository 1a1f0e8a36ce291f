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

``seeds: [0, 1, 2]`` trains every trained system once per seed (the recipe's ``seed``: initial weights and data
order), in ``<out>/runs/<slug>/seed-<n>/``; the tables then give the mean ± std over the seeds, and the paired
t-tests pair each clip of each seed with the reference's same clip and seed (a zero-shot system runs once and its
answers pair with every seed). Without ``seeds`` each system runs once with its recipe's seed.

On a study set (``datasets_scripts.mini_set``, ``variant="study"``) the tables add the accuracy on its conflict
clips (``Acc conflict``), and the scene-pathway section gives the router's weights per label (which expert each
label's clips use), averaged over seeds.

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

from .baselines import read_answers


class GridError(ValueError):
    """A grid that cannot run: a missing file, an unknown field, a bad system entry (the message names it)."""


GRIDS_DIR = Path(__file__).resolve().parent / "grids"
GRID_FIELDS = {"name", "recipe", "override", "reference", "attribution_metrics", "zero_shot", "systems", "output_dir",
               "seeds"}
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
    seeds = data.get("seeds")
    if seeds is not None:
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds)):  # fmt: skip
            raise GridError(f"grid field 'seeds' must be a list of distinct non-negative integers, got {seeds!r}")
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
    # (``_merge`` replaces a value by an empty mapping: an absent override must not be merged at all)
    for override in (grid.get("override"), system.get("override")):
        if override:
            data = _merge(data, override)
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
    from .recipe import clip_records

    return {
        config: clip_records(recipe, data_dir, config, recipe["data"]["eval_split"], "max_eval_clips")
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


def _references(records) -> tuple[list[str], list[dict]]:
    from evaluate_metrics.functions import reference_of

    return [r.id for r in records], [reference_of(r) for r in records]


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
    jobs: int = 1,
) -> dict[str, Any]:
    """Run (or reuse) every system of a grid, score them, write the tables and charts. Returns the scores document.

    ``only`` restricts the run to these system names (the others are still scored from their caches when present);
    ``rerun`` forces these systems to run again. ``jobs``: how many runs go at once, each in its own process with one
    torch thread (the scene features are extracted first, one set-up at a time); 1 runs them in this process."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise GridError(f"jobs must be a positive integer, got {jobs!r}")
    log = log or (lambda line: None)
    g = load_grid(grid)
    out = Path(out_dir or g.get("output_dir") or Path("runs") / f"compare-{_slug(g['name'])}")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    from .recipe import load_recipe, prepare_data

    started = time.perf_counter()
    try:
        base = load_recipe(_base_recipe(g))
    except ValueError as err:
        raise GridError(f"grid {g['name']}: its recipe {g['recipe']!r}: {err}") from err
    data_dir = prepare_data(base, out, log)
    cache_dir = out / "cache"
    clips = _evaluation_clips(base, data_dir)
    references = {config: _references(records) for config, records in clips.items()}
    for config, (ids, refs) in references.items():
        _write_if_changed(out / f"references-{config}.jsonl", "".join(json.dumps({"id": i, **r}) + "\n" for i, r in zip(ids, refs)))
    timings["prepare_s"] = time.perf_counter() - started

    from datasets_scripts.mini_set import conflict_clip_ids

    subsets = {"conflict": conflict_clip_ids(data_dir)}
    seeds = g.get("seeds") or [None]
    runs: dict[str, dict] = {}
    pending: list[tuple[str, Mapping, Path, dict, str]] = []
    for system, seed in [(system, seed) for system in g["systems"] for seed in seeds]:
        if system.get("zero_shot") and seed != seeds[0]:
            continue  # a zero-shot system has no seed: one run pairs with every seed
        name = system["name"]
        key = _run_key(name, None if system.get("zero_shot") else seed)
        sys_dir = out / "runs" / _slug(name) / ("" if seed is None or system.get("zero_shot") else f"seed-{seed}")
        sys_dir.mkdir(parents=True, exist_ok=True)
        try:
            recipe = base if system.get("zero_shot") else _recipe_for(g, system, base, data_dir, cache_dir)
            if seed is not None and not system.get("zero_shot"):
                recipe["seed"] = int(seed)
            spec = {"zero_shot": system["zero_shot"], **g["zero_shot"]} if system.get("zero_shot") else recipe
            fingerprint = _fingerprint(spec, {c: i for c, (i, _) in references.items()})
        except Exception as err:  # noqa: BLE001 - a bad entry is marked; the others complete
            runs[key] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            log(f"{key}: cannot resolve: {err}")
            continue
        record_path = sys_dir / "run.json"
        previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
        cached = previous.get("status") == "done" and previous.get("fingerprint") == fingerprint
        if cached and name not in rerun:
            runs[key] = previous
            log(f"{key}: cached ({sys_dir})")
            continue
        if only is not None and name not in only:
            runs[key] = {"status": "not run", "error": "not selected (--only)"}
            continue
        pending.append((key, system, sys_dir, recipe, fingerprint))

    if jobs > 1 and len(pending) > 1:
        # every extractor set-up's features first, one at a time: parallel runs then only read the caches
        from .recipe import extract_features

        setups = {}
        for _, system, _, recipe, _ in pending:
            if not system.get("zero_shot"):
                setups.setdefault(recipe["features"]["cache_dir"], recipe)
        for recipe in setups.values():
            try:
                extract_features(recipe, output_dir=out / "extract", log=lambda line: log(f"  {line}"))
            except Exception as err:  # noqa: BLE001 - the runs that need them fail and are marked
                log(f"feature extraction for {recipe['features']['cache_dir']} failed: {err}")
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        log(f"{len(pending)} runs on {jobs} processes (each run's log: <run folder>/log.txt)")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {
                pool.submit(_run_job, g, system, sys_dir, recipe, fingerprint, clips, data_dir, out): key
                for key, system, sys_dir, recipe, fingerprint in pending
            }
            for future in futures:
                key = futures[future]
                try:
                    runs[key] = future.result()
                except Exception as err:  # noqa: BLE001 - a worker that died: the run is marked failed
                    runs[key] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                log(f"{key}: {runs[key]['status']} ({runs[key].get('runtime_s', 0):.0f}s)"
                    + (f": {runs[key]['error']}" if runs[key].get("error") else ""))  # fmt: skip
    else:
        for key, system, sys_dir, recipe, fingerprint in pending:
            log(f"{key}: running ({'zero-shot ' + str(system['zero_shot']) if system.get('zero_shot') else 'training'})")
            runs[key] = _run_job(g, system, sys_dir, recipe, fingerprint, clips, data_dir, out, log)
            if runs[key]["status"] == "failed":
                log(f"{key}: FAILED: {runs[key]['error']}")
    for key, run in runs.items():  # cached runs: their diagnostics from results.json too
        if run.get("status") == "done" and "diagnostics" not in run and run.get("kind") == "trained":
            run_dir = Path(next(iter(run["predictions"].values()))).parent.parent
            run["diagnostics"] = _trained_diagnostics(run_dir / "train" / "results.json")

    started = time.perf_counter()
    document = score_grid(g, runs, references, subsets=subsets)
    document["timings"] = {**timings, "score_s": time.perf_counter() - started}
    started = time.perf_counter()
    write_outputs(document, out)
    document["timings"]["write_s"] = time.perf_counter() - started
    # the timings change on every run: kept in the returned document, not in scores.json (a cached rerun of the
    # same scores rewrites nothing)
    saved = {k: v for k, v in document.items() if k != "timings"}
    _write_if_changed(out / "scores.json", json.dumps(saved, default=_json_default))
    return document


def _run_job(g, system, sys_dir: Path, recipe, fingerprint: str, clips, data_dir, out, log=None) -> dict:
    """Run one system (one seed) and write its ``run.json``; returns the record. Without ``log`` (a worker
    process) the run's progress goes to ``<sys_dir>/log.txt`` and torch uses one thread, whatever the recipe's
    ``threads`` says (:func:`trainers.recipe.single_threaded`; after the fingerprint: not part of the run)."""
    handle = None
    if log is None:
        from .recipe import single_threaded

        recipe = single_threaded(recipe)
        handle = (sys_dir / "log.txt").open("w", encoding="utf-8")

        def log(line: str) -> None:
            handle.write(line + "\n")
            handle.flush()

    step = time.perf_counter()
    record = {"name": system["name"], "fingerprint": fingerprint,
              "kind": "zero_shot" if system.get("zero_shot") else "trained",
              "scenes": None if system.get("zero_shot") else list(recipe["ablation"]["scenes"])}  # fmt: skip
    try:
        record["predictions"] = _run_system(g, system, sys_dir, recipe, clips, data_dir, out, log)
        record["status"] = "done"
    except Exception as err:  # noqa: BLE001 - recorded and marked in the tables; the grid carries on
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        record["traceback"] = traceback.format_exc()[-4000:]
    finally:
        if handle is not None:
            handle.close()
    record["runtime_s"] = round(time.perf_counter() - step, 2)
    (sys_dir / "run.json").write_text(json.dumps(record, indent=1))
    if record["status"] == "done" and not system.get("zero_shot"):  # the scene-pathway diagnostics
        record["diagnostics"] = _trained_diagnostics(sys_dir / "train" / "results.json")
    return record


def _run_key(name: str, seed: int | None) -> str:
    """The key of one run in ``run_grid``'s records: the system's name, and its seed when the grid has seeds."""
    return name if seed is None else f"{name} [seed {seed}]"


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


def _seed_runs(g: dict, system: Mapping, runs: Mapping[str, dict]) -> list[dict]:
    """The runs of one system, one per seed of the grid (one for a zero-shot system or a grid without seeds)."""
    seeds = g.get("seeds") or [None]
    if system.get("zero_shot") or seeds == [None]:
        return [runs.get(system["name"], {"status": "not run"})]
    return [runs.get(_run_key(system["name"], seed), {"status": "not run"}) for seed in seeds]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return mean, std


def _average_diagnostics(found: Sequence[Mapping]) -> dict:
    """The scene diagnostics of several seeds: numbers averaged, per-label router weights averaged per label."""
    out: dict[str, Any] = {}
    for config in sorted({c for f in found for c in f}):
        rows = [f[config] for f in found if config in f]
        merged: dict[str, Any] = {}
        for key in sorted({k for r in rows for k in r}):
            values = [r[key] for r in rows if key in r]
            if all(isinstance(v, (int, float)) for v in values):
                merged[key] = sum(values) / len(values)
            elif key == "router_weights_by_label":
                labels = sorted({label for v in values for label in v})
                merged[key] = {
                    label: {scene: sum(v[label][scene] for v in values if label in v) / sum(label in v for v in values)
                            for scene in next(v[label] for v in values if label in v)}
                    for label in labels
                }  # fmt: skip
        out[config] = merged
    return out


def score_grid(
    g: dict,
    runs: Mapping[str, dict],
    references: Mapping[str, tuple[list, list]],
    subsets: Mapping[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Scores (mean and std over the grid's seeds), per-label figures and the significance of every row against the
    reference. ``subsets``: named sets of clip ids (the study set's ``conflict`` clips) whose accuracy is reported
    as ``acc_<name>`` where a config holds any of them."""
    from evaluate_metrics.functions import paired_t_test

    subsets = {name: ids for name, ids in (subsets or {}).items() if ids}
    num_seeds = len(g.get("seeds") or [None])
    systems: dict[str, dict] = {}
    per_example: dict[str, dict[str, dict]] = {}
    for system in g["systems"]:
        name = system["name"]
        seed_runs = _seed_runs(g, system, runs)
        done = [r for r in seed_runs if r.get("status") == "done"]
        status = "done" if len(done) == len(seed_runs) else ("failed" if any(r.get("status") == "failed" for r in seed_runs) else "not run")
        entry: dict[str, Any] = {"status": status, "tables": system.get("tables", [1, 2]),
                                 "kind": "zero_shot" if system.get("zero_shot") else "trained",
                                 "scenes": next((r.get("scenes") for r in seed_runs if r.get("scenes")), None),
                                 "seeds": len(seed_runs), "configs": {}}  # fmt: skip
        errors = [r["error"] for r in seed_runs if r.get("error")]
        if errors:
            entry["error"] = errors[0]
        diagnostics = [r["diagnostics"] for r in done if r.get("diagnostics")]
        if diagnostics:
            entry["diagnostics"] = _average_diagnostics(diagnostics)
        if status == "done":
            per_example[name] = {}
            for config, (ids, refs) in references.items():
                per_seed, pooled, per_label, missing = [], {}, None, 0
                for run in seed_runs * (num_seeds if len(seed_runs) == 1 else 1):  # a single run pairs with every seed
                    answers = read_answers(run["predictions"][config])
                    result, lost = score_system(answers, ids, refs, config, g.get("attribution_metrics", ["sem_r"]))
                    metrics = {k: float(v) for k, v in result.summary.items()}
                    for subset, chosen in subsets.items():
                        picked = [a for i, a in zip(ids, result.per_example.get("acc", [])) if i in chosen]
                        if picked:
                            metrics[f"acc_{subset}"] = sum(picked) / len(picked)
                    per_seed.append(metrics)
                    for metric, values in result.per_example.items():
                        pooled.setdefault(metric, []).extend(values)
                    per_label = per_label or result.per_label
                    missing = max(missing, lost)
                keys = sorted({k for m in per_seed for k in m})
                stats = {k: _mean_std([m.get(k, float("nan")) for m in per_seed]) for k in keys}
                entry["configs"][config] = {
                    "metrics": {k: v[0] for k, v in stats.items()},
                    "std": {k: v[1] for k, v in stats.items()},
                    "per_seed": per_seed,
                    "per_label": per_label,
                    "missing": missing,
                }
                per_example[name][config] = pooled
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
            "significance": significance, "seeds": g.get("seeds"), "subsets": sorted(subsets)}  # fmt: skip


def _cell(entry: dict, config: str, key: str) -> str:
    if entry["status"] != "done":
        return "failed" if entry["status"] == "failed" else "–"
    values = entry["configs"][config]
    if key.startswith("p:"):
        return format_p(values.get("p", {}).get(key[2:]))
    value = values["metrics"].get(key)
    if value is None or not math.isfinite(value):
        return "–"
    scale = 1.0 if key == "atr_r" else 100.0
    std = (values.get("std") or {}).get(key)
    if len(values.get("per_seed") or ()) > 1 and std is not None and math.isfinite(std):
        return f"{scale * value:.2f} ± {scale * std:.2f}"
    return f"{scale * value:.2f}"


def table_rows(document: dict, table: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one table (``table`` 1, 2 or 3)."""
    from modeling_icm.templates import SCENE_NAMES

    configs = document["configs"]
    columns = list(TABLE_COLUMNS[table])
    if table in (1, 3):  # the study set's conflict clips: their own accuracy column
        columns[1:1] = [(f"acc_{name}", f"Acc {name}") for name in document.get("subsets") or ()]
    head = ["Approach"]
    if table == 3:
        head += ["Fac", "Act", "Obj", "Back"]
    multi = len(configs) > 1
    head += [f"{c} {label}" if multi else label for c in configs for _, label in columns]
    # a subset column only where a config holds such clips
    keep = [i for i, (c, (key, _)) in enumerate((c, col) for c in configs for col in columns)
            if not key.startswith("acc_") or any(key in e["configs"].get(c, {}).get("metrics", {})
                                                 for e in document["systems"].values())]  # fmt: skip
    offset = len(head) - len(configs) * len(columns)
    head = head[:offset] + [head[offset + i] for i in keep]
    head.append("missing")
    rows = []
    for name, entry in document["systems"].items():
        if table not in entry["tables"] and name != document["reference"]:
            continue
        row = [name]
        if table == 3:
            scenes = entry.get("scenes") or ()
            row += ["✓" if s in scenes else "" for s in SCENE_NAMES]
        cells = [_cell(entry, c, key) for c in configs for key, _ in columns]
        row += [cells[i] for i in keep]
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
    seeds = document.get("seeds") or []
    if len(seeds) > 1:
        parts[-1:-1] = [f"Trained systems ran with seeds {', '.join(map(str, seeds))}: mean ± std over the seeds; the "
                        "t-tests pair every clip of every seed with the reference's (a zero-shot system ran once).", ""]  # fmt: skip
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
        for name, config, found in pathway:
            by_label = found.get("router_weights_by_label")
            if not by_label or name != document["reference"]:
                continue
            scenes = list(next(iter(by_label.values())))
            parts += [f"Router weights per label ({name}, {config}; mean over the evaluation clips of each label"
                      f"{' and the seeds' if len(document.get('seeds') or ()) > 1 else ''}): which expert each label's "
                      "clips use.", ""]  # fmt: skip
            rows = [[label] + [f"{weights.get(s, 0.0):.2f}" for s in scenes] for label, weights in by_label.items()]
            parts += [markdown_table(["label", *scenes], rows), ""]
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

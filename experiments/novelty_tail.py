"""The event score's tail (docs/long-footage.md, "The score's tail"): which windows event-driven selection generates
with each novelty reference, replayed over one full analysis per video and model. ``mean``: the library's score
(:class:`inference.events.NoveltyScorer`, a frame against the mean of the last 4 s); ``mean_or_previous``: the
smaller of that and the difference to the previous grid frame (the variant the hypothesis tests, defined here).

A generated window gets exactly the answer the full analysis gives it (the same frames and features, greedy
decoding; ``tests/test_event_selection.py``), so the event-driven document of any selection is the full
analysis's windows restricted to the ones it generates. This script runs the full analysis once per video (saved
under ``--out`` and read again on a second run), decodes and scores the windows again with each reference, and
prints, per reference: windows generated (event / floor), ground-truth events sent to the model, and the full
analysis's non-neutral judgements found again (all, and those on a ground-truth event), with the ROC AUC of the
per-frame score against the ground-truth events. The videos are ``bench/bench_event_driven.py``'s.

    python experiments/novelty_tail.py --model runs/demo/model --minutes 10 30
    python experiments/novelty_tail.py --model runs/demo-real/model --minutes 10 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_event_driven as bench  # noqa: E402


REFERENCES = ("mean", "mean_or_previous")


def scorer(reference: str):
    """The library's novelty scorer, or the variant that also compares a frame with the previous one."""
    import numpy as np

    from inference.events import NoveltyScorer, thumbnail

    if reference == "mean":
        return NoveltyScorer()

    class MeanOrPrevious(NoveltyScorer):
        def score(self, time, image, key=None):
            if key is not None and key in self._scores:
                return self._scores[key]
            previous = [t for when, t in self._past if when < time]
            value = super().score(time, image, key)
            if previous and previous[-1].shape == (thumb := thumbnail(image, self.thumb_size)).shape:
                value = min(value, float(np.abs(thumb - previous[-1]).mean()))
                if key is not None:
                    self._scores[key] = value
            return value

    return MeanOrPrevious()


def replay(video: Path, processor, full: dict, reference: str) -> tuple[dict, list[list[float]]]:
    """The event-driven document that selection with the ``reference`` score gives on ``video`` (windows and merged
    segments), built from the full analysis ``full``; and ``[[time, score], ...]`` per grid frame."""
    from inference.analysis import (
        WindowResult,
        _file_windows,
        analysis_grid_fps,
        merge_windows,
        plan_windows,
        select_windows,
    )
    from inference.events import EventSelection, WindowGate

    window, overlap = full["window"], full["overlap"]
    plan = list(enumerate(plan_windows(full["duration"], window, overlap)))
    grid = analysis_grid_fps(window, processor.num_frames)
    skipped: list = []
    gate = WindowGate(EventSelection())
    gate.scorer = scorer(reference)
    frames = _file_windows(video, plan, processor, "once", None, grid, notes=[], on_empty=skipped.extend)
    by_index = {w["index"]: w for w in full["windows"]}
    generated = []
    scores: dict[float, float] = {}
    for fw in select_windows(frames, gate, skipped.extend, stride=window - overlap):
        row = dict(by_index[fw.index], reason=fw.reason, score=fw.score)
        generated.append(WindowResult.from_dict(row))
        scores.update(zip(map(float, fw.timestamps), fw.frame_scores))
    for w in skipped:
        scores.update(zip(w.frame_times, w.frame_scores))
    results = sorted(generated + skipped, key=lambda w: w.index)
    doc = {"segments": merge_windows(results), "windows": [w.to_dict() for w in results]}
    return doc, [[t, scores[t]] for t in sorted(scores)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", help="its mini set (default: MODEL/../data)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--out", default="runs/novelty-tail")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="explicit")
    args = parser.parse_args()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    import torch

    from inference.analysis import analyze_video
    from inference.loading import load_model

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir or Path(args.model).parent / "data")
    model, processor = load_model(args.model)
    tag = Path(args.model).resolve().parent.name
    for minutes in args.minutes:
        video, truth = out / f"long-{minutes:g}.mp4", out / f"long-{minutes:g}.json"
        if not truth.is_file():
            events, sentiments = bench.build_long_video(video, data_dir, minutes)
            truth.write_text(json.dumps({"events": events, "sentiments": sentiments}))
        events = [tuple(e) for e in json.loads(truth.read_text())["events"]]
        full_path = out / f"full-{tag}-{minutes:g}.json"
        if not full_path.is_file():
            analyze_video(video, model, processor, out_json=full_path, config_name=args.config, window=10.0,
                          overlap=5.0, progress=False)  # fmt: skip
        full = json.loads(full_path.read_text())
        wanted = [s for s in full["segments"] if s["sentiment"] not in ("neutral", "Normal")]
        print(f"{tag}, {minutes:g} min: {full['num_windows']} windows, {len(events)} events; the full analysis's "
              f"non-neutral judgements {len(wanted)}, {bench.recall_on_events(full, full, events)[1]} on a "
              f"ground-truth event")  # fmt: skip
        for reference in REFERENCES:
            doc, scores = replay(video, processor, full, reference)
            reasons: dict[str, int] = {}
            for w in doc["windows"]:
                reasons[w["reason"]] = reasons.get(w["reason"], 0) + 1
            generated = sum(1 for w in doc["windows"] if w["generated"])
            found, total = bench.recall_of_full(full, doc)
            found_on, on_events = bench.recall_on_events(full, doc, events)
            labels = [any(a <= t < b for a, b, _ in events) for t, _ in scores]
            auc = bench.roc_auc([s for _, s in scores], labels)
            print(f"  {reference:18} generated {generated:4d} / {full['num_windows']} {reasons}; events sent "
                  f"{bench.events_sent(doc, events)} / {len(events)}; judgements found {found} / {total}, on events "
                  f"{found_on} / {on_events}; ROC AUC {auc:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

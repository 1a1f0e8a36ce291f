"""The timeline of a video analysis as a PNG (matplotlib, Agg backend): located segments, the router weights per
scene, and which windows went to the model and which were skipped — what ``icm analyze``, the web app and the demo
draw. (The per-label charts of the paper's Figure 3 are ``evaluate_metrics.charts``.)"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from evaluate_metrics.charts import _pyplot, save_figure

#: One colour per scene (router weights) — explicit face first, then the implicit scenes.
SCENE_COLORS = {"face": "#e6550d", "action": "#3182bd", "object": "#31a354", "background": "#756bb1"}


#: above this many windows the timeline draws them as one strip (generated dark, skipped light), not one line each
MAX_WINDOW_LINES = 60


def timeline_chart(document: Mapping, path: str | os.PathLike) -> Path:
    """The timeline of an ``icm analyze`` document: the merged segments per sentiment (opacity = confidence, value
    printed), the analysed windows, and the router's scene weights over time (which scenes drove the judgement).
    With event-driven selection it also shades the uneventful stretches (not sent to the model), draws skipped
    windows lighter than generated ones, and plots the event score with its threshold. Hours of footage stay
    readable: the windows become one strip, and each segment is a bar however many windows made it."""
    plt = _pyplot()
    duration = float(document.get("duration") or 0.0) or 1.0
    segments = list(document.get("segments", []))
    windows = list(document.get("windows", []))
    truth = list(document.get("ground_truth", []))  # the demo knows the answer of its held-out video
    sentiments = sorted({s["sentiment"] for s in segments} | {t["sentiment"] for t in truth}) or ["(no segment located)"]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 2.2 + 0.45 * len(sentiments) + 2.2), sharex=True, height_ratios=[1 + 0.3 * len(sentiments), 1.2]
    )
    cmap = plt.get_cmap("tab10")
    rows = {label: k for k, label in enumerate(sentiments)}
    for segment in segments:
        row = rows[segment["sentiment"]]
        alpha = 0.25 + 0.75 * max(0.0, min(1.0, float(segment.get("confidence", 0.0))))
        top.barh(row, segment["end"] - segment["start"], left=segment["start"], height=0.6, color=cmap(row % 10),
                 alpha=alpha, edgecolor="black", linewidth=0.6)  # fmt: skip
        top.text((segment["start"] + segment["end"]) / 2, row, f"{segment.get('confidence', 0):.2f}", ha="center",
                 va="center", fontsize=8)  # fmt: skip
    for t in truth:
        row = rows[t["sentiment"]]
        top.barh(row + 0.38, t["end"] - t["start"], left=t["start"], height=0.14, color="black", alpha=0.8)
    if truth:
        top.text(0.01, 0.98, "black: ground truth; coloured: located (opacity = confidence)", transform=top.transAxes,
                 fontsize=7, va="top")  # fmt: skip
    _draw_windows(top, windows, document.get("uneventful", []))
    top.set_yticks(list(rows.values()) + [-0.82])
    top.set_yticklabels(list(rows) + ["windows"], fontsize=8)
    top.set_ylim(-1.2, len(sentiments) - 0.4)
    status = "" if document.get("complete", True) else f" (partial: {document.get('windows_done')} windows)"
    top.set_title(f"{Path(str(document.get('video', ''))).name} — {document.get('config', '')} visual sentiments{status}")

    frames: dict[float, list[dict]] = {}
    for window in windows:
        for t, weights in zip(window.get("frame_times", []), window.get("frame_weights", [])):
            if weights:
                frames.setdefault(round(float(t), 3), []).append(weights)
    scenes = list(document.get("scenes") or SCENE_COLORS)
    if frames:
        times = sorted(frames)
        stacks = [[sum(w.get(s, 0.0) for w in frames[t]) / len(frames[t]) for t in times] for s in scenes]
        bottom.stackplot(times, stacks, labels=scenes, colors=[SCENE_COLORS.get(s, None) for s in scenes], alpha=0.85)
        bottom.legend(loc="upper right", fontsize=7, ncol=len(scenes))
    else:
        bottom.text(duration / 2, 0.5, "no scene present in the analysed frames", ha="center", va="center")
    bottom.set_ylim(0, 1)
    scores = document.get("event_scores") or []
    if scores:  # the score that chose the windows, on its own scale
        axis = bottom.twinx()
        axis.plot([t for t, _ in scores], [v for _, v in scores], color="black", linewidth=0.7, label="event score")
        threshold = (document.get("selection") or {}).get("threshold")
        if threshold is not None:
            axis.axhline(threshold, color="red", linewidth=0.7, linestyle="--", label="threshold")
        axis.set_ylabel("event score", fontsize=8)
        axis.legend(loc="upper left", fontsize=7)
    bottom.set_ylabel("router weight")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(0, duration)
    return save_figure(fig, path)


def _draw_windows(axis, windows: list, uneventful: list) -> None:
    """The windows under the segments: one line each (staggered on 3 rows) when few, else one strip; skipped
    windows light; uneventful stretches shaded over the whole axis."""
    for stretch in uneventful:
        axis.axvspan(stretch["start"], stretch["end"], color="#dddddd", alpha=0.6, linewidth=0)
    if uneventful:
        axis.text(0.99, 0.98, "grey: uneventful, not sent to the model", transform=axis.transAxes, fontsize=7,
                  va="top", ha="right")  # fmt: skip
    for k, window in enumerate(windows):
        color = "grey" if window.get("generated", True) else "#cccccc"
        if len(windows) <= MAX_WINDOW_LINES:
            y = -0.7 - 0.12 * (k % 3)
            axis.plot([window["start"], window["end"]], [y, y], color=color, linewidth=1.2)
        else:
            axis.barh(-0.82, window["end"] - window["start"], left=window["start"], height=0.3, color=color,
                      linewidth=0)  # fmt: skip


__all__ = ["SCENE_COLORS", "timeline_chart"]

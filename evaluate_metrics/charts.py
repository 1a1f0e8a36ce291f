"""The per-label charts of the paper's Figure 3 (matplotlib, Agg backend, imported only when a chart is drawn):
line charts over the labels, one line per system, of per-label FNRs and, with judge scores, Atr-R. Used by
``icm evaluate``, ``icm baseline``, ``icm demo`` and the comparison runner (``trainers.compare``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def per_label_chart(
    systems: Mapping[str, Mapping[str, float]],
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """A Figure-3 style line chart: x = the labels (numbered), y = one value per label, one line per system.
    Missing or NaN values leave a gap. Returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2), 4.2))
    x = list(range(1, len(labels) + 1))
    markers = "osD^v<>"
    for k, (name, values) in enumerate(systems.items()):
        y = [values.get(label, math.nan) for label in labels]
        y = [math.nan if v is None else float(v) for v in y]
        ax.plot(x, y, marker=markers[k % len(markers)], label=name, linewidth=1.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"({i}) {label}" for i, label in zip(x, labels)], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if len(systems) > 1:
        ax.legend()
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, save as PNG (folders made) and close a matplotlib figure; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


#: chart (the per-label value it shows) -> (title, y label, y range)
_CHARTS = {
    "fnr": ("FNRs per {config} visual sentiment (lower is better)", "FNRs", (0, 1.05)),
    "atr_r": ("Atr-R per {config} visual sentiment (judge score, higher is better)", "Atr-R (1-10)", (0, 10.5)),
}


def write_charts(
    documents: Mapping[str, Mapping[str, Any]], out_dir: str | os.PathLike, prefix: str = ""
) -> dict[str, str]:
    """Per-label FNR chart (always) and per-label Atr-R chart (only when judge scores exist) for one or several
    systems' evaluation documents of the same config. Returns ``{"fnr": path, ["atr_r": path]}``."""
    from modeling_icm.templates import FNR_TARGET_LABELS

    config = next(iter(documents.values()))["config"]
    targets = list(FNR_TARGET_LABELS[config])
    charts = {}
    for chart, (title, ylabel, ylim) in _CHARTS.items():
        shown = {name: doc for name, doc in documents.items() if chart == "fnr" or doc.get("has_judge_scores")}
        if not shown:  # Atr-R only with judge scores
            continue
        values = {
            name: {label: doc["per_label"].get(label, {}).get(chart) for label in targets} for name, doc in shown.items()
        }
        charts[chart] = str(
            per_label_chart(
                {n: {k: (v if v is not None else math.nan) for k, v in vals.items()} for n, vals in values.items()},
                targets,
                Path(out_dir) / f"{prefix}{chart}_per_label.png",
                title=title.format(config=config),
                ylabel=ylabel,
                ylim=ylim,
            )
        )
    return charts


__all__ = ["per_label_chart", "save_figure", "write_charts"]

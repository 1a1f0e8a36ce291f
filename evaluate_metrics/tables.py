"""How Omni-SILA metric results are named and tabled for people: the display names of the metrics of a
:func:`~evaluate_metrics.compute_omnisila` / ``icm evaluate`` result and the markdown table of one or several
systems' results. ``icm evaluate``, the demo report and the model cards (``trainers.hub``) all print this table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Metric names of the JSON -> how the table and the model card call them.
METRIC_NAMES = {
    "acc": "Acc",
    "f2": "F2",
    "map@0.1": "mAP@0.1",
    "map@0.2": "mAP@0.2",
    "map@0.3": "mAP@0.3",
    "map_avg": "mAP@tIoU (avg)",
    "f2_tsl": "F2 (TSL-300)",
    "fnr": "FNRs",
    "sem_r": "Sem-R",
    "sem_c": "Sem-C",
    "sen_a": "Sen-A",
    "atr_r": "Atr-R",
}


def metrics_table(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table: one row per metric, one column per system (``{system: metrics}``)."""
    names = [m for m in METRIC_NAMES if any(m in metrics for metrics in columns.values())]
    head = "| metric | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [head, rule]
    for name in names:
        cells = []
        for metrics in columns.values():
            value = metrics.get(name)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                cells.append("–")
            elif name == "atr_r":
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{100 * value:.2f}")
        arrow = " ↓" if name == "fnr" else ""
        lines.append(f"| {METRIC_NAMES[name]}{arrow} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Values in %, except Atr-R (judge score 1–10). FNRs: lower is better.")
    return "\n".join(lines)


__all__ = ["METRIC_NAMES", "metrics_table"]

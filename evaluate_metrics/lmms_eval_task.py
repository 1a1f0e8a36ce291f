"""The lmms-eval task ``omni_sila`` (lmms-eval 0.7 task layout): ``export_lmms_eval_task(out_dir, data_dir)`` writes

.. code-block:: text

    out_dir/omni_sila/
      _default_template_yaml     # dataset_path: json, generate_until, doc_to_* / process_results / metric_list
      omni_sila.yaml             # group omni_sila: the configs present in the data
      omni_sila_explicit.yaml    # task omni_sila_explicit (data_files: omni_sila_explicit.jsonl)
      omni_sila_implicit.yaml    # task omni_sila_implicit
      omni_sila_<config>.jsonl   # the documents: the clips of one split (absolute video paths)
      utils.py                   # evaluate_metrics/lmms_eval_utils.py, verbatim

Run with ``lmms-eval --model ... --tasks omni_sila --include_path out_dir/omni_sila``. Scoring uses this package's
answer parser and metric functions (``evaluate_metrics/lmms_eval_utils.py``), so omnisila-icm must be installed
where lmms-eval runs. (``icm push --lmms-eval DIR --data DATA`` calls this.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .lmms_eval_utils import AGGREGATIONS, METRICS

TASK_GROUP = "omni_sila"


def _default_template(max_new_tokens: int) -> str:
    lines = [
        "# Written by omnisila-icm (evaluate_metrics/lmms_eval_task.py): the Omni-SILA task (WWW 2025), scored with",
        "# the package's answer parser and metrics. Every task of the group includes this file.",
        "dataset_path: json",
        "test_split: test",
        "output_type: generate_until",
        "doc_to_visual: !function utils.doc_to_visual",
        "doc_to_text: !function utils.doc_to_text",
        "doc_to_target: !function utils.doc_to_target",
        "process_results: !function utils.process_results",
        "generation_kwargs:",
        f"  max_new_tokens: {int(max_new_tokens)}",
        "  temperature: 0",
        "  do_sample: false",
        "metric_list:",
    ]
    for metric, higher in METRICS.items():
        lines += [f'  - metric: "{metric}"', f"    aggregation: !function utils.{AGGREGATIONS[metric]}",
                  f"    higher_is_better: {'true' if higher else 'false'}"]  # fmt: skip
    lines += ["lmms_eval_specific_kwargs:", "  default:", '    pre_prompt: ""', '    post_prompt: ""',
              "metadata:", "  version: 1.0"]  # fmt: skip
    return "\n".join(lines) + "\n"


def export_lmms_eval_task(
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    split: str = "test",
    configs: tuple[str, ...] = ("explicit", "implicit"),
    max_new_tokens: int = 128,
) -> Path:
    """Write the task folder ``out_dir/omni_sila`` for the clips of ``split`` in ``data_dir`` (``explicit.jsonl`` /
    ``implicit.jsonl`` of the annotation schema). Configs without a file or without clips in the split are left out;
    none at all is a ``ValueError`` naming the folder. Returns the task folder."""
    from datasets_scripts.schema import read_annotations

    data_dir = Path(data_dir)
    folder = Path(out_dir) / TASK_GROUP
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for config in configs:
        path = data_dir / f"{config}.jsonl"
        if not path.is_file():
            continue
        records, _ = read_annotations(path, strict=True, config=config)
        docs = [
            {"id": r.id, "config": config, "video": str(Path(r.video).resolve()), "duration": float(r.duration),
             "label": r.label, "segments": [list(map(float, s)) for s in r.segments], "cause": r.cause}
            for r in records if r.split == split
        ]  # fmt: skip
        if not docs:
            continue
        docs_path = folder / f"{TASK_GROUP}_{config}.jsonl"
        docs_path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        (folder / f"{TASK_GROUP}_{config}.yaml").write_text(
            f"task: {TASK_GROUP}_{config}\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(docs_path.resolve()))}\n"
            "include: _default_template_yaml\n",
            encoding="utf-8",
        )
        written.append(config)
    if not written:
        raise ValueError(f"{data_dir}: no explicit.jsonl / implicit.jsonl with clips in split {split!r}")
    (folder / "_default_template_yaml").write_text(_default_template(max_new_tokens), encoding="utf-8")
    (folder / f"{TASK_GROUP}.yaml").write_text(
        f"group: {TASK_GROUP}\ntask:\n" + "".join(f"  - {TASK_GROUP}_{c}\n" for c in written), encoding="utf-8"
    )
    shutil.copyfile(Path(__file__).with_name("lmms_eval_utils.py"), folder / "utils.py")
    return folder


__all__ = ["TASK_GROUP", "export_lmms_eval_task"]

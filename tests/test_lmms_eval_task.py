"""The lmms-eval task ``omni_sila`` written by ``icm push --lmms-eval``: loaded by lmms-eval's own TaskManager
(``--include_path``), its documents, prompts and targets, and our process_results / aggregations on the mini set."""

from __future__ import annotations

import lmms_eval.tasks as lmms_tasks  # installed by scripts/setup.sh (--no-deps) + the [lmms] extra
import pytest

from evaluate_metrics.functions import compute_omnisila
from icm_cli.main import main
from modeling_icm import templates as T


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    from datasets_scripts.mini_set import generate_mini_set

    data = tmp_path_factory.mktemp("mini")
    generate_mini_set(data, seed=0, size="tiny")
    out = tmp_path_factory.mktemp("lmms")
    assert main(["push", "--lmms-eval", str(out), "--data", str(data)]) == 0
    return out / "omni_sila"


@pytest.fixture(scope="module")
def tasks(task_dir):
    manager = lmms_tasks.TaskManager(include_path=str(task_dir), include_defaults=False)
    assert {"omni_sila", "omni_sila_explicit", "omni_sila_implicit"} <= set(manager.all_tasks)
    (group, members), = lmms_tasks.get_task_dict(["omni_sila"], manager).items()  # fmt: skip
    assert group.group == "omni_sila"
    return members


def test_documents_prompts_and_targets(tasks):
    implicit = tasks["omni_sila_implicit"]
    docs = list(implicit.test_docs())
    assert len(docs) == 12 and {d["label"] for d in docs} == set(T.LABELS["implicit"])  # one test clip per label
    doc = docs[0]
    (video,) = implicit.doc_to_visual(doc)
    assert video.endswith(".mp4") and video.startswith("/")
    text = implicit.doc_to_text(doc)
    assert text == f"The video is {T.format_seconds(doc['duration'])}s long. " + T.combined_instruction("implicit")
    assert implicit.doc_to_target(doc) == T.combined_answer("implicit", doc["label"], doc["segments"], doc["cause"])
    assert implicit.config.output_type == "generate_until"
    assert {m["metric"] for m in implicit.config.metric_list} >= {"acc", "f2", "map@0.1", "map_avg", "fnr", "sem_r"}
    assert implicit.higher_is_better()["fnr"] is False


@pytest.mark.parametrize("config", ["explicit", "implicit"])
def test_process_results_and_aggregation_are_the_omnisila_metrics(tasks, config):
    task = tasks[f"omni_sila_{config}"]
    docs = list(task.test_docs())
    labels = T.LABELS[config]
    # half right (the reference answer), half a wrong label with a shifted segment
    answers = [task.doc_to_target(d) if i % 2 == 0 else
               T.combined_answer(config, labels[(labels.index(d["label"]) + 1) % len(labels)], [[0, 1]], "no")
               for i, d in enumerate(docs)]  # fmt: skip
    per_metric: dict[str, list] = {}
    for doc, answer in zip(docs, answers):
        for metric, item in task.process_results(doc, [answer]).items():
            per_metric.setdefault(metric, []).append(item)
    aggregations = task.aggregation()
    got = {metric: aggregations[metric](items) for metric, items in per_metric.items()}
    refs = [{"sentiment": d["label"], "segments": d["segments"], "cause": d["cause"], "duration": d["duration"]}
            for d in docs]  # fmt: skip
    expected = compute_omnisila(answers, refs, config, attribution_metrics=("sem_r",))
    for metric, value in got.items():
        assert value == pytest.approx(expected[metric], nan_ok=True), metric
    assert got["acc"] == pytest.approx(sum(1 for i in range(len(docs)) if i % 2 == 0) / len(docs))


def test_push_lmms_eval_needs_data(capsys, tmp_path):
    assert main(["push", "--lmms-eval", str(tmp_path)]) == 2
    assert "--lmms-eval needs --data" in capsys.readouterr().err
    assert main(["push", "--lmms-eval", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "no explicit.jsonl / implicit.jsonl" in capsys.readouterr().err

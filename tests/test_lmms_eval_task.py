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


# LLaVA-OneVision's ChatML turn with the content as one string: lmms-eval's llava_hf wrapper writes the "<video>"
# placeholder into the text itself and renders [{"role": "user", "content": TEXT}].
CHATML_TEXT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _check_against_icm_evaluate(results, task_dir, tmp_path, configs) -> dict:
    """Every document answered once, and lmms-eval's aggregated metrics equal ``icm evaluate``'s on the answers it
    logged (``--require-all``: every reference has its answer). Returns ``{config: icm evaluate's metrics}``."""
    import json

    scored = {}
    for config in configs:
        task = f"omni_sila_{config}"
        samples = results["samples"][task]
        docs = [json.loads(line) for line in (task_dir / f"{task}.jsonl").read_text().splitlines()]
        assert len(samples) == len(docs) == results["n-samples"][task]["effective"]
        assert sorted(s["doc"]["id"] for s in samples) == sorted(d["id"] for d in docs)
        predictions = tmp_path / f"{config}-predictions.jsonl"
        predictions.write_text("".join(json.dumps({"id": s["doc"]["id"], "answer": s["filtered_resps"][0]}) + "\n"
                                       for s in samples))  # fmt: skip
        out = tmp_path / f"{config}.metrics.json"
        code = main(["evaluate", "--predictions", str(predictions), "--references", str(task_dir / f"{task}.jsonl"),
                     "--config", config, "--attribution-metrics", "sem_r", "--require-all", "--out", str(out)])
        assert code == 0
        ours = json.loads(out.read_text())["metrics"]
        assert ours["num_examples"] == len(docs) and ours["num_missing"] == 0
        for metric in ("acc", "f2", "map@0.1", "map@0.2", "map@0.3", "map_avg", "f2_tsl", "fnr", "sem_r"):
            expected = ours[metric] if ours[metric] is not None else float("nan")
            assert results["results"][task][f"{metric},none"] == pytest.approx(expected, nan_ok=True), (config, metric)
        scored[config] = ours
    return scored


@pytest.mark.slow
def test_a_full_lmms_eval_run_of_a_transformers_video_llm_scores_as_icm_evaluate(task_dir, tmp_path):
    """lmms-eval's own ``simple_evaluate`` end to end, offline: the ``omni_sila`` group from ``--include_path``,
    lmms-eval's built-in ``llava_hf`` model wrapper (its video path: decord frames, the processor's video input,
    greedy ``generate``) on a tiny random LLaVA-OneVision saved locally. Its weights are random, so its answers are
    noise: this checks the plumbing, every document answered and scored with our parser and metrics."""
    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models.simple.llava_hf import LlavaHf

    from trainers.baselines import build_tiny_video_llm

    torch.manual_seed(0)
    model_dir = build_tiny_video_llm("llava_onevision", tmp_path / "tiny-llava-onevision")
    lm = LlavaHf(pretrained=str(model_dir), device="cpu", device_map="cpu", dtype="float32", max_frames_num=8,
                 chat_template=CHATML_TEXT_TEMPLATE)  # fmt: skip
    manager = lmms_tasks.TaskManager(include_path=str(task_dir), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=["omni_sila"], task_manager=manager, batch_size=1, device="cpu",
                              log_samples=True)  # fmt: skip
    _check_against_icm_evaluate(results, task_dir, tmp_path, ("explicit", "implicit"))


@pytest.mark.slow
def test_a_full_lmms_eval_run_of_icm_by_name_scores_as_icm_evaluate(task_dir, tmp_path, fire_model_dir):
    """``--model icm`` through lmms-eval's model registry (the entry point's manifest) on a tiny trained ICM (the
    fire model: it answers "Fire, 1-3 s, flames" whatever the clip), so the metrics are not all zero."""
    from lmms_eval.evaluator import simple_evaluate

    from inference import lmms_eval_model

    lmms_eval_model.register()
    manager = lmms_tasks.TaskManager(include_path=str(task_dir), include_defaults=False)
    results = simple_evaluate(model="icm", model_args=f"pretrained={fire_model_dir},batch_size=4", device="cpu",
                              tasks=["omni_sila_implicit"], task_manager=manager, log_samples=True)  # fmt: skip
    scored = _check_against_icm_evaluate(results, task_dir, tmp_path, ("implicit",))
    answers = {s["filtered_resps"][0] for s in results["samples"]["omni_sila_implicit"]}
    assert any("Fire" in a for a in answers)
    assert scored["implicit"]["acc"] == pytest.approx(1 / 12)  # the one Fire clip of the 12 test clips


def test_the_icm_model_entry_point_is_declared():
    """pyproject declares the ``lmms_eval.models`` entry point ``icm``; its payload is the manifest of IcmLmms."""
    import importlib
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["lmms_eval.models"]["icm"]
    module, attr = target.split(":")
    manifest = getattr(importlib.import_module(module), attr)()
    assert manifest.model_id == "icm"
    module_name, class_name = manifest.simple_class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    from lmms_eval.api.model import lmms

    assert issubclass(cls, lmms) and cls.is_simple
    with pytest.raises(ValueError, match="unknown model_args"):
        cls(pretrained="unused", colour="red")

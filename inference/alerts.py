"""Alerts of live analysis (``icm watch``): the alert rule with hysteresis, and at-least-once delivery to a JSON-lines
sink and a webhook through an on-disk outbox.

**The rule** (:class:`AlertRule`). A finished window is *alarming* when the model's sentiment is a negative one —
``negative`` (explicit config) or any implicit label but ``Normal`` (the labels the paper's FNRs metric treats as
the costly misses, ``templates.FNR_TARGET_LABELS``) — with a confidence of at least ``threshold``. An alert
*opens* after ``consecutive`` alarming windows in a row (1: the first one). Hysteresis, so that one event gives one
alert: while an alert is open, a window keeps it open when it is alarming at the lower ``clear_threshold``
(default: ``threshold``), and the alert *ends* only after ``clear_consecutive`` windows in a row that do not keep
it open, or when the stream ends. An unreadable answer (no sentiment) neither raises nor keeps an alert.

**Messages**. An alert gives two messages, ``{"type": "alert", "event": "start", ...}`` when it opens and
``{"event": "end", ...}`` when it ends; both carry the alert's ``alert_id`` and their own ``id``
(``<alert_id>:start`` / ``<alert_id>:end``) so a receiver can drop the duplicates that at-least-once delivery
implies. Times are stream seconds (``start``/``end``) and wall-clock epoch seconds (``wall_start``/``wall_end``,
the arrival of the frames; ``raised_at``, when the message was made).

**Delivery**. Every message is written to the JSON-lines sink (stdout or a file) and, with a webhook, first stored
in the :class:`Outbox` (one fsync'ed file per message) and then POSTed by a :class:`WebhookSender` thread, oldest
first. A 2xx answer removes it from the outbox; a refused connection, a time-out or a 5xx/408/429 answer is retried
after an exponential back-off (:class:`Backoff`); another 4xx answer means the receiver rejects the message itself,
so it is moved to ``outbox/rejected/`` instead of being retried forever. A process killed and started again with
the same outbox re-sends what was not delivered. Each fault is logged in one line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from modeling_icm.templates import FNR_TARGET_LABELS

logger = logging.getLogger("icm.watch")

#: The labels that raise alerts: the FNRs targets (paper §4.4) — "negative" (explicit) and every implicit label but
#: "Normal".
ALERT_LABELS: frozenset[str] = frozenset(label for labels in FNR_TARGET_LABELS.values() for label in labels)


# ----------------------------------------------------------------------------------------------------------------
# The rule
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AlertRule:
    """When a window is alarming and when an alert opens and ends (see the module docstring).

    Args:
        threshold: minimum confidence of an alarming window (the probability of the label tokens).
        consecutive: alarming windows in a row that open an alert.
        clear_consecutive: windows in a row that do not keep an open alert that end it.
        clear_threshold: minimum confidence of a window that keeps an open alert (default: ``threshold``); lower
            than ``threshold`` for hysteresis on the confidence too.
        labels: the sentiments that alarm.
    """

    threshold: float = 0.5
    consecutive: int = 1
    clear_consecutive: int = 2
    clear_threshold: float | None = None
    labels: frozenset[str] = ALERT_LABELS

    def __post_init__(self):
        for name in ("threshold", "clear_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"AlertRule.{name} must be in [0, 1], got {value!r}")
        for name in ("consecutive", "clear_consecutive"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AlertRule.{name} must be an integer >= 1, got {value!r}")
        if self.clear_threshold is None:
            self.clear_threshold = self.threshold
        if self.clear_threshold > self.threshold:
            raise ValueError(f"AlertRule.clear_threshold ({self.clear_threshold}) must be <= threshold ({self.threshold})")
        self.labels = frozenset(self.labels)

    def alarming(self, window: Mapping[str, Any], keeping: bool = False) -> bool:
        """Whether ``window`` (``sentiment``, ``confidence``) alarms; ``keeping``: at the clear threshold."""
        limit = self.clear_threshold if keeping else self.threshold
        return window.get("sentiment") in self.labels and float(window.get("confidence") or 0.0) >= limit


@dataclass
class _OpenAlert:
    alert_id: str
    windows: list[dict] = field(default_factory=list)
    quiet: int = 0


class AlertTracker:
    """Applies an :class:`AlertRule` to the windows of one stream, in order; :meth:`update` returns the alert
    messages the window causes (none, a start, or an end)."""

    def __init__(self, rule: AlertRule | None = None, source: str = "", id_factory: Callable[[], str] | None = None):
        self.rule = rule or AlertRule()
        self.source = source
        self._new_id = id_factory or (lambda: uuid.uuid4().hex)
        self._pending: list[dict] = []  # alarming windows not yet enough to open an alert
        self._open: _OpenAlert | None = None
        self.alerts_opened = 0

    @property
    def open(self) -> bool:
        return self._open is not None

    def update(self, window: Mapping[str, Any]) -> list[dict]:
        window = dict(window)
        if self._open is not None:
            if self.rule.alarming(window, keeping=True):
                self._open.windows.append(window)
                self._open.quiet = 0
                return []
            self._open.quiet += 1
            if self._open.quiet >= self.rule.clear_consecutive:
                return [self._close(window, "cleared")]
            return []
        if self.rule.alarming(window):
            self._pending.append(window)
            if len(self._pending) >= self.rule.consecutive:
                self._open = _OpenAlert(self._new_id(), self._pending)
                self._pending = []
                self.alerts_opened += 1
                return [self._message("start", self._open)]
            return []
        self._pending = []
        return []

    def finish(self, reason: str = "stream ended") -> list[dict]:
        """End the open alert, if any (the stream ended or the watcher stops)."""
        self._pending = []
        return [self._close(None, reason)] if self._open is not None else []

    def _close(self, window: Mapping[str, Any] | None, reason: str) -> dict:
        message = self._message("end", self._open, reason=reason, clearing=window)
        self._open = None
        return message

    def _message(self, event: str, alert: _OpenAlert, reason: str | None = None, clearing=None) -> dict:
        windows = alert.windows
        best = max(windows, key=lambda w: float(w.get("confidence") or 0.0))
        located = [seg for w in windows for seg in w.get("segments") or []]
        message = {
            "type": "alert",
            "event": event,
            "id": f"{alert.alert_id}:{event}",
            "alert_id": alert.alert_id,
            "source": self.source,
            "sentiment": best.get("sentiment"),
            "confidence": round(float(best.get("confidence") or 0.0), 6),
            # the event's extent: the segments the alarming windows located, else the windows themselves
            "start": min((s for s, _ in located), default=min(float(w["start"]) for w in windows)),
            "end": max((e for _, e in located), default=max(float(w["end"]) for w in windows)),
            "wall_start": min(float(w.get("wall_start", 0.0)) for w in windows),
            "wall_end": max(float(w.get("wall_end", 0.0)) for w in windows),
            "windows": [int(w.get("index", -1)) for w in windows],
            "attribution": best.get("attribution", ""),
            "scene_weights": best.get("scene_weights", {}),
            "raised_at": round(time.time(), 3),
        }
        if event == "end":
            message["ended_by"] = reason
            if clearing is not None:
                message["cleared_at"] = float(clearing["end"])
        return message


# ----------------------------------------------------------------------------------------------------------------
# Sinks, outbox, back-off, webhook
# ----------------------------------------------------------------------------------------------------------------


class JsonLinesSink:
    """One JSON object per line to a text stream (stdout by default) or a file (appended, flushed per line)."""

    def __init__(self, target: str | os.PathLike | TextIO | None = None):
        self._lock = threading.Lock()
        if target is None or target == "-":
            self._handle, self._owned = sys.stdout, False
        elif hasattr(target, "write"):
            self._handle, self._owned = target, False
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle, self._owned = path.open("a", encoding="utf-8"), True

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=float)
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        if self._owned:
            self._handle.close()


class Outbox:
    """Messages not yet delivered, one JSON file each in ``directory`` (written to a temporary name, fsync'ed and
    renamed, so a kill never leaves half a message); file names sort in the order the messages were made."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rejected_dir = self.directory / "rejected"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        existing = [int(p.name.split("-", 1)[0]) for p in self._files() if p.name.split("-", 1)[0].isdigit()]
        self._seq = max(existing, default=0)

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.json") if not p.name.startswith("."))

    def put(self, message: Mapping[str, Any]) -> Path:
        safe_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(message["id"]))[:80]
        with self._lock:
            self._seq += 1
            path = self.directory / f"{self._seq:012d}-{safe_id}.json"
            tmp = self.directory / f".{path.name}.tmp"
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(message, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            self._changed.notify_all()
        return path

    def pending(self) -> list[Path]:
        with self._lock:
            return self._files()

    def __len__(self) -> int:
        return len(self.pending())

    @staticmethod
    def read(path: Path) -> dict | None:
        """The message in ``path``; None (and a log line) when the file is not a JSON message."""
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("outbox: %s is not a readable message (%s); moved to rejected/", path.name, err)
            return None

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def reject(self, path: Path) -> None:
        self.rejected_dir.mkdir(exist_ok=True)
        os.replace(path, self.rejected_dir / path.name)

    def wait(self, timeout: float) -> None:
        """Wait until a message is put (or ``timeout`` seconds pass)."""
        with self._changed:
            self._changed.wait(timeout)


@dataclass
class Backoff:
    """Exponential back-off: the ``n``-th consecutive failure waits ``min(maximum, initial * factor**(n-1))``
    seconds, spread by ``± jitter`` (a fraction) so that many watchers do not retry in lock-step.

    Args:
        initial: the first wait (s).
        factor: growth per failure.
        maximum: the cap (s).
        jitter: relative spread, 0 for none.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1

    def __post_init__(self):
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial or not 0 <= self.jitter < 1:
            raise ValueError(f"bad back-off {self}: need initial > 0, factor >= 1, maximum >= initial, 0 <= jitter < 1")

    def delay(self, failures: int, random: Callable[[], float] | None = None) -> float:
        if failures < 1:
            return 0.0
        base = min(self.maximum, self.initial * self.factor ** (failures - 1))
        if not self.jitter:
            return base
        import random as _random

        u = (random or _random.random)()
        return base * (1.0 + self.jitter * (2.0 * u - 1.0))


class DeliveryError(Exception):
    """A webhook POST failed; ``retry`` says whether trying again can help, ``kind`` names the fault."""

    def __init__(self, kind: str, detail: str, retry: bool = True):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.retry = kind, detail, retry


RETRY_STATUSES = frozenset({408, 425, 429})


def post_json(url: str, message: Mapping[str, Any], timeout: float = 5.0) -> int:
    """POST ``message`` as JSON to ``url`` (with the message id as ``Idempotency-Key``); the 2xx status, or
    :class:`DeliveryError` (``refused``, ``timeout``, ``http 500`` ... ; ``retry`` False for a 4xx rejection)."""
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": str(message.get("id", ""))},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        retry = err.code >= 500 or err.code in RETRY_STATUSES
        raise DeliveryError(f"http {err.code}", str(err.reason), retry=retry) from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, ConnectionRefusedError):
            raise DeliveryError("refused", "connection refused") from err
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise DeliveryError("timeout", f"no answer within {timeout} s") from err
        raise DeliveryError("unreachable", str(reason)) from err
    except TimeoutError as err:
        raise DeliveryError("timeout", f"no answer within {timeout} s") from err
    except (ConnectionError, OSError) as err:  # reset, broken pipe, a server that closed without answering
        raise DeliveryError("connection error", f"{type(err).__name__}: {err}") from err


def check_webhook_url(url: str) -> str:
    """``url`` is an ``http://`` or ``https://`` URL with a host; ``ValueError`` naming it otherwise (checked before
    the model loads, not after)."""
    from urllib.parse import urlsplit

    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"webhook URL must start with http:// or https:// and name a host, got {url!r}")
    return url


class WebhookSender:
    """Delivers the outbox's messages to ``url``, oldest first, in a background thread (see the module docstring).

    Args:
        url: the webhook (``http://`` or ``https://``).
        outbox: where undelivered messages wait.
        timeout: seconds to wait for an answer.
        backoff: waits between failed attempts.
        post: the POST function (``post_json``).
    """

    def __init__(
        self,
        url: str,
        outbox: Outbox,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        post: Callable[[str, Mapping[str, Any], float], int] = post_json,
    ):
        check_webhook_url(url)
        self.url, self.outbox, self.timeout = url, outbox, float(timeout)
        self.backoff = backoff or Backoff()
        self._post = post
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failures = 0  # consecutive
        self.attempts = 0
        self.rejected = 0
        self._down_since: float | None = None
        backlog = len(outbox)
        if backlog:
            logger.warning("outbox %s: %d undelivered message(s) from an earlier run; re-sending to %s",
                           outbox.directory, backlog, url)  # fmt: skip

    def start(self) -> WebhookSender:
        self._thread = threading.Thread(target=self._run, name="icm-webhook", daemon=True)
        self._thread.start()
        return self

    def send_pending(self) -> bool:
        """Try each pending message once, oldest first, stopping at the first retryable failure; True when the
        outbox is empty afterwards."""
        for path in self.outbox.pending():
            if self._stop.is_set():
                return False
            message = self.outbox.read(path)
            if message is None:
                self.outbox.reject(path)
                continue
            self.attempts += 1
            try:
                self._post(self.url, message, self.timeout)
            except DeliveryError as err:
                if not err.retry:
                    self.rejected += 1
                    logger.error("webhook %s rejected %s (%s); moved to %s, not retried",
                                 self.url, message.get("id"), err, self.outbox.rejected_dir)  # fmt: skip
                    self.outbox.reject(path)
                    continue
                self.failures += 1
                if self._down_since is None:
                    self._down_since = time.monotonic()
                wait = self.backoff.delay(self.failures)
                logger.warning("webhook %s: %s (%s, attempt %d); %d message(s) waiting; next try in %.1f s",
                               self.url, err.kind, err.detail, self.failures, len(self.outbox), wait)  # fmt: skip
                self._stop.wait(wait)
                return False
            self.outbox.remove(path)
            self.delivered += 1
            if self._down_since is not None:
                logger.warning("webhook %s is back after %.1f s and %d failed attempt(s); delivering the backlog",
                               self.url, time.monotonic() - self._down_since, self.failures)  # fmt: skip
                self._down_since = None
            self.failures = 0
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.send_pending():
                self.outbox.wait(0.5)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the outbox to empty; True when it did."""
        deadline = time.monotonic() + max(0.0, timeout)
        while time.monotonic() < deadline:
            if not self.outbox.pending():
                return True
            time.sleep(0.05)
        return not self.outbox.pending()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self.outbox._changed:
            self.outbox._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        left = len(self.outbox)
        if left:
            logger.warning("outbox %s: %d message(s) not delivered to %s; they are re-sent on the next start",
                           self.outbox.directory, left, self.url)  # fmt: skip


class AlertDelivery:
    """Where alert messages go: the JSON-lines sink always, the webhook (through the outbox) when configured."""

    def __init__(self, sink: JsonLinesSink | None = None, sender: WebhookSender | None = None):
        self.sink, self.sender = sink, sender
        self.messages = 0

    def deliver(self, message: Mapping[str, Any]) -> None:
        self.messages += 1
        if self.sender is not None:
            self.sender.outbox.put(message)  # stored before anything else: a kill from here on loses nothing
        if self.sink is not None:
            self.sink.write(message)


__all__ = [
    "ALERT_LABELS",
    "AlertDelivery",
    "AlertRule",
    "AlertTracker",
    "Backoff",
    "DeliveryError",
    "JsonLinesSink",
    "Outbox",
    "WebhookSender",
    "check_webhook_url",
    "post_json",
]

"""A small feedback endpoint (stdlib ``http.server``), for owner apps and tests.

- ``POST /feedback`` with a Feedback JSON object (``{"alert_id", "individual_id", "action", "ts",
  "label"}``; ``type``/``v`` optional) -> 200 ``{"ok": true, "feedback_id", "state", "duplicate",
  "personalisation_ids"}``; errors -> 400 / 403 / 404 / 413 ``{"ok": false, "error": <name>,
  "message": <one line>}``.
- ``GET /alerts?individual_id=<id>[&limit=50][&since=<ts>]`` -> ``{"alerts": [...]}``, newest first.
- ``GET /healthz`` -> ``{"ok": true}``.

Each request opens its own ``CloudStore`` on ``store_path`` (a SQLite file, WAL with a busy
timeout, or any store URL such as ``postgresql://...``), so the threads never share a connection.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cloud.feedback.errors import FeedbackError, InvalidFeedbackError
from cloud.feedback.store import count_rejection, list_alerts, record_feedback
from cloud.rules.policy import NotificationPolicy
from cloud.store.db import CloudStore
from shared.schemas import SCHEMA_VERSION, Feedback, SchemaError, decode
from shared.topics import TopicError, check_id

logger = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class FeedbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], store_path: str | Path,
                 policy: NotificationPolicy | None) -> None:
        super().__init__(addr, _Handler)
        self.store_path = str(store_path)
        self.policy = policy
        self.thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:  # never print
        logger.exception("feedback_http.request_failed", extra={"client": str(client_address)})

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server: FeedbackServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("feedback_http.request " + format, *args)

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, name: str, message: str) -> None:
        self._send(status, {"ok": False, "error": name, "message": message})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._send(200, {"ok": True})
            return
        if url.path != "/alerts":
            self._error(404, "NotFound", f"no route GET {url.path}: use /alerts or /healthz")
            return
        q = parse_qs(url.query)
        try:
            ind = check_id((q.get("individual_id") or [""])[0], "individual id")
            limit = int((q.get("limit") or ["50"])[0])
            since_raw = (q.get("since") or [""])[0]
            since = float(since_raw) if since_raw else None
        except (TopicError, ValueError) as exc:
            self._error(400, "BadQuery", f"{exc}: use /alerts?individual_id=<id>&limit=<n>&since=<ts>")
            return
        store = CloudStore(self.server.store_path)
        try:
            self._send(200, {"alerts": list_alerts(store, ind, limit, since)})
        finally:
            store.close()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if urlsplit(self.path).path != "/feedback":
            self._error(404, "NotFound", f"no route POST {self.path}: use /feedback")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._error(413 if length > MAX_BODY else 400, "BadLength",
                        f"Content-Length must be 0..{MAX_BODY} bytes")
            return
        raw = self.rfile.read(length)
        store = CloudStore(self.server.store_path)
        try:
            try:
                fb = _parse(raw)
            except FeedbackError as exc:
                count_rejection(store, "http", exc)
                raise
            res = record_feedback(store, fb, policy=self.server.policy, source="http")
            self._send(200, {"ok": True, "feedback_id": res.feedback_id, "state": res.state,
                             "duplicate": res.duplicate,
                             "personalisation_ids": list(res.personalisation_ids)})
        except FeedbackError as exc:
            self._error(exc.status, type(exc).__name__, str(exc))
        finally:
            store.close()


def _parse(raw: bytes) -> Feedback:
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidFeedbackError("body is not JSON: POST a Feedback object") from None
    if not isinstance(d, dict):
        raise InvalidFeedbackError(f"body must be a JSON object, found {type(d).__name__}")
    d.setdefault("type", "feedback")
    d.setdefault("v", SCHEMA_VERSION)
    try:
        msg = decode(json.dumps(d).encode())
    except SchemaError as exc:
        raise InvalidFeedbackError(str(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:  # decoder defects must not escape
        raise InvalidFeedbackError(f"body cannot be decoded ({type(exc).__name__}): "
                                   "POST a Feedback object") from None
    if not isinstance(msg, Feedback):
        raise InvalidFeedbackError(f"expected a feedback message, found type {msg.type!r}")
    return msg


def start_feedback_server(store_path: str | Path, host: str = "127.0.0.1", port: int = 0,
                          policy: NotificationPolicy | None = None) -> FeedbackServer:
    """Start serving in a daemon thread; ``server.server_address`` has the bound port.
    Stop with ``server.stop()``."""
    CloudStore(store_path).close()  # create the file and the store's tables up front
    server = FeedbackServer((host, port), store_path, policy)
    server.thread = threading.Thread(target=server.serve_forever, name="feedback-http", daemon=True)
    server.thread.start()
    logger.info("feedback_http.started", extra={"host": host, "port": server.server_address[1]})
    return server

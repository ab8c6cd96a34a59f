"""``edgeloop cloud --http HOST:PORT``: the operators' web server (Flask app, waitress WSGI server).

Routes: ``/metrics`` (Prometheus text), ``/healthz``, and the dashboard's pages
(cloud/ops/dashboard.py). It runs on its own threads beside the aggregator and reads the store
through ``cloud.store.read_model`` (read-only SQLite connections, or a small PostgreSQL pool).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, Response, jsonify
from waitress.server import create_server

from cloud.ops.metrics import CONTENT_TYPE, CloudMetrics
from cloud.store.read_model import StoreReader

logger = logging.getLogger(__name__)


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError says what is expected."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def create_app(svc: Any, db_path: str | None, operator_token: str | None = None) -> Flask:
    app = Flask(__name__)  # templates: cloud/ops/templates
    reader = StoreReader(db_path) if db_path else None
    metrics = CloudMetrics(svc, reader)
    app.config.update(EDGELOOP_SVC=svc, EDGELOOP_DB=db_path, EDGELOOP_READER=reader, EDGELOOP_TOKEN=operator_token)

    @app.get("/metrics")
    def metrics_view() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        ok = svc.connected.is_set()
        return jsonify(ok=ok, connected=ok, client_id=svc.client_id), 200 if ok else 503

    from cloud.ops.dashboard import register

    register(app)
    return app


class WebServer:
    """waitress on a daemon thread; ``port`` is the bound port (0 picks a free one)."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = 4) -> None:
        self.server = create_server(app, host=host, port=port, threads=threads, ident="edgeloop",
                                    clear_untrusted_proxy_headers=True)
        self.host = host
        self.port = int(self.server.effective_port)
        self.thread = threading.Thread(target=self.server.run, name="edgeloop-http", daemon=True)

    def start(self) -> WebServer:
        self.thread.start()
        logger.info("cloud.http_serving", extra={"url": f"http://{self.host}:{self.port}/"})
        return self

    def stop(self) -> None:
        self.server.close()
        self.thread.join(5)

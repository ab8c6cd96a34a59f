"""The operators' dashboard: server-rendered pages (Jinja2 templates in cloud/ops/templates, plots as
inline SVG from cloud/ops/plots.py; the browser fetches nothing else).

Pages: ``/`` the fleet (status from retained status and last will, last seen, versions, backlog,
rejected frames, battery) beside the broker's ``$SYS`` health; ``/incidents`` and
``/incidents/<id>`` (alerts with decision, rule and reason, feedback, each notification delivery);
``/individuals/<id>`` (signal, baseline band, events and feedback on one time axis);
``/releases`` (model versions, every rollout's state, retraining requests with reasons);
``/notifications`` (deliveries, failed ones first).

Access: read-only pages need nothing from localhost; from elsewhere they need the operator token
(``Authorization: Bearer <token>`` or the ``edgeloop_token`` cookie set by ``/login``). Anything
that changes state (feedback, halt, promote, rollback) always needs the token, sent with the form;
without a configured token (``operator_token_env``) such actions are refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from typing import Any, cast
from urllib.parse import quote

from flask import Flask, abort, current_app, make_response, redirect, render_template, request
from werkzeug.wrappers import Response

from cloud.ops.plots import individual_svg
from cloud.store.backend import parse_store_url
from cloud.store.read_model import StoreReader

logger = logging.getLogger(__name__)
OPEN_PATHS = ("/metrics", "/healthz", "/login", "/static/")
FEEDBACK_ACTIONS = ("confirm", "dismiss", "normal_for_her")


def _db() -> str:
    url = current_app.config.get("EDGELOOP_DB")
    if not url or (parse_store_url(str(url)).dialect == "sqlite" and not parse_store_url(str(url)).path):
        abort(503, "the cloud runs on an in-memory store: nothing to show (give it --db FILE or a "
                   "postgresql:// URL)")
    return str(url)


def _reader() -> StoreReader:
    """The app's reader of the store (one PostgreSQL pool for the app's life; SQLite opens per request)."""
    reader: StoreReader = current_app.config["EDGELOOP_READER"]
    _db()
    return reader


def _is_local() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _given_token() -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    return (request.form.get("token") or request.cookies.get("edgeloop_token") or "").strip()


def _token_ok() -> bool:
    want = current_app.config.get("EDGELOOP_TOKEN")
    given = _given_token()
    return bool(want) and bool(given) and hmac.compare_digest(str(want).encode(), given.encode())


def _fmt_ts(ts: Any) -> str:
    if ts is None or ts == "":
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError):
        return str(ts)


def _ago(ts: Any) -> str:
    if not ts:
        return "never"
    s = time.time() - float(ts)
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(s) >= n:
            return f"{s / n:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def _bytes(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def register(app: Flask) -> None:
    app.jinja_env.filters.update(ts=_fmt_ts, ago=_ago, bytes=_bytes)

    @app.before_request
    def guard() -> Response | None:
        if request.path.startswith(OPEN_PATHS):
            return None
        if request.method == "POST":
            if not current_app.config.get("EDGELOOP_TOKEN"):
                return _refuse(403, "state-changing actions are off: start the cloud with an operator token "
                                    "in the variable named by operator_token_env (EDGELOOP_OPERATOR_TOKEN)")
            if not _token_ok():
                return _refuse(403, "operator token required: paste it in the token field")
            return None
        if _is_local() or _token_ok():
            return None
        return _refuse(401, "operator token required from outside this host: /login")

    @app.get("/login")
    def login_form() -> str:
        return render_template("login.html", page="login")

    @app.post("/login")
    def login() -> Response:
        if not _token_ok():
            return _refuse(403, "wrong operator token")
        resp = make_response(redirect("/"))
        resp.set_cookie("edgeloop_token", _given_token(), httponly=True, samesite="Strict")
        return resp

    @app.get("/")
    def fleet_page() -> str:
        svc = current_app.config["EDGELOOP_SVC"]
        with _reader().open() as rm:
            devices = rm.fleet()
            totals = rm.totals()
            rejections = rm.rejections(10)
            claims = rm.binding_claims(20)
        broker = svc.broker_sys.snapshot()
        states: dict[str, int] = {}
        for d in devices:
            states[d["state"]] = states.get(d["state"], 0) + 1
        return render_template("fleet.html", page="fleet", devices=devices, totals=totals, broker=broker,
                               broker_version=svc.broker_sys.version, broker_updated=svc.broker_sys.updated,
                               states=states, svc=svc, counts=dict(svc.agg.counts), rejections=rejections,
                               claims=claims)

    @app.get("/incidents")
    def incidents_page() -> str:
        with _reader().open() as rm:
            incidents = rm.incidents(limit=200)
            latest = {a["incident_id"]: a for a in reversed(rm.alerts(limit=2000))}
        return render_template("incidents.html", page="incidents", incidents=incidents, latest=latest)

    @app.get("/incidents/<incident_id>")
    def incident_page(incident_id: str) -> str:
        with _reader().open() as rm:
            inc = rm.incident(incident_id)
            if inc is None:
                abort(404, f"no incident {incident_id}")
            alerts = rm.alerts(incident_id=incident_id)
            ids = [a["alert_id"] for a in alerts]
            fb = rm.feedback(alert_ids=ids)
            deliveries = rm.deliveries(alert_ids=ids)
        return render_template("incident.html", page="incidents", inc=inc, alerts=alerts, feedback=fb,
                               deliveries=deliveries, actions=FEEDBACK_ACTIONS, done=request.args.get("done"))

    @app.get("/individuals/<individual_id>")
    def individual_page(individual_id: str) -> str:
        with _reader().open() as rm:
            summaries = rm.summaries(individual_id)
            events = rm.events(individual_id)
            alerts = rm.alerts(individual_id=individual_id)
            fb = rm.feedback(individual_id=individual_id)
            incidents = rm.incidents(limit=50, individual_id=individual_id)
        if not (summaries or events or alerts):
            abort(404, f"no records for individual {individual_id}")
        svg = individual_svg(individual_id, summaries, events, alerts, fb)
        last = summaries[-1]["body"] if summaries else {}
        return render_template("individual.html", page="fleet", individual_id=individual_id, svg=svg,
                               alerts=alerts, feedback=fb, incidents=incidents, events=events, last=last,
                               days=len(summaries))

    @app.get("/releases")
    def releases_page() -> str:
        with _reader().open() as rm:
            rel = rm.releases()
            ros = rm.rollouts()
            history = {ro["id"]: rm.rollout_events(ro["id"], 10) for ro in ros[:10]}
            retrain = rm.retrain_requests()
        return render_template("releases.html", page="releases", releases=rel, rollouts=ros, history=history,
                               retrain=retrain, done=request.args.get("done"))

    @app.get("/notifications")
    def notifications_page() -> str:
        with _reader().open() as rm:
            rows = rm.deliveries(limit=300)
        order = {"failed": 0, "retrying": 1, "pending": 2, "sent": 3}
        rows.sort(key=lambda r: (order.get(r["state"], 9), -r["id"]))
        return render_template("notifications.html", page="notifications", deliveries=rows)

    @app.post("/alerts/<alert_id>/feedback")
    def feedback_action(alert_id: str) -> Response:
        from cloud.feedback import FeedbackError, record_feedback
        from cloud.store.db import CloudStore
        from shared.schemas import Feedback, FeedbackAction

        action = request.form.get("action", "")
        individual = request.form.get("individual_id", "")
        if action not in FEEDBACK_ACTIONS:
            return _refuse(400, f"action {action!r} unknown: use one of {', '.join(FEEDBACK_ACTIONS)}")
        store = CloudStore(_db())
        try:
            res = record_feedback(store, Feedback(alert_id, individual, cast(FeedbackAction, action), time.time(),
                                                  request.form.get("label", "")), source="dashboard")
        except FeedbackError as exc:
            return _refuse(400, f"feedback refused: {exc}")
        finally:
            store.close()
        logger.info("dashboard.feedback", extra={"alert_id": alert_id, "action": action, "state": res.state})
        back = request.form.get("back") or "/incidents"
        return redirect(f"{back}?done={quote(f'{alert_id}: {action} recorded ({res.state})')}")

    @app.post("/rollouts/<int:rollout_id>/<verb>")
    def rollout_action(rollout_id: int, verb: str) -> Response:
        from cloud.releases.rollout import RolloutManager
        from cloud.store.db import CloudStore

        if verb not in ("halt", "rollback", "promote"):
            abort(404)
        reason = (request.form.get("reason") or "by an operator on the dashboard").strip()[:200]
        store = CloudStore(_db())
        try:
            mgr = RolloutManager(store)
            if verb == "promote":
                ok, detail = mgr.promote(rollout_id, reason, time.time())
            else:  # halting sends the rollbacks at the next tick
                mgr.halt(rollout_id, reason, time.time())
                ok, detail = True, "halted: devices are told to roll back"
        except (LookupError, ValueError) as exc:
            return _refuse(400, f"{verb} refused: {exc}")
        finally:
            store.close()
        if not ok:
            return _refuse(409, f"{verb} refused: {detail}")
        logger.info("dashboard.rollout", extra={"rollout_id": rollout_id, "verb": verb, "reason": reason})
        return redirect(f"/releases?done={quote(f'rollout {rollout_id}: {detail}')}")


def _refuse(status: int, message: str) -> Response:
    resp = make_response(render_template("refused.html", page="", status=status, message=message), status)
    return resp

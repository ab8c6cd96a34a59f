"""``edgeloop``: one CLI for the simulator, the device agent, the cloud, replays and the demo.

Errors are specific exceptions inside; here they become one line on stderr and an exit code:
0 ok, 1 failure, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeloop import bind, logs
from shared.config import ConfigError, describe, load
from shared.errors import InputError

# long-running commands log at info by default (connects, reconnects, stats); the rest at warning
INFO_BY_DEFAULT = ("agent", "cloud")


def _log_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logging")
    g.add_argument("--log-format", choices=logs.FORMATS, default=os.environ.get("EDGELOOP_LOG_FORMAT") or "logfmt",
                   help="one line per event with its fields: logfmt (default), json, or text "
                   "(default from $EDGELOOP_LOG_FORMAT)")
    g.add_argument("--log-level", choices=logs.LEVELS, help="minimum level (overrides -v/-q)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _common_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (keys: see --show-config)")
    p.add_argument("--validate-config", action="store_true", help="check the config, print it, exit 0/2")
    p.add_argument("--show-config", action="store_true", help="list every config key, default and meaning")
    p.add_argument("--broker", help="broker URL mqtt://host:port (overrides mqtt.url)")
    p.add_argument("--protocol", choices=["5", "3.1.1"], help="MQTT protocol (overrides mqtt.protocol)")


DB_HELP = ("the cloud store: a SQLite file (or sqlite:///path) or postgresql://user@host:port/dbname")

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgeloop", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("sim", help="run a simulated collar: frames to a pty (as a serial port) or a trace file",
                       description="Simulated pet-health collar or perception unit speaking the binary "
                       "frame protocol (docs/protocol.md) over a real pseudo-terminal or into a trace file.")
    p.add_argument("--kind", choices=["collar", "perception"], default="collar")
    p.add_argument("--index", type=int, default=0, help="which individual of the default fleet (0-based)")
    p.add_argument("--fleet", type=int, default=5, help="size of the default fleet the individual comes from")
    p.add_argument("--days", type=float, default=14.0, help="simulated days")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=float, help="simulated start, epoch seconds (default: the demo's)")
    p.add_argument("--full-rate", action="store_true", help="1 Hz heart rate and continuous accelerometer")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--trace", help="write the byte stream to this file")
    out.add_argument("--pty", action="store_true", help="open a pty, print its path, stream into it")
    out.add_argument("--out-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--speed", type=float, default=0.0,
                   help="simulated seconds per wall second (0: as fast as the reader takes it)")
    p.add_argument("--ground-truth", help="write the injected conditions as JSON here")

    p = sub.add_parser("agent", help="run the device agent on a serial port or trace file",
                       description="Device agent: frames -> per-minute features -> per-individual "
                       "baselines -> events in a SQLite outbox -> MQTT (QoS 1, persistent session).")
    _common_config(p)
    p.add_argument("--source", help="serial port (/dev/ttyUSB0, /dev/pts/N), pyserial URL, trace file, or "
                   "Frigate's events: mqtt://host:port/frigate/events")
    p.add_argument("--device-id")
    p.add_argument("--individual-id")
    p.add_argument("--kind", choices=["collar", "perception"])
    p.add_argument("--state-dir")
    p.add_argument("--cloud-public-key", help="PEM file: the cloud's ed25519 public key")
    p.add_argument("--exit-on-eof", action="store_true", default=None, help="stop when the source ends")
    p.add_argument("--drain-timeout", type=float,
                   help="seconds to wait for the cloud's acks at the end of the input (after SIGTERM/SIGINT "
                        "only while the cloud answers; a second SIGINT stops at once)")
    p.add_argument("--offline", action="store_true", help="no MQTT: keep everything in the outbox")
    p.add_argument("--progress", action="store_true", help="print JSON progress lines on stdout")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (docs/metrics.md)")

    p = sub.add_parser("cloud", help="run the cloud aggregator (subscribe, store, decide, ack)",
                       description="Cloud aggregator: shared subscription to device uplinks, schema "
                       "validation, idempotent store (device id + incarnation + seq), notification decisions, acks.")
    _common_config(p)
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--rules", help="notification rules TOML")
    p.add_argument("--no-shared", action="store_true", help="plain subscription (brokers without $share)")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve the dashboard, /metrics and /healthz here (overrides http)")
    p.add_argument("--keygen", metavar="DIR", help="write a new ed25519 key pair (cloud.key, cloud.pub) and exit")

    p = sub.add_parser("replay", help="run the engine over recorded data (NAB CSV, Stanford wearables, traces)",
                       description="Replay recorded data through the same engine and defaults as the agent.")
    rs = p.add_subparsers(dest="what", required=True, metavar="KIND")
    r = rs.add_parser("nab", help="timestamp,value CSV -> timestamp,value,anomaly_score CSV",
                      description="Score a NAB-format file causally (one engine, default config) and print a "
                      "one-line summary: rows, alerts (score >= 0.5), rows whose time repeats or goes backwards "
                      "(scored, not learnt), garbage rows with their line numbers, time.")
    r.add_argument("input")
    r.add_argument("output")
    r.add_argument("--plot", metavar="PNG", help="also write a PNG of the series with its scores")
    r = rs.add_parser("wearable", help="Stanford-format <id>_hr.csv.xz + <id>_steps.csv.xz -> events, nights, plot",
                      description="Hourly metrics through the engine (deviation events) and nights through the "
                      "night watch (illness alerts: yellow = watch, red = act); writes events.csv, nights.csv and "
                      "a PNG, prints a one-line summary.")
    r.add_argument("--hr", required=True)
    r.add_argument("--steps", required=True)
    r.add_argument("--id", required=True, help="person id (used in file names)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--onset", metavar="YYYY-MM-DD", help="symptom onset, when known: marked on the plot (never "
                   "seen by the detectors)")
    r.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    r = rs.add_parser("trace", help="a frame trace file through the agent, offline -> events, plot, summary",
                      description="Runs a recorded frame trace through the agent (offline) and writes "
                      "events.jsonl, trace.png (signals, baseline band, scores, events) and summary.json; "
                      "prints one summary line.")
    r.add_argument("trace")
    r.add_argument("--out", required=True, help="output folder (agent state, events.jsonl, trace.png)")
    r.add_argument("--progress", action="store_true",
                   help="progress on stderr even when it is not a terminal (default: terminals, files > 4 MB)")

    p = sub.add_parser("feedback", help="record an owner's answer to an alert (confirm, dismiss, normal_for_her, label)",
                       description="Explicit feedback through the CLI (the same path as the HTTP endpoint and the "
                       "owner_feedback MQTT topic).")
    p.add_argument("--db", default="edgeloop-cloud.db", help=DB_HELP)
    p.add_argument("alert_id", help="as `edgeloop alerts` lists it: device:incarnation:seq (device:seq from v1 devices)")
    p.add_argument("action", choices=["confirm", "dismiss", "normal_for_her", "label", "opened", "acted"])
    p.add_argument("--individual", required=True, help="the individual the alert is about")
    p.add_argument("--label", default="", help="free label (with action 'label')")

    p = sub.add_parser("alerts", help="list an individual's alerts with their decisions and reasons",
                       description="Every decision the cloud made for one individual, newest first.")
    p.add_argument("--db", default="edgeloop-cloud.db", help=DB_HELP)
    p.add_argument("--individual", required=True)
    p.add_argument("--limit", type=int, default=20)

    p = sub.add_parser("quality", help="alert quality per model version: precision, alerts/individual-week, ...",
                       description="Precision from feedback, alerts per individual-week, ignored rate, time to "
                       "act and detection delay, per model version and optionally per time window.")
    p.add_argument("--db", default="edgeloop-cloud.db", help=DB_HELP)
    p.add_argument("--window-days", type=float, help="one row per model version per window of this many days")

    p = sub.add_parser("release", help="release checks and staged rollouts of model bundles",
                       description="check: replay every inherited regression case through a candidate bundle; "
                       "rollout: start shadow -> canary -> fleet; status: where every rollout stands.")
    rs = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    r = rs.add_parser("check", help="block a candidate that regresses on any past failure")
    r.add_argument("bundle")
    r.add_argument("--db", default="edgeloop-cloud.db", help=DB_HELP)
    r.add_argument("--public-key", help="verify the bundle's signature with this key")
    r = rs.add_parser("rollout", help="start the staged rollout of a checked bundle")
    r.add_argument("bundle")
    r.add_argument("--db", default="edgeloop-cloud.db", help=DB_HELP)
    r.add_argument("--config", help="rollout TOML (stages, limits)")
    r.add_argument("--device", action="append", help="limit to these devices (repeatable)")
    r = rs.add_parser("status", help="the table of rollouts, or one rollout's history")
    r.add_argument("rollout_id", nargs="?", type=int)
    r.add_argument("--db", default="edgeloop-cloud.db", help=DB_HELP)

    p = sub.add_parser("train", help="turn a retraining dataset into a signed candidate bundle",
                       description="Tunes the base bundle's detector config (alert gate) on a retraining "
                       "dataset exported by a retraining rule (labelled alerts + regression cases) and "
                       "writes a candidate bundle with the next version, signed with the cloud's key; "
                       "--model packages a TFLite model retrained by scripts/train_activity. Then: "
                       "edgeloop release check CANDIDATE.")
    p.add_argument("dataset", help="dataset directory (retrain export, with manifest.json)")
    p.add_argument("--base", required=True, help="the fleet's current bundle")
    p.add_argument("--key", required=True, help="the cloud's Ed25519 signing key (PEM or raw)")
    p.add_argument("--out", required=True, help="where to write the candidate bundle")
    p.add_argument("--model", help="a retrained .tflite to package instead of the base bundle's")
    p.add_argument("--version", type=int, help="candidate version (default: base version + 1)")

    p = sub.add_parser("demo", help="the whole loop: simulated collars -> pty -> agents -> broker -> cloud -> report",
                       description="Runs N simulated collars for D simulated days, each through a real pty "
                       "into its own agent process, through an MQTT broker into the cloud aggregator, and "
                       "ends with a report and a plot.")
    p.add_argument("--collars", type=int, default=5)
    p.add_argument("--perception", type=int, choices=[0, 1], default=1,
                   help="run one Raspberry Pi perception unit (a gate camera) beside the collars (0: none)")
    p.add_argument("--days", type=float, default=14.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--broker", help="use this broker (mqtt://host:port) instead of the embedded one")
    p.add_argument("--protocol", choices=["5", "3.1.1"], help="MQTT protocol (default: 3.1.1 embedded, 5 otherwise)")
    p.add_argument("--out", default="out/demo", help="output folder (report, plot, databases)")
    p.add_argument("--db", help="the cloud's store (default: OUT/cloud.db); postgresql://user@host:port/dbname "
                   "runs the demo on PostgreSQL (an empty database)")
    bind.add_parser(sub)
    for sp in sub.choices.values():  # every leaf command takes the logging options
        nested = [a for a in sp._actions if isinstance(a, argparse._SubParsersAction)]
        for leaf in (nested[0].choices.values() if nested else [sp]):
            _log_options(leaf)
    return ap


def _setup_logging(args: argparse.Namespace) -> None:
    default = "info" if args.cmd in INFO_BY_DEFAULT else "warning"
    if getattr(args, "quiet", False):
        default = "warning"
    level = logs.level_for(getattr(args, "verbose", 0), getattr(args, "log_level", None), default)
    logs.configure(getattr(args, "log_format", "logfmt"), level)


def _load_cfg(cls: type, args: argparse.Namespace, overrides: dict[str, Any],
              check: Callable[[Any], object] | None = None) -> Any:
    """The config from file and flags; ``check`` is what the command loads from it at start (files
    it names), run by --validate-config too so "config OK" means the command accepts it."""
    overrides = {"mqtt.url": args.broker, "mqtt.protocol": args.protocol, **overrides}
    cfg: Any = load(cls, args.config, overrides)
    if args.show_config:
        for key, default, text in describe(cls):
            print(f"{key:28} {default:24} {text}")
        raise SystemExit(0)
    if args.validate_config:
        if check is not None:
            check(cfg)
        print(f"config OK: {cfg}")
        raise SystemExit(0)
    return cfg


def cmd_sim(args: argparse.Namespace) -> int:
    from firmware_sim.run import run_sim
    from firmware_sim.scenario import DEMO_START  # simulator code stays out of the agent's process

    if args.start is None:
        args.start = DEMO_START

    return run_sim(args)


def cmd_agent(args: argparse.Namespace) -> int:
    from device.agent import Agent, load_cloud_public_key
    from device.config import AgentConfig
    from device.reader import check_source

    cfg = _load_cfg(AgentConfig, args, {
        "source": args.source, "device_id": args.device_id, "individual_id": args.individual_id,
        "kind": args.kind, "state_dir": args.state_dir, "cloud_public_key": args.cloud_public_key,
        "exit_on_eof": args.exit_on_eof, "drain_timeout": args.drain_timeout},
        check=lambda c: load_cloud_public_key(c.cloud_public_key))
    if cfg.source.startswith(("mqtt://", "mqtts://")):  # Frigate's event stream (device/frigate_agent.py)
        return _frigate_agent(cfg, offline=args.offline)
    check_source(cfg.source)  # a missing trace is one line before the models load
    agent = Agent(cfg, connect=not args.offline)
    if args.metrics:  # prometheus_client is imported only here: a collar without it stays lean
        from device.metrics_prom import serve_agent_metrics

        serve_agent_metrics(agent, args.metrics)
    stop, hurry = threading.Event(), threading.Event()
    _stop_on_signals(stop, hurry)
    if args.progress:
        _progress_thread(agent, stop)
    report = agent.run(stop, hurry=hurry)
    print(json.dumps({"final": report}), flush=True)
    return 0


def _frigate_agent(cfg: Any, offline: bool) -> int:
    from device.frigate_agent import FrigateAgent, SourceUrlError

    try:
        agent = FrigateAgent(cfg, connect=not offline)
    except SourceUrlError as exc:
        print(f"edgeloop agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    _stop_on_signals(stop)
    report = agent.run(stop)
    print(json.dumps({"final": report}), flush=True)
    return 0


def _progress_thread(agent: Any, stop: threading.Event) -> None:
    def loop() -> None:
        while not stop.wait(0.5):
            p = agent.progress()
            if not p.started:
                continue  # progress starts once the source is open (the demo waits for it)
            print(json.dumps({"device_id": p.device_id, "ts": p.ts, "windows": p.windows, "events": p.events}),
                  flush=True)

    threading.Thread(target=loop, daemon=True).start()


def _stop_on_signals(stop: threading.Event, hurry: threading.Event | None = None) -> None:
    """SIGTERM or SIGINT sets ``stop``; a second one also sets ``hurry`` (stop draining now)."""
    import signal

    def handler(*_: object) -> None:
        if stop.is_set() and hurry is not None:
            hurry.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def cmd_cloud(args: argparse.Namespace) -> int:
    from cloud.config import CloudConfig

    if args.keygen:
        from shared.signing import generate_keypair, save_private_key, save_public_key

        priv, pub = generate_keypair()
        d = Path(args.keygen)
        d.mkdir(parents=True, exist_ok=True)
        save_private_key(d / "cloud.key", priv)
        save_public_key(d / "cloud.pub", pub)
        print(f"wrote {d / 'cloud.key'} (keep secret) and {d / 'cloud.pub'} (give to devices)")
        return 0
    from cloud.run import load_files, serve_forever

    cfg = _load_cfg(CloudConfig, args, {"db": args.db, "rules": args.rules, "http": args.http,
                                        "shared_subscription": False if args.no_shared else None}, check=load_files)

    logging.getLogger("cloud.notifiers").setLevel(logging.INFO)  # operators see every notification
    stop = threading.Event()
    _stop_on_signals(stop)
    return serve_forever(cfg, stop)


def cmd_replay(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.what == "nab":
        from device.replay import ReplayInputError, replay_nab_csv

        try:
            summary = replay_nab_csv(args.input, args.output, plot=args.plot, progress=progress)
        except (ReplayInputError, OSError) as exc:
            print(f"replay nab: {exc}", file=sys.stderr)
            return 2
        print(summary.line() + f"; wrote {args.output}" + (f" and {args.plot}" if args.plot else ""))
    elif args.what == "wearable":
        import numpy as np

        from device.replay import ReplayInputError, replay_wearable

        try:
            onset = None if args.onset is None else np.datetime64(args.onset, "D")
        except ValueError:
            print(f"replay wearable: --onset {args.onset!r} is not a date; use YYYY-MM-DD", file=sys.stderr)
            return 2
        try:
            out = replay_wearable(args.hr, args.steps, args.out, args.id, onset=onset, progress=progress)
        except (ReplayInputError, OSError) as exc:
            print(f"replay wearable: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(out, indent=1, default=str) if args.json else
              f"{out['line']}; wrote {out['events_csv']}, {out['nights_csv']}, {out['plot']}")
    else:
        from edgeloop.replay_trace import replay_trace, summary_line

        trace_summary = replay_trace(args.trace, args.out, progress=True if args.progress else None)
        print(summary_line(trace_summary))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from cloud.feedback import FeedbackError, record_feedback
    from cloud.store.db import CloudStore
    from shared.schemas import Feedback

    store = CloudStore(args.db, create=False)
    try:
        res = record_feedback(store, Feedback(args.alert_id, args.individual, args.action, time.time(),
                                              args.label), source="cli")
    except FeedbackError as exc:
        print(f"edgeloop feedback: refused: {exc}", file=sys.stderr)
        return 1
    print(f"recorded: {res}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from cloud.feedback import list_alerts
    from cloud.store.db import CloudStore
    from cloud.timestamps import format_utc, readable

    alerts = list_alerts(CloudStore(args.db, create=False), args.individual, limit=args.limit)
    if unreadable := sum(not readable(a["ts"]) for a in alerts):
        print(f"edgeloop alerts: warning: {unreadable} alert(s) stored with an impossible time (shown as ?; "
              "the cloud now refuses such records)", file=sys.stderr)
    for a in alerts:
        when = format_utc(a["ts"])
        print(f"{a['alert_id']:<18} {when}  {a['action']:<12} {a.get('state') or '':<10} {a['reason']}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from cloud.quality import format_quality_table, quality_by_model_version
    from cloud.store.db import CloudStore

    window = args.window_days * 86400.0 if args.window_days else None
    print(format_quality_table(quality_by_model_version(CloudStore(args.db, create=False), window_s=window)))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from cloud.releases.cli import release_check_cli, rollout_status_cli, start_rollout_cli

    if args.what == "check":
        return release_check_cli(args.db, args.bundle, public_key=args.public_key)
    if args.what == "rollout":
        return start_rollout_cli(args.db, args.bundle, devices=args.device, config_path=args.config)
    return rollout_status_cli(args.db, args.rollout_id)


def cmd_train(args: argparse.Namespace) -> int:
    from cloud.retrain.train import train_cli

    return train_cli(args.dataset, args.base, args.key, args.out, model_path=args.model, version=args.version)


def cmd_demo(args: argparse.Namespace) -> int:
    from edgeloop.demo import run_demo

    return run_demo(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sim": cmd_sim, "agent": cmd_agent, "cloud": cmd_cloud, "replay": cmd_replay, "demo": cmd_demo,
    "feedback": cmd_feedback, "alerts": cmd_alerts, "quality": cmd_quality, "release": cmd_release,
    "train": cmd_train, "bind": bind.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        return COMMANDS[args.cmd](args)
    except ConfigError as exc:
        print(f"edgeloop {args.cmd}: config error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:  # a missing file, a garbled row, an unusable --db: the message says what to do
        print(f"edgeloop {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        from cloud.store.backend import StoreUrlError

        if isinstance(exc, StoreUrlError):  # a --db the store cannot open: bad input
            print(f"edgeloop {args.cmd}: {exc}", file=sys.stderr)
            return 2
        print(f"edgeloop {args.cmd}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""``edgeloop bind``: which individuals a device may speak for (cloud/store/bindings.py).

``bind --device D --individual I`` adds a binding (``--replace``: the device's only one),
``--remove`` drops it, ``--list`` prints the bindings and the claims the cloud refused.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bind", help="bind a device to the individual(s) it may send records for",
                       description="The cloud refuses records a device sends for an individual it is not "
                       "bound to. Bind from provisioning, or after the cloud refused a claim (--list shows "
                       "them): --replace when the collar moved to another individual.")
    p.add_argument("--db", default="edgeloop-cloud.db", help="the cloud store")
    p.add_argument("--device", help="device id")
    p.add_argument("--individual", help="individual id")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--replace", action="store_true", help="drop the device's other bindings")
    act.add_argument("--remove", action="store_true", help="remove this binding")
    act.add_argument("--list", action="store_true", help="print the bindings and the refused claims")


def run(args: argparse.Namespace) -> int:
    from cloud.store import bindings
    from cloud.store.db import CloudStore, StoreOpenError
    from cloud.timestamps import format_utc
    from shared.topics import TopicError, check_id

    if not args.list and not (args.device and args.individual):
        print("edgeloop bind: give --device and --individual (or --list)", file=sys.stderr)
        return 2
    if not args.list:
        try:
            check_id(args.device, "device id")
            check_id(args.individual, "individual id")
        except TopicError as exc:
            print(f"edgeloop bind: {exc}", file=sys.stderr)
            return 2
    try:  # --list only reads: a SQLite path where no store exists is refused, not created
        store = CloudStore(args.db, create=not args.list)
    except StoreOpenError as exc:
        print(f"edgeloop bind: {exc}", file=sys.stderr)
        return 2
    try:
        repo = bindings.BindingRepository(store.backend)
        if args.list:
            bound, refused = repo.listing()
            for b in bound:
                print(f"{b['device_id']:<24} {b['individual_id']:<24} {b['source']:<12} {format_utc(b['bound_at'])}")
            if refused:
                print(f"refused claims ({len(refused)}): bind with edgeloop bind --device D --individual I")
            for c in refused:
                print(f"{c['device_id']:<24} {c['individual_id']:<24} {c['records']:>6} records, last "
                      f"{format_utc(c['last_at'])}: {c['reason']}")
            return 0
        if args.remove:
            if not repo.unbind(args.device, args.individual):
                print(f"edgeloop bind: {args.device} is not bound to {args.individual}", file=sys.stderr)
                return 1
            print(f"unbound {args.device} from {args.individual}")
            return 0
        dropped = repo.bind(args.device, args.individual, "operator", replace=args.replace)
        print(f"bound {args.device} to {args.individual}" + (f" (unbound from {', '.join(dropped)})" if dropped else ""))
        return 0
    finally:
        store.close()

"""Which individuals each device may speak for (issue 11 item 5), in the cloud store.

A device is bound to its individual(s) by provisioning (``[[devices]]`` in the cloud config, or
``edgeloop bind``) or, under the ``first_seen`` policy, by the first individual it reports that no
other device holds. A record for an individual its device is not bound to is refused (the
caller refuses the record, not the batch) and the claim is kept in ``binding_conflicts`` for an
operator, who binds with ``edgeloop bind --device D --individual I [--replace]``.

A device may always file records under its own id (the individual of a device that names none);
that never takes its first-seen binding. :class:`BindingRepository` runs its SQL on the store's
back end, in the caller's transaction (the aggregator's), so two aggregators cannot both bind.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from cloud.store.backend import Backend

migrations = Migrations("edgeloop.cloud.bindings")
Policy = Literal["first_seen", "provisioned"]
Source = Literal["first_seen", "provisioned", "operator"]
POLICIES: tuple[str, ...] = ("first_seen", "provisioned")


@migrations()
def m001_bindings(db: Database) -> None:
    db.table("bindings").create({"device_id": str, "individual_id": str, "source": str, "bound_at": float},
                                pk=("device_id", "individual_id"))
    db.table("bindings").create_index(["individual_id"])
    db.table("binding_conflicts").create(
        {"device_id": str, "individual_id": str, "reason": str, "first_at": float, "last_at": float,
         "records": int}, pk=("device_id", "individual_id"))


@dataclass(frozen=True)
class Verdict:
    """Per individual of a batch: None if the device may speak for it, else the reason."""

    refused: dict[str, str]
    bound_now: tuple[str, ...] = ()  # individuals this batch bound first-seen

    def reason(self, individual_id: str) -> str | None:
        return self.refused.get(individual_id)



@dataclass
class ClaimContext:
    """What a group of batches' new claims need, read in two queries for the whole group: who
    holds each claimed individual, and which claimed names are devices' ids. First-seen bindings
    decided against it wait in ``pending`` for one insert (:meth:`BindingRepository.bind_pending`)."""

    holders: dict[str, list[str]]
    device_ids: set[str]
    pending: list[tuple[str, str, str, float]] = field(default_factory=list)


class BindingRepository:
    """``bindings`` and ``binding_conflicts`` (and a look at ``incarnations``: is a name a device's id?)."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def bound_to(self, device_id: str) -> set[str]:
        return {r[0] for r in self.b.execute("SELECT individual_id FROM bindings WHERE device_id = ?",
                                             [device_id]).fetchall()}

    def bound_many(self, device_ids: Iterable[str]) -> dict[str, set[str]]:
        """:meth:`bound_to` of many devices in one query (a group of batches)."""
        devs = sorted(set(device_ids))
        out: dict[str, set[str]] = {d: set() for d in devs}
        if devs:
            for d, ind in self.b.execute(f"SELECT device_id, individual_id FROM bindings WHERE device_id IN "
                                         f"({', '.join('?' * len(devs))})", devs).fetchall():
                out[d].add(ind)
        return out

    def claim_context(self, claims: Iterable[tuple[str, Iterable[str]]],
                      bound: dict[str, set[str]]) -> ClaimContext:
        """The context of a group's claims: ``claims`` are (device, its batch's individuals),
        ``bound`` the devices' bindings (:meth:`bound_many`); only names not yet bound are read."""
        names = sorted({ind for dev, inds in claims for ind in inds if ind != dev and ind not in bound.get(dev, ())})
        holders: dict[str, list[str]] = {}
        device_ids: set[str] = set()
        if names:
            marks = ", ".join("?" * len(names))
            for dev, ind in self.b.execute(f"SELECT device_id, individual_id FROM bindings WHERE individual_id IN "
                                           f"({marks}) ORDER BY device_id", names).fetchall():
                holders.setdefault(ind, []).append(dev)
            device_ids = {r[0] for r in self.b.execute(f"SELECT DISTINCT device_id FROM incarnations WHERE "
                                                       f"device_id IN ({marks})", names).fetchall()}
        return ClaimContext(holders, device_ids)

    def bind_pending(self, ctx: ClaimContext) -> None:
        """The first-seen bindings of a group, in one statement (the caller's transaction)."""
        if ctx.pending:
            self.b.insert_many("bindings", ("device_id", "individual_id", "source", "bound_at"),
                               ("text", "text", "text", "float8"), ctx.pending)
            ctx.pending.clear()

    def holders(self, individual_id: str) -> list[str]:
        return [r[0] for r in self.b.execute("SELECT device_id FROM bindings WHERE individual_id = ? "
                                             "ORDER BY device_id", [individual_id]).fetchall()]

    def admit(self, device_id: str, individuals: Iterable[str], policy: Policy = "first_seen",
              now: float | None = None, bound: set[str] | None = None, ctx: ClaimContext | None = None) -> Verdict:
        """Decide, in the caller's transaction, which of ``individuals`` (a batch's, in order) the
        device may speak for; bind first-seen ones and note refused claims for the operator.
        ``bound``: the device's bindings already read (:meth:`bound_many`); updated in place.
        ``ctx``: the group's :meth:`claim_context`, whose first-seen bindings wait for
        :meth:`bind_pending`; without one, this batch's own is read and written here."""
        now = time.time() if now is None else now
        bound = self.bound_to(device_id) if bound is None else bound
        individuals = list(dict.fromkeys(individuals))
        own = ctx is None
        if ctx is None:
            ctx = self.claim_context([(device_id, individuals)], {device_id: bound})
        refused: dict[str, str] = {}
        new: list[str] = []
        for ind in individuals:
            if ind == device_id or ind in bound:
                continue
            reason = self._claim(device_id, ind, bound, policy, ctx)
            if reason is None:
                ctx.pending.append((device_id, ind, "first_seen", now))
                ctx.holders[ind] = sorted([*ctx.holders.get(ind, []), device_id])
                bound.add(ind)
                new.append(ind)
            else:
                refused[ind] = reason
        if own:
            self.bind_pending(ctx)
        return Verdict(refused, tuple(new))

    @staticmethod
    def _claim(device_id: str, ind: str, bound: set[str], policy: Policy, ctx: ClaimContext) -> str | None:
        fix = f"if it is right, an operator runs: edgeloop bind --device {device_id} --individual {ind}"
        others = ctx.holders.get(ind, [])
        held = f"individual {ind!r} is bound to device {', '.join(others)}" if others else ""
        if bound:
            return (f"device {device_id} is bound to {', '.join(sorted(bound))}, not {ind!r}"
                    + (f" ({held})" if held else "") + f": {fix} --replace (or without --replace to add it)")
        if held:
            return f"{held}: {fix}"
        if policy == "provisioned":
            return f"device {device_id} is not provisioned for {ind!r} (binding = 'provisioned'): {fix}"
        if ind in ctx.device_ids:
            return f"{ind!r} is another device's id: {fix}"
        return None

    def note_refused(self, device_id: str, individual_id: str, reason: str, records: int,
                     now: float | None = None) -> None:
        """Count a refused claim in ``binding_conflicts`` (one row per device and individual)."""
        now = time.time() if now is None else now
        self.b.execute(
            "INSERT INTO binding_conflicts (device_id, individual_id, reason, first_at, last_at, records) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, individual_id) DO UPDATE SET "
            "reason = excluded.reason, last_at = excluded.last_at, "
            "records = binding_conflicts.records + excluded.records",
            [device_id, individual_id, reason[:500], now, now, records])

    def bind(self, device_id: str, individual_id: str, source: Source = "operator", replace: bool = False,
             now: float | None = None) -> list[str]:
        """Bind a device to an individual; ``replace`` first drops the device's other bindings.
        Clears the claim from ``binding_conflicts``; returns the individuals the device was unbound from."""
        now = time.time() if now is None else now
        dropped: list[str] = []
        with self.b.transaction():
            if replace:
                dropped = sorted(self.bound_to(device_id) - {individual_id})
                self.b.execute("DELETE FROM bindings WHERE device_id = ? AND individual_id != ?",
                               [device_id, individual_id])
            self.b.execute("INSERT INTO bindings (device_id, individual_id, source, bound_at) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (device_id, individual_id) DO UPDATE SET source = excluded.source, "
                           "bound_at = excluded.bound_at", [device_id, individual_id, source, now])
            self.b.execute("DELETE FROM binding_conflicts WHERE device_id = ? AND individual_id = ?",
                           [device_id, individual_id])
        return dropped

    def unbind(self, device_id: str, individual_id: str) -> bool:
        with self.b.transaction():
            return self.b.execute("DELETE FROM bindings WHERE device_id = ? AND individual_id = ?",
                                  [device_id, individual_id]).rowcount == 1

    def provision(self, devices: Iterable[tuple[str, Iterable[str]]]) -> int:
        """Bind each (device, individuals) from the cloud config; returns how many bindings are new."""
        n = 0
        with self.b.transaction():
            for device_id, individuals in devices:
                for ind in individuals:
                    n += self.b.execute("INSERT INTO bindings (device_id, individual_id, source, bound_at) "
                                        "VALUES (?, ?, 'provisioned', ?) ON CONFLICT DO NOTHING",
                                        [device_id, ind, time.time()]).rowcount
        return n

    def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(bindings, refused claims waiting for an operator), each a list of rows."""
        b = self.b.query("SELECT * FROM bindings ORDER BY device_id, individual_id")
        c = self.b.query("SELECT * FROM binding_conflicts ORDER BY last_at DESC")
        return b, c

"""Job-wide limits on a job spread over several partitions (pure): grants and allotments.

No transaction spans two partitions, so a spread job's limit is cut into per-partition
*allotments* kept with two monotonic counters, never with a transfer:

* the grant row ``G`` (``keys.grant_key()``, in the container's partition) holds the limits in
  force, an ``epoch``, and per partition ``granted[p]``, which only grows within an epoch and is
  rewritten on ``G``'s ETag only;
* each partition's ``S|00`` holds ``released[p]`` (with the epoch it belongs to), which only
  grows, written in ``p``'s own transactions guarded on ``S|00`` like an escrow reclaim.

Partition ``p``'s allotment is ``A[p] = granted[p] - released[p]``; inside ``p`` the escrow
scheme runs unchanged with ``A[p]`` in place of the job's limit (``usage[p] + escrows[p] <=
A[p]``). ``G`` grants only from ``limit - sum(A)``. A stale read of ``granted[p]`` (it only grows)
or of ``released[q]`` (it only grows) can only make a decision more conservative, so each side
decides alone and the sum of usages never passes the limit. A new epoch (a limit change, or a
first limit) starts each partition at ``released = -(usage + 0)``, i.e. ``A[p]`` = its usage then,
and ``granted`` at zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .ledger import JobView
from .quotas import Limits
from .rows import Entity, Int64, as_int

#: ``S|00``'s property holding ``[epoch, released outputs, released bytes]``.
RELEASED = "Released"


@dataclass(frozen=True, slots=True)
class Amount:
    """Outputs and bytes (of a limit, an allotment, a usage...)."""

    outputs: int = 0
    bytes: int = 0

    def plus(self, other: Amount) -> Amount:
        return Amount(self.outputs + other.outputs, self.bytes + other.bytes)

    def minus(self, other: Amount) -> Amount:
        return Amount(self.outputs - other.outputs, self.bytes - other.bytes)

    def most(self, other: Amount) -> Amount:
        return Amount(max(self.outputs, other.outputs), max(self.bytes, other.bytes))


def limited(limits: Limits) -> tuple[bool, bool]:
    """Which dimensions (outputs, bytes) a job-wide limit bounds."""
    return limits.max_outputs > 0, limits.max_bytes > 0


def short(free: Amount, want: Amount, limits: Limits) -> bool:
    """Whether ``free`` lacks ``want`` in a limited dimension."""
    outputs, size = limited(limits)
    return (outputs and free.outputs < want.outputs) or (size and free.bytes < want.bytes)


def any_left(amount: Amount, limits: Limits) -> bool:
    outputs, size = limited(limits)
    return (outputs and amount.outputs > 0) or (size and amount.bytes > 0)


@dataclass(frozen=True, slots=True)
class Released:
    """What a partition gave back to the grant row in one epoch (only grows within it)."""

    epoch: int = 0
    amount: Amount = Amount()

    @classmethod
    def of(cls, counter: Mapping[str, Any] | None) -> Released:
        text = (counter or {}).get(RELEASED)
        if not text:
            return cls()
        epoch, outputs, size = json.loads(text)
        return cls(int(epoch), Amount(int(outputs), int(size)))

    def text(self) -> str:
        return json.dumps([self.epoch, self.amount.outputs, self.amount.bytes])


@dataclass(frozen=True, slots=True)
class GrantRow:
    """The grant row: the job-wide limits in force, its epoch, what each partition was granted.

    ``target`` is set while a limit change is under way (no grant is made then): the epoch and
    the limits it moves to. Whoever finds it set completes it (``shared.ingest.allotments``).
    """

    epoch: int = 0
    max_outputs: int = 0
    max_bytes: int = 0
    granted: dict[int, Amount] = field(default_factory=dict)
    target: tuple[int, int, int] | None = None
    row: Entity | None = None

    @property
    def limit(self) -> Amount:
        return Amount(self.max_outputs, self.max_bytes)

    def limits(self, max_outputs_per_task: int = 0) -> Limits:
        return Limits(self.max_outputs, self.max_bytes, max_outputs_per_task)

    def matches(self, limits: Limits) -> bool:
        """Open (no change under way) and in force with ``limits``' job-wide limits."""
        return self.target is None and (self.max_outputs, self.max_bytes) == (limits.max_outputs, limits.max_bytes)

    def granted_to(self, index: int) -> Amount:
        return self.granted.get(index, Amount())

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> GrantRow | None:
        if row is None:
            return None
        granted = {int(k): Amount(int(v[0]), int(v[1])) for k, v in json.loads(row.get("Granted") or "{}").items()}
        target = json.loads(row["Target"]) if row.get("Target") else None
        return cls(as_int(row.get("Epoch")), as_int(row.get("LimitOutputs")), as_int(row.get("LimitBytes")), granted,
                   tuple(target) if target else None, dict(row))

    def entity(self, row_key: str) -> Entity:
        granted = {str(k): [v.outputs, v.bytes] for k, v in sorted(self.granted.items())}
        entity: Entity = {"RowKey": row_key, "Epoch": Int64(self.epoch), "LimitOutputs": Int64(self.max_outputs),
                          "LimitBytes": Int64(self.max_bytes), "Granted": json.dumps(granted, separators=(",", ":"))}
        if self.target is not None:
            entity["Target"] = json.dumps(list(self.target))
        return entity

    def closed(self, limits: Limits) -> GrantRow:
        """This row marked for a change to ``limits`` in the next epoch: no grant is made under it."""
        return GrantRow(self.epoch, self.max_outputs, self.max_bytes, self.granted,
                        (self.epoch + 1, limits.max_outputs, limits.max_bytes), self.row)

    def opened(self) -> GrantRow:
        """The change completed: the target's epoch and limits, nothing granted yet."""
        assert self.target is not None
        epoch, max_outputs, max_bytes = self.target
        return GrantRow(epoch, max_outputs, max_bytes, {}, None, self.row)

    def topped_up(self, index: int, allotment: Amount, released: Released) -> GrantRow:
        """Partition ``index`` granted up to ``allotment`` (never less than it had)."""
        granted = dict(self.granted)
        granted[index] = self.granted_to(index).most(allotment.plus(released.amount))
        return GrantRow(self.epoch, self.max_outputs, self.max_bytes, granted, None, self.row)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition's side of the grant: its ledger as read, its usage, what it released."""

    index: int
    view: JobView
    usage: Amount
    escrowed: Amount
    released: Released

    @classmethod
    def of(cls, index: int, view: JobView) -> PartitionState:
        usage = view.job_usage()
        outputs, size = view.escrowed()
        return cls(index, view, Amount(usage.outputs, usage.bytes), Amount(outputs, size), Released.of(view.counter))

    def allotment(self, grant: GrantRow) -> Amount:
        return grant.granted_to(self.index).minus(self.released.amount)

    def held(self, grant: GrantRow) -> Amount:
        """What the partition holds of the limit: its allotment, or more if it admitted past it
        (outputs admitted under no limit before a limit reached every instance)."""
        return self.allotment(grant).most(self.usage.plus(self.escrowed))

    def free(self, grant: GrantRow) -> Amount:
        """Its allotment not used nor held in escrow by any writer."""
        return self.allotment(grant).minus(self.usage).minus(self.escrowed)

    def unused(self, grant: GrantRow, limits: Limits, *, except_writer: str | None = None) -> bool:
        """Whether releasing it to its usage would give anything back."""
        others = [e for w, e in self.view.escrows.items() if w != except_writer]
        held = Amount(sum(e.outputs for e in others), sum(e.bytes for e in others))
        return any_left(held, limits) or any_left(self.allotment(grant).minus(self.usage).minus(held), limits)

    def returnable(self, grant: GrantRow) -> Amount:
        """What releasing it to its usage gives back (escrows included)."""
        return self.allotment(grant).minus(self.usage).most(Amount())

    def release_to_usage(self, grant: GrantRow, kept: Amount) -> Released:
        """``released`` once every escrow but ``kept`` is zeroed: the allotment is the usage plus
        ``kept`` (``granted`` as read may be stale: it only grows, so that releases less)."""
        given = grant.granted_to(self.index).minus(self.usage).minus(kept)
        return Released(self.released.epoch, self.released.amount.most(given))

    def start_epoch(self, epoch: int, kept: Amount) -> Released:
        """``released`` at the start of ``epoch``: nothing granted yet, the allotment is the usage."""
        return Released(epoch, Amount().minus(self.usage).minus(kept))


def job_free(grant: GrantRow, states: Iterable[PartitionState]) -> Amount:
    """The limit not held by any partition (per dimension; unlimited ones are meaningless)."""
    free = grant.limit
    for state in states:
        free = free.minus(state.held(grant))
    return free


def share(want: Amount, free: Amount, limits: Limits, parts: int) -> Amount:
    """What to grant one that lacks ``want`` when ``free`` is unheld: what it needs plus a
    ``parts``-th of the rest (all there is when that is less than it needs)."""
    def one(w: int, f: int, on: bool) -> int:
        if not on:
            return 0
        if f <= w:
            return max(f, 0)
        return w + (f - w) // parts
    outputs, size = limited(limits)
    return Amount(one(want.outputs, free.outputs, outputs), one(want.bytes, free.bytes, size))


def epochs_agree(grant: GrantRow, states: Iterable[PartitionState]) -> bool:
    return all(s.released.epoch == grant.epoch for s in states)


def by_index(states: Iterable[PartitionState]) -> Mapping[int, PartitionState]:
    return {s.index: s for s in states}

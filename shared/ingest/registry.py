"""The job registry: one row per job container in the ``~jobs`` partition, listed by ``GET /api/jobs``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.conventions import job_id_from_container
from shared.domain.planning import MAX_BATCH_OPERATIONS, Op, Operation
from shared.domain.rows import Entity
from shared.store.errors import ConflictError
from shared.store.table import TableStore


class JobRegistry:
    """Records that a job container exists, and its job ID when known."""

    def __init__(self, store: TableStore) -> None:
        self.store = store
        self._known: set[str] = set()
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def register(self, container: str, job_id: str | None = None) -> None:
        """Record ``container`` (once per process); ``job_id`` when a client tells us (``PUT /api/jobs``).

        A hashed container name cannot be reversed, so its job ID is known only once registered.
        """
        if job_id is None:
            if container in self._known:
                return
            # Concurrent deliveries of a new job register it once, not once each (a second
            # create would only fail: a wasted, failed request per delivery).
            pending = self._pending.get(container)
            if pending is not None:
                return await asyncio.shield(pending)
            self._pending[container] = asyncio.get_running_loop().create_future()
        try:
            await self._record(container, job_id)
        except BaseException as exc:
            self._settle(container, exc)
            raise
        self._settle(container, None)

    async def register_all(self, containers: list[str]) -> set[str]:
        """Record every container of a delivery; the ones this call created (new jobs).

        The ``~jobs`` rows are one partition, so new jobs are created 100 a transaction, not a
        request each: a delivery spanning 1,000 new jobs costs 10 requests here. A row that
        exists already fails its transaction, which names it: it is left out and the rest is
        sent again.
        """
        waits = [self._pending[c] for c in containers if c not in self._known and c in self._pending]
        todo = [c for c in dict.fromkeys(containers) if c not in self._known and c not in self._pending]
        loop = asyncio.get_running_loop()
        for container in todo:
            self._pending[container] = loop.create_future()
        created: set[str] = set()
        try:
            for start in range(0, len(todo), MAX_BATCH_OPERATIONS):
                created |= await self._create_all(todo[start : start + MAX_BATCH_OPERATIONS])
        except BaseException as exc:
            for container in todo:
                self._settle(container, exc)
            raise
        for container in todo:
            self._known.add(container)
            self._settle(container, None)
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits))
        return created

    async def _create_all(self, containers: list[str]) -> set[str]:
        now = datetime.now(timezone.utc)
        rows: dict[str, Entity] = {}
        for container in containers:
            rows[container] = {"RowKey": container, "FirstSeenAt": now}
            derived = job_id_from_container(container)
            if derived:
                rows[container]["JobId"] = derived
        while rows:
            order = list(rows)
            try:
                await self.store.submit(keys.JOBS_PARTITION, [Operation(Op.CREATE, rows[c]) for c in order])
            except ConflictError as exc:
                if exc.index is None or not 0 <= exc.index < len(order):
                    # Not told which: one at a time.
                    return {c for c in order if await self.store.insert_if_absent(
                        {"PartitionKey": keys.JOBS_PARTITION, **rows[c]})}
                del rows[order[exc.index]]  # it exists: not a new job
                continue
            return set(order)
        return set()

    def _settle(self, container: str, error: BaseException | None) -> None:
        future = self._pending.pop(container, None)
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
                future.exception()  # retrieved: waiters re-raise it, nobody else needs to

    async def _record(self, container: str, job_id: str | None) -> None:
        entity: Entity = {"PartitionKey": keys.JOBS_PARTITION, "RowKey": container, "FirstSeenAt": datetime.now(timezone.utc)}
        derived = job_id or job_id_from_container(container)
        if derived:
            entity["JobId"] = derived
        if job_id:
            entity["Registered"] = True
            existing = await self.store.get(keys.JOBS_PARTITION, container)
            if existing is not None:
                entity["FirstSeenAt"] = existing.get("FirstSeenAt") or entity["FirstSeenAt"]
            await self.store.merge(entity)
        else:
            await self.store.insert_if_absent(entity)
        self._known.add(container)

    async def exists(self, container: str) -> bool:
        """Whether ``container`` is a registered job (this process registered it, or its row exists)."""
        if container not in self._known and await self.store.get(keys.JOBS_PARTITION, container) is not None:
            self._known.add(container)
        return container in self._known

    async def job_id_of(self, container: str) -> str | None:
        """The job ID recorded for ``container``, if any."""
        row = await self.store.get(keys.JOBS_PARTITION, container)
        return (row or {}).get("JobId")

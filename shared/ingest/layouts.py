"""Choosing a job's layout: how many Table partitions its index is spread over.

A job's layout is chosen when its registry row (``~jobs``) is created, by the admin call
``PUT /api/jobs/{jobId}/layout``, before anything else registers the job (a delivery, a quota,
``PUT /api/jobs/{jobId}``); it never changes while the row exists. So every instance that has
read it once (``shared.store.layouts``) keeps using it, and no output is ever written to a
partition the layout does not name: there is nothing to migrate, and a job that already has a
row is refused (409) unless it asks for the layout it has.
"""

from __future__ import annotations

from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.layout import Layout, LayoutError, check_partitions
from shared.domain.quotas import QuotaDefaults
from shared.store.layouts import LayoutBook
from shared.store.table import TableStore


class LayoutFixedError(LayoutError):
    """The job is registered already, with another layout (409 ``LayoutFixed``)."""


class JobLayouts:
    def __init__(self, store: TableStore, book: LayoutBook, quota_defaults: QuotaDefaults) -> None:
        self.store = store
        self.book = book
        self.quota_defaults = quota_defaults

    async def set(self, container: str, job_id: str, partitions: int) -> Layout:
        """Register the job with ``partitions`` partitions; its layout if it had it already.

        Raises ``LayoutError`` (a bad number) or ``LayoutFixedError`` (registered already, with
        another layout).
        """
        wanted = Layout(container, check_partitions(partitions))
        row = {"PartitionKey": keys.JOBS_PARTITION, "RowKey": container, "JobId": job_id, "Registered": True,
               "FirstSeenAt": datetime.now(timezone.utc), keys.PARTITIONS: wanted.partitions}
        if await self.store.insert_if_absent(row):
            self.book.remember(wanted)
            return wanted
        have = Layout.of(container, await self.store.get(keys.JOBS_PARTITION, container))
        if have.partitions != wanted.partitions:
            raise LayoutFixedError(
                f"job {job_id!r} is registered already with {have.partitions} partition(s): a layout is chosen "
                "before anything registers the job (its first output, a quota, PUT /api/jobs/{jobId}) and never changes")
        self.book.remember(have)
        return have

    async def get(self, container: str) -> Layout:
        return await self.book.get(container)

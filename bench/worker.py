"""One Functions instance running the Event Grid trigger as the Python worker does (benchmarks).

``python -m bench.worker DELIVERIES.json``: loads ``function_app.py`` (settings from the
environment), finds the ``index_blob_event`` function the host would index, prints ``ready``,
waits for a line on stdin, then handles its deliveries as the Event Grid extension does: each
delivery's events are handed over as the worker hands them (``devtools.worker_binding``: the
event's JSON for a ``str`` parameter, azure-functions' converter otherwise) and run as
concurrent invocations of the single-event function; if any invocation fails the whole delivery is
retried (Event Grid redelivers a batch whose delivery failed). Prints a JSON line of results.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from devtools.worker_binding import trigger_binding

#: Deliveries one instance handles at once (Event Grid keeps several in flight per instance).
IN_FLIGHT = 4
MAX_ATTEMPTS = 30


def trigger_function() -> Callable[[Any], Awaitable[None]]:
    import function_app

    for function in function_app.app.get_functions():
        if function.get_function_name() == "index_blob_event":
            return function.get_user_function()  # type: ignore[no-any-return,unused-ignore]
    raise RuntimeError("function_app.py registers no index_blob_event")


async def deliver(function: Callable[[Any], Awaitable[None]], argument: Callable[[str], Any], events: list[str]) -> int:
    """One delivery, retried whole until every invocation succeeded; the number of attempts."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        outcomes = await asyncio.gather(*(function(argument(e)) for e in events), return_exceptions=True)
        if not any(isinstance(o, BaseException) for o in outcomes):
            return attempt
        await asyncio.sleep(random.uniform(0.05, 0.5))
    raise RuntimeError(f"a delivery failed {MAX_ATTEMPTS} times")


async def run(deliveries: list[list[dict[str, Any]]]) -> dict[str, Any]:
    from functions.http_app import services

    function = trigger_function()
    argument = trigger_binding(function)  # the worker decides the binding once, at load
    # What the host sends the worker: each event's JSON (made before the clock starts).
    messages = [[json.dumps(event) for event in delivery] for delivery in deliveries]
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(events: list[str]) -> int:
        async with semaphore:
            return await deliver(function, argument, events)

    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.perf_counter()
    attempts = await asyncio.gather(*(one(d) for d in messages))
    ingested = time.perf_counter() - started
    await services.close()  # folds what this instance wrote, as a draining instance would
    return {
        "events": sum(len(d) for d in deliveries),
        "seconds": ingested,
        "redeliveries": sum(a - 1 for a in attempts),
    }


def main() -> int:
    deliveries = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(run(deliveries))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

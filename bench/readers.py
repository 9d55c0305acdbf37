"""Concurrent API readers in their own process (benchmarks): ``python -m bench.readers N URL PATH...``.

They stand for clients on other machines. In the benchmark's own process they would take the
interpreter lock from the ``CountingProxy`` thread that carries every Table request of the app,
and slow ingest through the proxy rather than through the app. Prints ``ready``, reads from the
first line on stdin until the next one, then prints the number of reads answered.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from bench.stack import API_KEY


async def read_until_told(readers: int, url: str, paths: list[str]) -> int:
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    done = asyncio.Event()
    reads = 0
    connector = aiohttp.TCPConnector(limit=readers)
    async with aiohttp.ClientSession(url, headers={"x-functions-key": API_KEY}, connector=connector) as session:

        async def reader(number: int) -> None:
            nonlocal reads
            while not done.is_set():
                async with session.get(paths[number % len(paths)]) as response:
                    await response.read()  # any answer counts, a 503 under load too (as before)
                reads += 1

        tasks = [asyncio.create_task(reader(n)) for n in range(readers)]
        await loop.run_in_executor(None, sys.stdin.readline)
        done.set()
        await asyncio.gather(*tasks)
    return reads


def main() -> int:
    readers, url, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    print(asyncio.run(read_until_told(readers, url, paths)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Open- and closed-loop load on a PBFT cluster through a client: the ledger benchmarks' engine."""
import asyncio


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))] if values else float("nan")


async def offered(client, ops, rate, check=None, timeout=30):
    """Open loop: ``ops`` submitted one every 1/rate s regardless of replies (no coordinated
    omission). Returns (latencies in s, elapsed s, results that failed ``check``)."""
    loop = asyncio.get_running_loop()
    latencies, failed = [], [0]
    start = loop.time()

    async def one(at, op):
        await asyncio.sleep(max(0.0, at - loop.time()))
        result = await client.submit(op, timeout=timeout)
        latencies.append(loop.time() - at)
        if check is not None and not check(result):
            failed[0] += 1

    await asyncio.gather(*[one(start + i / rate, op) for i, op in enumerate(ops)])
    return latencies, loop.time() - start, failed[0]


async def saturated(client, ops, lanes, seconds=None, check=None, timeout=30):
    """Closed loop: ``lanes`` requests always outstanding, drawn from the iterator ``ops``
    until it is exhausted or ``seconds`` have passed. Same return as ``offered``."""
    loop = asyncio.get_running_loop()
    latencies, failed = [], [0]
    start = loop.time()
    end = None if seconds is None else start + seconds

    async def worker():
        for op in ops:
            t = loop.time()
            result = await client.submit(op, timeout=timeout)
            latencies.append(loop.time() - t)
            if check is not None and not check(result):
                failed[0] += 1
            if end is not None and loop.time() >= end:
                return

    await asyncio.gather(*[worker() for _ in range(lanes)])
    return latencies, loop.time() - start, failed[0]

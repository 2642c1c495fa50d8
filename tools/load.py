"""Open- and closed-loop load on a PBFT cluster through a client: the ledger benchmarks' engine.

Results are kept and passed to ``check`` only after the clock stops: the client shares the
machine with the replicas, and decoding every result is the benchmark's verification, not
work the cluster has to do to confirm.
"""
import asyncio


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))] if values else float("nan")


def _failed(results, check):
    return 0 if check is None else sum(1 for r in results if not check(r))


async def offered(client, ops, rate, check=None, timeout=30):
    """Open loop: ``ops`` submitted one every 1/rate s regardless of replies (no coordinated
    omission). Returns (latencies in s, elapsed s, results that failed ``check``)."""
    loop = asyncio.get_running_loop()
    latencies, results = [], []
    start = loop.time()

    async def one(at, op):
        results.append(await client.submit(op, timeout=timeout))
        latencies.append(loop.time() - at)

    # One pacing loop starts each request at its time: cheaper for the client, which shares
    # the machine with the replicas, than a sleeping task and a timer per request.
    tasks = []
    for i, op in enumerate(ops):
        at = start + i / rate
        if at > loop.time():
            await asyncio.sleep(at - loop.time())
        tasks.append(loop.create_task(one(at, op)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    return latencies, elapsed, _failed(results, check)


async def saturated(client, ops, lanes, seconds=None, check=None, timeout=30):
    """Closed loop: ``lanes`` requests always outstanding, drawn from the iterator ``ops``
    until it is exhausted or ``seconds`` have passed. Same return as ``offered``."""
    loop = asyncio.get_running_loop()
    latencies, results = [], []
    start = loop.time()
    end = None if seconds is None else start + seconds

    async def worker():
        for op in ops:
            t = loop.time()
            results.append(await client.submit(op, timeout=timeout))
            latencies.append(loop.time() - t)
            if end is not None and loop.time() >= end:
                return

    await asyncio.gather(*[worker() for _ in range(lanes)])
    elapsed = loop.time() - start
    return latencies, elapsed, _failed(results, check)

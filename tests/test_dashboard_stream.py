"""What the dashboard sends its pages when blocks commit faster than a page renders: blocks
go out together, at most one message per ``BLOCKS_EVERY_S``, none lost and in order, with
only the events a page keeps; a lone block goes out at once."""
import asyncio
import json

from plugpay.tools import dashboard as D
from plugpay.tools.ledger_follow import Committed


def block(height, requests):
    events = [{"height": height, "index": i, "kind": "transaction", "id": "%d-%d" % (height, i), "ok": True}
              for i in range(requests)]
    return Committed(height, "%064x" % height, None, requests, events, True)


def messages(queue):
    out = []
    while not queue.empty():
        message = queue.get_nowait()
        if message == b"":  # the end of the stream
            continue
        kind, data = message.decode().split("\n")[:2]
        out.append((kind[len("event: "):], json.loads(data[len("data: "):])))
    return out


async def committing(counts, pause):
    """A dashboard with one subscribed page; blocks of ``counts`` requests committed
    ``pause`` s apart (None: all before the loop runs again). The "blocks" messages the
    page got."""
    board = D.Dashboard("test")
    board.loop = asyncio.get_running_loop()
    page = asyncio.Queue()
    board.subscribers.add(page)
    for height, count in enumerate(counts, 1):
        board.on_block(block(height, count))
        if pause is not None:
            await asyncio.sleep(pause)
    await asyncio.sleep(2 * D.BLOCKS_EVERY_S)
    await board.stop()
    return [m for m in messages(page) if m[0] == "blocks"]


def test_a_burst_of_blocks_goes_out_together_with_the_newest_blocks_and_events():
    sent = asyncio.run(committing([30] * 200, None))
    assert len(sent) == 1
    burst = sent[0][1]
    assert [b["height"] for b in burst["blocks"]] == list(range(201 - D.BLOCKS_SHOWN, 201))
    newest = [e for h in range(1, 201) for e in block(h, 30).events[-D.EVENTS_PER_BLOCK:]][-D.EVENTS_SHOWN:]
    assert burst["events"] == newest


def test_a_lone_block_goes_out_at_once_with_its_events():
    sent = asyncio.run(committing([3], 0.0))
    assert [(b["height"], len(m["events"])) for _, m in sent for b in m["blocks"]] == [(1, 3)]


def test_blocks_further_apart_than_the_pace_each_get_a_message():
    sent = asyncio.run(committing([1, 2, 1], 2 * D.BLOCKS_EVERY_S))
    assert [[b["height"] for b in m["blocks"]] for _, m in sent] == [[1], [2], [3]]
    assert [[e["id"] for e in m["events"]] for _, m in sent] == [["1-0"], ["2-0", "2-1"], ["3-0"]]

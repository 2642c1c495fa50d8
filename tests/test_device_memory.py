"""A MicroPython vehicle that runs out of heap loses nothing, wherever the ``MemoryError``
strikes (issue 15, item 7): it stores every state before the state leaves, so its files,
reopened on CPython, pass ``wallet check`` and hold every channel state the charger can
hold, and ``plugpay wallet settle`` finishes the session with no money gone.

Real processes only: Mosquitto, 4 replica processes with the gateway and the RA, a
MicroPython charger, and the vehicle on the unix port under ``-X heapsize``, its code from
.mpy files as ``plugpay flash`` puts it on a board. The vehicle runs at heaps from one in
which it completes downwards, until it fails before any money was locked; where each run
fails depends on the heap's fragmentation (so on timing), so each run is judged by what its
files and the ledger hold afterwards, never by where it stopped.
"""
import os
import subprocess
import sys
import time

import pytest
from test_device_sessions import PLUGPAY, board, device, finish, records

from plugpay.firmware import channels, issuing
from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import broker
from plugpay.host.stack import HostStack
from plugpay.protocol import ledger_ops as L
from plugpay.tools import micropython as mpy
from plugpay.tools import mpycross

pytestmark = pytest.mark.skipif(mpy.unix_unavailable_reason() is not None, reason=mpy.unix_unavailable_reason() or "")

MAIN = os.path.join(os.path.dirname(__file__), "..", "boards", "sim", "main.py")
FUNDS = 4000
INSTALLMENTS = 10
FIRST_HEAP = 448 * 1024  # a heap the vehicle completes a session in (64-bit port)
STEP = 16 * 1024
MAX_RUNS = 10


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("mpy-memory")
    with broker.MosquittoProcess(str(base)) as mosquitto, \
            HostStack(str(base / "host"), broker_url=mosquitto.url) as stack:
        stack.mosquitto = mosquitto
        yield stack


@pytest.fixture(scope="module")
def mpy_lib(tmp_path_factory):
    """The device code compiled by mpy-cross, laid out as on a board (``lib/plugpay/...``)."""
    return mpycross.compile_package(os.path.join(os.path.dirname(__file__), ".."), tmp_path_factory.mktemp("mpy-lib"))


def _open(folder):
    return Wallet.open(Storage(os.path.join(folder, "wallet")), KeyFile(os.path.join(folder, "device.key")).load())


def _gateway(host):
    address, port = host.mosquitto.url[len("mqtt://"):].rsplit(":", 1)
    mqtt = Mqtt(address, int(port))
    mqtt.connect()
    return mqtt, GatewayClient(mqtt)


def _fund(host, folder):
    """Clean coins from the faucet, asked on CPython before the run: the vehicle's own
    funding is not what this test is about."""
    wallet = _open(folder)
    mqtt, gateway = _gateway(host)
    try:
        assert issuing.fund(wallet, gateway, FUNDS).ok
    finally:
        mqtt.close()


def _ledger_channel(host, channel_id):
    mqtt, gateway = _gateway(host)
    try:
        return channels.channel_row(channel_id, gateway.query(channels.query(channel_id)).encode())
    finally:
        mqtt.close()


def _settle(host, folder):
    """``plugpay wallet settle`` until the vehicle's wallet holds no channel (a window may
    still be open: run it again, as its report says)."""
    for _ in range(40):
        out = subprocess.run(PLUGPAY + ["wallet", "settle", "--dir", os.path.join(folder, "wallet"), "--device-key",
                                        os.path.join(folder, "device.key"), "--broker", host.mosquitto.url],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        if not _open(folder).channels:
            return
        time.sleep(0.5)
    raise AssertionError("wallet settle left a channel open: " + out.stdout)


def _run(host, base, lib, heap, number):
    """One market session with the vehicle at ``heap``; what it came to, checked."""
    run = os.path.join(base, "run%d" % number)
    common = {"installments": INSTALLMENTS, "energy_wh": 200 * INSTALLMENTS, "timeout_ms": 20000,
              "region": "MEM-%d" % number}  # a region each: no run's charger bids on another's vehicle
    vehicle_dir, charger_dir = os.path.join(run, "vehicle"), os.path.join(run, "charger")
    vehicle = board(host, vehicle_dir, "vehicle", common)
    charger = board(host, charger_dir, "charger", common)
    _fund(host, vehicle_dir)
    c_proc = device(run, charger)
    env = mpy.unix_env(run)
    env["MICROPYPATH"] = lib + os.pathsep + ".frozen"  # .mpy files, as on a flashed board
    v_proc = subprocess.Popen(mpy.unix_command(heap) + [MAIN, vehicle, "1"], cwd=run, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    v_code, v_out = finish(v_proc, 240)

    # Right after the vehicle stopped, whatever stopped it: its files as it left them.
    wallet = _open(vehicle_dir)
    assert wallet.check()["ok"], (heap, wallet.check(), v_out)
    # the highest state it signed: the latest co-signed one, or its proposal after it
    stored = dict((cid, (ch.pending() or ch.latest()).seq) for cid, ch in wallet.channels.items())
    in_flight = [L.decode_request(raw) for raw in wallet.pending_requests()]
    opens = [op.channel_id() for op in in_flight if op.TAG == L.TAG_CHANNEL_OPEN]  # no answer booked yet
    ran_out = "out of memory" in v_out or "MemoryError" in v_out
    assert v_code == 0 or ran_out, v_out  # it completed, or the heap ran out: nothing else went wrong

    c_code, c_out = finish(c_proc, 240)  # the charger finishes its side alone if it must
    _settle(host, vehicle_dir)
    wallet = _open(vehicle_dir)
    assert wallet.check()["ok"] and not wallet.channels and not wallet.pending_requests(), wallet.check()
    status = wallet.status()
    ids = list(stored) + opens  # channels the vehicle's files knew of when it stopped
    paid = 0
    for channel_id in ids:
        row = _ledger_channel(host, channel_id)
        if row is None:
            continue  # its open never reached the ledger: nothing was locked
        assert row[5] != 0, row  # no longer open
        if channel_id in stored:
            assert row[6] <= stored[channel_id], (row, stored)  # no state left that the vehicle did not store
        paid += row[7]
    if not ids:  # the session closed its channel itself (or made none): the charger's payout says what it got
        paid = sum(c["payout"] or 0 for c in records(c_out))
    # Nothing lost: what the vehicle holds and what it paid the charger is what it had.
    assert status["balance"] + paid == FUNDS, (status, paid, v_out, c_out)
    dealt = bool(records(c_out)) or bool(ids)  # a session began: money was locked at some point
    return {"heap": heap, "completed": v_code == 0, "in_flight": bool(ids), "dealt": dealt, "paid": paid,
            "stopped": v_out.strip().splitlines()[-1][:80] if v_code else ""}


def test_a_vehicle_out_of_heap_at_any_point_loses_nothing(host, mpy_lib, tmp_path):
    runs = []
    heap = FIRST_HEAP
    while len(runs) < MAX_RUNS:
        runs.append(_run(host, str(tmp_path), mpy_lib, heap, len(runs)))
        if not runs[-1]["completed"] and not runs[-1]["dealt"]:
            break  # it ran out before any money was locked: in less heap it runs out sooner
        heap -= STEP
    sys.stdout.write("runs: %r\n" % runs)
    assert runs[0]["completed"], "the vehicle needs more than %d bytes now: raise FIRST_HEAP (%r)" % (FIRST_HEAP, runs)
    assert any(r["in_flight"] for r in runs), runs  # one ran out with money locked

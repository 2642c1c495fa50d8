"""A simulated board as a MicroPython unix-port process, for ``plugpay hil`` and ``plugpay
demo --micropython``: provisioned here the way a board is (a wallet and its device key on
files, the identity registered with the RA in person, one-time keys registered over MQTT
through the gateway), then run as ``micropython -X heapsize=HEAP boards/sim/main.py
CONFIG`` with ``"console": "hil"``, its console on the process's standard input and output
(``tools.console_host.ProcessPort``). The whole vehicle or charger runs inside the port:
wallet, link, crypto, MQTT client, simulated board.
"""
import json
import os
import subprocess

from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.refill import REFILLED, refill
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol.port import urandom
from plugpay.tools import micropython as mpy

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "boards", "sim", "main.py")
DEFAULT_HEAP = 2 * 1024 * 1024
KEYS = 64


def provision(name, host, directory, keys=KEYS):
    """A board folder ``directory/mpy-<name>`` with ``wallet/`` and ``device.key``; its path."""
    folder = os.path.join(directory, "mpy-" + name)
    os.makedirs(os.path.join(folder, "wallet"))
    key = urandom(32)
    fd = os.open(os.path.join(folder, "device.key"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    wallet = Wallet.create(Storage(os.path.join(folder, "wallet")), key, host.ra_pubkeys)
    fields = {"name": "Demo " + name, "licence": "DEMO-MPY-" + name.upper(),
              "vehicle_id": "1PLUGPAY9%08d" % (int.from_bytes(urandom(4), "big") % 10 ** 8)}
    wallet.set_identity(host.authority.register_identity(fields, wallet.device_pubkey()))
    mqtt = host.devices.device()
    mqtt.connect()
    try:
        report = refill(wallet, GatewayClient(mqtt), keys, keys)
    finally:
        mqtt.close()
    if report.status != REFILLED:
        raise RuntimeError("%s: key registration over MQTT failed: %r" % (name, report))
    return folder


def config(name, role, folder, host, power_w, scale):
    """The board config of a process board in hil mode (``boards/common/profile``)."""
    devices = host.devices
    data = {"board": "sim", "name": name, "role": role, "broker": devices.url, "power_w": power_w,
            "scale": max(1, int(scale)), "wallet": os.path.join(folder, "wallet"),
            "device_key": os.path.join(folder, "device.key"), "console": "hil",
            "session": {"region": "local", "position": "0,0", "scenario": "g2v", "mode": "channel",
                        "installments": 1, "price": 1, "energy_wh": 1, "window_min": 1}}
    if devices.ca_file:
        data["broker_ca"] = os.path.abspath(devices.ca_file)
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    return path


def start(config_path, workdir, heap=DEFAULT_HEAP):
    """The board's process, its console on stdin and stdout; stderr goes to ``workdir``'s
    ``<name>.log`` beside its config (a crash's traceback is kept)."""
    log = open(os.path.splitext(config_path)[0] + ".log", "wb")
    try:
        return subprocess.Popen(mpy.unix_command(heap) + [MAIN, config_path], cwd=workdir,
                                env=mpy.unix_env(workdir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, bufsize=0)
    finally:
        log.close()

"""``plugpay hil``: simulated boards in this process, and a simulated board behind a real
serial line (a pseudo-terminal pair: the board side writes console frames to the master,
pyserial reads the slave) with garbage, a corrupted frame and then the plug pulled."""
import fcntl
import os
import re
import select
import struct
import termios
import threading
import time
import tty

from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ScaledClock
from plugpay.boards.sim.power import Battery
from plugpay.firmware import console as C
from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host.stack import HostStack
from plugpay.tools import cli, session_record

SMALL = ["--energy-wh", "2000", "--scale", "20000", "-n", "10"]


def test_two_simulated_boards_write_a_valid_record(tmp_path, capsys):
    path = str(tmp_path / "session.json")
    code = cli.main(["hil", "--vehicle", "sim", "--charger", "sim", "--record", path] + SMALL)
    out = capsys.readouterr().out
    assert code == 0, out
    record = session_record.read(path)
    assert [e["op"] for e in record["onchain"]] == ["channel_open", "channel_close"]
    consumer, producer = record["sides"]["consumer"], record["sides"]["producer"]
    assert consumer["board"] == "vehicle" and consumer["initiator"] and producer["board"] == "charger"
    assert consumer["finished"] and producer["finished"] and producer["payout"] == record["budget"] == 600
    assert len(consumer["installments"]) == 10 and consumer["max_exposure"] <= record["per_installment"]
    assert producer["max_exposure"] <= 0 and producer["timeline"] and consumer["log"]


def test_bad_options_are_refused_before_anything_starts(capsys):
    assert cli.main(["hil", "--vehicle", "/dev/ttyUSB0", "--charger", "sim"]) == 2
    assert "needs --broker" in capsys.readouterr().err
    assert cli.main(["hil", "--vehicle", "/dev/ttyUSB0", "--charger", "sim", "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "--ra-dir" in capsys.readouterr().err


class PowerCut(Exception):
    """The board lost power: its console and its session stop at once."""


class PtyBoard:
    """A simulated vehicle running the board side of the console on the master end of a
    pty: it answers ``ASK``, runs the session a ``START`` asks for over MQTT, writes noise
    and one corrupted frame between its frames, and after ``cut_after`` progress frames
    closes the pty and stops (the plug pulled mid-session)."""

    def __init__(self, out, broker, cut_after):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self.slave = slave
        self.broker = broker
        self.cut_after = cut_after
        self.wallet = Wallet.open(Storage(os.path.join(out, "wallet")),
                                  KeyFile(os.path.join(out, "device.key")).load())
        clock = ScaledClock(20000)
        self.board = SimBoard("vehicle", clock, 11000, battery=Battery(80000, 10000, 150000, 150000))
        self.console = C.BoardConsole(self._write, "vehicle", "sim", "vehicle")
        self.frames = 0
        self.progress = 0
        self.mqtt = None
        self.ended = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _write(self, line):
        if self.master is None:
            raise PowerCut()
        self.frames += 1
        if self.frames % 5 == 0:
            os.write(self.master, b"\x00garbage\xff on the line\r\n")
        if self.frames == 7:
            line = line[:4] + bytes([line[4] ^ 0x20]) + line[5:]
        os.write(self.master, line)
        if line.startswith(b">PROG"):
            self.progress += 1
            if self.progress == self.cut_after:
                self._drained()
                os.close(self.master)
                self.master = None
                raise PowerCut()

    def _drained(self):
        """Wait until the host read what was written (closing a pty drops unread bytes)."""
        for _ in range(500):
            waiting = struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            if not waiting:
                return
            time.sleep(0.01)

    def _main(self):
        def read(ms):
            ready, _, _ = select.select([self.master], [], [], ms / 1000)
            return os.read(self.master, 4096) if ready else b""

        def connect(username=None):
            self.mqtt = Mqtt(*self.broker, username=username)
            self.mqtt.connect()
            return self.mqtt

        try:
            C.serve(self.console, self.wallet, self.board, connect, read, _Millis(), 60000)
        except (PowerCut, OSError, TypeError) as e:  # TypeError: select on a closed master
            self.ended = e  # serve closed the session's MQTT connection: no power, no Wi-Fi

    def close(self):
        if self.mqtt is not None:
            self.mqtt.close()
        os.close(self.slave)
        if self.master is not None:
            os.close(self.master)


class _Millis:
    def __init__(self):
        self.start = time.monotonic()

    def __call__(self):
        return int((time.monotonic() - self.start) * 1000)


def test_a_board_behind_a_pty_survives_garbage_and_a_pulled_plug_loses_at_most_one_installment(tmp_path, capsys):
    with HostStack(str(tmp_path / "host")) as host:
        ra_dir, key_file = str(tmp_path / "host" / "ra"), str(tmp_path / "host" / "ra-key.bin")
        url = "mqtt://%s:%d" % (host.broker_host, host.broker_port)
        out = str(tmp_path / "vehicle")
        assert cli.main(["provision", "--role", "vehicle", "--out", out, "--keys", "64", "--ra-dir", ra_dir,
                         "--key-file", key_file, "--broker", url, "--name", "Pty Vehicle", "--licence",
                         "PTY-0001", "--vehicle-id", "1PLUGPAY000000009"]) == 0
        capsys.readouterr()
        board = PtyBoard(out, (host.broker_host, host.broker_port), cut_after=6)
        record_path = str(tmp_path / "session.json")
        try:
            code = cli.main(["hil", "--vehicle", board.port, "--charger", "sim", "--broker", url, "--ra-dir", ra_dir,
                             "--key-file", key_file, "--record", record_path, "--timeout", "60"] + SMALL)
            captured = capsys.readouterr()
            board.thread.join(5)
        finally:
            board.close()
    assert code == 1, captured.out + captured.err
    assert isinstance(board.ended, PowerCut)
    assert "the console of vehicle on %s was lost" % board.port in captured.err
    assert "console problems:" in captured.out and "garbage" in captured.out and "bad_crc" in captured.out
    # the charger, left alone, said what it waited for and when it would give up, each wait once
    waits = re.findall(r"(?m)^  charger: waiting for .+, stopping at \d\d:\d\d:\d\d \(in \d+ s\)$", captured.out)
    assert waits and len(set(w.split(", stopping")[0] for w in waits)) == len(waits), captured.out
    record = session_record.read(record_path)
    consumer, producer = record["sides"]["consumer"], record["sides"]["producer"]
    assert not consumer["finished"] and consumer["kind"] == "sim" and len(consumer["timeline"]) >= 4
    # the charger ends by its own timeouts and dispute, never exposed; the vehicle at most b/N
    assert producer["stop_code"] is not None and producer["max_exposure"] <= 0
    assert producer["finished"] and producer["payout"] > 0 and "channel_settle" in [e["op"] for e in record["onchain"]]
    assert max(row[1] for row in consumer["timeline"]) <= record["per_installment"]
    # nothing stored is lost: the pulled board's wallet opens and passes its check
    wallet = Wallet.open(Storage(os.path.join(out, "wallet")), KeyFile(os.path.join(out, "device.key")).load())
    report = wallet.check()
    assert report["ok"], report
    assert wallet.channels or wallet.status()["locked"] or wallet.status()["balance"] is not None


def test_a_bad_record_file_is_an_error_naming_the_field(tmp_path):
    import json

    path = str(tmp_path / "r.json")
    assert cli.main(["demo", "--record", path] + SMALL) == 0
    good = session_record.read(path)
    for change, words in (((), "not JSON"), (("format", "other/1"), "format"),
                          (("sides", "consumer", "payout", "x"), "sides.consumer.payout"),
                          (("sides", "producer", "timeline", [[1, 2]]), "sides.producer.timeline[0]"),
                          (("onchain", [{"op": "x", "id": "zz", "side": "consumer"}]), "onchain[0].id"),
                          (("parameters", "installments", 0), "parameters.installments")):
        bad = json.loads(json.dumps(good))
        target = bad
        for key in change[:-2]:
            target = target[key]
        if change:
            target[change[-2]] = change[-1]
        with open(path, "w") as f:
            f.write(json.dumps(bad) if change else "{not json")
        try:
            session_record.read(path)
            raise AssertionError("read a bad record: %r" % (change,))
        except session_record.RecordError as e:
            assert words in str(e), (change, e)

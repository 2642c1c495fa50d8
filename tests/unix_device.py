"""A MicroPython unix-port process as a test's device: started with a script from
``tests/device/`` (importable there with the repo as ``plugpay.*``), its ``@@`` records
read as they come, in order.

Waits on records have a timeout so a broken device cannot hang the run; no test asserts
on how long anything took.
"""
import json
import queue
import subprocess
import threading
from pathlib import Path

from plugpay.tools import micropython as mpy

DEVICE_DIR = Path(__file__).resolve().parent / "device"


class DeviceProcess:
    """``with DeviceProcess(workdir, "mqtt_echo.py", *args) as device:`` ... it is killed
    on the way out if it still runs; ``records`` holds every record read so far."""

    def __init__(self, workdir, script, *args, heap=None):
        self.command = mpy.unix_command(heap) + [str(DEVICE_DIR / script)] + [str(a) for a in args]
        self.env = mpy.unix_env(workdir, DEVICE_DIR)
        self.workdir = workdir
        self.records = []
        self.lines = []
        self._queue = queue.Queue()
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.command, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(mpy.MARKER):
                self._queue.put(json.loads(line[len(mpy.MARKER):]))
        self._queue.put(None)  # the process closed its output

    def output(self):
        return "\n".join(self.lines)

    def expect(self, event, timeout=60):
        """The next record of ``event`` (records of other events on the way are kept)."""
        while True:
            try:
                record = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no %r record from the device within %s s; its output:\n%s"
                                     % (event, timeout, self.output()))
            if record is None:
                self._queue.put(None)
                raise AssertionError("the device exited (%s) before a %r record; its output:\n%s"
                                     % (self.proc.wait(), event, self.output()))
            self.records.append(record)
            if record.get("event") == event:
                return record

    def wait(self, timeout=60):
        """The exit code, once the process ended."""
        return self.proc.wait(timeout)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

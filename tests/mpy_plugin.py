"""Pytest plugin: run ``tests/device/test_*.py`` under the real MicroPython, on each port.

Why: those files only mean something on MicroPython, so CPython must never import them.
Each top-level ``test_*`` function (found with ``ast``, in definition order) becomes one
pytest item per port, ``test_x[wasm]`` and ``test_x[unix]``: the 32-bit WebAssembly port
(heap figures as on an ESP32) and the unix port (sockets, TLS, ``cryptolib``; 64-bit).
A module that applies to one port only says so at top level, ``PORTS = ("unix",)``.
The first item of a port to run executes the whole file once on that port through
``plugpay.tools.micropython`` with ``mpyunit``, and every item takes its pass/fail from
its ``@@`` record. Heap per test and per ``mpyunit.step()`` goes to ``user_properties``
and to a "MicroPython heap" terminal section (steps on the WebAssembly port: see mpyunit).

Without Node, the WebAssembly port or the unix port, the items of that port FAIL with the
install hint, unless ``PLUGPAY_SKIP_MICROPYTHON=1`` makes them skip. ini options:
``micropython_test_dirs`` (extra folders, relative to rootdir), ``micropython_timeout``,
``micropython_heap`` (the WebAssembly port's initial heap), ``micropython_unix_heap`` (the
unix port's cap).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from plugpay.tools import micropython as mpy

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "device"
MPYUNIT = DEFAULT_DIR / "mpyunit.py"
SKIP_ENV = "PLUGPAY_SKIP_MICROPYTHON"
DRIVER_NAME = "mpyunit_driver.py"
PORTS = ("wasm", "unix")


def pytest_addoption(parser):
    parser.addini("micropython_test_dirs", "extra folders of MicroPython test files (relative to rootdir)", type="paths", default=[])
    # Below pytest-timeout's 300 s per item: the first item of a file pays for the whole file.
    parser.addini("micropython_timeout", "seconds one MicroPython test file may run", default="240")
    parser.addini("micropython_heap", "initial MicroPython GC heap in bytes (WebAssembly port)", default=str(1 << 20))
    parser.addini("micropython_unix_heap", "MicroPython GC heap cap in bytes (unix port)", default=str(4 << 20))


def _test_dirs(config) -> list[Path]:
    dirs = [DEFAULT_DIR]
    dirs += [Path(p).resolve() for p in config.getini("micropython_test_dirs")]
    return dirs


def is_micropython_test(path: Path, config) -> bool:
    """True for .py files inside a MicroPython test folder (any depth)."""
    path = Path(path).resolve()
    return path.suffix == ".py" and any(d == path.parent or d in path.parents for d in _test_dirs(config))


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    """Claim MicroPython test files before the Python collector would import them."""
    if is_micropython_test(module_path, parent.config):
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None


class MicroPythonTestFailure(Exception):
    """A MicroPython-side failure; its text is shown as the failure report."""


def declared_ports(tree, path) -> tuple:
    """The module's ``PORTS = (...)`` (names from ``PORTS``), or every port."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PORTS" for t in node.targets):
            try:
                ports = tuple(ast.literal_eval(node.value))
            except ValueError:
                ports = ()
            if not ports or any(p not in PORTS for p in ports):
                raise ValueError(f"{path}: PORTS must be a tuple of {PORTS}, got {ast.unparse(node.value)}")
            return ports
    return PORTS


class MicroPythonFile(pytest.File):
    """One MicroPython test file, executed at most once per port and session."""

    _outcomes = None  # port -> (records by name, file-level error text or None, harness unavailable?)

    def collect(self):
        try:
            tree = ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))
            ports = declared_ports(tree, self.path)
        except (SyntaxError, ValueError) as exc:
            raise self.CollectError(f"cannot parse {self.path}: {exc}") from exc
        seen = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name not in seen:
                seen.add(node.name)
                for port in ports:
                    yield MicroPythonItem.from_parent(self, name=f"{node.name}[{port}]", func_name=node.name,
                                                      port=port, lineno=node.lineno)

    def _selected_names(self, port) -> list[str]:
        names = [item.func_name for item in self.session.items if item.parent is self and item.port == port]
        return names or [item.func_name for item in self.collect() if item.port == port]

    def _files(self) -> dict[str, bytes]:
        """Every .py beside the test file (helpers import by name), plus mpyunit."""
        files = {p.name: p.read_bytes() for p in sorted(self.path.parent.glob("*.py"))}
        files.setdefault("mpyunit.py", MPYUNIT.read_bytes())
        return files

    def outcome(self, port):
        if self._outcomes is None:
            self._outcomes = {}
        if port not in self._outcomes:
            self._outcomes[port] = self._execute(port)
        return self._outcomes[port]

    def _execute(self, port):
        reason = mpy.unavailable_reason() if port == "wasm" else mpy.unix_unavailable_reason()
        if reason:
            return {}, reason, True
        names = self._selected_names(port)
        ini = self.config.getini
        timeout = float(ini("micropython_timeout"))
        try:
            if port == "wasm":
                # ticker, not run_module: each slice returns to JS so the port's GC really runs.
                driver = "import mpyunit\n__harness_next__ = mpyunit.ticker(%r, %r)\n" % (self.path.stem, names)
                result = mpy.run(driver, files=self._files(), heap=int(ini("micropython_heap")), timeout=timeout,
                                 script_name=DRIVER_NAME)
            else:
                driver = "import mpyunit\nmpyunit.run_module(%r, %r)\n" % (self.path.stem, names)
                result = mpy.run_unix(driver, files=self._files(), heap=int(ini("micropython_unix_heap")),
                                      timeout=timeout, script_name=DRIVER_NAME)
            # the unix port prints an uncaught exception on stdout
            error = None if result.returncode == 0 else \
                f"MicroPython runner exited {result.returncode}:\n{(result.stderr or result.stdout).rstrip()}"
        except mpy.MicroPythonError as exc:
            result, error = exc.result, str(exc)
        records = result.records if result is not None else []
        by_name = {r["name"]: r for r in records if r.get("kind") == "test"}
        summary = next((r for r in records if r.get("kind") == "summary"), None)
        for r in records:
            if r.get("kind") == "error":
                error = f"importing {self.path.name} on MicroPython failed:\n{r['error'].rstrip()}"
        if error is None and summary is None:
            error = "MicroPython run ended without a summary record:\n" + \
                ((result.stderr or result.stdout).rstrip() if result else "")
        return by_name, error, False


class MicroPythonItem(pytest.Item):
    """One ``test_*`` function of a MicroPython test file on one port."""

    def __init__(self, *, func_name: str, port: str, lineno: int, **kwargs):
        super().__init__(**kwargs)
        self.func_name = func_name
        self.port = port
        self.lineno = lineno

    def runtest(self):
        by_name, error, unavailable = self.parent.outcome(self.port)
        if unavailable and os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{SKIP_ENV}=1: {error}")
        record = by_name.get(self.func_name)
        if record is None:
            raise MicroPythonTestFailure(error or f"no MicroPython record for {self.func_name}")
        self._record_properties(record)
        if record.get("skipped"):
            pytest.skip(record.get("reason") or "skipped on MicroPython")
        if not record.get("ok"):
            raise MicroPythonTestFailure((record.get("error") or "failed").rstrip())

    def _record_properties(self, record):
        self.user_properties.append(("micropython_ms", record.get("ms")))
        self.user_properties.append(("micropython_heap", record.get("heap")))
        self.user_properties.append(("micropython_heap_before", record.get("heap_before")))
        for step in record.get("steps") or []:
            self.user_properties.append((f"micropython_step:{step['name']}", {"ms": step["ms"], "heap": step["heap"]}))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonTestFailure):
            return f"MicroPython ({self.port} port) {self.path.name}::{self.name}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.lineno - 1, f"{self.path.name}::{self.name} [micropython {self.port}]"


def _heap_rows(reports):
    rows = []
    for report in reports:
        props = dict(report.user_properties)
        if "micropython_heap" not in props:
            continue
        rows.append((report.nodeid, props["micropython_ms"], props["micropython_heap"]))
        for key, value in report.user_properties:
            if key.startswith("micropython_step:"):
                rows.append(("    step " + key.split(":", 1)[1], value["ms"], value["heap"]))
    return rows


class HeapTable:
    """Collects MicroPython call reports in run order (also fed worker reports under xdist)."""

    def __init__(self):
        self.reports = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and any(k == "micropython_heap" for k, _ in report.user_properties):
            self.reports.append(report)

    def pytest_terminal_summary(self, terminalreporter):
        rows = _heap_rows(self.reports)
        if not rows:
            return
        terminalreporter.section("MicroPython heap")
        width = max(len(r[0]) for r in rows)
        terminalreporter.write_line(f"{'test':<{width}}  {'ms':>9}  {'heap bytes':>11}")
        for name, ms, heap in rows:
            ms_text = "-" if ms is None else f"{ms:.1f}"
            heap_text = "-" if heap is None else str(heap)
            terminalreporter.write_line(f"{name:<{width}}  {ms_text:>9}  {heap_text:>11}")


def pytest_configure(config):
    config.pluginmanager.register(HeapTable(), "micropython-heap-table")

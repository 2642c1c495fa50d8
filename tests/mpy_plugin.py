"""Pytest plugin: run ``tests/device/test_*.py`` under the real MicroPython.

Why: those files only mean something on MicroPython, so CPython must never import them.
Each top-level ``test_*`` function (found with ``ast``, in definition order) becomes one
pytest item; the first item to run executes the whole file once through
``plugpay.tools.micropython`` with ``mpyunit`` and every item takes its pass/fail from its
``@@`` record. Heap per test and per ``mpyunit.step()`` goes to ``user_properties`` and to
a "MicroPython heap" terminal section (steps on the WebAssembly port: see mpyunit).

Without Node or the port the items FAIL with the install hint, unless
``PLUGPAY_SKIP_MICROPYTHON=1`` makes them skip. ini options: ``micropython_test_dirs``
(extra folders, relative to rootdir), ``micropython_timeout``, ``micropython_heap``.
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


def pytest_addoption(parser):
    parser.addini("micropython_test_dirs", "extra folders of MicroPython test files (relative to rootdir)", type="paths", default=[])
    # Below pytest-timeout's 300 s per item: the first item of a file pays for the whole file.
    parser.addini("micropython_timeout", "seconds one MicroPython test file may run", default="240")
    parser.addini("micropython_heap", "initial MicroPython GC heap in bytes", default=str(1 << 20))


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


class MicroPythonFile(pytest.File):
    """One MicroPython test file, executed at most once per session."""

    _outcome = None  # (records by name, file-level error text or None, harness unavailable?)

    def collect(self):
        try:
            tree = ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))
        except SyntaxError as exc:
            raise self.CollectError(f"cannot parse {self.path}: {exc}") from exc
        seen = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name not in seen:
                seen.add(node.name)
                yield MicroPythonItem.from_parent(self, name=node.name, lineno=node.lineno)

    def _selected_names(self) -> list[str]:
        names = [item.name for item in self.session.items if item.parent is self]
        return names or [item.name for item in self.collect()]

    def _files(self) -> dict[str, bytes]:
        """Every .py beside the test file (helpers import by name), plus mpyunit."""
        files = {p.name: p.read_bytes() for p in sorted(self.path.parent.glob("*.py"))}
        files.setdefault("mpyunit.py", MPYUNIT.read_bytes())
        return files

    def outcome(self):
        if self._outcome is None:
            self._outcome = self._execute()
        return self._outcome

    def _execute(self):
        reason = mpy.unavailable_reason()
        if reason:
            return {}, reason, True
        names = self._selected_names()
        # ticker, not run_module: each slice returns to JS so the port's GC really runs.
        driver = "import mpyunit\n__harness_next__ = mpyunit.ticker(%r, %r)\n" % (self.path.stem, names)
        ini = self.config.getini
        try:
            result = mpy.run(
                driver,
                files=self._files(),
                heap=int(ini("micropython_heap")),
                timeout=float(ini("micropython_timeout")),
                script_name=DRIVER_NAME,
            )
            error = None if result.returncode == 0 else f"MicroPython runner exited {result.returncode}:\n{result.stderr.rstrip()}"
        except mpy.MicroPythonError as exc:
            result, error = exc.result, str(exc)
        records = result.records if result is not None else []
        by_name = {r["name"]: r for r in records if r.get("kind") == "test"}
        summary = next((r for r in records if r.get("kind") == "summary"), None)
        for r in records:
            if r.get("kind") == "error":
                error = f"importing {self.path.name} on MicroPython failed:\n{r['error'].rstrip()}"
        if error is None and summary is None:
            error = "MicroPython run ended without a summary record:\n" + (result.stderr.rstrip() if result else "")
        return by_name, error, False


class MicroPythonItem(pytest.Item):
    """One ``test_*`` function of a MicroPython test file."""

    def __init__(self, *, lineno: int, **kwargs):
        super().__init__(**kwargs)
        self.lineno = lineno

    def runtest(self):
        by_name, error, unavailable = self.parent.outcome()
        if unavailable and os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{SKIP_ENV}=1: {error}")
        record = by_name.get(self.name)
        if record is None:
            raise MicroPythonTestFailure(error or f"no MicroPython record for {self.name}")
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
            return f"MicroPython {self.path.name}::{self.name}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.lineno - 1, f"{self.path.name}::{self.name} [micropython]"


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

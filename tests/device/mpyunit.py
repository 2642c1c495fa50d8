"""A tiny test runner for MicroPython test modules (runs on CPython too).

Why: neither unittest nor pytest exists on the device. This runs a module's ``test_*``
functions and prints one ``@@ {json}`` line per test (name, ok, error with traceback, ms,
heap in use after ``gc.collect()`` before and after, named steps) plus a summary line, which
the host-side pytest plugin (tests/mpy_plugin.py) turns into pytest results.

Steps: ``step(name)`` records the heap where it is called; a test written as a generator
may instead ``yield "name"``, which lets the WebAssembly port really collect first (there,
``step()`` mid-test sees heap-at-start plus everything allocated since: nothing is freed
inside one call; see ``ticker``).

Order: the names given to ``run_module`` (the plugin passes definition order, read from the
source on the host), else sorted names, since MicroPython's dicts keep no order.
"""
import gc
import sys

try:
    import json
except ImportError:  # very small ports
    import ujson as json

try:
    import io
except ImportError:
    import uio as io

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython
    from time import perf_counter_ns as _perf_ns

    def ticks_us():
        return _perf_ns() // 1000

    def ticks_diff(end, start):
        return end - start


MARKER = "@@ "

_steps = None  # the running test's step list, or None outside a test
_started = 0


class SkipTest(Exception):
    """Raised by ``skip()``: the test is reported as skipped, not failed."""


def skip(reason):
    """Skip the running test (e.g. a feature this port lacks)."""
    raise SkipTest(reason)


def heap():
    """Bytes in use on the GC heap after a full collection; None where unknown (CPython)."""
    gc.collect()
    mem_alloc = getattr(gc, "mem_alloc", None)
    return mem_alloc() if mem_alloc is not None else None


def _ms_since(start):
    return ticks_diff(ticks_us(), start) / 1000.0


def step(name):
    """Record the heap (after collect) and elapsed ms at a named point of the running test."""
    if _steps is None:
        raise RuntimeError("mpyunit.step() called outside a running test")
    ms = _ms_since(_started)
    _steps.append({"name": str(name), "ms": ms, "heap": heap()})


def format_exception(exc):
    """Type, message and traceback of ``exc`` as text, on either interpreter."""
    buf = io.StringIO()
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc, buf)
    else:
        import traceback

        buf.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return buf.getvalue()


def emit(record):
    """Print one machine-readable record line."""
    print(MARKER + json.dumps(record))


def _exc_message(exc):
    return " ".join(str(a) for a in exc.args) if exc.args else ""


def _is_generator(obj):
    return hasattr(obj, "send") and hasattr(obj, "throw")


def _test_steps(name, fn, record):
    """Run one test, yielding wherever the GC should really run (see ``ticker``)."""
    global _steps, _started
    gc.collect()
    yield True
    record["heap_before"] = heap()
    _steps = []
    _started = ticks_us()
    try:
        result = fn()
        if _is_generator(result):  # a generator test: each yielded value names a step
            for label in result:
                gc.collect()
                yield True
                step(label)
            result = None
    except SkipTest as exc:
        record["skipped"] = True
        record["reason"] = _exc_message(exc)
    except Exception as exc:  # a test failure; KeyboardInterrupt/SystemExit still stop the run
        record["ok"] = False
        record["type"] = type(exc).__name__
        record["message"] = _exc_message(exc)
        record["error"] = format_exception(exc)
        exc = None  # drop the traceback's frames before measuring the heap
    record["ms"] = _ms_since(_started)
    record["steps"] = _steps
    _steps = None
    gc.collect()
    yield True
    record["heap"] = heap()
    emit(record)


def run_test(name, fn):
    """Run one test function now; return (and emit) its record."""
    record = _new_record(name)
    for _ in _test_steps(name, fn, record):
        pass
    return record


def _new_record(name):
    return {"kind": "test", "name": name, "ok": True, "skipped": False, "error": None}


def _import(name):
    module = __import__(name)
    for part in name.split(".")[1:]:
        module = getattr(module, part)
    return module


def test_names(module):
    """The module's callable ``test_*`` attributes, sorted (the deterministic default order)."""
    return sorted(n for n in dir(module) if n.startswith("test_") and callable(getattr(module, n)))


def _module_steps(module, names, summary):
    start = ticks_us()
    module_name = module if isinstance(module, str) else module.__name__
    summary.update({"kind": "summary", "module": module_name, "passed": 0, "failed": 0, "skipped": 0, "error": None})
    try:
        if isinstance(module, str):
            module = _import(module)
    except Exception as exc:
        summary["error"] = format_exception(exc)
        emit({"kind": "error", "module": module_name, "error": summary["error"]})
        module = None
    if module is not None:
        if names is None:
            names = test_names(module)
        for name in names:
            fn = getattr(module, name, None)
            if fn is None or not callable(fn):

                def fn(name=name):
                    raise AttributeError("module %s has no test function %s" % (module_name, name))

            record = _new_record(name)
            for tick in _test_steps(name, fn, record):
                yield tick
            if record["skipped"]:
                summary["skipped"] += 1
            elif record["ok"]:
                summary["passed"] += 1
            else:
                summary["failed"] += 1
    summary["ms"] = _ms_since(start)
    summary["heap"] = heap()
    summary["platform"] = sys.platform
    summary["implementation"] = sys.implementation.name
    emit(summary)


def run_module(module, names=None):
    """Run the tests of ``module`` (a module or its name) in ``names`` order; return the summary.

    An import failure is reported as one ``error`` record so every test shows why.
    """
    summary = {}
    for _ in _module_steps(module, names, summary):
        pass
    return summary


def ticker(module, names=None):
    """Like ``run_module`` but in slices: each call of the returned function runs one slice and
    returns False when done.

    Why: on the WebAssembly port ``gc.collect()`` only flags a collection, done when control
    returns to JS, so one long call never frees anything. tools/wasm_port/run.mjs calls a
    script's ``__harness_next__ = ticker(...)`` once per slice, so the heap figures are real.
    """
    steps = _module_steps(module, names, {})

    def tick():
        try:
            return next(steps)
        except StopIteration:
            return False

    return tick


def main(module, names=None):
    """Run a module's tests and exit non-zero on any failure (for standalone use)."""
    summary = run_module(module, names)
    if summary["failed"] or summary["error"]:
        sys.exit(1)

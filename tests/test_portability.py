"""The portability rule: protocol/, firmware/, boards/common/ and boards/sim/ must load on
MicroPython 1.27.

Two checks on every device file: MicroPython's own compiler (mpy-cross) accepts it, and an
AST scan finds none of the CPython-only constructs that compile but fail at run time.
The real run under MicroPython is the conformance suite in tests/device/.
"""
import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from plugpay.tools import mpycross

ROOT = Path(__file__).resolve().parent.parent
# The simulated board runs in MicroPython processes too (a whole simulated vehicle or charger).
FILES = mpycross.device_sources(ROOT) + mpycross.device_sources(ROOT, ("boards/common", "boards/sim"))

# What MicroPython 1.27 ships (ESP32 and the WebAssembly port), micropython-lib packages a
# board may carry, and a board's native secp256k1 module.
MICROPYTHON_MODULES = {
    "array", "asyncio", "binascii", "btree", "collections", "cryptolib", "deflate", "errno",
    "esp", "esp32", "framebuf", "gc", "hashlib", "heapq", "hmac", "io", "js", "json", "machine",
    "math", "micropython", "network", "os", "random", "re", "secp256k1", "select", "socket",
    "ssl", "struct", "sys", "time", "ucryptolib", "vfs",
}
# CPython-only backends, imported only where a try/except ImportError picks them.
OPTIONAL_CPYTHON_BACKENDS = {"cbor2", "coincurve", "ecdsa", "cryptography", "paho"}
FORBIDDEN_CALLS = {"dataclass", "dataclasses", "abstractmethod"}
SELF_DOC_FSTRING = re.compile(r"[^=!<>]=\s*(![rsa])?\s*(:[^{}]*)?\}")


def ids(p):
    return str(p.relative_to(ROOT))


def test_there_is_device_code():
    assert any(p.parts[-2] == "protocol" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_mpy_cross_compiles(path, tmp_path):
    size, error = mpycross.compile_file(path, tmp_path)
    assert error is None, error
    assert size > 0


def violations(path):
    source = path.read_text()
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [] if node.level else [node.module]
        else:
            names = []
        for name in names:
            top = name.split(".")[0]
            if top != "plugpay" and top not in MICROPYTHON_MODULES | OPTIONAL_CPYTHON_BACKENDS:
                found.append("%d: imports %s, which MicroPython does not have" % (line, name))
        if isinstance(node, (ast.AnnAssign, ast.arg)) and getattr(node, "annotation", None) is not None:
            found.append("%d: type annotation (no typing at run time)" % line)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            found.append("%d: return annotation (no typing at run time)" % line)
        if isinstance(node, ast.Match):
            found.append("%d: match statement" % line)
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_CALLS:
            found.append("%d: uses %s" % (line, node.id))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.string[:2].lower() in ("f'", 'f"', "rf", "fr"):
            if SELF_DOC_FSTRING.search(tok.string):
                found.append("%d: f-string '=' debugging" % tok.start[0])
    return found


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_no_cpython_only_constructs(path):
    assert violations(path) == []


def test_the_scan_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import typing\nfrom dataclasses import dataclass\nimport pathlib\n"
        "def f(x: int) -> int:\n    y: int = 1\n    return f'{x=}'\n"
        "match 1:\n    case 1:\n        pass\n"
    )
    found = "\n".join(violations(bad))
    for what in ("typing", "dataclasses", "pathlib", "type annotation", "return annotation", "'=' debugging", "match statement"):
        assert what in found
    ok = tmp_path / "ok.py"
    ok.write_text("import gc\nfrom . import cbor\nx = f'{a == b}'\ny = f'{a!r}'\n")
    assert violations(ok) == []

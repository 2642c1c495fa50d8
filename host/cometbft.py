"""The CometBFT release plugpay runs on, and where set-up put it and its ABCI definitions.

``tools/setup.sh`` (through ``tools/cometbft_setup.py``) builds the pinned release with the
machine's Go toolchain into the virtualenv's ``bin`` and compiles the release's own
``.proto`` files into a descriptor set under the virtualenv's ``share/plugpay``; nothing of
either is committed. ``missing()`` says in one line what is absent, for a command to
refuse with and for the tests to skip with.
"""
import os
import shutil
import subprocess
import sys

VERSION = "v0.38.26"
MODULE = "github.com/cometbft/cometbft"
ABCI_PROTO = "tendermint/abci/types.proto"


def binary():
    """The ``cometbft`` executable: ``$PLUGPAY_COMETBFT``, else the virtualenv's."""
    return os.environ.get("PLUGPAY_COMETBFT") or os.path.join(sys.prefix, "bin", "cometbft")


def descriptor_path():
    return os.path.join(sys.prefix, "share", "plugpay", "cometbft-%s-abci.binpb" % VERSION)


def binary_version(path=None):
    """What ``cometbft version`` prints, or None if it does not run."""
    path = path or binary()
    if not os.path.isfile(path):
        return None
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def missing():
    """Why the CometBFT engine cannot run here, or None if it can."""
    if binary_version() != VERSION.lstrip("v"):
        if shutil.which("go") is None:
            return "CometBFT %s is not built: Go is not installed (install Go 1.22.11 or newer, run tools/setup.sh)" \
                % VERSION
        return "CometBFT %s is not at %s: run tools/setup.sh" % (VERSION, binary())
    if not os.path.isfile(descriptor_path()):
        return "the ABCI definitions of CometBFT %s are not generated: run tools/setup.sh" % VERSION
    return None

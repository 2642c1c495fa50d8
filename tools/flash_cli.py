"""``plugpay flash``: put plugpay on an ESP32 (serial port) or a Raspberry Pi (SSH).

ESP32: check the config, compile protocol/, firmware/ and the board modules with mpy-cross
into a staging folder laid out as the board's filesystem (/lib/plugpay/...), optionally
write a MicroPython image with esptool first (erase, then write at the chip's offset: 0x1000
for the ESP32 and ESP32-S2, whose second-stage bootloader sits there; 0x0 for the S3, C3
and C6, whose images start with it), then copy with mpremote: /lib/plugpay, boot.py,
main.py and config.json, and reset. Raspberry Pi: rsync the source over SSH, make a venv,
pip install it with the ``boards`` extra, install the config and the systemd unit, and
start it. ``--dry-run`` prints every step (the exact commands) and runs none; the ESP32's
mpy-cross compile still runs, so a file that would not load on the board shows first.

mpremote, esptool (and gpiozero on the Pi) come with ``pip install 'plugpay[boards]'``.
"""
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import util
from pathlib import Path

from plugpay.boards.common import profile as board_profile
from plugpay.tools import mpycross

ROOT = mpycross.ROOT
BOARDS_HINT = "pip install 'plugpay[boards]'"
FLASH_OFFSETS = {"esp32": "0x1000", "esp32s2": "0x1000", "esp32s3": "0x0", "esp32c3": "0x0", "esp32c6": "0x0"}
# What the ESP32 imports from boards/ (boot.py, main.py and config.json go to the root).
ESP32_BOARD_FILES = ("boards/__init__.py", "boards/common/__init__.py", "boards/common/hardware.py",
                     "boards/common/link.py", "boards/common/stdio_console.py",
                     "boards/common/meter_line.py", "boards/common/profile.py", "boards/esp32/__init__.py",
                     "boards/esp32/board.py", "boards/esp32/startup.py", "boards/esp32/hil.py")
ROOT_FILES = ("boot.py", "main.py")
RPI_DIR = "/opt/plugpay"
RPI_CONFIG = "/etc/plugpay/board.json"
RPI_UNIT = "/etc/systemd/system/plugpay-board.service"
RSYNC_EXCLUDES = (".git", ".venv", "build", "node_modules", "__pycache__", "*.egg-info", ".pytest_cache")


class FlashError(Exception):
    """A problem with the inputs or the tools: the text says what and how to fix it."""


def add_parser(subparsers):
    p = subparsers.add_parser("flash", help="put plugpay on an ESP32 over a serial port or on a Raspberry Pi "
                              "over SSH (--dry-run lists the steps)", description=__doc__.split("\n\n")[1])
    p.add_argument("--board", required=True, help="esp32 or rpi")
    p.add_argument("--port", help="esp32: the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--chip", default="esp32", choices=sorted(FLASH_OFFSETS),
                   help="esp32: the chip, for the image's flash offset (default esp32: 0x1000)")
    p.add_argument("--firmware", metavar="IMAGE.bin", help="esp32: write this MicroPython image first (erases the "
                   "flash, and with it any wallet on the board)")
    p.add_argument("--host", help="rpi: the Pi's host name or address")
    p.add_argument("--user", default="pi", help="rpi: the SSH user (default pi); it needs sudo on the Pi")
    p.add_argument("--config", metavar="FILE",
                   help="the board's config (default boards/BOARD/config.json, the example)")
    p.add_argument("--dry-run", action="store_true", help="print every step and run none")
    p.set_defaults(func=run)
    return p


def run(args):
    try:
        if args.board not in board_profile.BOARDS:
            raise FlashError("unknown board %r: expected one of %s" % (args.board, ", ".join(board_profile.BOARDS)))
        config = Path(args.config) if args.config else ROOT / "boards" / args.board / "config.json"
        profile = board_profile.load(str(config), args.board)
        with tempfile.TemporaryDirectory(prefix="plugpay-flash-") as stage:
            if args.board == "esp32":
                steps = esp32_steps(args, config, profile, Path(stage))
            else:
                steps = rpi_steps(args, config)
            for step in steps:
                print("$ " + step.shown(), flush=True)
                if not args.dry_run:
                    step.run()
    except (FlashError, board_profile.ConfigError) as e:
        print("plugpay flash: error: %s" % e, file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print("plugpay flash: error: step failed with exit %d: %s" % (e.returncode, shlex.join(e.cmd)),
              file=sys.stderr)
        return 1
    if args.dry_run:
        print("(dry run: nothing was run)")
    return 0


class Step:
    """One command; ``cwd`` is where it runs (the staging folder for mpremote's copies)."""

    def __init__(self, argv, cwd=None):
        self.argv = [str(a) for a in argv]
        self.cwd = cwd

    def shown(self):
        text = shlex.join(self.argv)
        return text if self.cwd is None else "(cd %s && %s)" % (shlex.quote(str(self.cwd)), text)

    def run(self):
        subprocess.run(self.argv, cwd=self.cwd, check=True)


def _python_tool(module, dry_run):
    """``python -m module`` of this interpreter; the tool must be installed unless dry-run."""
    if not dry_run and util.find_spec(module) is None:
        raise FlashError("%s is not installed: %s" % (module, BOARDS_HINT))
    return [sys.executable, "-m", module]


def stage_esp32(stage):
    """Compile the device tree into ``stage``/lib/plugpay (the board's layout); copy the
    root files beside it. Returns the compiled files, relative to ``stage``."""
    sources = mpycross.device_sources(ROOT) + [ROOT / name for name in ESP32_BOARD_FILES]
    compiled = []
    for source in sources:
        rel = source.relative_to(ROOT)
        out_dir = stage / "lib" / "plugpay" / rel.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        size, error = mpycross.compile_file(source, out_dir)
        if error is not None:
            raise FlashError("mpy-cross refused %s: %s" % (rel, error))
        compiled.append(str(Path("lib", "plugpay", rel.parent, source.stem + ".mpy")))
    for name in ROOT_FILES:
        shutil.copyfile(ROOT / "boards" / "esp32" / name, stage / name)
    return compiled


def esp32_steps(args, config, profile, stage):
    if not args.port:
        raise FlashError("--port is required for an ESP32 (e.g. --port /dev/ttyUSB0)")
    if not args.dry_run:
        if not os.path.exists(args.port):
            raise FlashError("serial port %s does not exist: is the board plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)"
                             % args.port)
        left = board_profile.placeholders(profile)
        if left:
            raise FlashError("config %s still holds CHANGE-ME in %s: fill them in first" % (config, ", ".join(left)))
    if args.firmware and not os.path.isfile(args.firmware):
        raise FlashError("firmware image %s does not exist" % args.firmware)
    stage_esp32(stage)
    shutil.copyfile(config, stage / "config.json")
    steps = []
    if args.firmware:
        esptool = _python_tool("esptool", args.dry_run) + ["--chip", args.chip, "--port", args.port]
        steps.append(Step(esptool + ["erase_flash"]))
        steps.append(Step(esptool + ["--baud", "460800", "write_flash", "-z", FLASH_OFFSETS[args.chip],
                                     os.path.abspath(args.firmware)]))
    remote = _python_tool("mpremote", args.dry_run) + ["connect", args.port]
    clean = ("import os\n"
             "def rm(p):\n"
             " try:\n"
             "  for e in os.ilistdir(p): rm(p + '/' + e[0]) if e[1] == 0x4000 else os.remove(p + '/' + e[0])\n"
             "  os.rmdir(p)\n"
             " except OSError: pass\n"
             "rm('/lib/plugpay')\n"
             "try: os.mkdir('/lib')\n"
             "except OSError: pass")
    steps.append(Step(remote + ["exec", "exec(%r)" % clean]))  # one line, so the listing is one per step
    steps.append(Step(remote + ["fs", "cp", "-r", "lib", ":"], cwd=stage))
    for name in ROOT_FILES + ("config.json",):
        steps.append(Step(remote + ["fs", "cp", name, ":" + name], cwd=stage))
    steps.append(Step(remote + ["reset"]))
    return steps


def rpi_steps(args, config):
    if not args.host:
        raise FlashError("--host is required for a Raspberry Pi (e.g. --host raspberrypi.local)")
    for tool in ("ssh", "rsync", "scp"):
        if not args.dry_run and shutil.which(tool) is None:
            raise FlashError("%s is not installed here (apt-get install openssh-client rsync)" % tool)
    target = "%s@%s" % (args.user, args.host)

    def ssh(command):
        return Step(["ssh", target, command])

    excludes = ["--exclude=" + e for e in RSYNC_EXCLUDES]
    unit = ROOT / "boards" / "rpi" / "plugpay-board.service"
    return [
        ssh("sudo useradd --system --user-group --groups gpio,dialout plugpay 2>/dev/null; "
            "sudo mkdir -p %s /etc/plugpay /var/lib/plugpay && sudo chown %s %s && "
            "sudo chown plugpay:plugpay /var/lib/plugpay" % (RPI_DIR, args.user, RPI_DIR)),
        Step(["rsync", "-az", "--delete"] + excludes + [str(ROOT) + "/", "%s:%s/src/" % (target, RPI_DIR)]),
        ssh("python3 -m venv %s/venv && %s/venv/bin/pip install -q '%s/src[boards]'" % (RPI_DIR, RPI_DIR, RPI_DIR)),
        Step(["scp", str(config), "%s:/tmp/plugpay-board.json" % target]),
        Step(["scp", str(unit), "%s:/tmp/plugpay-board.service" % target]),
        ssh("sudo install -o root -g plugpay -m 0640 /tmp/plugpay-board.json %s && "
            "sudo install -m 0644 /tmp/plugpay-board.service %s && rm /tmp/plugpay-board.json "
            "/tmp/plugpay-board.service" % (RPI_CONFIG, RPI_UNIT)),
        ssh("sudo systemctl daemon-reload && sudo systemctl enable --now plugpay-board"),
    ]

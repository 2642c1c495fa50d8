"""A board's profile: its ``config.json`` read and checked, never values in code.

The same checker serves the ESP32 (MicroPython, at boot) and the Raspberry Pi (CPython),
and ``plugpay config check``, ``flash`` and ``provision`` run it before anything is copied,
so a typo shows on the laptop and not as a dead board. The file is untrusted: every field
is checked for type and range, the example's ``CHANGE-ME`` placeholders are refused, and
no two of relay, LED and meter share a pin. ``check`` lists every problem at once, each
naming its field (``relay.pin: ...``); ``parse`` raises them as one ``ConfigError``.
Portable: no f-string, no CPython-only modules.

Fields (see ``boards/esp32/config.json`` and ``boards/rpi/config.json``):

* ``board`` "esp32", "rpi" or "sim" (a simulated board in a process of its own: the
  MicroPython unix port or CPython, ``boards/sim/main.py``); ``name`` (1-32 chars);
  ``role`` "vehicle" or "charger";
* ``broker`` ``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT`` (TLS) with ``broker_ca``, the
  deployment's CA file; ``power_w`` the most the relay switches (W);
* ``sim`` only: ``scale``, simulated seconds per real second (default 2000);
* not ``sim``: ``relay`` and ``led`` ``{"pin": GPIO, "active_high": bool}`` (``led`` may be null);
* ``meter``: ESP32 ``{"uart": 1|2, "tx": GPIO, "rx": GPIO, "baud": int}``, Pi
  ``{"port": "/dev/tty...", "baud": int}``; both take ``timeout_ms`` (default 500);
* ``poll_ms`` how often the meter is read while energy flows (default 1000);
* ``wallet`` folder and ``device_key`` file (from ``plugpay provision``);
* ``session``: what ``plugpay session`` is told (region, position, scenario, mode,
  installments, price, energy_wh, window_min, produce; optional bid_window_ms (3000),
  timeout_ms for the market and again for the session (120000), and fund: what a test
  network's faucet is asked for before the first session (0: nothing));
* ESP32 only: ``wifi`` ``{"ssid", "password"}``.
"""
import json

from plugpay.firmware.position import parse_position

BOARDS = ("esp32", "rpi", "sim")
PLACEHOLDER = "CHANGE-ME"  # what the examples hold where only the user knows the value
ESP32_OUTPUT_PINS = 34  # GPIO 34-39 are input-only on the ESP32
ESP32_FLASH_PINS = (6, 7, 8, 9, 10, 11)  # wired to the module's SPI flash
RPI_GPIO_PINS = 28  # BCM 0-27 on the 40-pin header


class ConfigError(ValueError):
    """The config file is unreadable or fields are missing or wrong; the text names them."""


_ABSENT = object()  # a field that is missing (and reported), or inside a table that is no object


class _Checker:
    """Reads the fields of a raw config, noting every problem (``FIELD: what is wrong``)
    instead of stopping at the first; a read that fails gives None."""

    def __init__(self):
        self.problems = []

    def fail(self, path, text):
        self.problems.append("%s: %s" % (path, text) if path else text)

    def field(self, table, key, path, default=_ABSENT):
        """The value at ``key``; ``default`` when it is missing, or ``_ABSENT`` (a missing
        field reported, or a table that is no object, reported where it was read)."""
        if not isinstance(table, dict):
            return _ABSENT
        if key in table:
            return table[key]
        if default is _ABSENT:
            self.fail(_join(path, key), "missing")
        return default

    def table(self, raw, key, path=""):
        value = self.field(raw, key, path)
        if value is _ABSENT:
            return None
        if not isinstance(value, dict):
            self.fail(_join(path, key), "expected an object {...}, got %s" % _shown(value))
            return None
        return value

    def integer(self, table, key, path, low, high, default=_ABSENT):
        value = self.field(table, key, path, default)
        if value is _ABSENT:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(_join(path, key), "expected an integer %d..%d, got %s" % (low, high, _shown(value)))
            return None
        return value

    def text(self, table, key, path, low, high):
        value = self.field(table, key, path)
        if value is _ABSENT:
            return None
        if not isinstance(value, str) or not low <= len(value) <= high:
            self.fail(_join(path, key), "expected text of %d to %d characters, got %s" % (low, high, _shown(value)))
            return None
        if PLACEHOLDER in value:
            self.fail(_join(path, key), "still holds the example's %s: put in the real value" % PLACEHOLDER)
            return None
        return value

    def choice(self, table, key, path, choices, default=_ABSENT):
        value = self.field(table, key, path, default)
        if value is _ABSENT:
            return None
        if value not in choices:
            self.fail(_join(path, key), "expected %s or %s, got %s" % (", ".join(choices[:-1]), choices[-1],
                                                                     _shown(value)))
            return None
        return value

    def boolean(self, table, key, path, default):
        value = self.field(table, key, path, default)
        if value is _ABSENT:
            return None
        if not isinstance(value, bool):
            self.fail(_join(path, key), "expected true or false, got %s" % _shown(value))
            return None
        return value


def _join(path, key):
    return key if not path else path + "." + key


def _shown(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def broker_address(url):
    """``(host, port)`` of ``mqtt://HOST:PORT`` (port 1883 when left out) or of
    ``mqtts://HOST:PORT`` (TLS, 8883); ``ValueError`` saying what is wrong."""
    tls = isinstance(url, str) and url.startswith("mqtts://")
    if not isinstance(url, str) or not (tls or url.startswith("mqtt://")):
        raise ValueError("expected mqtt://HOST:PORT, got %r" % (url,))
    rest = url[8 if tls else 7:].rstrip("/")
    host, port = rest, 8883 if tls else 1883
    if ":" in rest:
        host, text = rest.rsplit(":", 1)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError("port must be 1..65535, got %r" % (text,))
        port = int(text)
    if not host or "/" in host:
        raise ValueError("no host in %r" % (url,))
    return host, port


def _pin(c, raw, key, board, optional=False):
    table = raw.get(key) if isinstance(raw, dict) else None
    if optional and table is None:
        return None
    table = c.table(raw, key)
    if table is None:
        return None
    high = ESP32_OUTPUT_PINS - 1 if board == "esp32" else RPI_GPIO_PINS - 1
    return {"pin": c.integer(table, "pin", key, 0, high), "active_high": c.boolean(table, "active_high", key, True)}


def _meter(c, table, board):
    path = "meter"
    meter = {"baud": c.integer(table, "baud", path, 300, 1000000),
             "timeout_ms": c.integer(table, "timeout_ms", path, 10, 60000, 500)}
    if board == "esp32":
        meter["uart"] = c.integer(table, "uart", path, 1, 2)  # UART0 is the REPL
        meter["tx"] = c.integer(table, "tx", path, 0, ESP32_OUTPUT_PINS - 1)
        meter["rx"] = c.integer(table, "rx", path, 0, 39)
    else:
        meter["port"] = c.text(table, "port", path, 1, 200)
    return meter


def _pins(c, profile):
    """No two of relay, LED and the meter's UART on one pin; none on the ESP32's flash."""
    used = [("relay.pin", (profile["relay"] or {}).get("pin")), ("led.pin", (profile["led"] or {}).get("pin"))]
    if profile["board"] == "esp32":
        used += [("meter.tx", profile["meter"].get("tx")), ("meter.rx", profile["meter"].get("rx"))]
    seen = {}
    for name, pin in used:
        if pin is None:
            continue
        if profile["board"] == "esp32" and pin in ESP32_FLASH_PINS:
            c.fail(name, "GPIO %d is wired to the ESP32's flash (GPIO 6-11): choose another pin" % pin)
        elif pin in seen:
            c.fail(name, "GPIO %d is taken by %s: relay, LED and meter each need pins of their own" % (pin, seen[pin]))
        else:
            seen[pin] = name


def _session(c, table):
    path = "session"
    session = {
        "region": c.text(table, "region", path, 1, 32),
        "position": c.text(table, "position", path, 3, 40),
        "scenario": c.choice(table, "scenario", path, ("g2v", "v2g", "v2v")),
        "mode": c.choice(table, "mode", path, ("channel", "htlc")),
        "installments": c.integer(table, "installments", path, 1, 100000),
        "price": c.integer(table, "price", path, 1, 10 ** 9),
        "energy_wh": c.integer(table, "energy_wh", path, 1, 10 ** 9),
        "window_min": c.integer(table, "window_min", path, 1, 100000),
        "produce": c.boolean(table, "produce", path, False),
        "bid_window_ms": c.integer(table, "bid_window_ms", path, 100, 600000, 3000),
        "timeout_ms": c.integer(table, "timeout_ms", path, 1000, 86400000, 120000),
        "fund": c.integer(table, "fund", path, 0, 10 ** 9, 0),
    }
    if session["position"] is not None:
        try:
            session["position_e6"] = parse_position(session["position"])
        except ValueError as e:
            c.fail("session.position", str(e))
    return session


def check(text, board=None):
    """``(profile, problems)`` of the JSON ``text`` of a config file: every problem found,
    each naming its field; the profile is usable only when there are none. ``board``: the
    board this file must be for (None: the one it names)."""
    c = _Checker()
    if board is not None and board not in BOARDS:
        c.fail("", "unknown board %r (expected one of %s)" % (board, ", ".join(BOARDS)))
        return None, c.problems
    try:
        raw = json.loads(text)
    except ValueError as e:
        c.fail("", "is not valid JSON: %s" % e)
        return None, c.problems
    if not isinstance(raw, dict):
        c.fail("", "is not a JSON object {...}")
        return None, c.problems
    named = c.choice(raw, "board", "", BOARDS)
    if named is None:
        return None, c.problems
    if board is not None and named != board:
        c.fail("board", "this file is for %r, not %r" % (named, board))
        return None, c.problems
    board = named
    profile = {
        "board": board,
        "name": c.text(raw, "name", "", 1, 32),
        "role": c.choice(raw, "role", "", ("vehicle", "charger")),
        "broker": c.text(raw, "broker", "", 8, 200),
        "power_w": c.integer(raw, "power_w", "", 1, 1000000),
        "wallet": c.text(raw, "wallet", "", 1, 200),
        "device_key": c.text(raw, "device_key", "", 1, 200),
        "session": _session(c, c.table(raw, "session")),
        # "market": meet peers in the market and serve sessions; "hil": let `plugpay hil`
        # drive the board over its console (USB serial)
        "console": c.choice(raw, "console", "", ("market", "hil"), "market"),
    }
    if board == "sim":  # a simulated board, sized by each session's terms
        profile["scale"] = c.integer(raw, "scale", "", 1, 1000000, 2000)
    else:
        profile["poll_ms"] = c.integer(raw, "poll_ms", "", 50, 60000, 1000)
        profile["relay"] = _pin(c, raw, "relay", board)
        profile["led"] = _pin(c, raw, "led", board, optional=True)
        profile["meter"] = _meter(c, c.table(raw, "meter"), board)
        _pins(c, profile)
    profile["broker_address"] = None
    if profile["broker"] is not None:
        try:
            profile["broker_address"] = broker_address(profile["broker"])
        except ValueError as e:
            c.fail("broker", str(e))
    profile["broker_ca"] = None
    if "broker_ca" in raw:
        profile["broker_ca"] = c.text(raw, "broker_ca", "", 1, 200)
        if profile["broker"] is not None and not profile["broker"].startswith("mqtts://"):
            c.fail("broker_ca", "only for an mqtts:// broker (TLS)")
    if board == "esp32":
        wifi = c.table(raw, "wifi")
        profile["wifi"] = {"ssid": c.text(wifi, "ssid", "wifi", 1, 32), "password": c.text(wifi, "password", "wifi",
                                                                                            0, 64)}
    return profile, c.problems


def parse(text, board):
    """The checked profile of ``board`` from the JSON ``text`` of its config file; its
    problems, all of them, in one ``ConfigError``."""
    profile, problems = check(text, board)
    if problems:
        raise ConfigError("config " + "; ".join(problems))
    return profile


def load(path, board):
    """``parse`` of the file at ``path``; an unreadable file is a ``ConfigError`` too, and
    the message names the file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("cannot read config %s: %s" % (path, e))
    profile, problems = check(text, board)
    if problems:
        raise ConfigError("config %s: %s" % (path, "; ".join(problems)))
    return profile

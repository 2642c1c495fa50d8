"""A board's profile: its ``config.json`` read and checked, never values in code.

The same checker serves the ESP32 (MicroPython, at boot) and the Raspberry Pi (CPython),
and ``plugpay flash`` runs it before anything is copied, so a typo shows on the laptop and
not as a dead board. The file is untrusted: every field is checked for type and range and a
bad one raises ``ConfigError`` naming it (``config relay.pin: ...``). Portable: no f-string,
no CPython-only modules.

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
RPI_GPIO_PINS = 28  # BCM 0-27 on the 40-pin header


class ConfigError(ValueError):
    """The config file is unreadable or a field is missing or wrong; the text names it."""


def _field(table, key, path):
    if not isinstance(table, dict):
        raise ConfigError("config %s: expected an object, got %r" % (path, table))
    if key not in table:
        raise ConfigError("config %s: missing" % _join(path, key))
    return table[key]


def _join(path, key):
    return key if not path else path + "." + key


def _int(table, key, path, low, high, default=None):
    value = table.get(key, default) if isinstance(table, dict) and default is not None else _field(table, key, path)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError("config %s: expected an integer %d..%d, got %r" % (_join(path, key), low, high, value))
    return value


def _text(table, key, path, low, high, choices=None):
    value = _field(table, key, path)
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ConfigError("config %s: expected text of %d to %d characters, got %r" % (_join(path, key), low, high,
                                                                                       value))
    if choices is not None and value not in choices:
        raise ConfigError("config %s: expected one of %s, got %r" % (_join(path, key), ", ".join(choices), value))
    return value


def _bool(table, key, path, default):
    value = table.get(key, default) if isinstance(table, dict) else default
    if not isinstance(value, bool):
        raise ConfigError("config %s: expected true or false, got %r" % (_join(path, key), value))
    return value


def broker_address(url):
    """``(host, port)`` of ``mqtt://HOST:PORT`` (port 1883 when left out) or of
    ``mqtts://HOST:PORT`` (TLS, 8883)."""
    tls = isinstance(url, str) and url.startswith("mqtts://")
    if not isinstance(url, str) or not (tls or url.startswith("mqtt://")):
        raise ConfigError("config broker: expected mqtt://HOST:PORT, got %r" % (url,))
    rest = url[8 if tls else 7:].rstrip("/")
    host, port = rest, 8883 if tls else 1883
    if ":" in rest:
        host, text = rest.rsplit(":", 1)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ConfigError("config broker: port must be 1..65535, got %r" % (text,))
        port = int(text)
    if not host or "/" in host:
        raise ConfigError("config broker: no host in %r" % (url,))
    return host, port


def _pin(table, path, board):
    high = ESP32_OUTPUT_PINS - 1 if board == "esp32" else RPI_GPIO_PINS - 1
    return {"pin": _int(table, "pin", path, 0, high), "active_high": _bool(table, "active_high", path, True)}


def _meter(table, board):
    path = "meter"
    meter = {"baud": _int(table, "baud", path, 300, 1000000),
             "timeout_ms": _int(table, "timeout_ms", path, 10, 60000, 500)}
    if board == "esp32":
        meter["uart"] = _int(table, "uart", path, 1, 2)  # UART0 is the REPL
        meter["tx"] = _int(table, "tx", path, 0, ESP32_OUTPUT_PINS - 1)
        meter["rx"] = _int(table, "rx", path, 0, 39)
    else:
        meter["port"] = _text(table, "port", path, 1, 200)
    return meter


def _session(table):
    path = "session"
    session = {
        "region": _text(table, "region", path, 1, 32),
        "position": _text(table, "position", path, 3, 40),
        "scenario": _text(table, "scenario", path, 3, 3, ("g2v", "v2g", "v2v")),
        "mode": _text(table, "mode", path, 4, 7, ("channel", "htlc")),
        "installments": _int(table, "installments", path, 1, 100000),
        "price": _int(table, "price", path, 1, 10 ** 9),
        "energy_wh": _int(table, "energy_wh", path, 1, 10 ** 9),
        "window_min": _int(table, "window_min", path, 1, 100000),
        "produce": _bool(table, "produce", path, False),
        "bid_window_ms": _int(table, "bid_window_ms", path, 100, 600000, 3000),
        "timeout_ms": _int(table, "timeout_ms", path, 1000, 86400000, 120000),
        "fund": _int(table, "fund", path, 0, 10 ** 9, 0) if "fund" in table else 0,
    }
    try:
        session["position_e6"] = parse_position(session["position"])
    except ValueError as e:
        raise ConfigError("config session.position: %s" % e)
    return session


def parse(text, board):
    """The checked profile of ``board`` from the JSON ``text`` of its config file."""
    if board not in BOARDS:
        raise ConfigError("unknown board %r (expected one of %s)" % (board, ", ".join(BOARDS)))
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError("config is not valid JSON: %s" % e)
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a JSON object at the top")
    if _text(raw, "board", "", 1, 8) != board:
        raise ConfigError("config board: this file is for %r, not %r" % (raw["board"], board))
    profile = {
        "board": board,
        "name": _text(raw, "name", "", 1, 32),
        "role": _text(raw, "role", "", 7, 7, ("vehicle", "charger")),
        "broker": _text(raw, "broker", "", 8, 200),
        "power_w": _int(raw, "power_w", "", 1, 1000000),
        "wallet": _text(raw, "wallet", "", 1, 200),
        "device_key": _text(raw, "device_key", "", 1, 200),
        "session": _session(_field(raw, "session", "")),
        # "market": meet peers in the market and serve sessions; "hil": let `plugpay hil`
        # drive the board over its console (USB serial)
        "console": _text(raw, "console", "", 3, 6, ("market", "hil")) if "console" in raw else "market",
    }
    if board == "sim":  # a simulated board, sized by each session's terms
        profile["scale"] = _int(raw, "scale", "", 1, 1000000, 2000)
    else:
        led = raw.get("led")
        profile["poll_ms"] = _int(raw, "poll_ms", "", 50, 60000, 1000)
        profile["relay"] = _pin(_field(raw, "relay", ""), "relay", board)
        profile["led"] = None if led is None else _pin(led, "led", board)
        profile["meter"] = _meter(_field(raw, "meter", ""), board)
    profile["broker_address"] = broker_address(profile["broker"])
    profile["broker_ca"] = None
    if "broker_ca" in raw:
        if not profile["broker"].startswith("mqtts://"):
            raise ConfigError("config broker_ca: only for an mqtts:// broker (TLS)")
        profile["broker_ca"] = _text(raw, "broker_ca", "", 1, 200)
    if board == "esp32":
        wifi = _field(raw, "wifi", "")
        profile["wifi"] = {"ssid": _text(wifi, "ssid", "wifi", 1, 32), "password": _text(wifi, "password", "wifi", 0, 64)}
    return profile


def placeholders(profile):
    """Names of the fields still holding the example's ``CHANGE-ME``: fine for a dry run,
    not for a board that should join a network."""
    found = []
    for name, value in (("wifi.ssid", profile.get("wifi", {}).get("ssid")),
                        ("wifi.password", profile.get("wifi", {}).get("password")),
                        ("broker", profile["broker"])):
        if value is not None and PLACEHOLDER in value:
            found.append(name)
    return found


def load(path, board):
    """``parse`` of the file at ``path``; an unreadable file is a ``ConfigError`` too."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("cannot read config %s: %s" % (path, e))
    return parse(text, board)

"""The example board configs of ``boards/`` as a user fills them in: every ``CHANGE-ME``
replaced (the examples themselves are refused until it is), then any ``changes``."""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILLED = {"broker": "mqtt://10.0.0.2:1883", "wifi": {"ssid": "home", "password": "secret"}}


def example_path(board):
    return os.path.join(ROOT, "boards", board, "config.json")


def example(board, **changes):
    """The example config of ``board`` (a dict), filled in, with ``changes`` on top."""
    with open(example_path(board)) as f:
        data = json.load(f)
    data.update((key, value) for key, value in FILLED.items() if key in data)
    data.update(changes)
    return data


def write(path, board, **changes):
    """``example`` written to ``path``; returns ``path`` as text."""
    with open(path, "w") as f:
        json.dump(example(board, **changes), f, indent=1)
    return str(path)

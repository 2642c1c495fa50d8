"""A board's config file checked once, the same way for ``plugpay config check``, ``flash``
and ``provision``: every problem of the file at once (``boards.common.profile.check``:
types and ranges, placeholders, pin clashes), and what the device's plan would refuse at
boot (``firmware.role.Plan``), before anything is written, compiled or copied."""
from plugpay.boards.common import profile as board_profile
from plugpay.firmware.role import Plan, PlanError
from plugpay.tools.errors import UsageError


def check_file(path, board=None):
    """``(profile, problems)`` of the config file at ``path``; ``board``: the board it must
    be for (None: the one it names). The profile is usable only without problems."""
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeError) as e:
        return None, ["cannot read it: %s" % (getattr(e, "strerror", None) or e)]
    profile, problems = board_profile.check(text, board)
    if profile is not None and None not in _plan_fields(profile):
        try:
            Plan.from_profile(profile)
        except PlanError as e:
            problems.append("session: %s" % e)
    return profile, problems


def _plan_fields(profile):
    """What ``Plan.from_profile`` reads: None where the file had a problem."""
    session = profile["session"]
    return [profile["role"], profile["power_w"], session.get("position_e6")] + [session[key] for key in (
        "region", "position", "scenario", "mode", "installments", "energy_wh", "window_min", "price", "produce",
        "bid_window_ms", "timeout_ms", "fund")]


def load(path, board=None):
    """The checked profile of the file at ``path``, or a ``UsageError`` naming the file and
    every problem in it."""
    profile, problems = check_file(path, board)
    if problems:
        raise UsageError("config %s: %s" % (path, "; ".join(problems)))
    return profile


def summary(profile):
    """One line saying what the config sets up."""
    parts = ["a %s named %r on %s %s board" % (profile["role"], profile["name"], "an" if profile["board"][0] in "er"
                                                else "a", profile["board"]),
             "broker %s" % profile["broker"]]
    if profile["board"] != "sim":
        parts.append("relay GPIO %d" % profile["relay"]["pin"])
        if profile["led"] is not None:
            parts.append("LED GPIO %d" % profile["led"]["pin"])
        meter = profile["meter"]
        parts.append("meter UART%d tx GPIO %d rx GPIO %d" % (meter["uart"], meter["tx"], meter["rx"])
                     if profile["board"] == "esp32" else "meter %s" % meter["port"])
    session = profile["session"]
    parts.append("%s %s sessions in %s" % (session["scenario"], session["mode"], session["region"]))
    return ", ".join(parts)

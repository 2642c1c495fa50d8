"""A running session's progress as the dashboard shows it, from what the host already has.

``plugpay demo`` and ``plugpay hil`` print a progress line per moment; this turns the same
sources into one JSON object per session: a simulated board's ``Session`` in this process
(``demo.Device``), or a board's console view (``hil.RealSide``: the progress rows,
installments and ledger ids its console sent). Nothing here is new information: no
identity, and not the session's id, which is the secret that opens its link topics. The
session's ledger requests are listed by their one ledger id, as in the event log.
"""
from plugpay.protocol import ledger_ops as L


def device_side(device, bound):
    """One side simulated in this process (``demo.Device``)."""
    s = device.session
    return {"name": device.name, "role": "producer" if device.producer else "consumer",
            "state": s.state + (" (paused)" if s.paused else ""), "energy_wh": device.board.measured_wh,
            "paid": s.installments_paid, "exposure": s.exposure(), "max_exposure": s.max_exposure,
            "bound": 0 if device.producer else bound}


def device_onchain(device):
    ids = []
    for raw in list(device.session.onchain):
        op = L.decode_request(raw)
        ids.append({"op": op.NAME, "id": L.request_id(op, raw).hex()})
    return ids


def console_side(side, bound):
    """One side that runs on a board and reports over its console (``hil.RealSide``): the
    latest progress row is ``[ms, exposure, energy Wh, paid]``; the installments are the
    board's own count (its ``STEP``), as only a consumer reports each installment."""
    view = side.console.view
    row = view.timeline[-1] if view.timeline else [0, 0, 0, 0]
    state = "lost" if side.console.lost else ("done" if view.done is not None else "running")
    return {"name": side.name, "role": "producer" if side.producer else "consumer", "state": state,
            "energy_wh": row[2], "paid": view.step[1] if view.step else 0, "exposure": row[1],
            "max_exposure": max([r[1] for r in view.timeline] + [0]), "bound": 0 if side.producer else bound}


def console_onchain(side):
    return [{"op": e["op"], "id": e["id"]} for e in side.console.view.onchain]


def progress(title, params, sides, onchain, status):
    """The session object: ``sides`` from ``device_side``/``console_side``, ``onchain`` the
    sides' ledger requests (repeats removed), ``status`` a word (running, settled, ...)."""
    seen, ids = set(), []
    for entry in onchain:
        if entry["id"] not in seen:
            seen.add(entry["id"])
            ids.append(entry)
    return {"title": title, "status": status, "energy_target_wh": params.energy_wh,
            "installments": params.installments, "sides": sides, "onchain": ids}

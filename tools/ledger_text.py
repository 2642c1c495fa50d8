"""``plugpay ledger tx | block``'s text: nested objects indented, lists of objects as tables."""


def _columns(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _cell(value):
    return "?" if value is None else str(value)


def text_lines(obj, indent=""):
    """Nested objects indented; lists of objects as tables with a header row."""
    lines = []
    for key, value in obj.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            lines.append(indent + label + ":")
            lines.extend(text_lines(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(indent + label + ":")
            header = ["#"] + [k.replace("_", " ") for k in value[0]]
            rows = [[str(i)] + [_cell(v) for v in item.values()] for i, item in enumerate(value)]
            lines.extend(indent + "  " + line for line in _columns([header] + rows))
        else:
            lines.append("%s%s: %s" % (indent, label, "(none)" if value == [] else _cell(value)))
    return lines


def block_lines(described):
    head = [("block", str(described["height"]))] + [
        (key.replace("_", " "), described[key]) for key in ("hash", "prev", "results_digest", "state_digest")]
    head.append(("requests", str(len(described["requests"]))))
    lines = _columns(head)
    if described["requests"]:
        rows = [("client", "time (UTC)", "op", "id (for ledger tx)", "result")]
        rows += [(r["client"], r["time"], r["op"] or "-", r["id"], r["result"]) for r in described["requests"]]
        lines.append("")
        lines.extend(_columns(rows))
    return lines

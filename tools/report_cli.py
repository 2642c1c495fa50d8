"""``plugpay report SESSION.json``: a session record as an HTML report (and PNG plots).

The record is what ``plugpay hil`` (or ``plugpay demo --record``) writes. The report is one
self-contained HTML file beside the record (or in ``--out``): energy and money over time,
each side's exposure against its bound, installment latency, the ledger transactions, stop
codes and payouts. ``--png`` also writes each plot as a PNG for papers.

Exit codes: 0 written; 2 a missing or malformed record (the message names the file and field).
"""
import os

from plugpay.tools import report, session_record
from plugpay.tools.errors import UsageError


def add_parser(sub):
    p = sub.add_parser("report", help="an HTML report (plots, ledger transactions, payouts) of a session record",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("session", metavar="SESSION.json", help="a session record (format plugpay-session/1)")
    p.add_argument("--out", metavar="DIR", help="write the report here (default: the record's folder)")
    p.add_argument("--png", action="store_true", help="also write each plot as a PNG file (for papers)")
    p.set_defaults(func=run)
    return p


def run(args):
    print("report: reading %s" % args.session)
    try:
        record = session_record.read(args.session)
        report.check_plottable(record, args.session)
    except session_record.RecordError as e:
        raise UsageError(str(e))
    out_dir = args.out or os.path.dirname(os.path.abspath(args.session))
    stem = os.path.splitext(os.path.basename(args.session))[0]
    for path in report.write(record, out_dir, stem, png=args.png):
        print("report: wrote %s" % path)
    return 0

"""``plugpay ledger tx | block | audit``: fetch ledger records from a cluster and render them.

Either engine: a CometBFT network's reads come from its validators' RPC
(``tools.comet_inspect``) under the same rule. No single replica is believed: a record is accepted on f+1 matching answers (at least one
from an honest replica), then checked for shape before use, since f replicas may send any
well-formed CBOR. A block's hash is recomputed from its contents rather than taken from
anyone. The newest block is the one at the (f+1)-th highest height the replicas report,
so at least one honest replica holds it.

A block keeps the results of the requests it ran beside their digest, so a request's result
and a refusal's reason come with the block, checked against the digest its hash covers. A
request the block did not run (a replay answered from the reply cache) and the blocks of
replicas of an earlier version, which kept only the digest, are read from the confirmed
requests (``QUERY_TX``): ``OK`` if confirmed in this block, ``DUPLICATE`` if before; bytes
that decode as no request get the reason the ledger gives every replica for them
(``MALFORMED``, ``UNKNOWN_OP``, ``TOO_LARGE``); any other rejection shows as ``REJECTED``.
"""
import asyncio
import collections
import contextlib
import json

from plugpay.host import certs, cluster, comet_testnet, events, pbft, ra
from plugpay.host.client import Client, NoQuorum
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256
from plugpay.protocol.schema import ArrayOf, Record, Signature
from plugpay.tools import errors, ra_cli
from plugpay.tools.ledger_text import block_lines, text_lines

LEDGER_APP = "plugpay.host.ledger:Ledger"
FETCH_AT_ONCE = 64  # blocks or lookups in flight at a time
RETRY_PAUSE = 0.05
STATUS_WAIT = 1.0  # status waits for every replica: a silent one costs this long

Confirmed = collections.namedtuple("Confirmed", "ident height op raw")
Output = collections.namedtuple("Output", "account amount")
# results: {(client, ts): Result bytes} of the requests the block ran, or None (a replica of
# an earlier version kept only their digest); time: the block's own time (ISO 8601, UTC, to
# the second) where the engine keeps one (CometBFT), else None: the requests' timestamps say
Block = collections.namedtuple("Block", "height hash prev requests results_digest state_digest results time",
                               defaults=(None,))
Request = collections.namedtuple("Request", "client ts raw")


class InspectError(errors.UsageError):
    """Bad input, or a record the cluster does not hold: one line for the user, exit code 2
    (a cluster that does not answer is ``errors.Unreachable``, exit code 3)."""


# ---- command-line values ----------------------------------------------------------------

def parse_id(text):
    """A txhash (or other request id) given on the command line: 32 bytes in hex."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise InspectError("malformed hash %r: expected 64 hex digits" % text)
    return value


def parse_range(text):
    """``A:B`` (both inclusive, from 1; B left out means the newest block) as (A, B or None)."""
    first, sep, last = text.partition(":")
    try:
        first = int(first)
        last = int(last) if last else None
    except ValueError:
        first = None
    if not sep or first is None or first < 1 or (last is not None and last < first):
        raise InspectError("malformed block range %r: expected A:B with 1 <= A <= B (or A: for up to the newest)"
                           % text)
    return first, last


# ---- verified reads ---------------------------------------------------------------------

def _is_hash(value):
    return type(value) is bytes and len(value) == 32


def _is_uint(value):
    return type(value) is int and value >= 0


class LedgerReader:
    """Reads from a running ledger cluster, each accepted on f+1 matching answers and
    checked for shape; whatever fails either is an ``InspectError``."""

    def __init__(self, client, timeout):
        self.client = client
        self.timeout = timeout

    async def _agreed(self, what, ask):
        try:
            return await ask
        except NoQuorum as e:
            silent = [str(r) for r in range(self.client.n) if r not in e.answers]
            why = []
            if silent:
                why.append("replica%s %s did not answer" % ("s" if len(silent) > 1 else "", ", ".join(silent)))
            if len(e.answers) > 1:
                why.append("the answers of replicas %s do not match" % ", ".join(map(str, sorted(e.answers))))
            raise errors.Unreachable("no f+1 matching answers to %s within %.1f s: %s"
                               % (what, self.timeout, "; ".join(why)))

    async def _query(self, what, kind, key, index=0):
        """The record a ``ledger_ops.Query`` finds, or None for ``NOT_FOUND``."""
        query = L.Query(kind, key, index).encode()
        answer = await self._agreed(what, self.client.query(query, self.timeout))
        try:
            result = L.Result.decode(answer) if type(answer) is bytes else None
        except DecodeError:
            result = None
        if result is None or result.request_digest != sha256(query):
            raise InspectError("the cluster's answer to %s is not a ledger result" % what)
        if result.reason == L.NOT_FOUND:
            return None
        if not result.ok:
            raise InspectError("the ledger refused to look up %s: %s %s"
                               % (what, L.reason_name(result.reason), result.detail))
        return result.data

    def _malformed(self, what):
        return InspectError("the cluster's record of %s is malformed" % what)

    async def confirmed(self, ident):
        """The confirmed request with id ``ident``, or None."""
        what = "request " + ident.hex()
        data = await self._query(what, L.QUERY_TX, ident)
        if data is None:
            return None
        if not (type(data) is list and len(data) == 3 and _is_uint(data[0]) and type(data[2]) is bytes):
            raise self._malformed(what)
        try:
            op = L.decode_request(data[2])
        except DecodeError:
            raise self._malformed(what)
        if op.TAG != data[1] or L.request_id(op, data[2]) != ident:
            raise self._malformed(what)
        return Confirmed(ident, data[0], op, data[2])

    async def output(self, txhash, sn):
        """Output ``sn`` of ``txhash`` (spent or not), or None if it never existed."""
        what = "output %s:%d" % (txhash.hex(), sn)
        data = await self._query(what, L.QUERY_UTXO, txhash, sn)
        if data is None:
            return None
        if not (type(data) is list and len(data) == 5 and type(data[0]) is bytes and _is_uint(data[1])):
            raise self._malformed(what)
        try:
            account = S.Account.decode(data[0])
        except DecodeError:
            raise self._malformed(what)
        return Output(account, data[1])

    async def tip(self):
        """The newest height that f+1 replicas report holding."""
        try:
            return await self.client.height(min(self.timeout, STATUS_WAIT))
        except NoQuorum as e:
            silent = [str(i) for i in range(self.client.n) if i not in e.answers]
            raise errors.Unreachable("fewer than f+1 replicas report their height: replicas %s did not answer"
                               % ", ".join(silent))

    async def block(self, height, tip):
        """Block ``height`` (at most ``tip``). A replica that has not reached it yet answers
        None; while f+1 such answers outvote the rest, ask again until the timeout."""
        what = "block %d" % height
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            record = await self._agreed(what, self.client.block(height, self.timeout))
            if record is not None:
                return self._check_block(what, height, record)
            if asyncio.get_running_loop().time() > deadline:
                raise InspectError("%s: f+1 replicas say they do not have it, though f+1 report height %d"
                                   % (what, tip))
            await asyncio.sleep(RETRY_PAUSE)

    def _check_block(self, what, height, record):
        if not (type(record) is list and len(record) in (5, 6) and record[0] == height and _is_hash(record[1])
                and type(record[2]) is list and _is_hash(record[3]) and _is_hash(record[4])):
            raise self._malformed(what)
        requests = []
        for r in record[2]:
            if not _is_request(r):
                raise self._malformed(what)
            requests.append(Request(*r))
        prev, batch, results_digest, state_digest = record[1:5]
        block_hash = pbft.block_hash(height, prev, pbft.digest(batch), results_digest, state_digest)
        results = record[5] if len(record) == 6 else None
        if results is not None:  # they must be the ones the block's hash covers
            if type(results) is not list or not all(_is_request(r) for r in results) \
                    or pbft.digest([r[2] for r in results]) != results_digest:
                raise self._malformed(what)
            results = {(c, ts): r for c, ts, r in results}
        return Block(height, block_hash, prev, requests, results_digest, state_digest, results)


def _is_request(r):
    """``[client, ts, bytes]``: a batch entry, or a result of one."""
    return type(r) is list and len(r) == 3 and type(r[0]) is str and _is_uint(r[1]) and type(r[2]) is bytes


async def in_chunks(fetch, items):
    """``[await fetch(item) for item in items]`` with ``FETCH_AT_ONCE`` of them in flight."""
    out = []
    for start in range(0, len(items), FETCH_AT_ONCE):
        out.extend(await asyncio.gather(*[fetch(item) for item in items[start:start + FETCH_AT_ONCE]]))
    return out


def load_config(path):
    """(config, secrets) of a cluster running the payment ledger: another app's answers
    would not decode as ledger records. A CometBFT network's config has no secrets (its
    RPC takes no client keys): (config, None)."""
    if comet_testnet.engine_of(path) == "cometbft":
        try:
            return comet_testnet.load(path), None
        except (KeyError, TypeError, ValueError) as e:
            raise InspectError("%s is not a readable CometBFT network config: %s" % (path, e))
    config, secrets = cluster.load(path)  # ConfigFileError names the file and key (exit 2)
    if config.get("app") != LEDGER_APP:
        raise InspectError("the cluster in %s runs %s, not the payment ledger (%s)"
                           % (path, config.get("app"), LEDGER_APP))
    return config, secrets


@contextlib.asynccontextmanager
async def reader(config_path, timeout):
    """A ``LedgerReader`` on the cluster of ``config_path``; refused at once if fewer than
    f+1 replicas accept a connection."""
    engine = comet_testnet.engine_of(config_path)
    if engine == "cometbft":
        from plugpay.tools import comet_inspect

        read, quorum = await comet_inspect.open_reader(config_path, timeout)
        try:
            yield read
        finally:
            await quorum.close()
        return
    config, secrets = load_config(config_path)
    client = Client(config, secrets)
    await client.start(wait_for=config["n"], timeout=timeout / 2)
    try:
        if len(client.conns) < config["f"] + 1:
            silent = [str(r) for r in range(config["n"]) if r not in client.conns]
            raise errors.Unreachable("cannot reach the cluster of %s: replicas %s did not answer"
                               % (config_path, ", ".join(silent)))
        yield LedgerReader(client, timeout)
    finally:
        await client.close()


# ---- requests as readable values --------------------------------------------------------

def _value(value):
    """A field value as JSON: an account as its address and RA epoch, an output flat as
    address, RA epoch and amount, other records as objects, byte strings as hex."""
    if isinstance(value, S.Account):
        return {"address": value.address().hex(), "ra_epoch": value.epoch}
    if isinstance(value, S.TxOutput):
        return dict(_value(value.account), amount=value.amount)
    if isinstance(value, S.TxInput):
        return {"txhash": value.pre_txhash.hex(), "index": value.pre_sn}
    if isinstance(value, Record):
        return fields(value)
    if isinstance(value, list):
        return [_value(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def fields(record):
    """A record's fields as a JSON object, signatures left out: the ledger checked them,
    and they say nothing a reader needs."""
    out = {}
    for name, kind in record.FIELDS:
        if isinstance(kind, Signature) or (isinstance(kind, ArrayOf) and isinstance(kind.item, Signature)):
            continue
        out[name] = _value(getattr(record, name))
    return out


def _paid_out(op):
    """What a funded request pays out of its inputs besides the fee: (outputs, locked)."""
    if op.TAG == S.TAG_TRANSACTION:
        return op.outputs, 0
    if op.TAG == L.TAG_CHANNEL_OPEN:
        return op.change, op.collateral
    if op.TAG == L.TAG_REDEEM:
        return (), op.amount  # owed by the issuer, who mints it afresh
    return op.change, op.htlc.amount  # HtlcCreate


async def describe(read, confirmed):
    """A confirmed request as a JSON object; a funded one's inputs get the amount and
    owner of the output they spend, and its fee when every input amount is known."""
    op = confirmed.op
    out = {"id": confirmed.ident.hex(), "height": confirmed.height, "op": op.NAME}
    out.update(fields(op))
    if hasattr(op, "inputs"):
        sources = await asyncio.gather(*[read.output(i.pre_txhash, i.pre_sn) for i in op.inputs])
        for item, source in zip(out["inputs"], sources):
            item["amount"] = None if source is None else source.amount
            item["owner"] = None if source is None else source.account.address().hex()
        outputs, locked = _paid_out(op)
        if all(source is not None for source in sources):
            out["fee"] = sum(s.amount for s in sources) - sum(o.amount for o in outputs) - locked
        else:
            out["fee"] = None
    return out


def _decoded(raw):
    """(op, id, None) for request bytes, or (None, digest, reason name) for bytes every
    replica rejects before looking at the state."""
    if len(raw) > L.MAX_REQUEST_BYTES:
        return None, sha256(raw), L.reason_name(L.TOO_LARGE)
    try:
        op = L.decode_request(raw)
    except L.UnknownOp:
        return None, sha256(raw), L.reason_name(L.UNKNOWN_OP)
    except DecodeError:
        return None, sha256(raw), L.reason_name(L.MALFORMED)
    return op, L.request_id(op, raw), None


def _result(height, raw, found, applied):
    """The result name of a request in block ``height`` whose id is confirmed as ``found``
    (or not at all). ``applied`` holds the ids already applied earlier in the block."""
    if found is None or found.height > height:
        return "REJECTED"
    if found.height < height or found.ident in applied:
        return L.reason_name(L.DUPLICATE)
    if found.raw == raw:
        applied.add(found.ident)
        return L.reason_name(L.OK)
    return "REJECTED"  # the same id, other bytes (say, other witnesses) were applied later


def _stored_result(raw):
    """(reason name, detail or None) of a result the block kept; (None, None) if it does
    not decode."""
    try:
        result = L.Result.decode(raw)
    except DecodeError:
        return None, None
    return L.reason_name(result.reason), result.detail or None


async def describe_block(read, block):
    """A block as a JSON object: its header and, per request, its result."""
    decoded = [_decoded(r.raw) for r in block.requests]
    idents = sorted(set(ident for op, ident, _ in decoded if op is not None))
    confirmed = dict(zip(idents, await in_chunks(read.confirmed, idents)))
    applied = set()
    requests = []
    for r, (op, ident, reason) in zip(block.requests, decoded):  # in order: a repeat is applied once
        found = confirmed.get(ident)
        ran = None if block.results is None else block.results.get((r.client, r.ts))
        result, detail = _stored_result(ran) if ran is not None else (None, None)
        if result == L.reason_name(L.OK):
            applied.add(ident)
        requests.append({
            "client": r.client, "ts": r.ts, "time": events.iso_time(r.ts), "op": None if op is None else op.NAME,
            "id": ident.hex(),
            "result": result or reason or _result(block.height, r.raw, found, applied), "detail": detail,
            "confirmed_height": None if found is None else found.height})
    return {
        "height": block.height,
        "hash": block.hash.hex(),
        "prev": block.prev.hex(),
        "results_digest": block.results_digest.hex(),
        "state_digest": block.state_digest.hex(),
        "requests": requests,
    }


# ---- the commands ------------------------------------------------------------------------

def tx_command(args):
    """``plugpay ledger tx``: one confirmed request, as text or JSON."""
    ident = parse_id(args.txhash)

    async def fetch():
        async with reader(args.config, args.timeout) as read:
            found = await read.confirmed(ident)
            if found is None:
                raise InspectError("request %s not found on the ledger" % args.txhash)
            return await describe(read, found)

    described = asyncio.run(fetch())
    if args.json:
        print(json.dumps(described))
    else:
        print("\n".join(text_lines(described)))
    return 0


def _height_arg(args):
    """HEIGHT, with -1 and --last for the newest block: (height or None for the newest)."""
    if args.last or args.height == -1:
        if args.height not in (None, -1):
            raise InspectError("give HEIGHT or --last, not both")
        return None
    if args.height is None:
        raise InspectError("give a block HEIGHT, or --last for the newest block")
    if args.height < 1:
        raise InspectError("block heights start at 1 (-1 is the newest), got %d" % args.height)
    return args.height


def block_command(args):
    """``plugpay ledger block``: a block header and its requests' results, as text or JSON."""
    height = _height_arg(args)

    async def fetch():
        async with reader(args.config, args.timeout) as read:
            tip = await read.tip()
            if height is not None and height > tip:
                raise InspectError("block %d is beyond the tip: the newest block is %d" % (height, tip))
            if tip == 0:
                raise InspectError("the ledger has no blocks yet")
            return await describe_block(read, await read.block(tip if height is None else height, tip))

    described = asyncio.run(fetch())
    if args.json:
        print(json.dumps(described))
    else:
        print("\n".join(block_lines(described)))
    return 0


async def _input_accounts(read, ops):
    """The accounts whose outputs ``ops`` spend: who paid, for the RA to name."""
    refs = [(i.pre_txhash, i.pre_sn) for op in ops if hasattr(op, "inputs") for i in op.inputs]
    found = await in_chunks(lambda ref: read.output(*ref), refs)
    return [source.account for source in found if source is not None]


async def _audit_items(args, idents, block_range):
    """(what was audited, the requests and the accounts they spend), from the cluster."""
    async with reader(args.config, args.timeout) as read:
        if idents:
            ops = []
            for ident, found in zip(idents, await in_chunks(read.confirmed, idents)):
                if found is None:
                    raise InspectError("request %s not found on the ledger" % ident.hex())
                ops.append(found.op)
            what = "%d request%s" % (len(ops), "" if len(ops) == 1 else "s")
        else:
            first, last = block_range
            tip = await read.tip()
            last = tip if last is None else last
            if last > tip:
                raise InspectError("block %d is beyond the tip: the newest block is %d" % (last, tip))
            ops = []
            for block in await in_chunks(lambda h: read.block(h, tip), list(range(first, last + 1))):
                ops.extend(op for op, _, _ in (_decoded(r.raw) for r in block.requests) if op is not None)
            what = "%d request%s in blocks %d..%d" % (len(ops), "" if len(ops) == 1 else "s", first, last)
        return what, ops + await _input_accounts(read, ops)


def audit_command(args):
    """``plugpay ledger audit``: the RA's names for the accounts of requests or blocks."""
    idents = [parse_id(t) for t in args.tx or ()]
    block_range = parse_range(args.blocks) if args.blocks else None
    try:  # before the cluster is asked anything: a wrong key fails fast
        authority = ra.RegistrationAuthority.open(args.dir, ra_cli.unlock_from_args(args))
    except (ra.KeyStoreError, certs.RepositoryError) as e:
        raise InspectError(str(e))
    with authority:
        what, items = asyncio.run(_audit_items(args, idents, block_range))
        found = authority.audit(items)
    if not found:
        print("no accounts in %s" % what)
        return 1
    print("accounts in %s:" % what)
    ra_cli.print_audit(found)
    return 0

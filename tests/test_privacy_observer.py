"""The observer an attacker would write (``plugpay.tools.privacy_observer``), on synthetic
traffic built from the real structures: signed link messages on a session's link topics,
ledger requests on a gateway client id's topics, and the ledger's own chain. It must tie
sessions by a shared value, by transaction ancestry and by a query naming the past, and
must not tie them by what every device shares, by integers or by random bytes. The capture
runs against the real embedded broker."""
import asyncio
import os
import threading
import time

import paho.mqtt.client as paho

from plugpay.host import cluster
from plugpay.host.broker import EmbeddedBroker
from plugpay.host.stack import LoopThread
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol import signing, topics
from plugpay.protocol import structures as S
from plugpay.protocol.codec import dumps
from plugpay.protocol.link import new_session_id
from plugpay.protocol.port import sha256
from plugpay.tools import ledger_inspect
from plugpay.tools import privacy_capture as C
from plugpay.tools import privacy_observer as O

import ledger_helpers as H

REGION = "AT-5020"
PARAMS = M.ChargeParameters(20000, 1790000000, 1790007200, 11000, 300, 4, 5)
MINUTE = 29833333  # a market window in unix minutes: adjacent small integers in every session


class Key:
    """A fresh one-time key with an RA-signed account (the interface of ``H.Key``)."""

    def __init__(self):
        self.secret = signing.new_secret()
        self.pubkey = signing.public_key(self.secret)
        self.account = S.Account(self.pubkey, H.RA_EPOCH, b"")
        self.account.ra_sig = signing.sign(H.RA_SECRET, self.account)

    def sign(self, struct):
        return signing.sign(self.secret, struct)


class Session:
    """One charging session as the broker carries it: a link on the topics of a fresh
    session id and a gateway connection under a fresh client id, with what every session
    has (the region's market page, the agreed parameters, a metered installment)."""

    def __init__(self, market=True):
        self.sid = new_session_id()
        self.cid = os.urandom(8).hex()
        self.seq = 0
        self.messages = []
        self.requests = []
        consumer, meter = Key(), Key()
        if market:
            self.query(L.QUERY_MARKET_REGION, L.market_region_key(REGION))
        self.link(M.SessionSetupReq(consumer.pubkey, b"", b""))
        self.link(M.ChargeParameterDiscoveryReq(PARAMS))
        reading = S.MeterReading(self.sid, 1, 5000, 300, 150, bytes(32), MINUTE * 60, b"")
        reading.meter_sig = meter.sign(reading)
        self.link(M.ChargingStatus(reading))
        state = H.channel_state(os.urandom(32), 1, 150, consumer, Key(), energy_wh=5000)
        self.link(M.InstallmentReq(1, state.encode()))

    def publish(self, topic, payload):
        self.messages.append((time.monotonic(), topic, payload))

    def link(self, payload):
        self.seq += 1
        self.publish(topics.link_topics(self.sid)[0], M.encode_message(self.sid, self.seq, payload))

    def submit(self, op):
        """A ledger request through the gateway, and the ledger's answer naming its id."""
        raw = op.encode()
        self.requests.append(raw)
        self.publish(topics.topic(topics.LEDGER_SUBMIT, self.cid), raw)
        self.publish(topics.topic(topics.LEDGER_RESULT, self.cid),
                     L.Result(sha256(raw), True, L.OK, "", ledger_inspect.request_id(op, raw)).encode())

    def query(self, kind, key, index=0):
        self.publish(topics.topic(topics.LEDGER_QUERY, self.cid), L.Query(kind, key, index).encode())


def observe(vehicle, others=(), requests=(), **options):
    """The report on the vehicle's sessions ``v0, v1, ...``, with the sessions of another
    device ``o0, ...`` for the common-value rule."""
    sessions = {"v%d" % i: s.messages for i, s in enumerate(vehicle)}
    sessions.update(("o%d" % i, s.messages) for i, s in enumerate(others))
    devices = {label: "vehicle" if label[0] == "v" else "other" for label in sessions}
    everything = list(requests) + [r for s in list(vehicle) + list(others) for r in s.requests]
    return O.observe(sessions, devices, everything, target="vehicle", **options)


def unlinked(report, count):
    return (report["sessions"], report["components"], report["linked_pairs"], report["shared_values"]) \
        == (count, count, 0, 0)


def reasons(report, pair):
    return {e["reason"] for e in report["edges"] if e["sessions"] == list(pair)}


def funded(session):
    """A one-coin mint of its own (in no session) spent by ``session``'s channel open."""
    owner = Key()
    mint = H.faucet([(owner, 1000)], nonce=int.from_bytes(os.urandom(4), "big"))
    session.submit(H.channel_open(H.coins(mint.txhash(), [(owner, 1000)]), Key(), Key(), 600))
    return mint


def test_fresh_keys_random_payloads_and_separate_mints_do_not_link():
    vehicle, others = [Session() for _ in range(3)], [Session() for _ in range(2)]
    mints = []
    for s in vehicle + others:
        s.publish(topics.topic(topics.HOST_SEALED, s.cid), os.urandom(300))  # a sealed box
        s.link(M.InstallmentReq(2, os.urandom(120)))  # opaque bytes inside a structure
        mints.append(funded(s))
    garbage = [b"not a request", dumps([28, 1, [[os.urandom(32), 0]]])]  # a tag no ledger knows yet
    report = observe(vehicle, others, [m.encode() for m in mints] + garbage)
    assert unlinked(report, 3)
    assert report["undecodable_requests"] == 2
    assert report["requests"] == 2 * 5
    assert O.report_lines(report)[-1] == "nothing linked: every session is a component of its own"


def test_values_every_device_has_do_not_link_but_one_device_alone_does():
    vehicle = [Session() for _ in range(3)]
    assert unlinked(observe(vehicle, [Session(), Session()]), 3)  # topic levels, region key
    report = observe(vehicle, [Session(market=False), Session(market=False)])
    assert (report["components"], report["linked_pairs"]) == (1, 3)
    assert [v["value"] for v in report["values"]] == [L.market_region_key(REGION).hex()]
    assert report["reasons"] == {O.SHARED_VALUE: 3, O.ANCESTRY: 0, O.QUERY: 0}
    excluded = observe(vehicle, [Session(market=False)], exclude={L.market_region_key(REGION)})
    assert unlinked(excluded, 3)


def test_hex_in_topics_is_compared_as_the_bytes_it_spells():
    """Eight hex digits are 32 bits: two random ids share such a run by chance (it happened
    between a session id and another session's client id). Sixteen are 8 bytes: a link."""
    vehicle, others = [Session(), Session()], [Session(), Session()]
    run = os.urandom(4).hex()
    vehicle[0].cid = "pp" + run + vehicle[0].cid[8:]
    vehicle[1].cid = vehicle[1].cid[:10] + run + "z"
    for s in vehicle:
        s.query(L.QUERY_HEIGHT, bytes(32))
    for s in others:
        s.query(L.QUERY_HEIGHT, bytes(32))
    assert unlinked(observe(vehicle, others), 2)
    shared = os.urandom(8).hex()
    vehicle[0].cid, vehicle[1].cid = "pp" + shared, "qq" + shared + "z"
    for s in vehicle:
        s.query(L.QUERY_HEIGHT, bytes(32))
    report = observe(vehicle, others)
    assert report["linked_pairs"] == 1 and report["values"][0]["value"] == shared


def test_small_integers_do_not_link_an_integer_filling_eight_bytes_does():
    vehicle, others = [Session() for _ in range(2)], [Session()]
    for s in vehicle + others:
        s.link(M.ChargeParameterDiscoveryReq(PARAMS))
        s.publish(topics.topic(topics.LEDGER_SUBMIT, s.cid), dumps([MINUTE, MINUTE + 1, MINUTE + 2, 20000, 300]))
        s.submit(H.market_request(Key(), 1000 + MINUTE % 7, region=REGION))
    assert unlinked(observe(vehicle, others), 2)
    nonce = 0xA5A5_1234_5678_9ABC
    for s in vehicle:
        request = L.FaucetRequest(nonce, [S.TxOutput(Key().account, 5)])
        s.publish(topics.topic(topics.HOST_SEALED, s.cid), request.encode())
    report = observe(vehicle, others)
    assert report["linked_pairs"] == 1
    assert [v["value"] for v in report["values"]] == [nonce.to_bytes(8, "big").hex()]


def test_a_shared_33_byte_key_links_even_inside_opaque_bytes_and_the_report_says_where():
    vehicle, others = [Session() for _ in range(3)], [Session()]
    key = Key()
    vehicle[0].link(M.SessionSetupReq(key.pubkey, b"", b""))
    vehicle[2].publish("plugpay/host/sealed/" + vehicle[2].cid, os.urandom(40) + key.pubkey + os.urandom(40))
    report = observe(vehicle, others)
    assert (report["components"], report["linked_pairs"], report["groups"]) == (2, 1, [["v0", "v2"]])
    where = {"v0": [topics.link_topics(vehicle[0].sid)[0]], "v2": ["plugpay/host/sealed/" + vehicle[2].cid]}
    assert report["values"] == [{"value": key.pubkey.hex(), "bytes": 33, "sessions": ["v0", "v2"], "topics": where}]
    [edge] = report["edges"]
    assert (edge["sessions"], edge["reason"], edge["evidence"][0]["topics"]) == (["v0", "v2"], O.SHARED_VALUE, where)
    lines = O.report_lines(report)
    assert lines[1:4] == ["linked by: shared_value 1 pairs", "component: v0, v2", "shared values (1 of 1):"]
    assert lines[4].startswith("  %s... (33 bytes) in v0 (%s); v2 (" % (key.pubkey.hex()[:16], where["v0"][0]))


def test_an_id_inside_a_proof_links_to_the_same_id_spelled_in_hex():
    """A's channel id is inside the signed state A's installment carries (CBOR in a byte
    string); B's gateway answer names it in hex in its detail text."""
    a, b = Session(), Session()
    channel_id = os.urandom(32)
    a.link(M.InstallmentReq(2, H.channel_state(channel_id, 2, 300, Key(), Key()).encode()))
    b.publish(topics.topic(topics.LEDGER_RESULT, b.cid),
              L.Result(os.urandom(32), False, L.CHANNEL_UNKNOWN, "no channel " + channel_id.hex(), None).encode())
    report = observe([a, b, Session()], [Session(), Session()])
    assert report["groups"] == [["v0", "v1"]]
    assert [v["value"] for v in report["values"]] == [channel_id.hex()]


def test_a_change_chain_and_a_refund_link_sessions_through_the_ledger(tmp_path):
    """A's open leaves change that B's open spends; B's close refunds the consumer, and C's
    open spends the refund. Every request is run on a real ledger, which must hold every
    output the observer says a request creates."""
    a, b, c, d = (Session() for _ in range(4))
    k0, k1, k2, consumer, producer = Key(), Key(), Key(), Key(), Key()
    mint = H.faucet([(k0, 2000)])
    open_a = H.channel_open(H.coins(mint.txhash(), [(k0, 2000)]), Key(), Key(), 600, change=[(k1, 1300)])
    a.submit(open_a)
    open_b = H.channel_open(H.coins(open_a.channel_id(), [(k1, 1300)]), consumer, producer, 600,
                            change=[(k2, 600)])
    b.submit(open_b)
    close_b = H.channel_close(H.channel_state(open_b.channel_id(), 3, 180, consumer, producer), consumer, producer)
    b.submit(close_b)
    refund = L.channel_payout_txhash(open_b.channel_id())
    c.submit(H.channel_open(H.coins(refund, [(consumer, 420)], first_sn=1), Key(), Key(), 400))
    mint_d = funded(d)
    ledger = H.open_ledger(tmp_path / "ledger.db")
    requests = [mint.encode(), mint_d.encode()] + a.requests + b.requests + c.requests + d.requests
    assert set(H.reasons(H.run(ledger, 1, *requests))) == {"OK"}
    for raw in requests:
        for key in O.creates(L.decode_request(raw), raw):
            if isinstance(key[1], int):
                assert H.query(ledger, L.QUERY_UTXO, *key).ok, key

    report = observe([a, b, c, d], [Session()], [mint.encode(), mint_d.encode()])
    assert (report["components"], report["groups"], report["linked_pairs"]) == (2, [["v0", "v1", "v2"]], 3)
    assert reasons(report, ("v0", "v1")) == {O.ANCESTRY, O.SHARED_VALUE}  # B's input names A's channel id
    assert reasons(report, ("v1", "v2")) == {O.ANCESTRY}
    [ab] = [e for e in report["edges"] if e["sessions"] == ["v0", "v1"] and e["reason"] == O.ANCESTRY]
    assert ab["evidence"][0] == {"request": "channel_open", "id": open_a.channel_id().hex(),
                                 "own": ["v0"], "ancestor": ["v1", "v2"]}
    [bc] = [e for e in report["edges"] if e["sessions"] == ["v1", "v2"]]
    assert ab["count"] == 2 and bc["evidence"][0]["request"] == "channel_close"


def test_two_coins_of_one_mint_spent_in_two_sessions_link_them():
    a, b, c = Session(), Session(), Session()
    k1, k2 = Key(), Key()
    mint = H.faucet([(k1, 700), (k2, 700)])
    coins = H.coins(mint.txhash(), [(k1, 700), (k2, 700)])
    a.submit(H.channel_open(coins[:1], Key(), Key(), 600))
    b.submit(H.htlc_create(coins[1:], Key(), Key(), 600, b"r" * 32, 50))
    report = observe([a, b, c], [Session()], [mint.encode()])
    assert report["groups"] == [["v0", "v1"]] and report["reasons"][O.ANCESTRY] == 1
    [edge] = [e for e in report["edges"] if e["reason"] == O.ANCESTRY]
    assert edge["evidence"] == [{"request": "faucet", "id": mint.txhash().hex(), "own": [], "ancestor": ["v0", "v1"]}]


def test_a_query_naming_another_sessions_channel_links_them():
    a, b, c = Session(), Session(), Session()
    open_a = H.channel_open(H.coins(os.urandom(32), [(Key(), 900)]), Key(), Key(), 600)
    a.submit(open_a)
    b.query(L.QUERY_CHANNEL, open_a.channel_id())
    c.query(L.QUERY_UTXO, os.urandom(32))
    report = observe([a, b, c], [Session()])
    assert report["groups"] == [["v0", "v1"]]
    assert reasons(report, ("v0", "v1")) == {O.QUERY, O.SHARED_VALUE}  # the result named the id too
    [edge] = [e for e in report["edges"] if e["reason"] == O.QUERY]
    assert edge["evidence"] == [{"by": "v1", "topic": topics.topic(topics.LEDGER_QUERY, b.cid), "kind": "channel",
                                 "key": open_a.channel_id().hex(),
                                 "names": "channel_open %s of v0" % open_a.channel_id().hex()}]


def test_the_figures_of_a_target_count_only_its_sessions_and_links_between_them():
    """v0 and v1 each share a key with o0 only: a session of another device ties them to
    itself, not to each other."""
    v0, v1, o0, p0 = (Session() for _ in range(4))
    k, j = Key(), Key()
    v0.link(M.SessionSetupReq(k.pubkey, b"", b""))
    v1.link(M.SessionSetupReq(j.pubkey, b"", b""))
    o0.link(M.SessionSetupReq(k.pubkey, j.pubkey, b""))
    sessions = {"v0": v0.messages, "v1": v1.messages, "o0": o0.messages, "p0": p0.messages}
    devices = {"v0": "vehicle", "v1": "vehicle", "o0": "charger-1", "p0": "charger-2"}
    assert unlinked(O.observe(sessions, devices, target="vehicle"), 2)
    everyone = O.observe(sessions, devices)
    assert (everyone["sessions"], everyone["groups"], everyone["linked_pairs"]) == (4, [["v0", "v1", "o0"]], 3)


def test_the_capture_records_what_two_clients_publish_on_the_embedded_broker():
    host, port = "127.0.0.1", cluster.free_ports(1)[0]
    loop, broker = LoopThread(), EmbeddedBroker(host, port)
    loop.run(broker.start())
    clients = []
    try:
        with C.Capture(host, port) as capture:
            sent = [("plugpay/link/%s/to-responder" % os.urandom(16).hex(), os.urandom(64)),
                    (topics.topic(topics.LEDGER_QUERY, "dev-2"), L.Query(L.QUERY_TX, os.urandom(32), 0).encode())]
            for topic, payload in sent:
                client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
                client.connect(host, port)
                client.loop_start()
                clients.append(client)
                client.publish(topic, payload, qos=1).wait_for_publish(5)
            for _ in range(500):
                if len(capture.messages()) >= 2:
                    break
                threading.Event().wait(0.01)
            got = capture.messages()
        assert sorted((topic, payload) for _, topic, payload in got) == sorted(sent)
        assert all(type(t) is float for t, _, _ in got)
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        loop.run(broker.stop())
        loop.close()


def test_read_requests_takes_every_block_in_chain_order():
    class Reader:
        async def tip(self):
            return 3

        async def block(self, height, tip):
            requests = [ledger_inspect.Request("gw", i, b"%d.%d" % (height, i)) for i in range(height)]
            return ledger_inspect.Block(height, b"", b"", requests, b"", b"", None)

    assert asyncio.run(C.read_requests(Reader())) == [b"1.0", b"2.0", b"2.1", b"3.0", b"3.1", b"3.2"]

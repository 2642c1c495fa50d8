"""Twenty sessions of one vehicle through the market: an observer of every broker message
and every block cannot tie any two together; the RA names the vehicle behind all twenty.

The real path, as ``plugpay bench privacy`` runs it: the deployment broker (Mosquitto with
TLS and the device ACL), ``plugpay ledger up`` (4 replica processes, the gateway), boards
from ``plugpay provision``, two charger and one vehicle ``plugpay session`` processes. The
observer is the broker's operator (it reads ``#``) and reads every block; the graph is
``tools/privacy_observer.py``'s: sessions tied by a shared value of 8+ bytes, transaction
ancestry, or a query naming another session's object.
"""
import pytest

from plugpay.protocol import ledger_ops as L
from plugpay.protocol import topics
from plugpay.tools import bench_privacy, privacy_observer

SESSIONS = 20


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    return bench_privacy.run(SESSIONS, directory=str(tmp_path_factory.mktemp("privacy")), say=lambda text: None)


def test_no_two_sessions_of_the_vehicle_can_be_tied_together(observed):
    report = observed.report
    assert report["settled"] == SESSIONS, observed.records["vehicle"]
    assert report["sessions_by_device"]["charger-a"] and report["sessions_by_device"]["charger-b"]  # both served
    what = "\n".join(privacy_observer.report_lines(report))
    assert (report["sessions"], report["components"], report["linked_pairs"]) == (SESSIONS, SESSIONS, 0), what
    assert report["shared_values"] == 0 and report["undecodable_requests"] == 0, what


def test_the_ra_still_names_the_vehicle_behind_every_session(observed):
    assert observed.report["audit_linked"] == SESSIONS


def _kinds(messages):
    out = set()
    for _, topic, _ in messages:
        parsed = topics.parse(topic)
        out.add(parsed[0] if parsed else topic.split("/")[1])
    return out


def test_the_observer_had_each_session_whole(observed):
    """Guard against a vacuous pass: every session of the vehicle holds its market request,
    its deposit and its link messages, and its requests are on the chain the observer read;
    the sealed upkeep (funding, key refills, redeems) is among them too."""
    chain = set(observed.requests)
    sealed = 0
    for label, messages in observed.labelled.items():
        if observed.devices[label] != "vehicle":
            continue
        kinds = _kinds(messages)
        assert {"link", topics.LEDGER_SUBMIT, topics.LEDGER_RESULT, topics.LEDGER_QUERY} <= kinds, (label, kinds)
        sealed += {topics.HOST_SEALED, topics.HOST_SEALED_REPLY} <= kinds
        submitted = [bytes(p) for _, t, p in messages if topics.parse(t) and topics.parse(t)[0] == topics.LEDGER_SUBMIT]
        names = {L.decode_request(raw).NAME for raw in submitted if raw in chain}
        assert {"market_request", "market_commit", "channel_open"} <= names, (label, names)
    assert sealed

def test_a_link_planted_in_this_traffic_is_found(observed):
    """The same data with one coin of session 1 spent again in session 2's traffic (a change
    chain, as the wallet used to make) and one of session 3's keys in session 4's: the
    observer ties exactly those."""
    labels = sorted(label for label in observed.labelled if observed.devices[label] == "vehicle")
    labelled = dict((label, list(messages)) for label, messages in observed.labelled.items())
    opens = {}
    for label in labels:
        for _, topic, payload in labelled[label]:
            parsed = topics.parse(topic)
            if parsed and parsed[0] == topics.LEDGER_SUBMIT and L.decode_request(bytes(payload)).NAME == "channel_open":
                opens[label] = L.decode_request(bytes(payload))
    one, two, three, four = labels[:4]
    labelled[two].append((0, topics.topic(topics.LEDGER_SUBMIT, "planted"), opens[one].encode()))
    labelled[four].append((0, topics.topic(topics.LEDGER_SUBMIT, "planted"), opens[three].consumer.pubkey * 2))
    report = privacy_observer.observe(labelled, observed.devices, observed.requests, target="vehicle")
    assert report["components"] == SESSIONS - 2 and report["linked_pairs"] == 2
    assert sorted(map(sorted, report["groups"])) == [[one, two], [three, four]]

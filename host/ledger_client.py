"""The ledger's client for whichever engine a cluster's config describes.

``cluster.json`` of our PBFT replicas (``host.cluster``) or of a CometBFT network
(``host.comet_testnet``, ``"engine": "cometbft"``): the gateway, the benchmarks and the
tools take either and get a client with the same ``start``/``close``/``submit``/``query``/
``height`` interface, so nothing above this line knows which engine orders the requests.
"""


def engine(config):
    return config.get("engine", "pbft")


def make_client(config, secrets=None, name=None, lanes=256):
    """A PBFT ``Client`` (``lanes`` requests in flight under ``name``) or a ``CometClient``
    submitting through the network's node ``local_node`` (default 0): the one beside us."""
    if engine(config) == "cometbft":
        from plugpay.host.comet_client import CometClient

        return CometClient(config, node=config.get("local_node", 0))
    from plugpay.host.client import Client

    return Client(config, secrets, name=name, lanes=lanes)

"""Everything on the host side of a charging network, started together on loopback.

The RA (a fresh one, its key in a key file), a ledger of n replica processes trusting it
(our PBFT replicas, or CometBFT validators each with its ABCI application: ``engine``),
an MQTT broker (the embedded amqtt one, or an external one by URL) and the gateway with
the faucet and RA registration: what ``plugpay demo`` and ``plugpay bench session`` need
before the first device connects. On a deployment broker (``host.deployment``) the
devices and the gateway connect to different listeners: ``broker_url`` and ``broker_ca``
are the devices', ``gateway_url`` and ``gateway_login`` the gateway's. The gateway and
the embedded broker run on an asyncio loop in a thread of their own, so the caller's code
(devices in threads) stays plain.
"""
import asyncio
import os
import threading

from plugpay.host import broker as broker_mod
from plugpay.host import cluster, faucet, ra
from plugpay.host.gateway import Gateway


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for a coroutine run there."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="plugpay-host-loop")
        self.thread.start()

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, func, *args):
        """``func(*args)`` in the loop's thread (for objects only that thread may touch)."""
        async def wrapper():
            return func(*args)
        return self.run(wrapper())

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class HostStack:
    """``with HostStack(directory) as host:`` RA, replicas, broker and gateway are up;
    ``host.devices`` (a ``broker.Endpoint``; ``broker_host``/``broker_port``) is where
    devices connect, ``host.authority`` the RA (for identity registration in person and
    audits), ``host.ra_pubkeys`` what wallets are provisioned with. Everything stops on the
    way out, also after a failed start."""

    def __init__(self, directory, n=4, broker_url=None, faucet_limit=10 ** 9, progress=None, broker_ca=None,
                 gateway_url=None, gateway_login=None, engine="pbft"):
        if engine not in ("pbft", "cometbft"):
            raise ValueError("the ledger engine is pbft or cometbft, got %r" % (engine,))
        self.directory = os.path.abspath(directory)
        self.n = n
        self.engine = engine
        self.secrets = None
        if gateway_url and not broker_url:
            raise ValueError("a gateway broker URL (%s) without the devices' broker URL" % gateway_url)
        self.external = broker_mod.Endpoint(broker_url, broker_ca) if broker_url else None
        self.gateway_broker = broker_mod.Endpoint(gateway_url or broker_url, broker_ca, gateway_login) \
            if broker_url else None
        self.devices = self.external
        self.faucet_limit = faucet_limit
        self.progress = progress or (lambda text: None)
        self.lc = None
        self.loop = None
        self.broker = None
        self.gateway = None
        self.authority = None
        self.broker_host = self.broker_port = None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self):
        os.makedirs(self.directory, exist_ok=True)
        ra_dir = os.path.join(self.directory, "ra")
        key_file = os.path.join(self.directory, "ra-key.bin")
        ra.create_key_file(key_file)
        unlock = ra.Unlock(key_file=key_file)
        ra.init(ra_dir, unlock)
        vault = ra.unseal(ra_dir, unlock)
        self.authority = ra.RegistrationAuthority(ra_dir, vault)
        self.ra_pubkeys = {vault.epoch: vault.public_key}
        self.progress("RA ready (epoch %d)" % vault.epoch)
        faucet_key = os.path.join(self.directory, faucet.KEY_FILE)
        faucet_pubkey = faucet.create_key(faucet_key)
        options = {"ra_pubkeys": {str(e): k.hex() for e, k, _ in ra.public_epochs(ra_dir)},
                   "faucet_pubkey": faucet_pubkey.hex()}
        self._start_ledger(os.path.join(self.directory, "ledger"), options)
        self.loop = LoopThread()
        if self.devices is None:
            self.devices = broker_mod.Endpoint(broker_mod.url("127.0.0.1", cluster.free_ports(1)[0]))
        self.broker_host, self.broker_port = self.devices.host, self.devices.port
        self.loop.run(self._start_services(faucet.Faucet(faucet.load_key(faucet_key), self.faucet_limit),
                                           ra_dir, ra.unseal(ra_dir, unlock)))
        gateway = self.gateway_broker
        self.progress("MQTT broker %s (%s), gateway up%s" % (
            self.devices.url, "external" if self.external else "embedded amqtt",
            " on %s" % gateway.url if gateway is not None and gateway.url != self.devices.url else ""))

    def _start_ledger(self, directory, options):
        if self.engine == "cometbft":
            from plugpay.host import comet_cluster, comet_testnet

            self.lc = comet_cluster.LocalCometCluster(comet_testnet.generate(directory, n=self.n, app_options=options))
            self.lc.start_all()
            self.lc.wait_ready()
            self.progress("ledger: %d CometBFT validators, each with its ABCI application, committing blocks" % self.n)
            return
        self.lc = cluster.LocalCluster(cluster.generate(directory, n=self.n, app="plugpay.host.ledger:Ledger",
                                                        app_options=options))
        self.secrets = self.lc.secrets
        self.lc.start_all()
        self.lc.wait_listening()
        self.progress("ledger: %d replica processes listening" % self.n)

    async def _start_services(self, the_faucet, ra_dir, vault):
        gateway = self.gateway_broker or self.devices
        if not self.external:
            self.broker = broker_mod.EmbeddedBroker(self.broker_host, self.broker_port)
            await self.broker.start()
        self.gateway = Gateway(self.lc.config, self.secrets, gateway.host, gateway.port,
                               faucet=the_faucet, ra_directory=ra_dir, ra_vault=vault, mqtt_tls=gateway.tls,
                               mqtt_login=gateway.login)
        await self.gateway.start()

    async def _stop_services(self):
        if self.gateway is not None:
            await self.gateway.stop()
        if self.broker is not None:
            await self.broker.stop()

    def gateway_stats(self):
        return self.loop.call(lambda: dict(self.gateway.stats))

    def __exit__(self, *exc):
        try:
            if self.loop is not None:
                try:
                    self.loop.run(self._stop_services())
                finally:
                    self.loop.close()
        finally:
            if self.lc is not None:
                self.lc.stop_all()
            if self.authority is not None:
                self.authority.close()

"""pytest set-up: tests/device/ runs under the real MicroPython (see mpy_plugin), the
Registration Authority the wallet tests register their keys with, and the wallet parties
and ledger of ``wallet_helpers`` (fixtures ``ledger``, ``consumer``, ``producer``; a module
that defines its own keeps it)."""
import pytest

from plugpay.host import ra

pytest_plugins = ["mpy_plugin", "wallet_helpers"]

NOW = 1_750_000_000


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    """A real RA, unsealed, on a fixed clock."""
    base = tmp_path_factory.mktemp("ra")
    ra.create_key_file(base / "ra-key.bin")
    unlock = ra.Unlock(key_file=base / "ra-key.bin")
    ra.init(base / "ra", unlock, now=NOW)
    with ra.RegistrationAuthority(base / "ra", ra.unseal(base / "ra", unlock), clock=lambda: NOW + 60) as a:
        yield a

"""Every name the wallet stores under, in one place (as Trezor keeps its storage keys).

Why one registry: a name is the on-flash contract between versions. Two modules picking the
same name, or a rename in one of them, would silently read another record; here each name
is defined once and every module takes it from here. A/B records (``records``) add ``.a`` and
``.b`` to their name.
"""
SEED = "seed"  # the sealed seed (keystore)
KEYS = "keys"  # the RA-signed one-time key records (keystore)
COUNTERS = "counters"  # A/B: the key counters (keystore)
PROFILE = "profile"  # A/B: RA keys, identity, the records that must exist (wallet_profile)
BOOKS = "books"  # A/B: coins and signed spends (books)
CHANNEL_PREFIX = "ch-"  # A/B per open channel, + 8 bytes of its id in hex (channels)
HTLC_PREFIX = "ht-"  # A/B per HTLC series, + 8 bytes of its id in hex (htlcs)

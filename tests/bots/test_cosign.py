"""Co-signing without a chain: ``keeper.cosign`` read strictly, signatures recovered from the
digest alone (refusing what the registries refuse), and the folder transport's collection."""

from __future__ import annotations

import logging

import pytest
from eth_account import Account

from offchain.bots.bot_config import ConfigError, parse_config
from offchain.bots.cosign import (
    Cosigner,
    CosignSettings,
    FolderTransport,
    RedisTransport,
    recover_digest_signer,
)
from offchain.protocol.signing import RiskUpdate, batch_digest, sign_batch, to_high_s

FEED = "0x" + "22" * 20
REGISTRY = "0x" + "11" * 20
KEEPERS = [Account.from_key(bytes([k]) * 32) for k in (0x31, 0x32, 0x33)]
OUTSIDER = Account.from_key(b"\x44" * 32)
UPDATES = [RiskUpdate(1, 2 * 10**18, 0, 1_000, 2_000, b"\x01" * 32)]
DIGEST = batch_digest(UPDATES, 31337, REGISTRY)


def sig(account) -> bytes:
    return sign_batch(UPDATES, account.key, 31337, REGISTRY)


def keeper_section(cosign) -> dict:
    return {"markets": [{"id": 1, "feed": FEED}], "keeper": {"cosign": cosign}}


def test_cosign_settings__redis_and_folder_build_into_the_keeper_config():
    redis = parse_config(
        keeper_section({"transport": "redis", "url": "redis://:secret@10.0.0.5:6379/0"})
    ).keeper_config()
    folder = parse_config(keeper_section({"transport": "folder", "dir": "/x"})).keeper_config()
    legacy = parse_config(
        {"markets": [{"id": 1, "feed": FEED}], "keeper": {"cosign_dir": "/x"}}
    ).keeper_config()

    assert redis.cosign.transport == "redis" and redis.cosign.ttl_seconds == 3600
    assert redis.cosign.where() == "redis redis://***@10.0.0.5:6379/0"  # no password in logs
    assert folder.cosign == legacy.cosign == CosignSettings(transport="folder", dir="/x")


@pytest.mark.parametrize(
    ("cosign", "message"),
    [
        ({"transport": "redis"}, "keeper.cosign: url: required by the redis transport"),
        ({"transport": "redis", "url": "http://x"}, "url: 'http://x' is not a redis://"),
        ({"transport": "folder"}, "keeper.cosign: dir: required by the folder transport"),
        ({"transport": "folder", "dir": "/x", "url": "redis://y"}, "url: only for the redis"),
        ({"transport": "redis", "url": "redis://y", "dir": "/x"}, "dir: only for the folder"),
        ({"transport": "rabbit"}, "keeper.cosign.transport: Input should be 'folder' or 'redis'"),
        ({"transport": "redis", "url": "redis://y", "ttl": 5}, "keeper.cosign.ttl: unknown key"),
        (
            {"transport": "redis", "url": "redis://y", "ttl_seconds": "60"},
            "keeper.cosign.ttl_seconds: Input should be a valid integer",
        ),
        (
            {"transport": "redis", "url": "redis://y", "ttl_seconds": 0},
            "keeper.cosign.ttl_seconds: Input should be greater than 0",
        ),
        (
            {"transport": "redis", "url": "redis://y", "prefix": "a b"},
            "keeper.cosign.prefix: String should match pattern",
        ),
    ],
)
def test_cosign_settings__mistakes_named_by_key_path(cosign, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(keeper_section(cosign), "bots.yaml").keeper_config()
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_cosign_settings__cosign_and_cosign_dir_together_refused():
    raw = {
        "markets": [{"id": 1, "feed": FEED}],
        "keeper": {"cosign_dir": "/a", "cosign": {"transport": "folder", "dir": "/b"}},
    }
    with pytest.raises(ConfigError, match="keeper: give cosign or cosign_dir, not both"):
        parse_config(raw, "bots.yaml").keeper_config()


def test_recover_digest_signer__equals_the_batch_signer():
    assert recover_digest_signer(DIGEST, sig(KEEPERS[0])) == KEEPERS[0].address


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (to_high_s(sig(KEEPERS[0])), "high-s (malleable) signature"),
        (sig(KEEPERS[0])[:64], "signature of 64 bytes, expected 65"),
        (sig(KEEPERS[0])[:64] + b"\x01", "v is 1, expected 27 or 28"),
        (b"\x00" * 32 + sig(KEEPERS[0])[32:], "r or s is zero"),
    ],
)
def test_recover_digest_signer__refuses_what_the_registry_refuses(signature, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recover_digest_signer(DIGEST, signature)


def cosigner(transport, threshold: int = 2) -> Cosigner:
    keepers = {k.address for k in KEEPERS}
    return Cosigner(transport, lambda a: a in keepers, lambda: threshold)


def test_cosigner__threshold_met_returns_signatures_ordered_by_signer(tmp_path):
    transport = FolderTransport(tmp_path)
    first, second = cosigner(transport), cosigner(transport)

    assert first.cosign(DIGEST, KEEPERS[1].address, sig(KEEPERS[1])) is None
    out = second.cosign(DIGEST, KEEPERS[0].address, sig(KEEPERS[0]))

    by_address = sorted(KEEPERS[:2], key=lambda k: k.address.lower())
    assert out == [sig(k) for k in by_address]
    assert sorted(p.name for p in (tmp_path / DIGEST.hex()).iterdir()) == sorted(
        f"{k.address}.sig" for k in KEEPERS[:2]
    )


def test_cosigner__outsider_and_unreadable_files_do_not_count(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dmm")
    transport = FolderTransport(tmp_path)
    transport.publish(DIGEST, OUTSIDER.address, sig(OUTSIDER))
    (tmp_path / DIGEST.hex() / f"{KEEPERS[2].address}.sig").write_text("not hex\n")

    out = cosigner(transport).cosign(DIGEST, KEEPERS[0].address, sig(KEEPERS[0]))

    assert out is None
    assert f"{OUTSIDER.address} is not a keeper" in caplog.text
    assert f"co-signature {KEEPERS[2].address}.sig ignored" in caplog.text
    assert "1 of 2 keeper signatures; waiting for co-signers" in caplog.text


class _Hash:
    """The two Redis commands the transport uses, on a dict (the real server is in
    tests/integration/test_cosign_redis.py)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.ttl: dict[str, int] = {}

    def pipeline(self):
        return self

    def hsetnx(self, key, field, value):
        self.data.setdefault(key, {}).setdefault(field, value)

    def expire(self, key, seconds):
        self.ttl[key] = seconds

    def execute(self):
        return []

    def hgetall(self, key):
        return dict(self.data.get(key, {}))


def test_redis_transport__keeps_a_signers_first_signature_under_the_prefix():
    client = _Hash()
    transport = RedisTransport("redis://x", prefix="dm:test", ttl_seconds=600, client=client)

    transport.publish(DIGEST, KEEPERS[0].address, sig(KEEPERS[0]))
    transport.publish(DIGEST, KEEPERS[0].address, b"\x01" * 65)  # a second one is not kept

    key = f"dm:test:{DIGEST.hex()}"
    assert client.ttl == {key: 600}
    assert transport.collect(DIGEST) == {KEEPERS[0].address: sig(KEEPERS[0])}

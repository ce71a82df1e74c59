"""k-of-n co-signing between keepers: signatures of one EIP-712 digest, shared over a transport.

A registry that needs ``k`` keeper signatures per batch (``signer_threshold``) gets them from
keepers that each compute the same batch independently (same data, same model, deadlines rounded
to ``cosign_granularity``), sign its digest and publish the signature. The keeper that finds
``k`` valid signatures relays the batch; the others find it landed on their next tick.

The transport only moves bytes: it publishes ``(digest, claimed signer, signature)`` and returns
what was published for a digest. It knows nothing of what was signed, so risk, scenario and
profile batches share it. Everything read back is checked here before it counts: the signature
must be 65 bytes, low-s, recover (from the digest itself) to the address it claims, and that
address must be a keeper of the registry now. A stray, garbage, malleable or non-keeper
signature is ignored with one log line; keepers that disagree sign different digests, so their
signatures never combine.

Two transports:

``folder``  a directory every keeper can read and write (one machine, or a shared volume):
            ``<dir>/<digest hex>/<address>.sig``, each written atomically.
``redis``   a Redis server the keepers reach (``redis-server`` from the distribution's
            packages): one hash per digest, ``<prefix>:<digest hex>`` with a field per signer,
            expiring after ``ttl_seconds``. Keepers on different machines co-sign through it.

A transport that cannot be reached (Redis down) does not stop the keeper: the batch is not
relayed this tick (one warning naming the transport) and the next tick tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from eth_keys import KeyAPI
from eth_utils import keccak, to_checksum_address
from pydantic import Field, StrictFloat, StrictInt, model_validator

from offchain.protocol.config_files import StrictModel
from offchain.protocol.signing import MAX_LOW_S

log = logging.getLogger("dmm.cosign")

# The registries' "a batch landed" events (relayer indexed; digest first in the data).
BATCH_RELAYED_EVENTS = (
    "RiskBatchRelayed(address,bytes32,uint256,uint256)",
    "ScenarioBatchRelayed(address,bytes32,uint256,uint256)",
    "ProfileBatchRelayed(address,bytes32,uint256,uint256)",
)
BATCH_RELAYED_TOPICS = ["0x" + keccak(text=e).hex() for e in BATCH_RELAYED_EVENTS]
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class CosignUnavailable(ConnectionError):  # noqa: N818 - named for what happened
    """The transport could not be reached (a Redis server down, a folder not writable)."""


# ---------------------------------------------------------------------------------------------
# Configuration (``keeper.cosign`` in the bots' file)


class CosignSettings(StrictModel):
    """``keeper.cosign``: where the keepers meet.

    ``{transport: folder, dir: /var/lib/dmm/cosign}`` or
    ``{transport: redis, url: redis://10.0.0.5:6379/0}`` (``prefix``, ``ttl_seconds``,
    ``timeout_seconds`` optional).
    """

    transport: Literal["folder", "redis"]
    dir: str | None = None
    url: str | None = None
    prefix: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9:_.-]+$")] = "dmm:cosign"
    ttl_seconds: Annotated[StrictInt, Field(gt=0)] = 3600
    timeout_seconds: Annotated[StrictFloat | StrictInt, Field(gt=0, le=60)] = 2.0

    @model_validator(mode="after")
    def _keys_of_the_transport(self) -> CosignSettings:
        given = self.model_fields_set
        if self.transport == "folder":
            if not self.dir:
                raise ValueError("dir: required by the folder transport (a shared directory)")
            extra = sorted(given & {"url", "prefix", "ttl_seconds", "timeout_seconds"})
            if extra:
                raise ValueError(f"{extra[0]}: only for the redis transport")
        else:
            if not self.url:
                raise ValueError("url: required by the redis transport (redis://host:port/db)")
            if not self.url.startswith(REDIS_SCHEMES):
                raise ValueError(f"url: {self.url!r} is not a redis://, rediss:// or unix:// URL")
            if "dir" in given:
                raise ValueError("dir: only for the folder transport")
        return self

    def where(self) -> str:
        """The transport in a log line (a URL's password left out)."""
        if self.transport == "folder":
            return f"folder {self.dir}"
        url = str(self.url)
        if "@" in url:
            scheme, _, rest = url.partition("://")
            url = f"{scheme}://***@{rest.rpartition('@')[2]}"
        return f"redis {url}"


# ---------------------------------------------------------------------------------------------
# Transports


class CosignTransport(Protocol):
    """Moves signatures of digests between keepers; verifies nothing."""

    def publish(self, digest: bytes, signer: str, signature: bytes) -> None:
        """Make ``signature`` (claimed to be ``signer``'s) of ``digest`` visible to the others."""
        ...

    def collect(self, digest: bytes) -> dict[str, bytes]:
        """Everything published for ``digest``: claimed signer -> signature bytes."""
        ...


def _parse_hex(text: str) -> bytes:
    return bytes.fromhex(text.strip().removeprefix("0x"))


class FolderTransport:
    """``<dir>/<digest hex>/<address>.sig`` files, each written atomically (rename)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def publish(self, digest: bytes, signer: str, signature: bytes) -> None:
        folder = self.directory / digest.hex()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            mine = folder / f"{signer}.sig"
            if not mine.exists():
                partial = folder / f".{signer}.tmp"
                partial.write_text("0x" + signature.hex() + "\n")
                partial.replace(mine)
        except OSError as exc:
            raise CosignUnavailable(f"folder {self.directory}: {exc.strerror or exc}") from exc

    def collect(self, digest: bytes) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for path in sorted((self.directory / digest.hex()).glob("*.sig")):
            try:
                out[path.stem] = _parse_hex(path.read_text())
            except (ValueError, OSError) as exc:
                log.warning("co-signature %s ignored: %s", path.name, exc)
        return out


class RedisTransport:
    """One Redis hash per digest (``<prefix>:<digest hex>``), a field per signer, with a TTL.

    ``HSETNX`` keeps the first signature a signer published; ``EXPIRE`` bounds how long a
    digest's signatures stay (a batch is dead after its deadline anyway).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "dmm:cosign",
        ttl_seconds: int = 3600,
        timeout_seconds: float = 2.0,
        client: Any = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        if client is None:
            import redis

            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                decode_responses=True,
            )
        self.client = client

    def key(self, digest: bytes) -> str:
        return f"{self.prefix}:{digest.hex()}"

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        import redis

        try:
            return fn()
        except redis.exceptions.RedisError as exc:
            raise CosignUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc

    def publish(self, digest: bytes, signer: str, signature: bytes) -> None:
        key = self.key(digest)

        def run() -> None:
            pipe = self.client.pipeline()
            pipe.hsetnx(key, signer, "0x" + signature.hex())
            pipe.expire(key, self.ttl_seconds)
            pipe.execute()

        self._run("publish", run)

    def collect(self, digest: bytes) -> dict[str, bytes]:
        raw: Mapping[str, str] = self._run("collect", lambda: self.client.hgetall(self.key(digest)))
        out: dict[str, bytes] = {}
        for field, value in raw.items():
            try:
                out[str(field)] = _parse_hex(str(value))
            except ValueError:
                log.warning("co-signature of %s ignored: not hex", field)
        return out


def make_transport(settings: CosignSettings) -> CosignTransport:
    """The transport ``keeper.cosign`` describes."""
    if settings.transport == "folder":
        return FolderTransport(str(settings.dir))
    return RedisTransport(
        str(settings.url), settings.prefix, settings.ttl_seconds, float(settings.timeout_seconds)
    )


# ---------------------------------------------------------------------------------------------
# Verification and collection


def recover_digest_signer(digest: bytes, signature: bytes) -> str:
    """The address whose key produced ``signature`` (65 bytes ``r || s || v``) over ``digest``,
    refusing what the registries refuse: another length, ``v`` not 27/28, a zero ``r`` or ``s``,
    a high ``s`` (the malleable twin). Raises ``ValueError`` saying which."""
    if len(digest) != 32:
        raise ValueError(f"digest of {len(digest)} bytes, expected 32")
    if len(signature) != 65:
        raise ValueError(f"signature of {len(signature)} bytes, expected 65")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise ValueError(f"v is {v}, expected 27 or 28")
    if r == 0 or s == 0:
        raise ValueError("r or s is zero")
    if s > MAX_LOW_S:
        raise ValueError("high-s (malleable) signature")
    try:
        key = KeyAPI.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except Exception as exc:
        raise ValueError(f"does not recover ({type(exc).__name__})") from None
    return to_checksum_address(key.to_checksum_address())


class Cosigner:
    """Publishes a keeper's signature of a digest and gathers the valid ones.

    ``is_keeper(address)`` and ``threshold()`` are read from the registry on each call (a keeper
    removed by governance stops counting at once).
    """

    def __init__(
        self,
        transport: CosignTransport,
        is_keeper: Callable[[str], bool],
        threshold: Callable[[], int],
        where: str = "",
    ) -> None:
        self.transport = transport
        self.is_keeper = is_keeper
        self.threshold = threshold
        self.where = where or type(transport).__name__

    def valid_signatures(self, digest: bytes, published: Mapping[str, bytes]) -> dict[str, bytes]:
        """The published signatures that count: each recovers to the address it claims, which
        is a keeper; one per keeper. Every other one is logged and left out."""
        valid: dict[str, bytes] = {}
        for claimed, sig in published.items():
            name = f"{claimed[:42]}"
            try:
                signer = recover_digest_signer(digest, sig)
            except ValueError as exc:
                log.warning("co-signature %s.sig ignored: %s", name, exc)
                continue
            if signer.lower() != claimed.lower():
                log.warning("co-signature %s.sig ignored: it recovers to %s", name, signer)
                continue
            if not self.is_keeper(signer):
                log.warning("co-signature %s.sig ignored: %s is not a keeper", name, signer)
                continue
            valid[signer] = sig
        return valid

    def cosign(self, digest: bytes, signer: str, signature: bytes) -> list[bytes] | None:
        """Publish ``signature`` (``signer``'s, of ``digest``) and return signatures that meet the
        registry's threshold (ordered by signer address), or ``None`` while too few keepers
        signed this digest or the transport cannot be reached."""
        try:
            self.transport.publish(digest, to_checksum_address(signer), signature)
            published = self.transport.collect(digest)
        except CosignUnavailable as exc:
            log.warning(
                "batch %s: co-signing transport %s unavailable (%s); not relayed this tick",
                digest.hex()[:16],
                self.where,
                exc,
            )
            return None
        valid = self.valid_signatures(digest, published)
        threshold = self.threshold()
        if len(valid) < threshold:
            log.info(
                "batch %s: %d of %d keeper signatures; waiting for co-signers",
                digest.hex()[:16],
                len(valid),
                threshold,
            )
            return None
        return [valid[a] for a in sorted(valid, key=str.lower)][: max(threshold, 1)]


def relayed_by(
    w3: Any, registry: str, digest: bytes, from_block: int, to_block: int | str = "latest"
) -> str | None:
    """The relayer of the batch with ``digest`` if a registry logged it landing in the block
    range (any of the three ``*BatchRelayed`` events), else ``None``."""
    logs = w3.eth.get_logs(
        {
            "address": to_checksum_address(registry),
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [BATCH_RELAYED_TOPICS],
        }
    )
    for entry in logs:
        data = bytes(entry["data"])
        if data[:32] == digest:
            return to_checksum_address(bytes(entry["topics"][1])[-20:])
    return None


__all__ = [
    "BATCH_RELAYED_EVENTS",
    "CosignSettings",
    "CosignTransport",
    "CosignUnavailable",
    "Cosigner",
    "FolderTransport",
    "RedisTransport",
    "make_transport",
    "recover_digest_signer",
    "relayed_by",
]

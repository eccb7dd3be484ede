"""Authenticated alerts: each edge signs what it publishes, the engine trusts listed keys.

On the wire a signed alert is a header, then the alert's JSON exactly as signed, on one
line (so line-based tools such as ``mosquitto_pub -l`` carry it)::

    AIOTSIG1 <key id> <sent, epoch s> <base64 Ed25519 signature> {"id": ...}

The signature covers a domain tag, the topic, the send time and the JSON, so a signed alert
cannot be moved to another asset's topic nor replayed later than ``max_age_s`` (an edge
signs again each time it sends, so an alert held in its outbox through a long outage is
still fresh when it goes). Within the window a replay carries an alert id the engine has
recorded: acknowledged again, never run again.

The engine's trust list (``[[engine.trust.edges]]``) names each edge's public key and the
sites (and, optionally, assets) it may speak for; ``aiotflow edge keygen`` prints an entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from aiotflow.keys import PublicKey, SigningKey, key_id, verify_signature

__all__ = ["AlertTrust", "OpenedAlert", "TrustedEdge", "Untrusted", "open_alert", "sign_alert"]

_MAGIC = b"AIOTSIG1 "
_DOMAIN = b"aiotflow-alert-v1\n"
#: the longest header line (key id, time and a 64-byte signature are far shorter)
_MAX_HEADER = 256


class Untrusted(Exception):
    """An alert the engine drops unread; ``reason`` is one of ``unsigned``,
    ``bad_signature_format``, ``unknown_key``, ``bad_signature``, ``stale``,
    ``out_of_scope``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _signed_bytes(topic: str, sent: str, body: bytes) -> bytes:
    return _DOMAIN + topic.encode() + b"\n" + sent.encode() + b"\n" + body


def sign_alert(key: SigningKey, topic: str, body: bytes, *, now: float | None = None) -> bytes:
    """The signed message for ``body`` (an alert's JSON) published on ``topic`` now."""
    sent = f"{time.time() if now is None else now:.3f}"
    sig = key.sign(_signed_bytes(topic, sent, body))
    return _MAGIC + f"{key.key_id} {sent} {sig} ".encode() + body


@dataclass(frozen=True)
class OpenedAlert:
    """A signed message split into its parts (not yet verified)."""

    key_id: str
    sent: str
    signature: str
    body: bytes


def open_alert(payload: bytes) -> OpenedAlert:
    """Split a signed message; :class:`Untrusted` (``unsigned`` or
    ``bad_signature_format``) if it is not one."""
    if not payload.startswith(_MAGIC):
        raise Untrusted("unsigned")
    parts = payload[len(_MAGIC):len(_MAGIC) + _MAX_HEADER].split(b" ", 3)
    if len(parts) < 4:
        raise Untrusted("bad_signature_format", "no 'key sent signature' header")
    try:
        kid, sent, sig = (p.decode("ascii") for p in parts[:3])
        float(sent)
    except (UnicodeDecodeError, ValueError):
        raise Untrusted("bad_signature_format", "header is not 'key sent signature'") from None
    head = len(_MAGIC) + len(parts[0]) + len(parts[1]) + len(parts[2]) + 3
    return OpenedAlert(kid, sent, sig, payload[head:])


class TrustedEdge(BaseModel):
    """One edge whose alerts the engine accepts, and what it may speak for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Who this is, for the audit and logs.")
    public_key: PublicKey = Field(description="ed25519:..., from `aiotflow edge keygen`.")
    sites: list[str] = Field(min_length=1, description="Sites it may send alerts for.")
    assets: list[str] = Field(default_factory=list,
                              description="Assets it may send alerts for; empty: all of "
                                          "its sites' assets.")

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


class AlertTrust(BaseModel):
    """``[engine.trust]``: which edges' alerts count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    edges: list[TrustedEdge] = Field(default_factory=list,
                                     description="The trusted edges ([[engine.trust.edges]]).")
    max_age_s: float = Field(300.0, gt=0, description="An alert sent longer ago than this "
                                                      "(or as far in the future: clock skew) "
                                                      "is a replay.")
    _ids: dict[str, TrustedEdge] | None = PrivateAttr(None)
    allow_unsigned: bool = Field(
        False, description="Also accept unsigned alerts from anyone on the broker (a "
                           "migration aid; the engine warns at start).")

    def verify(self, payload: bytes, topic: str, *, now: float | None = None
               ) -> tuple[bytes, TrustedEdge | None]:
        """The alert JSON of a message on ``topic`` and the edge that signed it, or
        :class:`Untrusted`. Scope (site and asset) is checked by :meth:`check_scope` once
        the JSON is parsed."""
        try:
            opened = open_alert(payload)
        except Untrusted as exc:
            if exc.reason == "unsigned" and self.allow_unsigned:
                return payload, None
            raise
        edge = self._by_id().get(opened.key_id)
        if edge is None:
            raise Untrusted("unknown_key", opened.key_id[:16])
        if not verify_signature(edge.public_key,
                                _signed_bytes(topic, opened.sent, opened.body),
                                opened.signature):
            raise Untrusted("bad_signature", edge.name)
        age = (time.time() if now is None else now) - float(opened.sent)
        if abs(age) > self.max_age_s:
            raise Untrusted("stale", f"sent {age:.0f} s ago by {edge.name}")
        return opened.body, edge

    @staticmethod
    def check_scope(edge: TrustedEdge | None, site: str, asset: str, topic: str,
                    *, drift: bool = False) -> None:
        """:class:`Untrusted` (``out_of_scope``) unless ``edge`` may speak for
        ``site/asset`` and the alert names the topic it came on."""
        if not topic.endswith(f"/{site}/{asset}"):
            raise Untrusted("out_of_scope", f"alert for {site}/{asset} on topic {topic}")
        if edge is None:
            return
        if site not in edge.sites and not (drift and site == "_edge"):
            raise Untrusted("out_of_scope", f"{edge.name} may not speak for site {site}")
        if edge.assets and asset not in edge.assets and not drift:
            raise Untrusted("out_of_scope", f"{edge.name} may not speak for asset {asset}")

    def _by_id(self) -> dict[str, TrustedEdge]:
        if self._ids is None:
            self._ids = {e.key_id: e for e in self.edges}
        return self._ids

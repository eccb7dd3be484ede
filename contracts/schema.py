"""Wire types shared by edge and engine: telemetry readings in, alerts out, alert ids.

Both are pydantic models so that every producer and consumer (edge runtime, workflow
engine, tests, third-party publishers) validates the same contract.
"""

from __future__ import annotations

import itertools
import operator
import struct
import uuid
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from .errors import PayloadError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_READINGS_PER_MESSAGE",
    "MAX_VALUE",
    "Alert",
    "ChannelSummary",
    "Reading",
    "SampleDecoder",
    "Severity",
    "WireReading",
    "alert_id_for",
    "decode_readings",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: The largest magnitude a reading's value may have: beyond it window features overflow
#: float32 and a score turns infinite (1e12: a terawatt-hour in Wh)
MAX_VALUE = 1e12
Value = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_VALUE, le=MAX_VALUE)]
Severity = Literal["warning", "major", "critical"]

#: Upper bound on readings in one batched message: a larger message is rejected whole
#: rather than let one publisher stall the loop.
MAX_READINGS_PER_MESSAGE = 10_000
#: Upper bound on one telemetry message, checked before decoding.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


class Reading(BaseModel):
    """One sample of an asset's channels: ``{"ts": 1700000000.0, "values": {"rpm": 1500}}``.

    In a batch, a reading may name its own ``asset`` (readings of several assets in one
    message); otherwise the asset is the last level of the topic.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: FiniteFloat = Field(gt=0, description="Sample time, seconds since the Unix epoch.")
    values: dict[str, Value] = Field(
        min_length=1, description="Channel name to numeric value (|value| <= 1e12)."
    )
    asset: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^/+#\x00]+$",
                              description="Asset of this reading, if not the topic's "
                                          "(one topic level: no '/', '+' or '#').")


#: the wire's sample time and value, as msgspec checks them (:class:`Reading`'s bounds)
_WireTs = Annotated[float, msgspec.Meta(gt=0)]
_WireValue = Annotated[float, msgspec.Meta(ge=-MAX_VALUE, le=MAX_VALUE)]


class WireReading(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The decoder's view of :class:`Reading` (same contract, decoded in C by msgspec:
    the hot path of the edge runtime; pydantic's model is the documented schema)."""

    ts: _WireTs
    values: Annotated[dict[str, _WireValue], msgspec.Meta(min_length=1)]
    asset: Annotated[str, msgspec.Meta(min_length=1, max_length=128,
                                       pattern=r"^[^/+#\x00]+$")] | None = None


_decoder = msgspec.json.Decoder(WireReading | list[WireReading])


def decode_readings(payload: bytes | str, *, topic: str = "") -> list[WireReading]:
    """Decode one telemetry message (a reading, or a list of readings).

    Raises :class:`PayloadError` with a short ``reason`` (``too_large``, ``not_json``,
    ``invalid``, ``empty_batch``, ``batch_too_large``) and a human-readable detail.
    JSON has no NaN or infinity; a number too large for a double is ``invalid``.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too_large", f"{len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}",
                           topic=topic)
    try:
        decoded = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise PayloadError("invalid", str(exc), topic=topic) from None
    except msgspec.DecodeError as exc:
        raise PayloadError("not_json", str(exc), topic=topic) from None
    if isinstance(decoded, WireReading):
        return [decoded]
    if not decoded:
        raise PayloadError("empty_batch", "a batch must hold at least one reading", topic=topic)
    if len(decoded) > MAX_READINGS_PER_MESSAGE:
        raise PayloadError(
            "batch_too_large",
            f"{len(decoded)} readings in one message, at most {MAX_READINGS_PER_MESSAGE}",
            topic=topic,
        )
    return decoded


#: the rows of :meth:`SampleDecoder.decode`
Rows = list[tuple[float, ...]] | npt.NDArray[np.float64]
_VALUES = operator.attrgetter("values")


class SampleDecoder:
    """The common message of one model's edge, decoded without a dict per reading.

    ``decode(payload)`` returns ``(ts, rows)`` - the readings' times and their values as
    tuples in ``channels`` order - when every reading carries exactly ``channels`` and no
    ``asset``: values land in a struct made for those channels, checked in C as
    :class:`WireReading` checks them. Any other message (a channel missing or extra, an
    asset named, anything invalid) gives ``None``: :func:`decode_readings` then decodes
    it, or says what is wrong. The inputs it accepts are a subset of what
    :func:`decode_readings` accepts, with the same times and values.
    """

    def __init__(self, channels: list[str]) -> None:
        # field names are identifiers; the wire names (any string) are renames
        names = [f"c{i}" for i in range(len(channels))]
        values = msgspec.defstruct("Values", [(n, _WireValue) for n in names],
                                   rename=dict(zip(names, channels, strict=True)),
                                   forbid_unknown_fields=True, frozen=True, gc=False)
        reading = msgspec.defstruct("Sample", [("ts", _WireTs), ("values", values)],
                                    forbid_unknown_fields=True, frozen=True, gc=False)
        self._decoder = msgspec.json.Decoder(reading | list[reading])  # type: ignore[valid-type]
        self._astuple = msgspec.structs.astuple
        self._width = len(channels)

    def decode(self, payload: bytes) -> tuple[list[float], Rows] | None:
        """``(ts, rows)``: ``rows`` a list of one tuple for a single reading (an object),
        a read-only ``[n, channels]`` float64 array for a batch (a list)."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            return None
        try:
            decoded = self._decoder.decode(payload)
        except msgspec.MsgspecError:  # not this shape, or not valid: decode_readings says
            return None
        if not isinstance(decoded, list):
            return [decoded.ts], [self._astuple(decoded.values)]
        n = len(decoded)
        if not n or n > MAX_READINGS_PER_MESSAGE:
            return None
        # packed as C doubles, read back as an array: a third cheaper than numpy taking
        # the 8n Python floats one by one
        flat = struct.pack(f"{n * self._width}d", *itertools.chain.from_iterable(
            map(self._astuple, map(_VALUES, decoded))))
        return [r.ts for r in decoded], np.frombuffer(flat, dtype=np.float64).reshape(n, -1)


class ChannelSummary(BaseModel):
    """Condensed statistics of one channel over the window that raised an alert."""

    model_config = ConfigDict(frozen=True)

    mean: float
    min: float
    max: float
    last: float
    slope_per_min: float = Field(description="Least-squares trend, units per minute.")
    z: float = Field(description="Window mean in training standard deviations from normal.")
    contribution: float = Field(
        0.0, description="Share of the anomaly (residual energy) carried by this channel.")
    deviation: float = Field(
        0.0, description="Unexplained part of the window mean, in training deviations: "
                         "positive means higher than normal operation explains.")


class Alert(BaseModel):
    """An anomaly episode on one asset, as published on ``aiotflow/alerts/{site}/{asset}``.

    It carries the embedding and summary statistics of the window, never the raw stream.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable id: the same episode always gets the same id.")
    site: str
    asset: str
    ts: float = Field(description="Time of the window that opened the episode (epoch s).")
    episode_start: float = Field(description="Time of the first anomalous window.")
    severity: Severity
    score: float
    threshold: float
    embedding: list[float]
    summary: dict[str, ChannelSummary]
    baseline: dict[str, float] = Field(
        default_factory=dict, description="The asset's operating point: channel levels of "
                                          "its normal operation before the episode (EWMA).")
    model_name: str
    model_version: str
    asset_type: str = "generator"
    kind: Literal["anomaly", "model_drift"] = Field(
        "anomaly", description="anomaly: an asset's episode; model_drift: the model's score "
                               "distribution moved away from training.")
    detail: dict[str, Any] = Field(default_factory=dict, description="Kind-specific data.")
    traceparent: str | None = Field(
        None, pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description="W3C trace context of the alert's trace, started by the edge at "
                    "detection and continued by the engine through every step.")

    @property
    def topic_suffix(self) -> str:
        """``{site}/{asset}``, the tail of the alert topic."""
        return f"{self.site}/{self.asset}"


_ALERT_NS = uuid.UUID("6f1d2b1e-3a55-4c1f-9d0e-5b8a7c2e4f10")


def alert_id_for(site: str, asset: str, episode_start: float, model_version: str) -> str:
    """Deterministic alert id, so a re-detected episode maps to the same workflow thread."""
    key = f"{site}/{asset}/{round(episode_start, 3)}/{model_version}"
    return str(uuid.uuid5(_ALERT_NS, key))

import math
import random

import orjson
import pytest

from aiotflow.contracts.schema import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    Alert,
    SampleDecoder,
    alert_id_for,
    decode_readings,
)
from aiotflow.edge.errors import PayloadError


def test_single_reading() -> None:
    [r] = decode_readings(b'{"ts": 1700000000.5, "values": {"rpm": 1500, "temp": 80.5}}')
    assert r.ts == 1700000000.5
    assert r.values == {"rpm": 1500.0, "temp": 80.5}


def test_batch_of_readings() -> None:
    body = orjson.dumps([{"ts": 1.0 + i, "values": {"a": i}} for i in range(50)])
    out = decode_readings(body)
    assert [r.values["a"] for r in out] == list(range(50))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not_json"),
        (b"", "not_json"),
        (b'{"ts": 1, "values": {}}', "invalid"),
        (b'{"ts": -5, "values": {"a": 1}}', "invalid"),
        (b'{"ts": 1, "values": {"a": "hot"}}', "invalid"),
        (b'{"ts": 1, "values": {"a": NaN}}', "not_json"),
        (b'{"ts": 1, "values": {"a": 1}, "extra": 2}', "invalid"),
        (b'{"values": {"a": 1}}', "invalid"),
        (b"[]", "empty_batch"),
        (b'"just a string"', "invalid"),
    ],
)
def test_bad_payloads_have_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_readings(payload, topic="t")
    assert info.value.reason == reason
    assert info.value.detail


def test_infinite_values_rejected() -> None:
    with pytest.raises(PayloadError):
        decode_readings(b'{"ts": 1, "values": {"a": 1e999}}')


def test_batch_too_large() -> None:
    body = orjson.dumps([{"ts": 1.0 + i, "values": {"a": 1}}
                         for i in range(MAX_READINGS_PER_MESSAGE + 1)])
    with pytest.raises(PayloadError) as info:
        decode_readings(body)
    assert info.value.reason == "batch_too_large"


def test_alert_ids_are_stable() -> None:
    a = alert_id_for("s", "gen-1", 1700000000.123, "v1")
    assert a == alert_id_for("s", "gen-1", 1700000000.123, "v1")
    assert a != alert_id_for("s", "gen-2", 1700000000.123, "v1")
    assert a != alert_id_for("s", "gen-1", 1700000001.0, "v1")


def test_alert_round_trip() -> None:
    alert = Alert(id="x", site="s", asset="a", ts=1.0, episode_start=0.5, severity="major",
                  score=8.0, threshold=3.0, embedding=[0.1, -0.2], summary={},
                  model_name="m", model_version="1")
    again = Alert.model_validate_json(alert.model_dump_json())
    assert again == alert
    assert again.topic_suffix == "s/a"
    assert not math.isnan(again.score)


CHANNELS = ["rpm", "temp", "flow rate/ℓ"]


def _mutations(rng: random.Random) -> bytes:
    """A message in or near the common shape: valid, or broken in one of many ways."""
    n = rng.choice([1, 1, 2, 5])
    readings: list[dict[str, object]] = []
    for i in range(n):
        values: dict[str, object] = {c: rng.choice([0, 1, -2.5, 1e12, 1e11, 3.25, rng.random()])
                                     for c in CHANNELS}
        reading: dict[str, object] = {"ts": rng.choice([1.0 + i, 1700000000 + i, 0.5 + i]),
                                      "values": values}
        roll = rng.random()
        if roll < 0.1:
            del values[rng.choice(CHANNELS)]
        elif roll < 0.2:
            values["other"] = 1.0
        elif roll < 0.3:
            reading["asset"] = "pump-2"
        elif roll < 0.4:
            values[rng.choice(CHANNELS)] = rng.choice([2e12, -1e13, "hot", None, True])
        elif roll < 0.45:
            reading["ts"] = rng.choice([0, -1, "now"])
        elif roll < 0.5:
            reading["extra"] = 1
        readings.append(reading)
    body = orjson.dumps(readings[0] if n == 1 and rng.random() < 0.5 else readings)
    if rng.random() < 0.05:
        body = body[: rng.randrange(len(body))]
    return body


def test_sample_decoder_agrees_with_decode_readings() -> None:
    decoder = SampleDecoder(CHANNELS)
    rng = random.Random(15)
    taken = refused = 0
    for _ in range(3000):
        body = _mutations(rng)
        fast = decoder.decode(body)
        if fast is None:
            refused += 1
            continue
        taken += 1
        ts, rows = fast
        slow = decode_readings(body)  # whatever the fast path takes, the contract takes
        assert ts == [r.ts for r in slow]
        assert isinstance(rows, list) == body.lstrip().startswith(b"{")
        assert [tuple(r) for r in rows] == [tuple(r.values[c] for c in CHANNELS) for r in slow]
        assert all(r.asset is None and len(r.values) == len(CHANNELS) for r in slow)
    assert taken > 500 and refused > 500  # both sides of the boundary were exercised


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ts": 1, "values": {"rpm": 1, "temp": 2}}',  # a channel missing
        b'{"ts": 1, "values": {"rpm": 1, "temp": 2, "flow rate/\xe2\x84\x93": 3, "x": 4}}',
        b'{"ts": 1, "values": {"rpm": 1, "temp": 2, "flow rate/\xe2\x84\x93": 3}, "asset": "p"}',
        b'{"ts": 1, "values": {"rpm": 1, "temp": 2e12, "flow rate/\xe2\x84\x93": 3}}',
        b'{"ts": 1, "values": {"rpm": 1, "temp": NaN, "flow rate/\xe2\x84\x93": 3}}',
        b"[]",
        b"{not json",
    ],
)
def test_sample_decoder_leaves_the_rest_to_decode_readings(payload: bytes) -> None:
    assert SampleDecoder(CHANNELS).decode(payload) is None


def test_sample_decoder_bounds() -> None:
    decoder = SampleDecoder(["a"])
    ok = [{"ts": 1.0 + i, "values": {"a": i}} for i in range(MAX_READINGS_PER_MESSAGE)]
    result = decoder.decode(orjson.dumps(ok))
    assert result is not None and len(result[0]) == MAX_READINGS_PER_MESSAGE
    too_many = [*ok, {"ts": 1e9, "values": {"a": 0}}]
    assert decoder.decode(orjson.dumps(too_many)) is None
    assert decoder.decode(b" " * (MAX_PAYLOAD_BYTES + 1) + b"[]") is None

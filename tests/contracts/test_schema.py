import math

import orjson
import pytest

from aiotflow.contracts.schema import MAX_READINGS_PER_MESSAGE, Alert, alert_id_for, decode_readings
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

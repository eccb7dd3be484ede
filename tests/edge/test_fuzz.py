"""Property-based: whatever arrives, the runtime never crashes, counts every rejection by
reason, dead-letters it, and never puts a non-finite value into a window."""

import json
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotflow.contracts.schema import MAX_PAYLOAD_BYTES
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.config import EdgeSettings
from aiotflow.edge.runtime import EdgeRuntime

CH = ["load_pct", "coolant_temp_c", "oil_pressure_bar", "vibration_mm_s", "current_a",
      "exhaust_temp_c", "rpm", "fuel_rate_lph"]

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                    st.booleans(), st.none(), st.text(max_size=5))
values = st.dictionaries(st.sampled_from([*CH, "junk"]), numbers, max_size=9)
good_values = st.fixed_dictionaries({c: st.floats(-1e6, 1e6) for c in CH})
reading = st.fixed_dictionaries(
    {"ts": st.one_of(st.floats(allow_nan=False), st.integers(-5, 2**40), st.text(max_size=3)),
     "values": st.one_of(values, good_values)},
    optional={"asset": st.one_of(st.text(max_size=4), st.integers()), "x": st.integers()})
json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=8)),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(
                              st.text(max_size=4), c, max_size=4), max_leaves=12)


def encode(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # may write NaN / Infinity: not JSON


payloads = st.one_of(
    st.binary(max_size=200),
    json_value.map(encode),
    reading.map(encode),
    st.lists(reading, max_size=30).map(encode),
    good_values.map(lambda v: encode({"ts": 5.0, "values": v})),  # duplicate timestamps
)
topics = st.one_of(st.just("aiotflow/telemetry/plant-1/gen-001"),
                   st.sampled_from(["aiotflow/telemetry/plant-1/gen-002", "x", "/",
                                    "aiotflow/telemetry//gen-1", "aiotflow/telemetry/p/"]),
                   st.text(max_size=20))


def runtime(bundle: ModelBundle, tmp: Path) -> EdgeRuntime:
    s = EdgeSettings(model=bundle.path, mqtt={"url": "mqtt://127.0.0.1:1"}, outbox=tmp / "o.db")
    return EdgeRuntime(s, bundle=bundle)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(topics, payloads), min_size=1, max_size=25))
def test_nothing_crashes_and_every_rejection_is_counted(
    bundle: ModelBundle, tmp_path_factory, messages: list[tuple[str, bytes]]  # type: ignore[no-untyped-def]
) -> None:
    rt = runtime(bundle, tmp_path_factory.mktemp("fuzz"))
    # a clean history first, so later messages exercise windows, ordering and imputation
    for k in range(35):
        rt.handle("aiotflow/telemetry/plant-1/gen-001",
                  encode({"ts": 1.0 + k, "values": {c: 1.0 + k % 3 for c in CH}}))
    before = rt.stats.readings_received
    for topic, payload in messages:
        rt.handle(topic, payload)
    st_ = rt.stats
    assert st_.messages_received == 35 + len(messages)
    assert st_.invalid == sum(st_.invalid_reasons.values()) == len(rt._dead)
    assert st_.readings_received - before + st_.invalid >= 0
    for letter in rt._dead:
        body = json.loads(letter[2])
        assert body["reason"] and body["detail"]
        assert body["payload"] is not None or body["payload_base64"] is not None
    pending = rt.pending_windows()
    for _site, _asset, ts, window in pending:
        assert math.isfinite(ts) and np.isfinite(window).all()
    if pending:
        _, scores = bundle.score_windows(np.stack([d[3] for d in pending]))
        assert np.isfinite(scores).all()


def test_huge_payload_is_rejected_before_decoding(bundle: ModelBundle, tmp_path: Path) -> None:
    rt = runtime(bundle, tmp_path)
    rt.handle("aiotflow/telemetry/plant-1/gen-001", b"[" + b"1," * (MAX_PAYLOAD_BYTES // 2) + b"1]")
    assert rt.stats.invalid_reasons == {"too_large": 1}
    assert len(rt._dead) == 1  # kept whole for inspection, nothing lost


def test_out_of_order_and_duplicates_within_a_batch(bundle: ModelBundle, tmp_path: Path) -> None:
    rt = runtime(bundle, tmp_path)
    v = {c: 1.0 for c in CH}
    batch = [{"ts": 10.0, "values": v}, {"ts": 11.0, "values": v}, {"ts": 11.0, "values": v},
             {"ts": 9.0, "values": v}, {"ts": 12.0, "values": v, "asset": "gen-009"}]
    rt.handle("aiotflow/telemetry/plant-1/gen-001", encode(batch))
    assert rt.stats.readings_received == 3
    assert rt.stats.invalid_reasons == {"out_of_order": 2}
    letters = [json.loads(d[2]) for d in rt._dead]
    assert [json.loads(x["payload"])["ts"] for x in letters] == [11.0, 9.0]  # only the bad ones
    assert rt.buffer.last_ts("plant-1/gen-009") == 12.0  # multi-asset batch routed by asset


def test_batch_asset_names_must_be_one_topic_level(bundle: ModelBundle, tmp_path: Path) -> None:
    rt = runtime(bundle, tmp_path)
    v = {c: 1.0 for c in CH}
    for bad in ("a/b", "gen+", "#", ""):
        rt.handle("aiotflow/telemetry/plant-1/gen-001",
                  encode([{"ts": 10.0, "values": v, "asset": bad}]))
    assert rt.stats.invalid_reasons == {"invalid": 4} and rt.stats.readings_received == 0


def test_values_too_large_to_score_are_refused_and_large_ones_score_finitely(
    bundle: ModelBundle, tmp_path: Path
) -> None:
    """Hypothesis found it: a finite 1e30 overflowed float32 features into an infinite score."""
    rt = runtime(bundle, tmp_path)
    for k in range(40):
        big = 1e12 if k % 2 else -1e12  # the largest allowed, swinging: the worst case
        rt.handle("aiotflow/telemetry/plant-1/gen-001",
                  encode({"ts": 1.0 + k, "values": {c: big for c in CH}}))
    rt.handle("aiotflow/telemetry/plant-1/gen-001",
              encode({"ts": 99.0, "values": {c: 1e30 for c in CH}}))
    assert rt.stats.invalid_reasons == {"invalid": 1}
    pending = rt.pending_windows()
    assert pending
    _, scores = bundle.score_windows(np.stack([d[3] for d in pending]))
    assert np.isfinite(scores).all()

from pathlib import Path

import numpy as np
import onnx
import pytest

from aiotflow.edge.bundle import META_KEY, ModelBundle
from aiotflow.edge.errors import BundleError, ConfigError
from aiotflow.edge.features import WindowBuffer, feature_names, make_windows, window_features
from aiotflow.simulator.fleet import CHANNELS, Fleet, parse_fault
from aiotflow.training.detectors import PCAResidualDetector, to_onnx_bytes
from aiotflow.training.train import load_csv, train_bundle


def test_features_match_definitions() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 10, 3))
    f = window_features(w, ["mean", "std", "min", "max", "last", "slope"])
    assert f.shape == (4, 18)
    np.testing.assert_allclose(f[:, 0:3], w.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(f[:, 3:6], w.std(axis=1), rtol=1e-5)
    np.testing.assert_allclose(f[:, 12:15], w[:, -1, :], rtol=1e-5)
    slope = np.array([[np.polyfit(np.arange(10), w[b, :, c], 1)[0] for c in range(3)]
                      for b in range(4)])
    np.testing.assert_allclose(f[:, 15:18], slope, rtol=1e-4, atol=1e-6)
    assert feature_names(["a", "b"], ["mean", "std"]) == ["a:mean", "b:mean", "a:std", "b:std"]


@pytest.mark.parametrize("spec", [["mean", "max"], ["std", "slope"]])
def test_features_give_the_windows_means_in_float64(spec: list[str]) -> None:
    """What the runtime folds into the operating point: the same as ``mean`` over the
    window's time axis, in either layout, whether or not ``mean`` is a feature."""
    rng = np.random.default_rng(2)
    w = 1e6 + rng.normal(size=(5, 12, 3))  # float32 would lose these decimals
    expected = w.mean(axis=1)
    for windows, time_major in ((w, False), (np.ascontiguousarray(w.transpose(1, 0, 2)), True)):
        means = np.full((5, 3), np.nan)
        f = window_features(windows, spec, time_major=time_major, means=means)
        np.testing.assert_array_equal(means, expected)
        np.testing.assert_array_equal(f, window_features(w, spec))
    strided = np.full((3, 5), np.nan).T  # not contiguous: filled all the same
    window_features(w, spec, means=strided)
    np.testing.assert_array_equal(strided, expected)
    with pytest.raises(ValueError):
        window_features(w, spec, means=np.empty((3, 5)))


def full(i: int) -> dict[str, float]:
    return {"a": float(i), "b": -float(i)}


def test_window_buffer_hop() -> None:
    buf = WindowBuffer(["a", "b"], length=3, hop=2)
    r = buf.ring("x")
    assert r is not None
    due = [buf.push(r, float(i), full(i) | {"ignored": 1.0}) for i in range(7)]
    assert due == [False, False, True, False, True, False, True]
    np.testing.assert_array_equal(buf.window(r), [[4, -4], [5, -5], [6, -6]])
    assert buf.last_ts("x") == 6.0 and buf.last_ts("y") is None


def test_short_gaps_are_carried_forward_long_gaps_skip_windows() -> None:
    buf = WindowBuffer(["a", "b"], length=4, hop=1, max_impute=2)
    r = buf.ring("x")
    assert r is not None
    assert [buf.push(r, i, full(i)) for i in range(4)] == [False, False, False, True]
    assert buf.push(r, 4, {"a": 4.0}) and buf.push(r, 5, {"a": 5.0})  # within the limit
    np.testing.assert_array_equal(buf.window(r)[:, 1], [-2, -3, -3, -3])
    assert not buf.push(r, 6, {"a": 6.0})  # third missing sample: beyond the limit
    assert [buf.push(r, i, full(i)) for i in range(7, 11)] == [False, False, False, True]
    np.testing.assert_array_equal(buf.window(r)[:, 0], [7, 8, 9, 10])  # gap has left
    assert buf.imputed == 3 and buf.skipped == 4


def test_channel_never_received_is_never_invented() -> None:
    buf = WindowBuffer(["a", "b"], length=3, hop=1)
    r = buf.ring("x")
    assert r is not None
    assert not any(buf.push(r, i, {"a": float(i)}) for i in range(5))
    assert [buf.push(r, i, full(i)) for i in range(5, 8)] == [False, False, True]
    np.testing.assert_array_equal(buf.window(r), [[5, -5], [6, -6], [7, -7]])


@pytest.mark.parametrize(("length", "hop", "seed"), [(7, 3, 3), (5, 1, 4), (4, 6, 5), (30, 2, 6)])
def test_a_block_of_samples_is_pushed_as_one_by_one(length: int, hop: int, seed: int) -> None:
    """``push_many`` (a batched message) and ``push`` (one sample at a time) see the same
    windows due, the same skips and leave the same ring, gaps and warm-up included."""
    rng = np.random.default_rng(seed)
    # complete samples, then a long gap in "b", then complete again: blocks cross both
    samples: list[dict[str, float]] = []
    for i in range(400):
        v = {"a": float(i), "b": float(rng.normal())}
        if 120 <= i < 126 or (i % 97 == 5):
            del v["b"]
        samples.append(v)
    one, many = (WindowBuffer(["a", "b"], length=length, hop=hop, max_impute=2)
                 for _ in range(2))
    r1, r2 = one.ring("x"), many.ring("x")
    assert r1 is not None and r2 is not None
    expected = []
    for i, v in enumerate(samples):
        if one.push(r1, float(i), v):
            expected.append((i, one.window(r1)))
    got: list[tuple[int, np.ndarray]] = []
    i = 0
    while i < len(samples):
        n = int(rng.integers(1, 25))
        block = samples[i:i + n]
        if all("b" in v for v in block):
            rows = np.array([[v["a"], v["b"]] for v in block])
            due, ext = many.push_many(r2, float(i + len(block) - 1), rows)
            got += [(i + j, ext[j + 1:j + 1 + length]) for j in due]
        else:
            got += [(i + j, many.window(r2)) for j, v in enumerate(block)
                    if many.push(r2, float(i + j), v)]
        i += len(block)
    assert [g[0] for g in got] == [e[0] for e in expected] and len(got) > 40
    for (_, w), (_, e) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(w, e)
    assert (many.skipped, many.imputed) == (one.skipped, one.imputed) and one.skipped > 0
    # the same rows in window order (push_many leaves the oldest at row 0, push anywhere)
    np.testing.assert_array_equal(many.window(r2), one.window(r1))
    assert (r2.count, r2.since, r2.blocked, list(r2.last), r2.last_ts) == (
        r1.count, r1.since, r1.blocked, list(r1.last), r1.last_ts)


@pytest.mark.parametrize("embedding", ["residual", "standardised"])
def test_onnx_matches_scikit_learn(embedding: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12))
    x[:, 1] = 2 * x[:, 0] + 0.1 * x[:, 1]
    det = PCAResidualDetector(embedding=embedding).fit(x)
    import onnxruntime as ort

    sess = ort.InferenceSession(to_onnx_bytes(det, 12), providers=["CPUExecutionProvider"])
    emb, score = sess.run(["embedding", "score"], {"features": x[:50].astype(np.float32)})
    np.testing.assert_allclose(emb, det.embed(x[:50]), atol=1e-4)
    np.testing.assert_allclose(score, det.score_samples(x[:50]), rtol=1e-4, atol=1e-4)
    if embedding == "standardised":  # how many training spreads each feature moved
        np.testing.assert_allclose(emb, (x[:50] - x.mean(0)) / x.std(0), atol=1e-3)


def test_bundle_round_trip_and_detection(bundle: ModelBundle) -> None:
    meta = bundle.meta
    assert meta.channels == list(CHANNELS)
    assert meta.threshold > 0 and meta.version == "test"
    fleet = Fleet(2, seed=77, faults=[parse_fault("gen-002:bearing_wear@60", ramp=30)])
    series = fleet.matrix(180, meta.sample_rate_hz)
    healthy = make_windows(series["gen-001"], meta.window, meta.hop)
    faulty = make_windows(series["gen-002"], meta.window, meta.hop)
    _, s_ok = bundle.score_windows(healthy)
    emb, s_bad = bundle.score_windows(faulty)
    assert (s_ok < meta.threshold).all()
    assert (s_bad[-20:] > meta.threshold).all()
    summary = bundle.summarize(faulty[-1], emb[-1])
    assert abs(sum(s.contribution for s in summary.values()) - 1.0) < 1e-3
    top = max(summary, key=lambda c: summary[c].contribution)
    assert top == "vibration_mm_s" and summary[top].deviation > 0


def test_not_a_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BundleError):
        ModelBundle(junk)
    with pytest.raises(BundleError, match="no such"):
        ModelBundle(tmp_path / "missing.onnx")


def test_bundle_without_metadata(tmp_path: Path, bundle_path: Path) -> None:
    model = onnx.load(str(bundle_path))
    del model.metadata_props[:]
    p = tmp_path / "bare.onnx"
    onnx.save(model, str(p))
    with pytest.raises(BundleError, match=META_KEY):
        ModelBundle(p)


def test_train_from_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    csv = tmp_path / "normal.csv"
    rows = ["datetime;p1;p2"] + [f"2020-01-01 00:00:{i % 60:02d};{v[0]:.4f};{v[1]:.4f}"
                                 for i, v in enumerate(rng.normal(size=(400, 2)))]
    csv.write_text("\n".join(rows))
    chans, data = load_csv(csv, sep=";")
    assert chans == ["p1", "p2"] and data.shape == (400, 2)
    b = train_bundle([data], channels=chans, out=tmp_path / "m.onnx", window=20, hop=5,
                     sample_rate_hz=1.0, name="pump")
    assert b.meta.channels == ["p1", "p2"] and b.meta.name == "pump"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_csv(bad)


def test_autoencoder_onnx_matches_scikit_learn(tmp_path: Path) -> None:
    from aiotflow.training.detectors import AutoencoderDetector

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6))
    x[:, 1] = x[:, 0] * 0.5
    det = AutoencoderDetector(bottleneck=3, hidden=8).fit(x)
    import onnxruntime as ort

    sess = ort.InferenceSession(to_onnx_bytes(det, 6), providers=["CPUExecutionProvider"])
    emb, score = sess.run(["embedding", "score"], {"features": x[:40].astype(np.float32)})
    np.testing.assert_allclose(emb, det.embed(x[:40]), atol=1e-4)
    np.testing.assert_allclose(score, det.score_samples(x[:40]), rtol=1e-3, atol=1e-3)
    b = train_bundle([x], channels=list("abcdef"), out=tmp_path / "ae.onnx", window=5, hop=1,
                     sample_rate_hz=1.0, detector="autoencoder")
    assert b.score_windows(make_windows(x[:20], 5, 1))[1].shape == (16,)
    with pytest.raises(ConfigError):
        train_bundle([x], channels=list("abcdef"), out=tmp_path / "x.onnx", detector="magic")


def test_isolation_forest_onnx_matches_scikit_learn() -> None:
    from aiotflow.training.detectors import IsolationForestDetector

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4))
    det = IsolationForestDetector(n_estimators=20).fit(x)
    import onnxruntime as ort

    sess = ort.InferenceSession(to_onnx_bytes(det, 4), providers=["CPUExecutionProvider"])
    probe = np.vstack([x[:30], x[:5] + 6.0]).astype(np.float32)  # last five far outside
    emb, score = sess.run(["embedding", "score"], {"features": probe})
    np.testing.assert_allclose(score, det.score_samples(probe), atol=1e-4)
    np.testing.assert_allclose(emb, det.embed(probe), atol=1e-4)
    assert score[-5:].min() > 1.0 > np.median(score[:30])

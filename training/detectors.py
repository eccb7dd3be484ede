"""The default detector: PCA process monitoring (Hotelling T² + residual SPE).

It is a scikit-learn estimator with a skl2onnx converter, so ``aiotflow train`` fits it
with scikit-learn and exports it with skl2onnx. On standardised window features ``z``:

* ``embedding`` is the residual ``z - PCA reconstruction(z)``: the part of the window
  that normal operation does not explain. Windows of the same fault look alike here
  whatever the load, which is what makes similar-incident search work.
* ``score`` is ``SPE / spe_ref + T² / t2_ref``, both references being the 99th
  percentile on the training data, so a score near 1 is the edge of normal.

Any ONNX model with one float input ``[N, F]`` and outputs ``embedding [N, D]`` and
``score [N]`` meets the bundle contract; this is just the one we ship.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA

__all__ = [
    "DETECTOR_KINDS",
    "AutoencoderDetector",
    "IsolationForestDetector",
    "PCAResidualDetector",
    "to_onnx_bytes",
]


def _standardisation(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64],
                                                          npt.NDArray[np.float64]]:
    """Per-feature mean and scale of training features.

    A feature that never moved in training (a constant channel) must not make every tiny
    change look infinite: its scale is floored relative to its magnitude.
    """
    mean = x.mean(axis=0)
    return mean, np.maximum(x.std(axis=0), 1e-3 * np.abs(mean) + 1e-6)


class PCAResidualDetector(BaseEstimator):  # type: ignore[misc]
    """Unsupervised detector trained on normal windows only."""

    def __init__(self, variance: float = 0.95, max_components: int = 8,
                 embedding: str = "residual") -> None:
        self.variance = variance
        self.max_components = max_components
        self.embedding = embedding

    def fit(self, X: npt.ArrayLike, y: Any = None) -> PCAResidualDetector:
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 10:
            raise ValueError(f"need at least 10 training windows, got shape {x.shape}")
        if self.embedding not in ("residual", "standardised"):
            raise ValueError("embedding must be residual or standardised")
        self.mean_, self.scale_ = _standardisation(x)
        z = (x - self.mean_) / self.scale_
        probe = PCA().fit(z)
        cum = np.cumsum(probe.explained_variance_ratio_)
        k = int(min(self.max_components, np.searchsorted(cum, self.variance) + 1, z.shape[1]))
        self.pca_ = PCA(n_components=k).fit(z)
        self.spe_ref_ = 1.0
        self.t2_ref_ = 1.0
        spe, t2 = self._parts(x)
        self.spe_ref_ = float(np.percentile(spe, 99)) or 1.0
        self.t2_ref_ = float(np.percentile(t2, 99)) or 1.0
        return self

    def _parts(self, X: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        zc = z - self.pca_.mean_
        t = zc @ self.pca_.components_.T
        r = zc - t @ self.pca_.components_
        spe = (r * r).sum(axis=1)
        t2 = ((t / np.sqrt(self.pca_.explained_variance_)) ** 2).sum(axis=1)
        return spe, t2

    def embed(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The embedding of each row: the residual, or the standardised features.

        The residual suits one model shared by a fleet (its subspace is common to all
        assets); with one model per asset or recording, the standardised features - how
        many training spreads each feature moved - compare across models.
        """
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        zc = z - self.pca_.mean_
        if self.embedding == "standardised":
            return zc
        return zc - (zc @ self.pca_.components_.T) @ self.pca_.components_

    def score_samples(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Anomaly score of each row (higher is more anomalous; ~1 at the 99th pct)."""
        spe, t2 = self._parts(X)
        return spe / self.spe_ref_ + t2 / self.t2_ref_


def _shape_calculator(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    n = operator.inputs[0].get_first_dimension()
    f = operator.raw_operator.mean_.shape[0]
    operator.outputs[0].type = FloatTensorType([n, f])
    operator.outputs[1].type = FloatTensorType([n])


def _ops(scope: Any, container: Any) -> tuple[Any, Any]:
    """``const(name, value)`` and ``node(kind, inputs, out=None, **attrs)`` helpers."""

    def const(name: str, value: npt.ArrayLike, dtype: int = TensorProto.FLOAT) -> str:
        arr = np.asarray(value)
        full = scope.get_unique_variable_name(name)
        container.add_initializer(full, dtype, list(arr.shape), arr.ravel().tolist())
        return full

    def node(kind: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or scope.get_unique_variable_name(kind.lower())
        container.add_node(kind, inputs, [out], name=scope.get_unique_operator_name(kind), **attrs)
        return out

    return const, node


def _converter(scope: Any, operator: Any, container: Any) -> None:
    op: PCAResidualDetector = operator.raw_operator
    x = operator.inputs[0].full_name
    emb_out = operator.outputs[0].full_name
    score_out = operator.outputs[1].full_name
    const, node = _ops(scope, container)

    comps = op.pca_.components_.astype(np.float32)
    # Fold standardisation and PCA centring into one affine map: zc = x * a - b.
    a = (1.0 / op.scale_).astype(np.float32)
    b = (op.mean_ / op.scale_ + op.pca_.mean_).astype(np.float32)
    zc = node("Sub", [node("Mul", [x, const("a", a)]), const("b", b)])
    t = node("MatMul", [zc, const("pT", comps.T)])
    if op.embedding == "standardised":
        resid = node("Sub", [zc, node("MatMul", [t, const("p", comps)])])
        node("Identity", [zc], emb_out)
    else:
        resid = node("Sub", [zc, node("MatMul", [t, const("p", comps)])], emb_out)
    axes = const("axes", np.array([1], dtype=np.int64), TensorProto.INT64)
    spe = node("ReduceSum", [node("Mul", [resid, resid]), axes], keepdims=0)
    inv_sd = (1.0 / np.sqrt(op.pca_.explained_variance_)).astype(np.float32)
    tw = node("Mul", [t, const("w", inv_sd)])
    t2 = node("ReduceSum", [node("Mul", [tw, tw]), axes], keepdims=0)
    node(
        "Add",
        [
            node("Mul", [spe, const("ks", np.float32(1.0 / op.spe_ref_))]),
            node("Mul", [t2, const("kt", np.float32(1.0 / op.t2_ref_))]),
        ],
        score_out,
    )


def _parser(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
    from skl2onnx import get_model_alias
    from skl2onnx.common.data_types import FloatTensorType

    operator = scope.declare_local_operator(get_model_alias(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("embedding", FloatTensorType()))
    operator.outputs.append(scope.declare_local_variable("score", FloatTensorType()))
    return operator.outputs


class AutoencoderDetector(BaseEstimator):  # type: ignore[misc]
    """A small MLP autoencoder (scikit-learn) on standardised window features.

    ``embedding`` is the reconstruction residual, ``score`` its squared norm over the
    99th percentile of the training residuals (so ~1 is the edge of normal, as for PCA).
    """

    def __init__(self, bottleneck: int = 4, hidden: int = 16, seed: int = 0) -> None:
        self.bottleneck = bottleneck
        self.hidden = hidden
        self.seed = seed

    def fit(self, X: npt.ArrayLike, y: Any = None) -> AutoencoderDetector:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        x = np.asarray(X, dtype=np.float64)
        self.mean_, self.scale_ = _standardisation(x)
        z = (x - self.mean_) / self.scale_
        width = min(self.bottleneck, max(1, z.shape[1] - 1))
        mlp = MLPRegressor(hidden_layer_sizes=(self.hidden, width, self.hidden),
                           activation="tanh", max_iter=2000, tol=1e-5, random_state=self.seed)
        with warnings.catch_warnings():
            # a small training set rarely meets tol; the residual threshold absorbs it
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp_ = mlp.fit(z, z)
        r = z - self.mlp_.predict(z)
        self.spe_ref_ = float(np.percentile((r * r).sum(axis=1), 99)) or 1.0
        return self

    def embed(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return np.asarray(z - self.mlp_.predict(z))

    def score_samples(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r = self.embed(X)
        return np.asarray((r * r).sum(axis=1) / self.spe_ref_)


def _converter_ae(scope: Any, operator: Any, container: Any) -> None:
    op: AutoencoderDetector = operator.raw_operator
    const, node = _ops(scope, container)
    x = operator.inputs[0].full_name
    a = (1.0 / op.scale_).astype(np.float32)
    b = (op.mean_ / op.scale_).astype(np.float32)
    z = node("Sub", [node("Mul", [x, const("a", a)]), const("b", b)])
    h = z
    layers = list(zip(op.mlp_.coefs_, op.mlp_.intercepts_, strict=True))
    for i, (w, c) in enumerate(layers):
        h = node("Add", [node("MatMul", [h, const("w", w.astype(np.float32))]),
                         const("c", c.astype(np.float32))])
        if i < len(layers) - 1:
            h = node("Tanh", [h])
    resid = node("Sub", [z, h], operator.outputs[0].full_name)
    axes = const("axes", np.array([1], dtype=np.int64), TensorProto.INT64)
    spe = node("ReduceSum", [node("Mul", [resid, resid]), axes], keepdims=0)
    node("Mul", [spe, const("k", np.float32(1.0 / op.spe_ref_))], operator.outputs[1].full_name)


class IsolationForestDetector(BaseEstimator):  # type: ignore[misc]
    """Isolation Forest (scikit-learn) on window features.

    ``embedding`` is the standardised feature vector; ``score`` is the forest's anomaly
    score rescaled so that the training median maps to 0 and its 99th percentile to 1.
    The forest is fitted on raw features: its random splits are uniform between a node's
    bounds, so standardising first would not change it.
    """

    def __init__(self, n_estimators: int = 100, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.seed = seed

    def fit(self, X: npt.ArrayLike, y: Any = None) -> IsolationForestDetector:
        from sklearn.ensemble import IsolationForest

        x = np.asarray(X, dtype=np.float64)
        self.mean_, self.scale_ = _standardisation(x)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators,
                                       random_state=self.seed).fit(x)
        s = -self.forest_.score_samples(x)
        self.median_ = float(np.median(s))
        self.p99_ = float(np.percentile(s, 99))
        if self.p99_ <= self.median_:
            self.p99_ = self.median_ + 1e-6
        return self

    def embed(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def score_samples(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        s = -self.forest_.score_samples(np.asarray(X, dtype=np.float64))
        return np.asarray((s - self.median_) / (self.p99_ - self.median_))


def _converter_if(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxIdentity, OnnxMul, OnnxReshape, OnnxSub

    op: IsolationForestDetector = operator.raw_operator
    opv = container.target_opset
    x = operator.inputs[0]
    f32 = np.float32
    z = OnnxSub(OnnxMul(x, (1.0 / op.scale_).astype(f32), op_version=opv),
                (op.mean_ / op.scale_).astype(f32), op_version=opv)
    emb = OnnxIdentity(z, op_version=opv, output_names=[operator.outputs[0].full_name])
    # the forest's second output is decision_function = score_samples - offset_, so
    # (-score_samples - median) / (p99 - median) = (decision + offset + median) * k
    decision = OnnxSubEstimator(op.forest_, x, op_version=opv)[1]
    k = f32(-1.0 / (op.p99_ - op.median_))
    shifted = OnnxAdd(decision, np.array([op.forest_.offset_ + op.median_], dtype=f32),
                      op_version=opv)
    score = OnnxReshape(OnnxMul(shifted, np.array([k], dtype=f32), op_version=opv),
                        np.array([-1], dtype=np.int64), op_version=opv,
                        output_names=[operator.outputs[1].full_name])
    emb.add_to(scope, container)
    score.add_to(scope, container)


_registered = False


def to_onnx_bytes(detector: BaseEstimator, n_features: int) -> bytes:
    """Convert a fitted detector with skl2onnx; outputs are ``embedding`` and ``score``."""
    global _registered
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import FloatTensorType

    if not _registered:
        for cls, conv in ((PCAResidualDetector, _converter), (AutoencoderDetector, _converter_ae),
                          (IsolationForestDetector, _converter_if)):
            update_registered_converter(cls, f"Aiotflow{cls.__name__}", _shape_calculator,
                                        conv, parser=_parser)
        _registered = True
    model = convert_sklearn(
        detector,
        "aiotflow-detector",
        initial_types=[("features", FloatTensorType([None, n_features]))],
        final_types=[("embedding", FloatTensorType([None, n_features])),
                     ("score", FloatTensorType([None]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(model.SerializeToString())


#: detector kinds ``train_bundle`` can fit, by name
DETECTOR_KINDS: dict[str, type[BaseEstimator]] = {
    "pca": PCAResidualDetector,
    "autoencoder": AutoencoderDetector,
    "iforest": IsolationForestDetector,
}

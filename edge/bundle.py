"""Model bundles: one ``.onnx`` file that carries everything needed to score a window.

The bundle contract:

* metadata property ``aiotflow.bundle`` holds :class:`BundleMeta` as JSON (channels,
  window length, hop, feature spec, threshold, training statistics, name and version);
* one float input ``[N, F]`` where ``F = len(feature_names(channels, features))``;
* outputs ``embedding [N, D]`` and ``score [N]`` (higher is more anomalous).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiotflow.contracts.schema import ChannelSummary

from .errors import BundleError
from .features import feature_names, window_features

__all__ = ["META_KEY", "BundleMeta", "ChannelStats", "ModelBundle"]

META_KEY = "aiotflow.bundle"


class ChannelStats(BaseModel):
    """Per-channel statistics of the training data."""

    model_config = ConfigDict(frozen=True)

    mean: float
    std: float
    min: float
    max: float


class BundleMeta(BaseModel):
    """What a bundle declares about itself (stored as JSON in the ONNX metadata)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    asset_type: str = "generator"
    channels: list[str] = Field(min_length=1)
    window: int = Field(ge=2, description="Window length in samples.")
    hop: int = Field(ge=1, description="Samples between two scored windows of one asset.")
    sample_rate_hz: float = Field(gt=0)
    features: list[str] = Field(min_length=1)
    threshold: float = Field(gt=0, description="Score at or above which a window is anomalous.")
    train_stats: dict[str, ChannelStats]
    score_quantiles: list[float] = Field(
        default_factory=list, description="Deciles (0..100 %) of the training scores, for "
                                          "drift monitoring; empty disables it.")
    trained_on: str = ""
    created: float = Field(default_factory=time.time)

    @property
    def n_features(self) -> int:
        return len(self.channels) * len(self.features)


class ModelBundle:
    """A loaded bundle: metadata plus an ONNX Runtime session (one intra-op thread)."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BundleError("no such model bundle", path=str(self.path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleError(f"not a loadable ONNX model ({exc})", path=str(self.path)) from exc
        raw = self._session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise BundleError(f"no {META_KEY!r} metadata: not an aiotflow bundle", path=str(path))
        try:
            self.meta = BundleMeta.model_validate_json(raw)
        except ValidationError as exc:
            raise BundleError(f"bad bundle metadata: {exc}", path=str(path)) from exc
        self.feature_names = feature_names(self.meta.channels, self.meta.features)
        self._check_contract()
        self._means = np.array([self.meta.train_stats[c].mean for c in self.meta.channels])
        self._stds = np.array(
            [max(self.meta.train_stats[c].std, 1e-9) for c in self.meta.channels]
        )

    def _check_contract(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BundleError(f"expected one input, found {len(inputs)}", path=str(self.path))
        self._input = inputs[0].name
        width = inputs[0].shape[-1]
        if isinstance(width, int) and width != self.meta.n_features:
            raise BundleError(
                f"model takes {width} features, metadata declares {self.meta.n_features}",
                path=str(self.path),
            )
        outs = {o.name for o in self._session.get_outputs()}
        if not {"embedding", "score"} <= outs:
            raise BundleError(f"outputs must include embedding and score, got {sorted(outs)}",
                              path=str(self.path))
        missing = [c for c in self.meta.channels if c not in self.meta.train_stats]
        if missing:
            raise BundleError(f"no training statistics for channels {missing}", path=str(self.path))

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    def features(self, windows: npt.NDArray[Any], *, time_major: bool = False,
                 means: npt.NDArray[np.float64] | None = None) -> npt.NDArray[np.float32]:
        """Feature matrix of a batch of windows ``[B, window, C]`` (``[window, B, C]``
        when ``time_major``); ``means`` ``[B, C]`` receives their channel means."""
        return window_features(windows, self.meta.features, time_major=time_major,
                               means=means)

    def score(
        self, features: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``(embedding [B, D], score [B])`` of a feature batch. Blocking: run off-loop."""
        emb, score = self._session.run(["embedding", "score"], {self._input: features})
        return emb, np.asarray(score).reshape(-1)

    def score_windows(
        self, windows: npt.NDArray[Any], *, time_major: bool = False,
        means: npt.NDArray[np.float64] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Features and scores of raw windows in one call (``time_major``, ``means``: see
        :meth:`features`)."""
        return self.score(self.features(windows, time_major=time_major, means=means))

    def embed_window(self, window: Mapping[str, Sequence[float]]) -> list[float]:
        """The embedding of one raw window ``{"channel": [samples...]}`` (every channel of
        the model, ``meta.window`` samples each), as the runtime embeds a live one.
        Raises :class:`ValueError` saying what is wrong with the window."""
        meta = self.meta
        if not isinstance(window, Mapping):
            raise ValueError("window must be an object of channel -> samples")
        missing = [c for c in meta.channels if c not in window]
        if missing:
            raise ValueError(f"window lacks channels {missing}")
        cols = [np.asarray(window[c], dtype=np.float64) for c in meta.channels]
        if any(c.shape != (meta.window,) for c in cols):
            raise ValueError(f"each channel needs {meta.window} samples (the model's window)")
        emb, _ = self.score_windows(np.stack(cols, axis=1)[None])
        return [float(v) for v in emb[0]]

    def summarize(
        self, window: npt.NDArray[Any], embedding: npt.NDArray[Any] | None = None
    ) -> dict[str, ChannelSummary]:
        """Per-channel statistics of one window ``[window, C]`` for an alert.

        With the window's ``embedding`` from a residual model (one value per feature),
        each channel also gets its share of the anomaly and the sign of its deviation.
        """
        w = np.asarray(window, dtype=np.float64)
        n_ch = len(self.meta.channels)
        share = np.zeros(n_ch)
        dev = np.zeros(n_ch)
        if embedding is not None and len(embedding) == self.meta.n_features:
            r = np.asarray(embedding, dtype=np.float64).reshape(len(self.meta.features), n_ch)
            energy = (r * r).sum(axis=0)
            share = energy / energy.sum() if energy.sum() > 0 else share
            if "mean" in self.meta.features:
                dev = r[self.meta.features.index("mean")]
        n = w.shape[0]
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        mean = w.mean(axis=0)
        slope = (x @ (w - mean)) / float((x * x).sum()) * self.meta.sample_rate_hz * 60.0
        z = (mean - self._means) / self._stds
        return {
            c: ChannelSummary(
                mean=round(float(mean[i]), 4),
                min=round(float(w[:, i].min()), 4),
                max=round(float(w[:, i].max()), 4),
                last=round(float(w[-1, i]), 4),
                slope_per_min=round(float(slope[i]), 4),
                z=round(float(z[i]), 3),
                contribution=round(float(share[i]), 4),
                deviation=round(float(dev[i]), 3),
            )
            for i, c in enumerate(self.meta.channels)
        }

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for logs and ``aiotflow train`` output."""
        return json.loads(self.meta.model_dump_json()) | {"path": str(self.path)}

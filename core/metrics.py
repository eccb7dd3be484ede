"""Prometheus metrics: recorded without locks or imports, exposed by ``prometheus-client``.

Recording is a dict update or a bisect on the event loop's thread; nothing here imports
``prometheus_client`` (72 ms at start-up on a gateway) until a process serves ``/metrics``
(:func:`serve`). A scrape runs in the server's thread and reads the numbers as they are
(each one is read whole under the GIL; a counter may be one event behind another).

* :data:`METRICS`: the process-wide registry, which the tool executor, the LLM client and
  the history store record into (their labels tell tools, models and sites apart);
* a component (the edge runtime, the engine) makes a :class:`Registry` of its own, with
  callback families over the counters it keeps anyway (read at scrape time, free until
  then), and serves it beside :data:`METRICS` and the process' CPU and memory.

Names follow the Prometheus conventions: ``aiotflow_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_usd``), ``_total`` on counters (added by the exposition).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

__all__ = ["LATENCY_BUCKETS", "METRICS", "CounterFamily", "HistogramFamily", "MetricsServer",
           "Registry", "serve"]

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[str, ...]

#: seconds, from a scoring batch (milliseconds) to a tool behind a slow service
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
#: seconds a person takes: an approval, a run that waited for one
HUMAN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                 14400.0, 43200.0, 86400.0)

#: at most this many label sets per family: labels come from data (sites, tools, models),
#: and a flood of new names must not grow memory without bound
MAX_SERIES = 2000
_OVERFLOW = "_other"


class _Family:
    kind: Kind

    def __init__(self, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labels)

    def _key(self, labels: Labels, table: Mapping[Labels, Any]) -> Labels:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        if labels in table or len(table) < MAX_SERIES:
            return labels
        return (_OVERFLOW,) * len(labels)


class CounterFamily(_Family):
    """A counter per label set: ``c.inc("sensor-1", n=3)``."""

    kind: Kind = "counter"

    def __init__(self, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, doc, labels)
        self.values: dict[Labels, float] = {}

    def inc(self, *labels: str, n: float = 1.0) -> None:
        v = self.values
        key = labels if labels in v else self._key(labels, v)
        v[key] = v.get(key, 0.0) + n

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def samples(self) -> Iterator[tuple[Labels, float]]:
        yield from list(self.values.items())


class HistogramFamily(_Family):
    """A histogram per label set, cumulative buckets made at scrape time."""

    kind: Kind = "histogram"

    def __init__(self, name: str, doc: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, doc, labels)
        self.buckets = tuple(sorted(buckets))
        #: labels -> [count per bucket (+Inf last)..., sum]
        self.values: dict[Labels, list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        v = self.values
        row = v.get(labels)
        if row is None:
            row = v.setdefault(self._key(labels, v), [0.0] * (len(self.buckets) + 2))
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def samples(self) -> Iterator[tuple[Labels, list[float]]]:
        yield from [(k, list(r)) for k, r in list(self.values.items())]


class _Callback(_Family):
    """A family whose samples a function returns at scrape time."""

    def __init__(self, kind: Kind, name: str, doc: str, labels: Sequence[str],
                 fn: Callable[[], Mapping[Labels, float] | float | None]) -> None:
        super().__init__(name, doc, labels)
        self.kind, self.fn = kind, fn

    def samples(self) -> Iterator[tuple[Labels, float]]:
        got = self.fn()
        if got is None:
            return
        if not isinstance(got, Mapping):
            got = {(): got}
        for k, value in got.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                yield k, float(value)


class Registry:
    """Named metric families; ``collect()`` yields them as ``prometheus_client`` metrics."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()  # families are added rarely, from any thread

    def _add(self, family: _Family) -> Any:
        with self._lock:
            have = self._families.get(family.name)
            if have is not None:
                if type(have) is not type(family) or have.labelnames != family.labelnames:
                    raise ValueError(f"metric {family.name} is registered differently")
                if not isinstance(family, _Callback):
                    return have  # one family per name: module reloads, second engines
            self._families[family.name] = family
            return family

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> CounterFamily:
        fam: CounterFamily = self._add(CounterFamily(name, doc, labels))
        return fam

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> HistogramFamily:
        fam: HistogramFamily = self._add(HistogramFamily(name, doc, labels, buckets))
        return fam

    def callback(self, kind: Literal["counter", "gauge"], name: str, doc: str,
                 fn: Callable[[], Mapping[Labels, float] | float | None],
                 labels: Sequence[str] = ()) -> None:
        """A family read by calling ``fn`` at scrape time: a number, or labels -> number
        (``None`` or NaN: no sample)."""
        self._add(_Callback(kind, name, doc, labels, fn))

    def collect(self) -> Iterator[Any]:
        """``prometheus_client`` metric families (the custom-collector protocol)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            families = list(self._families.values())
        for fam in families:
            labels = list(fam.labelnames)
            if isinstance(fam, HistogramFamily):
                h = HistogramMetricFamily(fam.name, fam.doc, labels=labels)
                for key, row in fam.samples():
                    cum, buckets = 0.0, []
                    for le, n in zip((*fam.buckets, math.inf), row[:-1], strict=True):
                        cum += n
                        buckets.append((_le(le), cum))
                    h.add_metric(list(key), buckets, row[-1])
                yield h
                continue
            try:
                samples = list(fam.samples())  # type: ignore[attr-defined]
            except Exception:  # a callback over a component that is stopping: skip it
                continue
            m = (CounterMetricFamily(fam.name, fam.doc, labels=labels) if fam.kind == "counter"
                 else GaugeMetricFamily(fam.name, fam.doc, labels=labels))
            for key, value in samples:
                m.add_metric(list(key), value)
            yield m


def _le(v: float) -> str:
    return "+Inf" if v == math.inf else repr(float(v))


#: the process-wide families (tools, LLM, history): one engine per process, as a rule
METRICS = Registry()


class MetricsServer:
    """``/metrics`` on ``addr:port`` (a daemon thread): ``registries`` beside
    :data:`METRICS` and the process' CPU, memory and file descriptors."""

    def __init__(self, port: int, *registries: Registry, addr: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
        from prometheus_client.exposition import start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        for r in _unique((METRICS, *registries)):
            self.registry.register(r)  # type: ignore[arg-type]
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = self._server.server_port
        self.addr = addr

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("", "0.0.0.0") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def text(self) -> str:
        """What a scrape returns now (tests, ``aiotflow status``)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _unique(items: Iterable[Registry]) -> list[Registry]:
    out: list[Registry] = []
    for r in items:
        if all(r is not o for o in out):
            out.append(r)
    return out


def serve(port: int | None, *registries: Registry, addr: str = "127.0.0.1"
          ) -> MetricsServer | None:
    """Serve ``/metrics`` on ``port`` (0: a free one), or nothing when ``port`` is None."""
    return None if port is None else MetricsServer(port, *registries, addr=addr)

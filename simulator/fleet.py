"""A diesel-generator fleet simulator with physically plausible failure modes.

Each generator follows its load (a mean-reverting random walk around its own set
point); the other channels respond to load the way a genset does: current and fuel
rate at once, exhaust and coolant temperature through first-order thermal lags, oil
pressure falling as the oil warms, vibration rising with load. A fault ramps its
severity ``s`` from 0 to 1 over ``ramp`` seconds after it starts:

* ``coolant_pump``: coolant flow collapses, coolant temperature climbs towards +28 °C,
  exhaust warms, the hotter oil loses pressure;
* ``bearing_wear``: vibration RMS rises with growing impacts, friction draws current;
* ``injector``: misfiring makes exhaust temperature and speed erratic, fuel rate rises;
* ``sensor_dropout``: the oil pressure transmitter's loop opens, reading 0 bar ever
  more often;
* ``oil_leak``: lubricating oil is lost, oil pressure sinks towards 1 bar, friction
  warms the coolant and raises vibration - run on, the engine seizes.

The same code produces live MQTT telemetry (``aiotflow simulate``), training data and
the synthetic incident history, so all three agree.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from aiotflow.contracts.errors import ConfigError
from aiotflow.contracts.mqtt import MqttSettings, reconnecting

__all__ = [
    "CHANNELS",
    "FAULT_MODES",
    "FaultSpec",
    "Fleet",
    "GeneratorSim",
    "parse_fault",
    "publish_fleet",
]

CHANNELS: tuple[str, ...] = (
    "load_pct",
    "coolant_temp_c",
    "oil_pressure_bar",
    "vibration_mm_s",
    "current_a",
    "exhaust_temp_c",
    "rpm",
    "fuel_rate_lph",
)
FAULT_MODES: tuple[str, ...] = ("coolant_pump", "bearing_wear", "injector", "sensor_dropout",
                                "oil_leak")


@dataclass(frozen=True)
class FaultSpec:
    """A fault injected into one asset ``at`` seconds after the start, full after ``ramp``."""

    asset: str
    mode: str
    at: float
    ramp: float = 30.0

    def severity(self, t: float) -> float:
        if t < self.at:
            return 0.0
        return min(1.0, (t - self.at) / self.ramp) if self.ramp > 0 else 1.0


def parse_fault(text: str, *, ramp: float = 30.0) -> FaultSpec:
    """Parse ``ASSET:MODE@SECONDS`` (e.g. ``gen-002:coolant_pump@20``)."""
    try:
        asset, rest = text.split(":", 1)
        mode, at = rest.split("@", 1)
        seconds = float(at)
    except ValueError:
        raise ConfigError(f"expected ASSET:MODE@SECONDS, got {text!r}", field="fault") from None
    if mode not in FAULT_MODES:
        raise ConfigError(f"unknown mode {mode!r}; one of {', '.join(FAULT_MODES)}", field="fault")
    if not asset or seconds < 0:
        raise ConfigError(f"bad asset or time in {text!r}", field="fault")
    return FaultSpec(asset, mode, seconds, ramp)


@dataclass
class GeneratorSim:
    """One generator's physical state; ``step`` advances it by ``dt`` seconds."""

    name: str
    seed: int
    setpoint: float = 0.6
    faults: list[FaultSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.load = self.setpoint
        self.coolant = 78.0 + 12.0 * self.load
        self.exhaust = 300.0 + 250.0 * self.load
        self.t = 0.0

    def step(self, dt: float) -> dict[str, float]:
        rng = self.rng
        self.t += dt
        sev = {f.mode: f.severity(self.t) for f in self.faults}
        s_cool = sev.get("coolant_pump", 0.0)
        s_bear = sev.get("bearing_wear", 0.0)
        s_inj = sev.get("injector", 0.0)
        s_drop = sev.get("sensor_dropout", 0.0)
        s_oil = sev.get("oil_leak", 0.0)

        prev = self.load
        theta, sigma = 0.02, 0.02
        self.load += theta * (self.setpoint - self.load) * dt + sigma * math.sqrt(dt) * rng.normal()
        self.load = min(1.0, max(0.1, self.load))
        dl = (self.load - prev) / dt if dt > 0 else 0.0

        cool_target = 78.0 + 12.0 * self.load + 28.0 * s_cool + 2.0 * s_bear + 5.0 * s_oil
        self.coolant += (cool_target - self.coolant) * min(1.0, dt / 40.0)
        exh_target = 300.0 + 250.0 * self.load + 15.0 * s_cool + 25.0 * s_inj
        self.exhaust += (exh_target - self.exhaust) * min(1.0, dt / 15.0)

        misfire = s_inj * rng.normal(0.0, 40.0)
        vib_impacts = abs(rng.normal(0.0, 3.0 * s_bear)) if rng.random() < 0.2 * s_bear else 0.0
        oil = (4.2 + 0.4 * self.load - 0.03 * (self.coolant - 85.0) - 3.2 * s_oil
               + rng.normal(0.0, 0.04))
        if s_drop > 0 and rng.random() < s_drop:
            oil = 0.0
        return {
            "load_pct": round(100.0 * self.load + rng.normal(0.0, 0.5), 3),
            "coolant_temp_c": round(self.coolant + rng.normal(0.0, 0.25), 3),
            "oil_pressure_bar": round(oil, 4),
            "vibration_mm_s": round(
                abs(2.2 + 1.5 * self.load + 5.0 * s_bear + 1.2 * s_inj + 0.8 * s_oil
                    + rng.normal(0.0, 0.12))
                + vib_impacts, 4),
            "current_a": round(600.0 * self.load * (1.0 + 0.03 * s_bear)
                               + rng.normal(0.0, 4.0), 3),
            "exhaust_temp_c": round(self.exhaust + misfire + rng.normal(0.0, 2.5), 3),
            "rpm": round(1500.0 - 8.0 * dl + rng.normal(0.0, 1.5) * (1.0 + 6.0 * s_inj), 3),
            "fuel_rate_lph": round((8.0 + 95.0 * self.load) * (1.0 + 0.12 * s_inj)
                                   + rng.normal(0.0, 0.6), 3),
        }


class Fleet:
    """A site's generators, ``gen-001`` ... ``gen-NNN``, stepped together."""

    def __init__(
        self,
        n_assets: int,
        *,
        site: str = "plant-1",
        seed: int = 7,
        faults: list[FaultSpec] | None = None,
        prefix: str = "gen",
    ) -> None:
        if n_assets < 1:
            raise ConfigError("at least one asset", field="assets")
        self.site = site
        faults = faults or []
        rng = np.random.default_rng(seed)
        self.assets: list[GeneratorSim] = []
        for i in range(n_assets):
            name = f"{prefix}-{i + 1:03d}"
            self.assets.append(
                GeneratorSim(
                    name=name,
                    seed=int(rng.integers(1 << 31)),
                    setpoint=float(rng.uniform(0.35, 0.8)),
                    faults=[f for f in faults if f.asset == name],
                )
            )
        known = {a.name for a in self.assets}
        unknown = [f.asset for f in faults if f.asset not in known]
        if unknown:
            raise ConfigError(f"fault on unknown asset(s) {unknown}", field="fault")

    def run(
        self, seconds: float, rate_hz: float, *, start_ts: float = 1_700_000_000.0
    ) -> Iterator[tuple[str, float, dict[str, float]]]:
        """Yield ``(asset, ts, values)`` for ``seconds`` of simulated time."""
        dt = 1.0 / rate_hz
        for k in range(int(seconds * rate_hz)):
            ts = start_ts + (k + 1) * dt
            for a in self.assets:
                yield a.name, ts, a.step(dt)

    def matrix(self, seconds: float, rate_hz: float) -> dict[str, np.ndarray]:
        """Simulated time series per asset as ``[samples, len(CHANNELS)]`` arrays."""
        rows: dict[str, list[list[float]]] = {a.name: [] for a in self.assets}
        for asset, _, values in self.run(seconds, rate_hz):
            rows[asset].append([values[c] for c in CHANNELS])
        return {k: np.asarray(v) for k, v in rows.items()}


async def publish_fleet(
    fleet: Fleet,
    *,
    hostname: str = "127.0.0.1",
    port: int = 1883,
    rate_hz: float,
    duration: float | None = None,
    speed: float = 1.0,
    topic_prefix: str = "aiotflow/telemetry",
    stop: asyncio.Event | None = None,
    mqtt: MqttSettings | None = None,
) -> int:
    """Publish the fleet's telemetry live (QoS 0) until ``duration`` or ``stop``.

    ``speed`` > 1 runs simulated time faster than the wall clock (the ``ts`` field
    advances by ``1 / rate_hz`` per step either way). ``mqtt`` (default: plain
    ``hostname:port``) is the broker connection; a lost connection is reconnected with
    backoff like every other link, and the simulation goes on where it was (readings of
    the outage are skipped, as a real sensor's would be lost). Returns readings published.
    """
    settings = mqtt or MqttSettings(url=f"mqtt://{hostname}:{port}")
    dt = 1.0 / rate_hz
    start_ts = time.time()
    sent = 0
    steps = None if duration is None else int(duration * rate_hz)
    finished = asyncio.Event()
    k = 0
    t0 = time.monotonic()

    async def body(client: Any) -> None:
        nonlocal k, sent
        while steps is None or k < steps:
            if stop is not None and stop.is_set():
                break
            k += 1
            ts = start_ts + k * dt
            for a in fleet.assets:
                body = orjson.dumps({"ts": round(ts, 3), "values": a.step(dt)})
                await client.publish(f"{topic_prefix}/{fleet.site}/{a.name}", body, qos=0)
                sent += 1
            delay = t0 + k * dt / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        finished.set()
        await asyncio.Event().wait()  # parked until cancelled: the link stays up meanwhile

    link = asyncio.create_task(reconnecting("simulator", settings, body,
                                            client_id=f"aiotflow-sim-{fleet.site}"))
    done = asyncio.create_task(finished.wait())
    try:
        await asyncio.wait([link, done], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (link, done):
            t.cancel()
        await asyncio.gather(link, done, return_exceptions=True)
    if link.done() and not link.cancelled() and link.exception() is not None:
        raise link.exception()  # type: ignore[misc]
    return sent

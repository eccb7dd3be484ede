"""Realistic synthetic data for the demo and for trying ``aiotflow run``: an on-call
roster, maintenance logs and an incident history made with the same simulator and
model as the live data, so that live alerts find their look-alikes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import numpy as np

from aiotflow.edge.baseline import OperatingPoint
from aiotflow.edge.bundle import ModelBundle
from aiotflow.edge.policy import AlertPolicy, PolicySettings
from aiotflow.simulator.fleet import CHANNELS, FaultSpec, GeneratorSim
from aiotflow.tools.ops import MaintenanceEntry, OpsDatabase, Technician
from aiotflow.tools.plant import ConditionReading, DowntimeWindow, Part
from aiotflow.training.train import make_windows
from aiotflow.vectorstore.models import Incident, MaintenanceRecord
from aiotflow.vectorstore.store import HistoryStore

__all__ = ["history_incidents", "seed_all", "seed_maintenance", "seed_plant", "seed_roster"]

DAY = 86400.0

#: sensor pattern simulated -> (what it turned out to be, probability, outcome text)
_OUTCOMES: dict[str, list[tuple[str, float, str]]] = {
    "coolant_pump": [
        ("coolant_pump", 0.85, "coolant pump impeller worn, pump replaced"),
        ("thermostat", 0.15, "thermostat stuck half-closed, thermostat replaced"),
    ],
    "bearing_wear": [("bearing_wear", 0.9, "alternator drive-end bearing replaced"),
                     ("none", 0.1, "vibration survey found no defect")],
    "injector": [("injector", 0.85, "injector on cylinder 3 replaced"),
                 ("none", 0.15, "fuel filter changed, no injector fault")],
    "sensor_dropout": [("sensor_dropout", 1.0, "oil pressure transmitter replaced")],
    "oil_leak": [("oil_starvation", 0.85, "oil line fitting leaking; engine stopped in time, "
                                          "fitting replaced, bearings inspected"),
                 ("sensor_dropout", 0.15, "oil pressure transmitter drifting low, replaced")],
}
_MODE_WEIGHTS = {"coolant_pump": 0.3, "bearing_wear": 0.25, "injector": 0.25,
                 "sensor_dropout": 0.2}


def history_incidents(
    bundle: ModelBundle, n: int = 60, *, seed: int = 42, now: float | None = None,
    sites: Sequence[str] = ("plant-1", "plant-2", "plant-3"),
    modes: dict[str, float] | None = None,
) -> list[Incident]:
    """Simulate ``n`` past faults, detect each with ``bundle`` and the default alert
    policy, and record the embedding of the alerting window with what it turned out to be.
    ``modes``: the simulated fault patterns and their weights (default: the four common
    ones; ``oil_leak`` is rare and seeded on its own).
    """
    rng = np.random.default_rng(seed)
    now = now or time.time()
    meta = bundle.meta
    idx = [CHANNELS.index(c) for c in meta.channels]
    mode_weights = modes or _MODE_WEIGHTS
    modes_ = list(mode_weights)
    weights = np.array([mode_weights[m] for m in modes_])
    out: list[Incident] = []
    seen: dict[str, int] = {}
    attempts = 0
    while len(out) < n and attempts < n * 3:
        attempts += 1
        mode = modes_[int(rng.choice(len(modes_), p=weights / weights.sum()))]
        asset = f"gen-{int(rng.integers(101, 140)):03d}"
        onset = 45.0
        sim = GeneratorSim(name=asset, seed=int(rng.integers(1 << 31)),
                           setpoint=float(rng.uniform(0.35, 0.85)),
                           faults=[FaultSpec(asset, mode, onset, float(rng.uniform(30, 90)))])
        rate = meta.sample_rate_hz
        series = np.array([[sim.step(1.0 / rate)[c] for c in CHANNELS]
                           for _ in range(int((onset + 150) * rate))])[:, idx]
        windows = make_windows(series, meta.window, meta.hop)
        emb, scores = bundle.score_windows(windows)
        policy = AlertPolicy(PolicySettings())
        point = OperatingPoint(list(meta.channels))  # as the runtime keeps it
        means = windows.mean(axis=1)
        hit = None
        for i, s in enumerate(scores):
            if policy.update(asset, float(i), float(s), meta.threshold) is not None:
                hit = i
                break
            point.observe(policy, asset, i * meta.hop / rate, float(s), meta.threshold,
                          means[i])
        if hit is None:
            continue
        # Outcomes in their stated proportions (not drawn), so a small history still
        # holds the minority outcomes: about one coolant pattern in seven was a thermostat.
        k = seen[mode] = seen.get(mode, 0) + 1
        u, acc = ((k * 0.618034) % 1.0), 0.0
        truth, text = _OUTCOMES[mode][-1][0], _OUTCOMES[mode][-1][2]
        for t, p, txt in _OUTCOMES[mode]:
            acc += p
            if u < acc:
                truth, text = t, txt
                break
        ts = now - float(rng.uniform(20, 720)) * DAY
        wo = f"WO-H{int(rng.integers(1000, 9999))}"
        out.append(Incident(
            id=str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | len(out))),
            asset=asset, asset_type=meta.asset_type, site=str(rng.choice(list(sites))), ts=ts,
            failure_mode=truth, system=_system(truth), outcome=text,
            maintenance_refs=[wo, f"LOG-{wo[4:]}"],
            summary=f"simulated {mode.replace('_', ' ')} pattern; {text}",
            embedding=[float(v) for v in emb[hit]], context=point.get(asset),
        ))
    return out


def _system(mode: str) -> str:
    return {"coolant_pump": "cooling", "thermostat": "cooling", "bearing_wear": "mechanical",
            "injector": "fuel", "sensor_dropout": "instrumentation",
            "oil_starvation": "lubrication"}.get(mode, "none")


async def seed_roster(ops: OpsDatabase, *, now: float | None = None, days: int = 14) -> None:
    """Four technicians on rotating 12-hour on-call shifts, starting now."""
    now = now or time.time()
    techs = [
        Technician(id="T-01", name="Ana Silva", skills=["cooling", "mechanical", "general"],
                   phone="+351 555 0101"),
        Technician(id="T-02", name="Ben Okafor", skills=["fuel_systems", "general"],
                   phone="+44 555 0102"),
        Technician(id="T-03", name="Chen Wei", skills=["instrumentation", "electrical"],
                   phone="+86 555 0103"),
        Technician(id="T-04", name="Dana Kovacs", skills=["cooling", "mechanical", "fuel_systems"],
                   phone="+36 555 0104"),
    ]
    start = now - 3600.0
    pairs = [(techs[0], techs[1]), (techs[3], techs[2])]  # two on call per 12 h block
    shifts: dict[str, list[tuple[float, float]]] = {t.id: [] for t in techs}
    for k in range(days * 2):
        for t in pairs[k % 2]:
            shifts[t.id].append((start + k * 43200.0, start + (k + 1) * 43200.0))
    # instrumentation is also covered in the first block
    shifts["T-03"].append((start, start + 43200.0))
    for t in techs:
        await ops.add_technician(t, shifts[t.id])


async def seed_maintenance(
    ops: OpsDatabase, assets: Sequence[str], *, stale: Sequence[str] = (),
    now: float | None = None, seed: int = 3,
) -> list[MaintenanceEntry]:
    """Maintenance logs: every system serviced recently, except cooling on ``stale``."""
    now = now or time.time()
    rng = np.random.default_rng(seed)
    entries = []
    for asset in assets:
        for system, action in (("cooling", "coolant flush and pump inspection"),
                               ("mechanical", "vibration survey, bearings greased"),
                               ("fuel", "fuel filters and injector check"),
                               ("instrumentation", "sensor calibration"),
                               ("lubrication", "oil and filter change")):
            age = float(rng.uniform(10, 60))
            if system == "cooling" and asset in stale:
                age = float(rng.uniform(180, 260))
            entries.append(MaintenanceEntry(
                id=f"LOG-{asset}-{system}", asset=asset, system=system, ts=now - age * DAY,
                action=action, technician=str(rng.choice(["T-01", "T-02", "T-03", "T-04"]))))
    await ops.add_maintenance(entries)
    return entries


#: the spare parts catalogue: (part, fits, unit cost, lead time in days)
_PARTS = [
    ("CP-4521", "coolant pump assembly", "coolant_pump", 2200.0, 5.0),
    ("TH-82", "thermostat 82 C", "thermostat", 65.0, 2.0),
    ("BRG-6316-KIT", "alternator drive-end bearing kit 6316-C3", "bearing_wear", 1450.0, 3.0),
    ("INJ-2210", "fuel injector", "injector", 480.0, 4.0),
    ("PT-0010", "oil pressure transmitter 0-10 bar", "sensor_dropout", 210.0, 2.0),
    ("OL-KIT-12", "oil line fittings and seals kit", "oil_starvation", 85.0, 1.0),
]


async def seed_plant(
    ops: OpsDatabase, assets: Sequence[str], *, wearing: Sequence[str] = (),
    out_of_stock: Sequence[str] = ("BRG-6316-KIT",), now: float | None = None, seed: int = 11,
) -> None:
    """Spare parts, a planned downtime window per asset (about 6 and 34 days ahead, 06:00
    UTC, 10 h), and monthly vibration surveys over half a year - rising slowly on the
    ``wearing`` assets."""
    now = now or time.time()
    rng = np.random.default_rng(seed)
    await ops.add_parts([Part(part_no=n, description=d, fits=[f], unit_cost=c,
                              lead_time_days=lt, supplier="Nordic Bearings AB"
                              if f == "bearing_wear" else "OEM parts",
                              stock=0 if n in out_of_stock else 2)
                         for n, d, f, c, lt in _PARTS])
    day0 = (int(now // DAY) + 6) * DAY + 6 * 3600
    await ops.add_downtime([
        DowntimeWindow(id=f"DT-{asset}-{k}", asset=asset, site="plant-1",
                       start=day0 + (k * 28 + i % 3) * DAY, end=day0 + (k * 28 + i % 3) * DAY
                       + 10 * 3600, note="planned monthly stop")
        for i, asset in enumerate(assets) for k in range(2)])
    readings = []
    rises = (0.0, 0.1, 0.3, 0.6, 1.0, 1.5)  # wear accelerates
    for asset in assets:
        base = float(rng.uniform(1.8, 2.0) if asset in wearing else rng.uniform(2.6, 3.0))
        for m in range(6, 0, -1):
            rise = rises[6 - m] if asset in wearing else 0.0
            readings.append(ConditionReading(
                asset=asset, channel="vibration_mm_s", ts=now - (m * 30 - 10) * DAY,
                value=round(base + rise + float(rng.normal(0, 0.05)), 3)))
    await ops.add_condition(readings)


async def seed_all(
    ops: OpsDatabase, history: HistoryStore, bundle: ModelBundle, *, assets: Sequence[str],
    stale: Sequence[str] = (), incidents: int = 60, wearing: Sequence[str] = (),
    rare_modes: dict[str, int] | None = None,
) -> int:
    """Roster, maintenance logs, the plant's parts, calendar and surveys, and the incident
    history (``incidents`` of the common patterns, plus ``rare_modes``: pattern -> how
    many); returns incidents stored."""
    await seed_roster(ops)
    await seed_plant(ops, assets, wearing=wearing)
    entries = await seed_maintenance(ops, assets, stale=stale)
    # the history keeps a copy of the maintenance log (the CMMS stays the record of truth)
    await history.add_maintenance([
        MaintenanceRecord(id=e.id, asset=e.asset, system=e.system, ts=e.ts, action=e.action,
                          technician=e.technician, notes=e.notes) for e in entries])
    rare = rare_modes or {}
    if await history.count() >= incidents + sum(rare.values()):
        return 0
    made = history_incidents(bundle, incidents)
    for i, (mode, n) in enumerate(sorted(rare.items())):
        made += history_incidents(bundle, n, seed=1000 + i, modes={mode: 1.0})
    return await history.add(made)

"""The learning loop: a closed work order with a confirmed failure mode becomes history.

When a technician closes a work order and says what it was, the alert behind it (its
embedding, asset and time, from the run ledger) is written to the incident history with
that failure mode, the work order and the maintenance done; the next similar alert finds
it. The incident's id is derived from the work order, so closing twice writes once. A
wrong finding is corrected later with :meth:`HistoryStore.correct` (``aiotflow history
correct``), which keeps what it was and who changed it.
"""

from __future__ import annotations

import time

from aiotflow.tools.control import ControlStore
from aiotflow.tools.errors import ToolFailed
from aiotflow.tools.ops import OpsDatabase, WorkOrder
from aiotflow.vectorstore import HistoryStore, Incident, MaintenanceRecord
from aiotflow.workflows.runs import RunLedger

from .knowledge import failure_mode as known_mode

__all__ = ["close_and_learn"]


async def close_and_learn(
    *,
    ops: OpsDatabase,
    control: ControlStore,
    history: HistoryStore | None,
    work_order: str,
    failure_mode: str,
    resolution: str,
    by: str,
    system: str | None = None,
) -> tuple[WorkOrder, Incident]:
    """Close ``work_order`` with the ``failure_mode`` found and record it as an incident.

    With ``history=None`` (the embedded store is held by a running engine) the write is
    queued in the control database and the engine applies it.
    """
    wo = await ops.work_order(work_order)
    if wo is None:
        raise ToolFailed(f"no work order {work_order}", tool="close_work_order")
    alert_id = str(wo.evidence.get("alert_id") or "")
    ledger = RunLedger(control)
    run = await ledger.for_alert(alert_id) if alert_id else None
    if run is None or not run.alert.get("embedding"):
        raise ToolFailed(f"{work_order} does not refer to an alert with an embedding "
                         "(opened by hand?); nothing to learn from", tool="close_work_order")
    closed = await ops.close_work_order(work_order, failure_mode=failure_mode,
                                        resolution=resolution, by=by)
    alert = run.alert
    fm = known_mode(failure_mode)
    subsystem = system or (fm.system if fm else "")
    incident = Incident(
        id=f"wo:{closed.id}", asset=alert["asset"], asset_type=alert.get("asset_type", ""),
        site=alert.get("site", ""), ts=float(alert["ts"]), failure_mode=failure_mode,
        system=subsystem, outcome=resolution, work_order=closed.id,
        maintenance_refs=[closed.id], confirmed=True,
        summary=f"{closed.title}; closed by {by}: {resolution}",
        embedding=[float(v) for v in alert["embedding"]],
        context={str(k): float(v) for k, v in (alert.get("baseline") or {}).items()},
    )
    maintenance = MaintenanceRecord(
        id=f"wo:{closed.id}", asset=closed.asset, site=closed.site, system=subsystem,
        ts=closed.closed or time.time(), action=resolution, technician=closed.technician_id or "",
        work_order=closed.id, notes=f"failure mode {failure_mode}; closed by {by}",
    )
    if history is not None:
        await history.record_outcome(incident, maintenance)
    else:
        await control.enqueue_history("outcome", {"incident": incident.model_dump(),
                                                  "maintenance": maintenance.model_dump()},
                                      actor=by)
    await control.audit("history.learned", actor=by, work_order=closed.id,
                        incident_id=incident.id, failure_mode=failure_mode,
                        alert_id=alert_id, asset=closed.asset)
    return closed, incident

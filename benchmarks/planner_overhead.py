"""What the LLM planner costs the engine, the model's own latency aside.

    python benchmarks/planner_overhead.py [--json] [--alerts N] [--rounds R]

The maintenance agent takes coolant alerts from alert to its approval request (evidence
from the history, diagnosis, plan, guardrails, approval recorded) on a real Mosquitto,
SQLite and embedded Qdrant, in two variants: *code* plans in fixed code (no LLM); *llm*
plans with the LLM planner against a Chat Completions server on loopback that answers
at once with a three-turn plan (a read-tool call, two proposals, submit_plan). So the
difference is aiotflow's: the schemas offered, the read tool run through the tool
layer, the checks on every proposal, the audit records of each model turn - not the
model's thinking time, which a real endpoint adds on top (seconds). Rounds are
interleaved A B A B ...; per-alert medians are reported, and ``ratio`` is code/llm
throughput (alerts per second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks._mqtt import Broker  # noqa: E402
from tests.fakes import ChatCompletionsService, calls, turns  # noqa: E402


async def run_round(app: Any, state: Path, broker: str, alerts: list[Any], incidents: list[Any]
                    ) -> list[float]:
    from aiotflow.workflows import Engine
    from tests.workflows.helpers import seed, settings_for

    lat = []
    async with Engine(app, settings_for(state, broker)) as engine:
        await seed(engine, incidents)
        for a in alerts:
            t0 = time.perf_counter()
            [outcome] = await engine.submit(a)
            lat.append(time.perf_counter() - t0)
            assert outcome.status == "waiting_approval", outcome
    return lat


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=20, help="alerts per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per variant")
    ap.add_argument("--json", action="store_true", help="JSON only")
    a = ap.parse_args()

    from aiotflow.agents import LLMClient, LLMSettings, MaintenanceSettings
    from aiotflow.agents import register_maintenance_agent as register
    from aiotflow.demo.seed import history_incidents
    from aiotflow.edge.bundle import ModelBundle
    from aiotflow.training.train import train_simulated
    from aiotflow.workflows import App
    from tests.workflows.helpers import make_alert

    tmp = Path(tempfile.mkdtemp(prefix="aiotflow-bench-planner-"))
    train_simulated(tmp / "m.onnx", assets=6, seconds=900.0, version="bench")
    bundle = ModelBundle(tmp / "m.onnx")
    incidents = history_incidents(bundle, 40, seed=5)
    base = make_alert(bundle)
    book = {"skill": "cooling", "hours": 3, "reason": "coolant pump suspected",
            "rationale": "similar events were pump failures", "cites": ["E1"]}
    order = {"title": "Replace the coolant pump", "priority": "high",
             "rationale": "inspect the pump", "cites": ["E2"]}

    def model(body: dict[str, Any]) -> dict[str, Any]:
        facts = json.loads(body["messages"][1]["content"])["alert"]
        where = {"asset": facts["asset"], "site": facts["site"]}
        return turns(calls(("maintenance_history", {"asset": facts["asset"]})),
                     calls(("book_technician", book | where), ("create_work_order",
                                                               order | where)),
                     calls(("submit_plan", {"failure_mode": "coolant_pump", "confidence": 0.9,
                                            "summary": "Coolant pump failing."})))(body)

    broker = Broker()
    results: dict[str, list[float]] = {"code": [], "llm": []}
    llm_calls = 0
    try:
        with ChatCompletionsService(model) as svc:
            for r in range(a.rounds):
                for variant in ("code", "llm"):
                    alerts = [base.model_copy(update={"id": str(uuid.uuid4()),
                                                      "asset": f"gen-{100 + i:03d}"})
                              for i in range(a.alerts)]
                    app = App(f"bench-{variant}")
                    if variant == "llm":
                        app.service("llm")(lambda _s: LLMClient(LLMSettings(
                            OPENAI_BASE_URL=svc.url, AIOTFLOW_LLM_MODEL="bench",  # type: ignore[call-arg]
                            AIOTFLOW_LLM_BUDGET_USD=100.0)))
                        register(app)
                    else:
                        register(app, settings=MaintenanceSettings(planner=None), llm=False)
                    before = len(svc.requests)
                    lat = await run_round(app, tmp / f"{variant}-{r}", broker.url, alerts,
                                          incidents)
                    if variant == "llm":
                        llm_calls += len(svc.requests) - before
                    results[variant].append(statistics.median(lat))
    finally:
        broker.stop()
    code, llm = statistics.median(results["code"]), statistics.median(results["llm"])
    out = {"alerts_per_round": a.alerts, "rounds": a.rounds,
           "code_ms": round(code * 1000, 1), "llm_ms": round(llm * 1000, 1),
           "code_ms_rounds": [round(x * 1000, 1) for x in results["code"]],
           "llm_ms_rounds": [round(x * 1000, 1) for x in results["llm"]],
           "planner_added_ms": round((llm - code) * 1000, 1),
           "model_turns_per_alert": round(llm_calls / (a.alerts * a.rounds), 2),
           "ratio": round(code / llm, 3)}
    print(json.dumps(out))
    if not a.json:
        print(f"\n{'variant':<8}{'per alert (median)':>20}{'rounds':>28}", file=sys.stderr)
        for v in ("code", "llm"):
            print(f"{v:<8}{out[f'{v}_ms']:>17.1f} ms   {out[f'{v}_ms_rounds']}",
                  file=sys.stderr)
        print(f"planner adds {out['planner_added_ms']} ms per alert "
              f"({out['model_turns_per_alert']} model turns), ratio {out['ratio']}",
              file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())

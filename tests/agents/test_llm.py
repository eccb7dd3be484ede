import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from aiotflow.agents import (
    LLMClient,
    LLMSettings,
    MaintenanceSettings,
    register_maintenance_agent,
)
from aiotflow.edge.bundle import ModelBundle
from aiotflow.vectorstore.models import Incident
from aiotflow.workflows import App, Engine

from ..conftest import Mosquitto
from ..fakes import ChatCompletionsService
from ..workflows.helpers import make_alert, seed, settings_for, wait_for

#: the LLM only writes the work order's summary (the planner has its own tests)
NARRATIVE_ONLY = MaintenanceSettings(planner=None)


def llm_settings(url: str, **kw: object) -> LLMSettings:
    return LLMSettings(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=url,  # type: ignore[call-arg]
                       AIOTFLOW_LLM_MODEL="test-model", **kw)


async def test_offline_without_key() -> None:
    async with LLMClient(LLMSettings(OPENAI_API_KEY=None)) as llm:  # type: ignore[call-arg]
        out = await llm.write("sys", "facts", fallback="deterministic")
    assert (out.text, out.source) == ("deterministic", "offline")


async def test_calls_cache_and_cost() -> None:
    with ChatCompletionsService("narrative") as svc:
        async with LLMClient(llm_settings(svc.url)) as llm:
            first = await llm.write("sys", "facts", fallback="fb")
            again = await llm.write("sys", "facts", fallback="fb")
        assert (first.text, first.source) == ("narrative", "llm")
        assert again.source == "cache" and len(svc.requests) == 1
        req = svc.requests[0]
        assert req["auth"] == "Bearer sk-test" and req["body"]["model"] == "test-model"
        assert llm.tokens == first.tokens > 20 and llm.spent_usd > 0


async def test_budget_and_errors_fall_back() -> None:
    with ChatCompletionsService() as svc:
        async with LLMClient(llm_settings(svc.url, AIOTFLOW_LLM_BUDGET_USD=0.0)) as llm:
            out = await llm.write("sys", "facts", fallback="fb")
        assert (out.text, out.reason) == ("fb", "budget exhausted") and not svc.requests
        svc.status = 500
        async with LLMClient(llm_settings(svc.url)) as llm:
            out = await llm.write("sys", "facts", fallback="fb")
        assert out.source == "offline" and "error" in out.reason and llm.failures == 1


async def test_work_order_narrative_from_llm(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answer = json.dumps({"summary": "LLM: coolant pump failing, dispatch now."})
    with ChatCompletionsService(answer) as svc:
        app = App("llm-fleet")
        app.service("llm")(lambda _s: LLMClient(llm_settings(svc.url)))
        register_maintenance_agent(app, settings=NARRATIVE_ONLY)
        async with Engine(app, settings_for(tmp_path / "s", mosquitto.url)) as engine:
            await seed(engine, incidents)
            [outcome] = await engine.submit(make_alert(bundle))
            assert outcome.status == "waiting_approval"
            await engine.control.decide(outcome.approval_id or "", "approved", by="fay",
                                        signer=engine.key)
            await wait_for(lambda: engine.stats.runs_completed == 1)
            [wo] = await engine.ops.work_orders()
            assert wo.description.startswith("LLM: coolant pump failing")
            assert "similar past events" in wo.description  # evidence is never left to the LLM
            [rec] = await engine.control.audit_records(kind="llm.narrative")
            assert rec.detail["source"] == "llm" and rec.detail["cost_usd"] > 0
            assert rec.detail["site"] == "plant-1" and rec.detail["alert_id"]
        prompt = svc.requests[0]["body"]["messages"][1]["content"]
        assert "gen-002" in prompt and "coolant pump failure" in prompt
    import asyncio

    from aiotflow.cli import main

    capsys.readouterr()  # the engine's log lines
    rc = await asyncio.to_thread(main, ["costs", "--by", "site", "--json", "--state-dir",
                                        str(tmp_path / "s")])
    assert rc == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["site"] == "plant-1" and row["calls"] == 1 and row["usd"] > 0
    rc = await asyncio.to_thread(main, ["costs", "--by", "site", "--state-dir",
                                        str(tmp_path / "s")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and lines[0].split() == ["site", "calls", "tokens", "USD", "without", "LLM"]
    assert lines[1].split()[:2] == ["plant-1", "1"] and lines[-1].split()[:2] == ["total", "1"]


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: str = Field(min_length=5, max_length=60)


FALLBACK = Summary(summary="deterministic")


@pytest.mark.parametrize("answer, why", [
    ("Sure! The pump is failing.", "Invalid JSON"),
    (json.dumps({"summary": "ok then", "action": "stop_line"}), "Extra inputs"),
    (json.dumps({"summary": "x" * 500}), "at most 60 characters"),
    (json.dumps({"text": "wrong key"}), "Field required at summary"),
    (json.dumps(["a list"]), "top level"),
])
async def test_answers_outside_the_schema_are_refused(answer: str, why: str) -> None:
    with ChatCompletionsService(answer) as svc:
        async with LLMClient(llm_settings(svc.url)) as llm:
            out = await llm.structured("sys", "facts", Summary, fallback=FALLBACK)
            again = await llm.structured("sys", "facts", Summary, fallback=FALLBACK)
    assert out.value == FALLBACK and out.source == "refused" and why in out.reason
    assert again.source == "refused" and len(svc.requests) == 2  # a refusal is not cached
    assert llm.refused == 2 and svc.requests[0]["body"]["response_format"] == {
        "type": "json_object"}


async def test_valid_structured_answer() -> None:
    with ChatCompletionsService(json.dumps({"summary": "pump seal leaking"})) as svc:
        async with LLMClient(llm_settings(svc.url)) as llm:
            out = await llm.structured("sys", "facts", Summary, fallback=FALLBACK)
    assert out.value.summary == "pump seal leaking" and out.source == "llm"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_endpoint_errors_fall_back(status: int) -> None:
    with ChatCompletionsService() as svc:
        svc.status = status
        async with LLMClient(llm_settings(svc.url)) as llm:
            out = await llm.structured("sys", "facts", Summary, fallback=FALLBACK)
    assert out.value == FALLBACK and out.source == "offline" and "LLM error" in out.reason


async def test_timeout_falls_back() -> None:
    with ChatCompletionsService(json.dumps({"summary": "too late"})) as svc:
        svc.delay_s = 1.5
        async with LLMClient(llm_settings(svc.url, timeout_s=0.3)) as llm:
            out = await llm.structured("sys", "facts", Summary, fallback=FALLBACK)
    assert out.value == FALLBACK and "Timeout" in out.reason


async def test_budgets_per_site_and_per_alert() -> None:
    with ChatCompletionsService(json.dumps({"summary": "fine words"})) as svc:
        # output tokens cost 1 USD per 1,000: a call may cost up to 0.35 (350 tokens),
        # the service answers with 20 (0.02 spent)
        settings = llm_settings(svc.url, AIOTFLOW_LLM_USD_PER_1K_INPUT=0.0,
                                AIOTFLOW_LLM_USD_PER_1K_OUTPUT=1.0,
                                AIOTFLOW_LLM_BUDGET_PER_SITE_USD=0.38,
                                AIOTFLOW_LLM_BUDGET_PER_ALERT_USD=0.36)
        async with LLMClient(settings) as llm:
            a1 = await llm.structured("sys", "facts 1", Summary, fallback=FALLBACK,
                                      site="s1", alert="a1")
            a1b = await llm.structured("sys", "facts 1b", Summary, fallback=FALLBACK,
                                       site="s1", alert="a1")
            a2 = await llm.structured("sys", "facts 2", Summary, fallback=FALLBACK,
                                      site="s1", alert="a2")
            a3 = await llm.structured("sys", "facts 3", Summary, fallback=FALLBACK,
                                      site="s1", alert="a3")
            other = await llm.structured("sys", "facts 4", Summary, fallback=FALLBACK,
                                         site="s2", alert="a4")
    assert a1.source == "llm" and a2.source == "llm" and other.source == "llm", (a2, other)
    assert a1b.source == "offline" and a1b.reason == "budget per alert exhausted"
    assert a3.source == "offline" and a3.reason == "budget of site s1 exhausted"
    assert llm.spent_by["site", "s1"] == pytest.approx(0.04) and len(svc.requests) == 3


def test_cost_report_groups_spend() -> None:
    from aiotflow.agents.costs import cost_report
    from aiotflow.tools.control import AuditRecord

    def rec(seq: int, ts: float, site: str, alert: str, usd: float, source: str) -> AuditRecord:
        return AuditRecord(seq=seq, ts=ts, thread_id=f"m/{alert}", kind="llm.narrative",
                           actor="m", detail={"site": site, "alert_id": alert, "tokens": 100,
                                              "cost_usd": usd, "source": source})

    day = 1_700_000_000.0
    records = [rec(1, day, "s1", "a1", 0.01, "llm"), rec(2, day, "s1", "a2", 0.02, "llm"),
               rec(3, day + 86400, "s2", "a3", 0.0, "offline")]
    by_site = cost_report(records, "site")
    assert by_site == [
        {"site": "s1", "calls": 2, "tokens": 200, "usd": 0.03, "without_llm": 0},
        {"site": "s2", "calls": 1, "tokens": 100, "usd": 0.0, "without_llm": 1}]
    assert [r["day"] for r in cost_report(records, "day")] == ["2023-11-14", "2023-11-15"]
    assert len(cost_report(records, "alert")) == 3


async def test_over_budget_the_work_order_says_its_summary_is_deterministic(
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    with ChatCompletionsService(json.dumps({"summary": "never asked for"})) as svc:
        app = App("llm-broke")
        app.service("llm")(lambda _s: LLMClient(llm_settings(
            svc.url, AIOTFLOW_LLM_BUDGET_USD=0.0)))
        register_maintenance_agent(app, settings=NARRATIVE_ONLY)
        async with Engine(app, settings_for(tmp_path / "s", mosquitto.url)) as engine:
            await seed(engine, incidents)
            [outcome] = await engine.submit(make_alert(bundle))
            await engine.control.decide(outcome.approval_id or "", "approved", by="fay",
                                        signer=engine.key)
            await wait_for(lambda: engine.stats.runs_completed == 1)
            [wo] = await engine.ops.work_orders()
            assert "(Deterministic summary: budget exhausted.)" in wo.description
            assert "similar past events" in wo.description
            [rec] = await engine.control.audit_records(kind="llm.narrative")
            assert rec.detail["source"] == "offline" and rec.detail["reason"] == "budget exhausted"
        assert svc.requests == []  # not a single paid call

from pathlib import Path

from agents import LLMClient, LLMSettings, register_maintenance_agent
from edge.bundle import ModelBundle
from vectorstore.models import Incident
from workflows import App, Engine

from ..conftest import Mosquitto
from ..fakes import ChatCompletionsService
from ..workflows.helpers import make_alert, seed, settings_for, wait_for


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
    mosquitto: Mosquitto, bundle: ModelBundle, incidents: list[Incident], tmp_path: Path
) -> None:
    with ChatCompletionsService("LLM: coolant pump failing, dispatch now.") as svc:
        app = App("llm-fleet")
        app.service("llm")(lambda _s: LLMClient(llm_settings(svc.url)))
        register_maintenance_agent(app)
        async with Engine(app, settings_for(tmp_path / "s", mosquitto.url)) as engine:
            await seed(engine, incidents)
            [outcome] = await engine.submit(make_alert(bundle))
            assert outcome.status == "waiting_approval"
            await engine.control.decide(outcome.approval_id or "", "approved", by="fay")
            await wait_for(lambda: engine.stats.runs_completed == 1)
            [wo] = await engine.ops.work_orders()
            assert wo.description.startswith("LLM: coolant pump failing")
            assert "similar past events" in wo.description  # evidence is never left to the LLM
            [rec] = await engine.control.audit_records(kind="llm.narrative")
            assert rec.detail["source"] == "llm" and rec.detail["cost_usd"] > 0
        prompt = svc.requests[0]["body"]["messages"][1]["content"]
        assert "gen-002" in prompt and "coolant pump failure" in prompt

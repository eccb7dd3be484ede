"""The examples load by import string and run."""

from pathlib import Path

import pytest

from aiotflow.edge.bundle import ModelBundle
from aiotflow.workflows import Engine, load_app
from aiotflow.workflows.settings import EngineSettings

from .conftest import Mosquitto
from .workflows.helpers import make_alert

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


async def test_custom_workflow_example(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    app = load_app("examples.custom_workflow:app")
    assert list(app.workflows) == ["vibration_watch"]
    settings = EngineSettings(state_dir=tmp_path, mqtt={"url": mosquitto.url})
    async with Engine(app, settings) as engine:
        [out] = await engine.submit(make_alert(bundle, "bearing_wear"))
        assert out.status == "completed" and out.values["result"]["notification"]
        [note] = await engine.ops.notifications()
        assert "vibration_mm_s" in note.subject
        # a warning-level alert does not match the filter
        low = make_alert(bundle, "bearing_wear").model_copy(update={"severity": "warning",
                                                                     "id": "low"})
        assert await engine.submit(low) == []


def test_example_configs_load() -> None:
    from aiotflow.edge.config import EdgeSettings

    root = Path(__file__).resolve().parents[1] / "examples"
    assert EdgeSettings.load(root / "edge.toml").policy.k == 3
    s = EngineSettings.load(root / "engine.toml", table="engine")
    assert s.mqtt.port == 1883 and s.tool_attempts == 3
    assert load_app("examples.generator_fleet:app").workflows["maintenance"]


def _blocks(lang: str) -> list[str]:
    return [b.split("```", 1)[0] for b in README.split(f"```{lang}\n")[1:]]


def test_readme_commands_are_real() -> None:
    """Every ``aiotflow ...`` line of the README's shell blocks parses with the CLI as
    written (commands, sub-commands and options exist), and every extra it names does."""
    import re
    import shlex

    from aiotflow.cli import _parser
    from aiotflow.extras import EXTRAS

    lines = [re.split(r"\s+#", ln)[0].strip() for block in _blocks("sh")
             for ln in block.replace("\\\n", " ").splitlines()]
    commands = [ln for ln in lines if ln.startswith("aiotflow ")]
    assert len(commands) >= 15
    for line in commands:
        try:
            _parser().parse_args(shlex.split(line)[1:])
        except SystemExit as exc:
            raise AssertionError(f"README: {line!r} does not parse") from exc
    for line in (ln for ln in lines if ln.startswith("pip install")):
        extras = line.partition("[")[2].partition("]")[0]
        assert not extras or set(extras.split(",")) <= {*EXTRAS, "all"}, line


async def test_readme_workflow_runs(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    code = _blocks("python")[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    app = namespace["app"]
    settings = EngineSettings(state_dir=tmp_path, mqtt={"url": mosquitto.url})
    async with Engine(app, settings) as engine:  # type: ignore[arg-type]
        [out] = await engine.submit(make_alert(bundle, "bearing_wear"))
        assert out.status == "completed" and out.values["result"]["notification"]


async def test_readme_llm_agent_runs_with_and_without_a_model(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's "write an agent" block, run as the plan node of a workflow: without
    an LLM it plans in code; with one (a scripted server) the model's checked proposals."""
    from typing import Any

    from langgraph.graph import END, START, StateGraph

    from aiotflow.workflows import App, WorkflowContext

    from .fakes import ChatCompletionsService, calls, turns

    first, agent = _blocks("python")[:2]
    script = turns(calls(("notify_operator", {"subject": "gen-002", "message": "look at it",
                                              "rationale": "score far above", "cites": ["E1"]}),
                         ("create_work_order", {"asset": "gen-009", "site": "plant-1",
                                                "title": "elsewhere", "priority": "low",
                                                "rationale": "why not"})),
                   calls(("submit_plan", {"failure_mode": "bearing_wear", "confidence": 0.8,
                                          "summary": "look"})))
    results = []
    with ChatCompletionsService(script) as svc:
        for with_llm in (False, True):
            if with_llm:
                monkeypatch.setenv("OPENAI_BASE_URL", svc.url)
            ns: dict[str, Any] = {}
            exec(compile(first + agent, "README.md", "exec"), ns)
            app: App = ns["app"]

            def graph(ns: dict[str, Any] = ns) -> StateGraph:  # type: ignore[type-arg]
                g = StateGraph(ns["AgentState"], context_schema=WorkflowContext)
                g.add_node("plan", ns["plan"])
                g.add_edge(START, "plan")
                g.add_edge("plan", END)
                return g

            app.workflows.clear()
            app.workflow("agent")(graph)
            settings = EngineSettings(state_dir=tmp_path / str(with_llm),
                                      mqtt={"url": mosquitto.url})
            async with Engine(app, settings) as engine:  # type: ignore[arg-type]
                [out] = await engine.submit(make_alert(bundle, "bearing_wear"))
            results.append(out.values)
    code_plan, model_plan = (r.get("actions") for r in results)
    assert [a["tool"] for a in code_plan] == ["notify_operator"]
    # the model's work order for another asset was refused; its notification stands
    assert [a["tool"] for a in model_plan] == ["notify_operator"]
    assert model_plan[0]["args"]["subject"] == "gen-002" and len(svc.requests) == 2

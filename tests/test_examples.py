"""The examples load by import string and run."""

from pathlib import Path

from edge.bundle import ModelBundle
from workflows import Engine, load_app
from workflows.settings import EngineSettings

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
    from edge.config import EdgeSettings

    root = Path(__file__).resolve().parents[1] / "examples"
    assert EdgeSettings.load(root / "edge.toml").policy.k == 3
    s = EngineSettings.load(root / "engine.toml", table="engine")
    assert s.mqtt.port == 1883 and s.tool_attempts == 3
    assert load_app("examples.generator_fleet:app").workflows["maintenance"]


async def test_readme_workflow_runs(
    mosquitto: Mosquitto, bundle: ModelBundle, tmp_path: Path
) -> None:
    code = README.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    app = namespace["app"]
    settings = EngineSettings(state_dir=tmp_path, mqtt={"url": mosquitto.url})
    async with Engine(app, settings) as engine:  # type: ignore[arg-type]
        [out] = await engine.submit(make_alert(bundle, "bearing_wear"))
        assert out.status == "completed" and out.values["result"]["notification"]

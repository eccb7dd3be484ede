"""The examples load by import string and run."""

from pathlib import Path

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
    [code] = _blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    app = namespace["app"]
    settings = EngineSettings(state_dir=tmp_path, mqtt={"url": mosquitto.url})
    async with Engine(app, settings) as engine:  # type: ignore[arg-type]
        [out] = await engine.submit(make_alert(bundle, "bearing_wear"))
        assert out.status == "completed" and out.values["result"]["notification"]

"""The approval console, driven as a person would: a second process reading stdin."""

from pathlib import Path

from aiotflow.tools.control import ControlStore
from aiotflow.workflows.console import approval_panel, ask_decision, render_request

from .helpers import cli

REQUEST = {"title": "Dispatch to gen-002: coolant pump failure",
           "summary": "gen-002: suspected coolant pump failure.",
           "evidence": ["7 of 8 similar past events ended in coolant pump failure",
                        "no cooling maintenance in 90 days"],
           "actions": [{"tool": "book_technician", "summary": "book a cooling technician",
                        "args": {}}]}


async def make_pending(state: Path, n: int = 1) -> list[str]:
    async with ControlStore(state / "control.db") as control:
        return [(await control.request_approval(
            thread_id=f"maintenance/a{i}", workflow="maintenance", asset="gen-002",
            title=REQUEST["title"], request=REQUEST, tools=["book_technician"])).id
            for i in range(n)]


async def status(state: Path, aid: str):  # type: ignore[no-untyped-def]
    async with ControlStore(state / "control.db") as control:
        return await control.approval(aid)


async def test_bad_input_is_asked_again_then_rejection_recorded(tmp_path: Path) -> None:
    [aid] = await make_pending(tmp_path)
    code, out, err = await cli("approve", "--state-dir", str(tmp_path), "--user", "carol",
                               stdin=b"maybe\n\nr\nnot during the night shift\n")
    assert code == 0, err
    assert "7 of 8 similar past events" in out and "book a cooling technician" in out
    assert out.count("Please answer a, r or s") == 2
    rec = await status(tmp_path, aid)
    assert rec.status == "rejected" and rec.decided_by == "carol"
    assert rec.comment == "not during the night shift"


async def test_end_of_input_leaves_item_pending(tmp_path: Path) -> None:
    aids = await make_pending(tmp_path, 2)
    code, out, _ = await cli("approve", "--state-dir", str(tmp_path), "--user", "carol",
                             stdin=b"a\n")  # approves the first, then Ctrl-D at the comment
    assert code == 0
    assert "left pending" in out
    assert [(await status(tmp_path, a)).status for a in aids] == ["pending", "pending"]
    code, out, _ = await cli("approvals", "--state-dir", str(tmp_path))
    assert all(a in out for a in aids)


async def test_approve_with_skip_and_listing(tmp_path: Path) -> None:
    first, second = await make_pending(tmp_path, 2)
    code, _, _ = await cli("approve", "--state-dir", str(tmp_path), "--user", "dan",
                           stdin=b"s\nyes\n\n")
    assert code == 0
    assert (await status(tmp_path, first)).status == "pending"
    rec = await status(tmp_path, second)
    assert rec.status == "approved" and rec.comment is None
    code, out, _ = await cli("approvals", "--all", "--state-dir", str(tmp_path))
    assert "approved" in out and "pending" in out
    code, _, err = await cli("approve", "nope", "--decision", "approve",
                             "--state-dir", str(tmp_path))
    assert code == 2 and "no approval" in err


async def test_ask_decision_in_process(tmp_path: Path) -> None:
    await make_pending(tmp_path)
    async with ControlStore(tmp_path / "control.db") as control:
        [rec] = await control.approvals()
    answers = iter(["x", "approve", "ok by me"])
    printed: list[str] = []
    got = ask_decision(rec, input_fn=lambda _p: next(answers), output=printed.append)
    assert got == ("approved", "ok by me")
    assert printed[0] == render_request(rec) and "Please answer" in printed[1]


async def test_approval_panel_shows_request_text_literally(tmp_path: Path) -> None:
    """What an LLM wrote into a request is shown as written: markup is not interpreted and
    terminal control codes (clear screen, cursor moves) never reach the terminal."""
    import io

    from rich.console import Console

    async with ControlStore(tmp_path / "control.db") as control:
        rec = await control.request_approval(
            thread_id="maintenance/x", workflow="maintenance", asset="gen-002",
            title="[white on white]hidden[/] pump", tools=["book_technician"],
            request=REQUEST | {"summary": "swap\x1b[2J\x1b[Hthe pump",
                               "evidence": ["[link=http://x]7 of 8[/link] similar"]})
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=100).print(approval_panel(rec))
    shown = out.getvalue()
    assert "[white on white]hidden[/] pump" in shown and "[link=http://x]7 of 8[/link]" in shown
    assert "\x1b[2J" not in shown and "\x1b[H" not in shown
    assert "swap\\x1b[2J\\x1b[Hthe pump" in shown  # shown as its escapes
    assert "If approved, aiotflow will:" in shown and "book a cooling technician" in shown
    plain = render_request(rec)
    assert "\x1b" not in plain and "swap\\x1b[2J\\x1b[Hthe pump" in plain


def test_filters_ignore_model_drift_unless_asked() -> None:
    from aiotflow.contracts.schema import Alert
    from aiotflow.workflows.filters import AlertFilter

    drift = Alert(id="d", site="_edge", asset="m", ts=1, episode_start=1, severity="warning",
                  score=0.4, threshold=0.25, embedding=[], summary={}, model_name="m",
                  model_version="1", kind="model_drift")
    assert not AlertFilter().matches(drift)
    assert AlertFilter(kinds=["model_drift"]).matches(drift)
    assert AlertFilter(min_severity="major").matches(drift.model_copy(
        update={"kind": "anomaly", "severity": "critical"}))

"""Risk tiers, approver roles, escalation, expiry, agent limits and console identity."""

import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from aiotflow.tools import (
    ApprovalRequired,
    CallContext,
    ControlStore,
    PermissionDenied,
    Principal,
    ToolExecutor,
    ToolRegistry,
)
from aiotflow.tools.policy import OperatorSpec, Policy, TierRule, hash_pin, verify_pin
from aiotflow.workflows.console import IdentityError, check_identity, review_pending


class Stop(BaseModel):
    asset: str
    site: str = "plant-1"


def registry(calls: list[str]) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(risk="critical")
    async def stop_line(args: Stop) -> Stop:
        calls.append(f"stop {args.asset}")
        return args

    @reg.tool(risk="high")
    async def open_valve(args: Stop) -> Stop:
        calls.append(f"valve {args.asset}")
        return args

    @reg.tool(risk="low")
    async def read_level(args: Stop) -> Stop:
        calls.append(f"read {args.asset}")
        return args

    return reg


POLICY = Policy(
    tiers={"low": TierRule(mode="auto"), "medium": TierRule(mode="auto"),
           "high": TierRule(mode="approval", approvers=["supervisor"], escalate_after_s=60,
                            escalate_to=["manager"], expires_s=600),
           "critical": TierRule(mode="forbidden")},
    operators=[OperatorSpec(name="ana", roles=["supervisor"]),
               OperatorSpec(name="bob", roles=["technician"]),
               OperatorSpec(name="max", roles=["manager"], pin_hash=hash_pin("2468"))],
)


def ctx(approval_id: str | None = None, **kw: object) -> CallContext:
    return CallContext(principal=Principal(name="wf", **kw), thread_id="t-1",  # type: ignore[arg-type]
                       approval_id=approval_id)


async def ask(control: ControlStore, tool: str, asset: str = "pump-7") -> str:
    rec = await control.request_approval(
        thread_id="t-1", workflow="wf", title=f"{tool} {asset}", risk="high", tools=[tool],
        request={"actions": [{"tool": tool, "summary": "", "args": {"asset": asset}}]})
    return rec.id


async def test_tiers_roles_escalation_and_expiry(tmp_path: Path) -> None:
    calls: list[str] = []
    async with ControlStore(tmp_path / "c.db") as control:
        ex = ToolExecutor(registry(calls), control, policy=POLICY)
        await ex.call("read_level", {"asset": "pump-7"}, ctx())  # low: runs on its own
        with pytest.raises(PermissionDenied, match="forbidden by policy"):
            await ex.call("stop_line", {"asset": "pump-7"}, ctx())  # critical: never
        with pytest.raises(ApprovalRequired, match="without an approval"):
            await ex.call("open_valve", {"asset": "pump-7"}, ctx())

        by_bob = await ask(control, "open_valve")
        await control.decide(by_bob, "approved", by="bob")  # written behind the console
        with pytest.raises(ApprovalRequired, match=r"need one of the roles \[.supervisor.\]"):
            await ex.call("open_valve", {"asset": "pump-7"}, ctx(by_bob))

        by_max = await ask(control, "open_valve", "pump-8")
        await control.decide(by_max, "approved", by="max")
        with pytest.raises(ApprovalRequired, match="need one of the roles"):
            await ex.call("open_valve", {"asset": "pump-8"}, ctx(by_max))  # not escalated

        # after escalate_after_s a manager may decide too
        waiting = await ask(control, "open_valve", "pump-9")
        rec = await control.approval(waiting)
        assert rec is not None
        changed = await control.sweep(POLICY, now=rec.requested_at + 61)
        assert [(c.id, what) for c, what in changed] == [(waiting, "escalated")]
        esc = await control.approval(waiting)
        assert esc is not None and esc.escalated_at is not None
        ok, _ = POLICY.may_approve("max", "high", escalated=True)
        assert ok
        await control.decide(waiting, "approved", by="max")
        await ex.call("open_valve", {"asset": "pump-9"}, ctx(waiting))
        assert calls == ["read pump-7", "valve pump-9"]

        # a request nobody decides expires and can no longer be approved or used
        late = await ask(control, "open_valve", "pump-10")
        rec = await control.approval(late)
        assert rec is not None
        await control.sweep(POLICY, now=rec.requested_at + 601)
        after = await control.decide(late, "approved", by="ana")
        assert after.status == "expired" and after.decided_by == "policy"
        with pytest.raises(ApprovalRequired, match="is expired"):
            await ex.call("open_valve", {"asset": "pump-10"}, ctx(late))
        assert calls == ["read pump-7", "valve pump-9"]
        kinds = [r.kind for r in await control.audit_records()]
        for kind in ("tool.forbidden", "tool.blocked", "approval.escalated", "approval.expired"):
            assert kind in kinds


async def test_agents_are_limited_to_their_sites_and_assets(tmp_path: Path) -> None:
    calls: list[str] = []
    async with ControlStore(tmp_path / "c.db") as control:
        ex = ToolExecutor(registry(calls), control, policy=POLICY)
        with pytest.raises(PermissionDenied, match="may not act on site 'plant-2'"):
            await ex.call("read_level", {"asset": "p", "site": "plant-2"},
                          ctx(sites=frozenset({"plant-1"})))
        with pytest.raises(PermissionDenied, match="may not act on asset 'p-9'"):
            await ex.call("read_level", {"asset": "p-9"}, ctx(assets=frozenset({"p-1"})))
        await ex.call("read_level", {"asset": "p-1"}, ctx(sites=frozenset({"plant-1"}),
                                                           assets=frozenset({"p-1"})))
        assert calls == ["read p-1"]
        denied = await control.audit_records(kind="tool.denied")
        assert len(denied) == 2 and "plant-2" in denied[0].detail["reason"]


def write_config(tmp_path: Path) -> Path:
    """An engine config: high risk needs a supervisor; ana is one, bob is not."""
    cfg = tmp_path / "engine.toml"
    cfg.write_text(f"""
[engine]
state_dir = "{tmp_path}"
[engine.policy.tiers.high]
mode = "approval"
approvers = ["supervisor"]
[[engine.policy.operators]]
name = "ana"
roles = ["supervisor"]
[[engine.policy.operators]]
name = "bob"
roles = ["technician"]
""")
    return cfg


def test_pins_are_salted_and_checked() -> None:
    h = hash_pin("2468")
    assert h.startswith("pbkdf2_sha256$") and h != hash_pin("2468")
    assert verify_pin("2468", h) and not verify_pin("2469", h)
    assert not verify_pin("2468", "garbage") and not verify_pin("2468", "md5$1$00$00")


async def test_console_asks_who_approves_and_what_they_may_decide(tmp_path: Path) -> None:
    async with ControlStore(tmp_path / "c.db") as control:
        with pytest.raises(IdentityError, match="not a configured operator"):
            await check_identity(control, POLICY, "mallory", lambda _p: "")
        with pytest.raises(IdentityError, match="wrong PIN"):
            await check_identity(control, POLICY, "max", lambda _p: "1111")
        await check_identity(control, POLICY, "max", lambda _p: "2468")
        await check_identity(control, POLICY, "ana", lambda _p: "unused")  # no PIN set
        refused = await control.audit_records(kind="console.refused")
        assert [r.actor for r in refused] == ["mallory", "max"]

        aid = await ask(control, "open_valve")
        out: list[str] = []
        counts = await review_pending(control, user="bob", policy=POLICY,
                                      input_fn=lambda _p: "a", output=out.append)
        assert counts["not_allowed"] == 1 and counts["approved"] == 0
        assert any("Not yours to decide" in line and "supervisor" in line for line in out)
        answers = iter(["a", "checked on site"])
        counts = await review_pending(control, user="ana", policy=POLICY,
                                      input_fn=lambda _p: next(answers), output=out.append)
        assert counts["approved"] == 1
        rec = await control.approval(aid)
        assert rec is not None and rec.decided_by == "ana" and rec.comment == "checked on site"
        assert any("risk high" in line for line in out)


async def test_cli_decision_checks_identity_and_role(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from aiotflow.cli import main

    cfg = write_config(tmp_path)
    async with ControlStore(tmp_path / "control.db") as control:
        aid = await ask(control, "open_valve")

    async def approve(user: str) -> int:
        return await asyncio.to_thread(main, ["approve", aid, "--decision", "approve",
                                              "--user", user, "--config", str(cfg)])

    assert await approve("eve") == 1
    assert "not a configured operator" in capsys.readouterr().err
    assert await approve("bob") == 1
    assert "not yours to decide" in capsys.readouterr().err
    assert await approve("ana") == 0
    async with ControlStore(tmp_path / "control.db") as control:
        rec = await control.approval(aid)
        assert rec is not None and rec.status == "approved" and rec.decided_by == "ana"
    assert time.time() - rec.requested_at < 60


async def test_interactive_console_asks_who_is_approving(tmp_path: Path) -> None:
    from ..workflows.helpers import cli

    cfg = write_config(tmp_path)
    async with ControlStore(tmp_path / "control.db") as control:
        aid = await ask(control, "open_valve")
    code, out, err = await cli("approve", "--config", str(cfg), stdin=b"bob\n")
    assert code == 0 and "Who is approving?" in out and "Not yours to decide" in out
    code, out, err = await cli("approve", "--config", str(cfg), stdin=b"ana\na\nseen it\n")
    assert code == 0 and "APPROVED" in out, out + err
    async with ControlStore(tmp_path / "control.db") as control:
        rec = await control.approval(aid)
        assert rec is not None and rec.decided_by == "ana" and rec.comment == "seen it"
    code, out, err = await cli("approve", "--config", str(cfg), stdin=b"")
    assert code == 1 and "no operator name" in err

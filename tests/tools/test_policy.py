"""Risk tiers, approver roles, escalation, expiry, agent limits, console identity and
the attacks on decisions: a row written behind the console, a decision copied from
another approval, one spent twice, a PIN guessed."""

import json
import os
import stat
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from aiotflow.keys import generate_key, save_key
from aiotflow.tools import (
    ApprovalRequired,
    CallContext,
    ControlStore,
    PermissionDenied,
    Principal,
    ToolExecutor,
    ToolRegistry,
)
from aiotflow.tools.policy import OperatorSpec, Policy, TierRule, check_pin
from aiotflow.workflows.console import IdentityError, check_identity, decide, review_pending

KEYS = {name: generate_key(name) for name in ("ana", "bob", "max")}
FAST_KDF = (2**10, 8, 1)  # test key files: the format, not the cost


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
    operators=[OperatorSpec(name="ana", roles=["supervisor"], public_key=KEYS["ana"].public_key),
               OperatorSpec(name="bob", roles=["technician"], public_key=KEYS["bob"].public_key),
               OperatorSpec(name="max", roles=["manager"], public_key=KEYS["max"].public_key)],
    pin_attempts=3, pin_backoff_s=0.0,
)


def key_files(root: Path) -> Path:
    """The operators' key files, each opened by the PIN 24681357."""
    for name, key in KEYS.items():
        save_key(key, root / f"{name}.key", passphrase="24681357", cost=FAST_KDF)
    return root


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
        await control.decide(by_bob, "approved", by="bob", signer=KEYS["bob"])
        with pytest.raises(ApprovalRequired, match=r"need one of the roles \[.supervisor.\]"):
            await ex.call("open_valve", {"asset": "pump-7"}, ctx(by_bob))

        by_max = await ask(control, "open_valve", "pump-8")
        await control.decide(by_max, "approved", by="max", signer=KEYS["max"])
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
        await control.decide(waiting, "approved", by="max", signer=KEYS["max"])
        await ex.call("open_valve", {"asset": "pump-9"}, ctx(waiting))
        assert calls == ["read pump-7", "valve pump-9"]

        # a request nobody decides expires and can no longer be approved or used
        late = await ask(control, "open_valve", "pump-10")
        rec = await control.approval(late)
        assert rec is not None
        await control.sweep(POLICY, now=rec.requested_at + 601)
        after = await control.decide(late, "approved", by="ana", signer=KEYS["ana"])
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
public_key = "{KEYS['ana'].public_key}"
[[engine.policy.operators]]
name = "bob"
roles = ["technician"]
public_key = "{KEYS['bob'].public_key}"
""")
    return cfg


def test_pins_are_six_digits_or_a_passphrase() -> None:
    for weak in ("0000", "12345", "abcdef", "12345a"):
        with pytest.raises(ValueError, match="at least 6 digits"):
            check_pin(weak)
    check_pin("246813")
    check_pin("correct horse battery")


def test_operators_need_a_key_and_pin_hashes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="pin_hash is replaced by public_key"):
        OperatorSpec.model_validate({"name": "ana", "pin_hash": "pbkdf2_sha256$1$00$00"})
    with pytest.raises(ValueError, match="ed25519"):
        OperatorSpec(name="ana", public_key="not-a-key")


async def test_console_asks_who_approves_and_what_they_may_decide(tmp_path: Path) -> None:
    keys = key_files(tmp_path / "keys")
    async with ControlStore(tmp_path / "c.db") as control:
        with pytest.raises(IdentityError, match="not a configured operator"):
            await check_identity(control, POLICY, "mallory", lambda _p: "")
        with pytest.raises(IdentityError, match="wrong PIN"):
            await check_identity(control, POLICY, "max", lambda _p: "11111111",
                                 key_path=keys / "max.key")
        key = await check_identity(control, POLICY, "max", lambda _p: "24681357",
                                   key_path=keys / "max.key")
        assert key.public_key == KEYS["max"].public_key
        with pytest.raises(IdentityError, match="is not the key the policy has for ana"):
            await check_identity(control, POLICY, "ana", lambda _p: "24681357",
                                 key_path=keys / "max.key")  # someone else's key file
        refused = await control.audit_records(kind="console.refused")
        assert [r.actor for r in refused] == ["mallory", "max", "ana"]

        aid = await ask(control, "open_valve")
        out: list[str] = []
        counts = await review_pending(control, user="bob", policy=POLICY,
                                      input_fn=lambda _p: "a", output=out.append,
                                      pin_fn=lambda _p: "24681357", key_path=keys / "bob.key")
        assert counts["not_allowed"] == 1 and counts["approved"] == 0
        assert any("Not yours to decide" in line and "supervisor" in line for line in out)
        answers = iter(["a", "checked on site"])
        counts = await review_pending(control, user="ana", policy=POLICY,
                                      input_fn=lambda _p: next(answers), output=out.append,
                                      pin_fn=lambda _p: "24681357", key_path=keys / "ana.key")
        assert counts["approved"] == 1
        rec = await control.approval(aid)
        assert rec is not None and rec.decided_by == "ana" and rec.comment == "checked on site"
        assert rec.signer == KEYS["ana"].key_id and rec.signature
        assert any("risk high" in line for line in out)


async def test_wrong_pins_back_off_then_lock_the_operator_out(tmp_path: Path) -> None:
    keys = key_files(tmp_path / "keys")
    policy = POLICY.model_copy(update={"pin_backoff_s": 0.2, "lockout_s": 60})
    async with ControlStore(tmp_path / "c.db") as control:
        aid = await ask(control, "open_valve")
        guess = iter(f"{n:06d}" for n in range(100))

        async def attempt(pin: str | None = None) -> str:
            try:
                await decide(control, policy, aid, "approved", user="ana",
                             pin_fn=lambda _p: pin or next(guess), key_path=keys / "ana.key")
            except IdentityError as exc:
                return str(exc)
            return "ok"

        assert "2 more before a lock-out" in await attempt()
        assert "try again in" in await attempt()  # too soon after a wrong one
        deadline = time.monotonic() + 5
        while "try again in" in (msg := await attempt()) and time.monotonic() < deadline:
            pass
        assert "1 more before a lock-out" in msg
        while "try again in" in (msg := await attempt()) and time.monotonic() < deadline:
            pass
        assert "locked out until" in msg
        # locked: even the right PIN is refused now, and nothing was decided
        assert "locked out" in await attempt("24681357")
        rec = await control.approval(aid)
        assert rec is not None and rec.status == "pending"
        kinds = [r.kind for r in await control.audit_records()]
        assert kinds.count("operator.locked") == 1
        assert [n for n, _ in await control.lockouts_to_announce()] == ["ana"]
        assert await control.lockouts_to_announce() == []  # announced once


async def test_a_decision_row_written_behind_the_console_is_a_forgery(tmp_path: Path) -> None:
    calls: list[str] = []
    async with ControlStore(tmp_path / "c.db") as control:
        ex = ToolExecutor(registry(calls), control, policy=POLICY)
        aid = await ask(control, "open_valve")
        # the attacker has the database: the row says ana approved, with no signature
        async with control.unit() as db:
            await db.execute("UPDATE approvals SET status = 'approved', decided_by = 'ana',"
                             " decided_at = ? WHERE id = ?", (time.time(), aid))
        with pytest.raises(ApprovalRequired, match="not signed"):
            await ex.call("open_valve", {"asset": "pump-7"}, ctx(aid))
        # ... or signs it with a key of their own
        mallory = generate_key("ana")
        async with control.unit() as db:
            await db.execute("UPDATE approvals SET status = 'pending' WHERE id = ?", (aid,))
        await control.decide(aid, "approved", by="ana", signer=mallory)
        with pytest.raises(ApprovalRequired, match=r"not ana.s key|signature is not ana.s"):
            await ex.call("open_valve", {"asset": "pump-7"}, ctx(aid))
        assert calls == []
        forged = await control.audit_records(kind="approval.forgery")
        assert len(forged) == 2 and all(f.detail["claimed_by"] == "ana" for f in forged)


async def test_a_decision_is_bound_to_its_approval_its_arguments_and_used_once(
    tmp_path: Path
) -> None:
    calls: list[str] = []
    async with ControlStore(tmp_path / "c.db") as control:
        ex = ToolExecutor(registry(calls), control, policy=POLICY)
        first = await ask(control, "open_valve")
        await control.decide(first, "approved", by="ana", signer=KEYS["ana"])
        # replay: ana's signed decision copied onto another approval's row
        second = await ask(control, "open_valve", "pump-8")
        signed = await control.approval(first)
        assert signed is not None
        async with control.unit() as db:
            await db.execute(
                "UPDATE approvals SET status = 'approved', decided_by = 'ana', decided_at = ?,"
                " decision_doc = ?, signature = ?, signer = ? WHERE id = ?",
                (signed.decided_at, signed.decision_doc, signed.signature, signed.signer, second))
        with pytest.raises(ApprovalRequired, match="copied from another approval"):
            await ex.call("open_valve", {"asset": "pump-8"}, ctx(second))
        # the request edited after ana decided: its digest no longer matches
        doc = json.loads(signed.decision_doc or "{}")
        async with control.unit() as db:
            await db.execute("UPDATE approvals SET request = ? WHERE id = ?", (json.dumps(
                {"actions": [{"tool": "open_valve", "summary": "", "args": {"asset": "pump-9"}}]}
            ), first))
        with pytest.raises(ApprovalRequired, match="request_digest"):
            await ex.call("open_valve", {"asset": "pump-9"}, ctx(first))
        assert doc["actions"][0]["args"] == {"asset": "pump-7"}

        # exact arguments, once: a third approval, for pump-10 on plant-1
        third = await ask(control, "open_valve", "pump-10")
        await control.decide(third, "approved", by="ana", signer=KEYS["ana"])
        with pytest.raises(ApprovalRequired, match="not for this call"):
            await ex.call("open_valve", {"asset": "pump-10", "site": "plant-2"}, ctx(third))
        key1 = CallContext(principal=Principal(name="wf"), thread_id="t-1", approval_id=third,
                           idempotency_key="call-1")
        await ex.call("open_valve", {"asset": "pump-10"}, key1)
        await ex.call("open_valve", {"asset": "pump-10"}, key1)  # the same call again: replayed
        key2 = key1.model_copy(update={"idempotency_key": "call-2"})
        with pytest.raises(ApprovalRequired, match="already used by another call"):
            await ex.call("open_valve", {"asset": "pump-10"}, key2)
        assert calls == ["valve pump-10"]


async def test_cli_decision_checks_identity_and_role(tmp_path: Path) -> None:
    from ..workflows.helpers import cli

    cfg = write_config(tmp_path)
    keys = key_files(tmp_path / "keys")
    async with ControlStore(tmp_path / "control.db") as control:
        aid = await ask(control, "open_valve")
    env = {"AIOTFLOW_OPERATOR_KEYS": str(keys)}

    async def approve(user: str) -> tuple[int, str, str]:
        return await cli("approve", aid, "--decision", "approve", "--user", user,
                         "--config", str(cfg), stdin=b"24681357\n", env=env)

    code, _out, err = await approve("eve")
    assert code == 1 and "not a configured operator" in err
    code, _out, err = await approve("bob")
    assert code == 1 and "not yours to decide" in err
    code, _out, err = await approve("ana")
    assert code == 0, err
    async with ControlStore(tmp_path / "control.db") as control:
        rec = await control.approval(aid)
        assert rec is not None and rec.status == "approved" and rec.decided_by == "ana"
        assert rec.signer == KEYS["ana"].key_id
    assert time.time() - rec.requested_at < 60


async def test_interactive_console_asks_who_is_approving(tmp_path: Path) -> None:
    from ..workflows.helpers import cli

    cfg = write_config(tmp_path)
    env = {"AIOTFLOW_OPERATOR_KEYS": str(key_files(tmp_path / "keys"))}
    async with ControlStore(tmp_path / "control.db") as control:
        aid = await ask(control, "open_valve")
    code, out, err = await cli("approve", "--config", str(cfg), stdin=b"bob\n24681357\n",
                               env=env)
    assert code == 0 and "Who is approving?" in out and "Not yours to decide" in out, out + err
    code, out, err = await cli("approve", "--config", str(cfg),
                               stdin=b"ana\n24681357\na\nseen it\n", env=env)
    assert code == 0 and "APPROVED" in out, out + err
    async with ControlStore(tmp_path / "control.db") as control:
        rec = await control.approval(aid)
        assert rec is not None and rec.decided_by == "ana" and rec.comment == "seen it"
    code, out, err = await cli("approve", "--config", str(cfg), stdin=b"")
    assert code == 1 and "no operator name" in err


async def test_operator_keygen_refuses_short_pins_and_writes_a_private_key(
    tmp_path: Path
) -> None:
    from ..workflows.helpers import cli

    out_path = tmp_path / "ops" / "cara.key"
    code, _out, err = await cli("operator", "keygen", "cara", "--out", str(out_path),
                                stdin=b"1234\n1234\n")
    assert code == 2 and "at least 6 digits" in err and not out_path.exists()
    old = os.umask(0o022)
    try:
        code, out, err = await cli("operator", "keygen", "cara", "--out", str(out_path),
                                   stdin=b"97531864\n97531864\n")
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(out_path.stat().st_mode) == 0o600
    assert "97531864" not in out_path.read_text()
    spec = OperatorSpec(name="cara", public_key=out.split('public_key = "')[1].split('"')[0])
    assert spec.public_key.startswith("ed25519:")

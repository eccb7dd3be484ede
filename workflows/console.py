"""The approval console: ``aiotflow approvals`` lists, ``aiotflow approve`` decides.

It only needs the control database, so it works from a second terminal while
``aiotflow run`` (or ``aiotflow demo``) is running; the engine picks the decision up.
Bad input is asked again; Ctrl-D (end of input) leaves the item pending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiotflow.keys import KeyFileError, SigningKey, WrongPassphrase, load_key
from aiotflow.terminal import printable
from aiotflow.tools.control import ApprovalRecord, ControlStore, Decision
from aiotflow.tools.policy import Policy

__all__ = [
    "IdentityError",
    "approval_panel",
    "ask_decision",
    "check_identity",
    "decide",
    "format_pending",
    "operator_key_path",
    "pending_rows",
    "refusal",
    "render_request",
    "review_pending",
]


class IdentityError(Exception):
    """The person at the console is not who may decide (unknown, wrong PIN, locked out,
    no key to sign with)."""


def operator_key_path(name: str) -> Path:
    """Where operator ``name``'s key file is looked for: ``$AIOTFLOW_OPERATOR_KEYS/NAME.key``,
    default ``~/.config/aiotflow/operators/NAME.key``."""
    root = os.environ.get("AIOTFLOW_OPERATOR_KEYS")
    base = Path(root) if root else Path.home() / ".config" / "aiotflow" / "operators"
    return base / f"{name}.key"


async def check_identity(control: ControlStore, policy: Policy, user: str,
                         pin_fn: Callable[[str], str], *, key_path: str | Path | None = None,
                         local_key: SigningKey | None = None) -> SigningKey:
    """The key that signs ``user``'s decisions, once they proved who they are.

    With operators in ``policy``: ``user`` must be one, not locked out, and open their key
    file with their PIN; a wrong PIN is audited and counted, and ``policy.pin_attempts``
    in a row lock them out for ``policy.lockout_s`` (the engine announces it). Each wrong
    PIN also makes the next try wait (``pin_backoff_s``, doubled each time). Without
    operators: ``local_key`` (the engine's own, for whoever can read its state dir), else
    ``user``'s key file. Every refusal is audited."""
    async def refuse(reason: str) -> IdentityError:
        await control.audit("console.refused", actor=user, reason=reason)
        return IdentityError(reason)

    op = policy.operator(user) if policy.operators else None
    if policy.operators and op is None:
        raise await refuse(f"{user!r} is not a configured operator (see [engine.policy])")
    if op is None and local_key is not None and key_path is None:
        return SigningKey(user, local_key.private)
    path = Path(key_path) if key_path is not None else operator_key_path(user)
    if not path.exists():
        raise await refuse(f"no key for {user} at {path}: run `aiotflow operator keygen "
                           f"{user}` (or give --key)")
    failures, locked, last = await control.operator_guard(user)
    now = time.time()
    if locked is not None and locked > now:
        raise await refuse(f"{user} is locked out after wrong PINs until "
                           f"{_when(locked)}")
    if failures:
        wait = min(policy.pin_backoff_s * 2 ** (failures - 1), 300.0)
        if last is not None and now < last + wait:
            raise await refuse(f"wrong PIN for {user} just before: try again in "
                               f"{last + wait - now:.0f} s")
    try:
        pin = pin_fn(f"PIN for {user}: ")
    except (EOFError, KeyboardInterrupt):
        pin = ""
    try:
        key = await asyncio.to_thread(load_key, path, passphrase=pin)
    except WrongPassphrase:
        failures, locked = await control.pin_failed(
            user, attempts=policy.pin_attempts, lockout_s=policy.lockout_s,
            reason="wrong PIN")
        if locked:
            raise IdentityError(f"wrong PIN for {user}: locked out until {_when(locked)}"
                                ) from None
        left = policy.pin_attempts - failures
        raise IdentityError(f"wrong PIN for {user} ({left} more before a lock-out)") from None
    except KeyFileError as exc:
        raise await refuse(str(exc)) from None
    if op is not None and key.public_key != op.public_key:
        raise await refuse(f"{path} is not the key the policy has for {user}")
    await control.pin_ok(user)
    return SigningKey(user, key.private)

_CHOICES: dict[str, Decision | None] = {
    "a": "approved", "approve": "approved", "y": "approved", "yes": "approved",
    "r": "rejected", "reject": "rejected", "n": "rejected", "no": "rejected",
    "s": None, "skip": None,
}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def pending_rows(records: list[ApprovalRecord]) -> list[list[str]]:
    """``[id, asset, risk, requested, title]`` per approval (``!``: escalated)."""
    return [[r.id, r.asset, r.risk + ("!" if r.escalated_at else ""), _when(r.requested_at),
             r.title] for r in records]


def format_pending(records: list[ApprovalRecord]) -> str:
    """A table of pending approvals, as plain text."""
    if not records:
        return "No approvals waiting."
    lines = [f"{'ID':36}  {'ASSET':10}  {'RISK':8}  {'REQUESTED':19}  TITLE"]
    for rid, asset, risk, when, title in pending_rows(records):
        lines.append(f"{rid:36}  {asset[:10]:10}  {risk:8}  {when:19}  {title}")
    return "\n".join(lines)


def render_request(rec: ApprovalRecord) -> str:
    """The evidence and proposed actions of one approval, for a person to read (control
    characters shown as escapes, as in :func:`approval_panel`)."""
    req: dict[str, Any] = rec.request
    wrap = textwrap.TextWrapper(width=88, initial_indent="  - ", subsequent_indent="    ")
    out = [
        "=" * 88,
        f"APPROVAL {rec.id}",
        printable(rec.title),
        f"workflow {rec.workflow} | thread {rec.thread_id} | requested {_when(rec.requested_at)}",
        f"risk {rec.risk}" + (f" | escalated {_when(rec.escalated_at)}" if rec.escalated_at
                              else ""),
        "-" * 88,
        textwrap.fill(printable(req.get("summary", "")), 88),
    ]
    evidence = req.get("evidence") or []
    if evidence:
        out.append("\nEvidence:")
        out += [wrap.fill(printable(e)) for e in evidence]
    actions = req.get("actions") or []
    if actions:
        out.append("\nIf approved, aiotflow will:")
        out += [wrap.fill(printable(f"[{a.get('tool')}] {a.get('summary')}")) for a in actions]
    out.append("=" * 88)
    return "\n".join(out)


def _show(rec: ApprovalRecord, output: Callable[[str], Any]) -> None:
    """The approval panel on a terminal, the plain text anywhere else."""
    if output is print and sys.stdout.isatty():  # rich comes with the engine extra
        from rich.console import Console

        console = Console(highlight=False)
        console.print(approval_panel(rec, width=min(console.width, 92)))
    else:
        output(render_request(rec))


def approval_panel(rec: ApprovalRecord, *, width: int = 92) -> Any:
    """The evidence and proposed actions of one approval as a rich panel.

    Every string from the request is a :class:`rich.text.Text` (never markup) with its
    control characters shown as escapes: a title or summary written by an LLM cannot
    restyle, move the cursor or hide parts of what the person reads."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.text import Text

    req: dict[str, Any] = rec.request
    parts: list[Any] = [
        Text(printable(rec.title), style="bold"),
        Text(f"workflow {rec.workflow} | thread {rec.thread_id} | "
             f"requested {_when(rec.requested_at)}"),
        Text(f"risk {rec.risk}" + (f" | escalated {_when(rec.escalated_at)}"
                                   if rec.escalated_at else "")),
        Rule(style="dim"),
        Text(printable(req.get("summary", ""))),
    ]
    for heading, items in (("Evidence:", [printable(e) for e in req.get("evidence") or []]),
                           ("If approved, aiotflow will:",
                            [printable(f"[{a.get('tool')}] {a.get('summary')}")
                             for a in req.get("actions") or []])):
        if items:
            parts += [Text(f"\n{heading}", style="bold"), *(Text(f"  - {x}") for x in items)]
    return Panel(Group(*parts), title=Text(f"APPROVAL {rec.id}"), title_align="left",
                 width=width, border_style="red" if rec.risk in ("high", "critical")
                 else "yellow")


def ask_decision(
    rec: ApprovalRecord,
    *,
    input_fn: Callable[[str], str] = input,
    output: Callable[[str], Any] = print,
) -> tuple[Decision, str | None] | None:
    """Ask approve / reject / skip until the answer is valid.

    Returns ``(decision, comment)``, or ``None`` for skip. Raises ``EOFError`` on end of
    input so that the caller leaves the item pending.
    """
    _show(rec, output)
    while True:
        answer = input_fn("Approve this plan? [a]pprove / [r]eject / [s]kip: ").strip().lower()
        if answer in _CHOICES:
            break
        output(f"Please answer a, r or s (got {answer!r}).")
    decision = _CHOICES[answer]
    if decision is None:
        return None
    comment = input_fn("Comment (optional, Enter for none): ").strip() or None
    return decision, comment


async def refusal(control: ControlStore, policy: Policy, user: str,
                  rec: ApprovalRecord) -> str | None:
    """Why ``user`` may not decide ``rec`` (audited), or ``None`` if they may."""
    ok, why = policy.may_approve(user, rec.risk, escalated=rec.escalated_at is not None)
    if ok:
        return None
    await control.audit("approval.refused", actor=user, thread_id=rec.thread_id,
                        approval_id=rec.id, reason=why)
    return why


async def decide(control: ControlStore, policy: Policy, approval_id: str, decision: Decision,
                 *, user: str, comment: str | None = None,
                 pin_fn: Callable[[str], str], key_path: str | Path | None = None,
                 local_key: SigningKey | None = None) -> ApprovalRecord:
    """Record ``user``'s signed ``decision`` on one approval without asking (``approve
    --decision``): the same identity and role checks as the console, refusals audited.

    Raises :class:`IdentityError` when it is not theirs to decide or someone decided
    first, :class:`KeyError` when there is no such approval."""
    key = await check_identity(control, policy, user, pin_fn, key_path=key_path,
                               local_key=local_key)
    rec = await control.approval(approval_id)
    if rec is None:
        raise KeyError(f"no approval {approval_id}")
    why = await refusal(control, policy, user, rec)
    if why is not None:
        raise IdentityError(f"not yours to decide: {why}")
    after = await control.decide(approval_id, decision, by=user, comment=comment, signer=key)
    if after.decided_by != user or after.status != decision:
        raise IdentityError(f"already {after.status} by {after.decided_by}")
    return after


async def review_pending(
    control: ControlStore,
    *,
    user: str,
    approval_id: str | None = None,
    policy: Policy | None = None,
    input_fn: Callable[[str], str] = input,
    pin_fn: Callable[[str], str] | None = None,
    output: Callable[[str], Any] = print,
    key_path: str | Path | None = None,
    local_key: SigningKey | None = None,
) -> dict[str, int]:
    """Ask about each pending approval (or just ``approval_id``); returns counts.

    Each decision is signed (see :func:`check_identity` for whose key). With a ``policy``
    that lists operators, ``user`` must be one (and give their PIN), and only approvals
    whose risk tier their roles cover are offered; the others are listed as not theirs
    to decide.
    """
    import getpass

    policy = policy or Policy()
    key = await check_identity(control, policy, user, pin_fn or getpass.getpass,
                               key_path=key_path, local_key=local_key)
    counts = {"approved": 0, "rejected": 0, "skipped": 0, "left_pending": 0, "not_allowed": 0}
    if approval_id is not None:
        rec = await control.approval(approval_id)
        if rec is None:
            raise KeyError(f"no approval {approval_id!r}")
        pending = [rec] if rec.status == "pending" else []
        if not pending:
            output(f"Approval {approval_id} is already {rec.status} by {rec.decided_by}.")
    else:
        pending = await control.approvals(status="pending")
        if not pending:
            output("No approvals waiting.")
    for i, rec in enumerate(pending):
        why = await refusal(control, policy, user, rec)
        if why is not None:
            counts["not_allowed"] += 1
            output(f"Not yours to decide: {printable(rec.title)} ({why}).")
            continue
        try:
            answer = await asyncio.to_thread(ask_decision, rec, input_fn=input_fn, output=output)
        except (EOFError, KeyboardInterrupt):
            counts["left_pending"] += len(pending) - i
            output("\nNo answer: left pending.")
            break
        if answer is None:
            counts["skipped"] += 1
            continue
        decision, comment = answer
        after = await control.decide(rec.id, decision, by=user, comment=comment, signer=key)
        if after.decided_by == user and after.status == decision:
            counts[decision] += 1
            output(f"{decision.upper()}: {printable(rec.title)}")
        else:
            output(f"Already {after.status} by {after.decided_by}; your answer was not recorded.")
    return counts

"""``aiotflow approvals`` (what waits for a person), ``aiotflow approve`` (decide) and
``aiotflow operator hash-pin``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from aiotflow.terminal import printable

from ._common import add_state_options, command, engine_settings
from .output import print_json, table

__all__ = ["register"]


async def _approvals(a: argparse.Namespace) -> int:
    from aiotflow.tools import ControlStore
    from aiotflow.workflows.console import pending_rows

    s = engine_settings(a)
    async with ControlStore(s.control_target) as control:
        recs = await control.approvals(status=None if a.all else "pending")
    if a.json:
        print_json([r.model_dump() for r in recs])
    elif a.all:
        table(("id", "status", "asset", "decided by", "title"),
              [[r.id, r.status, r.asset, r.decided_by or "-", r.title] for r in recs],
              empty="No approvals.")
    else:
        table(("id", "asset", "risk", "requested", "title"), pending_rows(recs),
              empty="No approvals waiting.")
    return 0


async def _approve(a: argparse.Namespace) -> int:
    from aiotflow.tools import ControlStore
    from aiotflow.workflows.console import IdentityError, decide, review_pending

    s = engine_settings(a)
    if a.user is None:
        if s.policy.operators:
            try:
                a.user = (await asyncio.to_thread(input, "Who is approving? ")).strip()
            except EOFError:
                print("error: no operator name given", file=sys.stderr)
                return 1
        else:
            a.user = getpass.getuser()
    if a.decision and not a.approval_id:
        print("error: --decision needs an approval id", file=sys.stderr)
        return 2
    async with ControlStore(s.control_target) as control:
        try:
            if a.decision:
                after = await decide(control, s.policy, a.approval_id,
                                     "approved" if a.decision == "approve" else "rejected",
                                     user=a.user, comment=a.comment, pin_fn=getpass.getpass)
                print(printable(f"{after.status}: {after.title}"))
                return 0
            counts = await review_pending(control, user=a.user, approval_id=a.approval_id,
                                          policy=s.policy)
        except IdentityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(counts), file=sys.stderr)
    return 0


async def _operator(a: argparse.Namespace) -> int:
    from aiotflow.tools.policy import hash_pin

    pin = getpass.getpass("PIN or token: ")
    if len(pin) < 4 or pin != getpass.getpass("again: "):
        print("error: PINs differ or shorter than 4 characters", file=sys.stderr)
        return 2
    print(hash_pin(pin))
    return 0


def register(sub: Any) -> None:
    ap = sub.add_parser("approvals", help="list approvals waiting for a person")
    ap.add_argument("--all", action="store_true", help="include decided ones")
    ap.add_argument("--json", action="store_true")
    add_state_options(ap)
    command(ap, _approvals, "engine")

    av = sub.add_parser("approve", help="review and decide pending approvals")
    av.add_argument("approval_id", nargs="?")
    av.add_argument("--user", help="who decides (asked when operators are configured; "
                                   "default: the login name)")
    av.add_argument("--decision", choices=["approve", "reject"],
                    help="decide without prompting (needs an id)")
    av.add_argument("--comment")
    add_state_options(av)
    command(av, _approve, "engine")

    op = sub.add_parser("operator", help="operator tools: hash-pin for [engine.policy]")
    op.add_argument("action", choices=["hash-pin"])
    command(op, _operator, "engine")

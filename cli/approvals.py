"""``aiotflow approvals`` (what waits for a person), ``aiotflow approve`` (decide, signed)
and ``aiotflow operator keygen`` (an operator's key, protected by their PIN)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
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


def _secret(prompt: str) -> str:
    """A PIN: hidden at a terminal, else the next line of standard input (scripts, tests)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def _local_key(s: Any) -> Any:
    """The engine's key if this user can read it: the local console's, with no operators.
    On embedded state the console may be first to use the state dir, and makes the key
    the engine will use; a shared (PostgreSQL) deployment's key is only ever read."""
    from aiotflow.keys import KeyFileError, load_key, load_or_create_key

    try:
        if s.state_url is None and s.key_file is None:
            return load_or_create_key(s.engine_key_file, s.engine_id)
        return load_key(s.engine_key_file)
    except (KeyFileError, OSError):
        return None


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
    local = None if s.policy.operators else _local_key(s)
    async with ControlStore(s.control_target) as control:
        try:
            if a.decision:
                after = await decide(control, s.policy, a.approval_id,
                                     "approved" if a.decision == "approve" else "rejected",
                                     user=a.user, comment=a.comment, pin_fn=_secret,
                                     key_path=a.key, local_key=local)
                print(printable(f"{after.status}: {after.title}"))
                return 0
            counts = await review_pending(control, user=a.user, approval_id=a.approval_id,
                                          policy=s.policy, key_path=a.key, local_key=local,
                                          pin_fn=_secret)
        except IdentityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(counts), file=sys.stderr)
    return 0


async def _operator(a: argparse.Namespace) -> int:
    from aiotflow.keys import generate_key, save_key
    from aiotflow.tools.policy import check_pin
    from aiotflow.workflows.console import operator_key_path

    path = Path(a.out) if a.out else operator_key_path(a.name)
    if path.exists() and not a.force:
        print(f"error: {path} exists (--force replaces it)", file=sys.stderr)
        return 2
    try:
        pin = _secret(f"New PIN for {a.name} (6+ digits, or a passphrase): ")
        again = _secret("Again: ")
    except EOFError:
        print("error: no PIN given", file=sys.stderr)
        return 2
    try:
        check_pin(pin)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if pin != again:
        print("error: the PINs differ", file=sys.stderr)
        return 2
    key = generate_key(a.name)
    await asyncio.to_thread(save_key, key, path, passphrase=pin)
    print(f"# {a.name}'s key is in {path} (0600, opened with the PIN); in [engine.policy]:",
          file=sys.stderr)
    print(f'[[engine.policy.operators]]\nname = "{a.name}"\nroles = []\n'
          f'public_key = "{key.public_key}"')
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
    av.add_argument("--key", help="the operator's key file (default: "
                                  "$AIOTFLOW_OPERATOR_KEYS/USER.key or "
                                  "~/.config/aiotflow/operators/USER.key)")
    add_state_options(av)
    command(av, _approve, "engine")

    op = sub.add_parser("operator", help="operator keys: keygen NAME makes the key that signs "
                                         "NAME's decisions")
    op.add_argument("action", choices=["keygen"])
    op.add_argument("name")
    op.add_argument("--out", help="key file (default: ~/.config/aiotflow/operators/NAME.key)")
    op.add_argument("--force", action="store_true", help="replace an existing key file")
    command(op, _operator, "engine")

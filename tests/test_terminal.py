"""What the command line shows is what was written: no control sequence from a title,
summary or audit detail (an LLM's, a bundle's, a broker message's) reaches the terminal."""

from __future__ import annotations

import pytest

from aiotflow.cli.audit import format_story
from aiotflow.cli.output import table
from aiotflow.terminal import printable
from aiotflow.tools.control import AuditRecord

CLEAR = "\x1b[2J\x1b[H"


def test_printable_escapes_control_characters_only() -> None:
    assert printable("plain, ünïcode — ok\nnext\tline") == "plain, ünïcode — ok\nnext\tline"
    assert printable(f"a{CLEAR}b\x07\x7f\x9b") == "a\\x1b[2J\\x1b[Hb\\x07\\x7f\\x9b"
    assert printable(42) == "42"


def test_tables_and_audit_stories_print_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    table(("id", "title"), [["ap-1", f"Dispatch{CLEAR}now"]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "Dispatch\\x1b[2J\\x1b[Hnow" in out
    rec = AuditRecord(seq=1, ts=1_700_000_000.0, thread_id="m/A-1", kind="plan", actor="m",
                      detail={"headline": f"replace{CLEAR}pump", "actions": [f"x{CLEAR}"]})
    story = format_story("A-1", [rec])
    assert "\x1b" not in story and "replace\\x1b[2J\\x1b[Hpump" in story

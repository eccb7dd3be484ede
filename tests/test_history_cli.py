"""aiotflow history import/export/query and aiotflow eval retrieval, on data made here."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from aiotflow.cli import main

from .evaluation.test_skab import NOISE, write_recording

#: fault -> (channel index, shift in noise units) of its signature
FAULTS = {"valve_closed": ((3, -8.0), (7, -8.0)), "imbalance": ((0, 10.0), (1, 10.0)),
          "leak": ((2, 8.0), (4, -8.0))}


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def recording(path: Path, seed: int, fault: str, start: int = 550, end: int = 700) -> None:
    write_recording(path, seed, start, end,
                    fault=tuple((ch, k * NOISE[ch]) for ch, k in FAULTS[fault]))


async def test_eval_retrieval_names_the_faults(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    table = ["| file | fault |", "|---|---|"]
    seed = 0
    for fault in FAULTS:
        for n in range(3):
            seed += 1
            name = f"{fault}/{n}.csv"
            recording(tmp_path / name, seed, fault)
            table.append(f"| {name} | {fault} |")
    # a fault inside the first 400 rows: its model is fitted on the normal rows around it
    recording(tmp_path / "other" / "odd.csv", 99, "leak", start=100, end=300)
    table.append("| other/odd.csv | leak |")
    (tmp_path / "FAULTS.md").write_text("\n".join(table) + "\n")
    for extra in ((), ("--no-context",)):
        assert await cli("eval", "retrieval", str(tmp_path), "--json", "--k", "2",
                         *extra) == 0
        r = json.loads(capsys.readouterr().out)
        assert {"top1_accuracy", "files", "uncertain_calls"} <= set(r)
        assert (r["context"] is None) == bool(extra)
        assert r["files"] == 10 and r["alerted"] == 10
        odd = next(f for f in r["per_file"] if f["file"] == "other/odd.csv")
        assert odd["predicted"] == "leak"
        assert r["top1_accuracy"] == 1.0, r["per_file"]
        assert all(f["sentence"].startswith("2 of 2 similar events") for f in r["per_file"]
                   if f["call"] == "probable")
    (tmp_path / "FAULTS.md").write_text("no table here\n")
    assert await cli("eval", "retrieval", str(tmp_path)) == 2
    assert "FAULTS.md has no rows" in capsys.readouterr().err


async def test_history_import_export_query(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    state = ("--state-dir", str(tmp_path / "state"))
    src = tmp_path / "incidents.jsonl"
    rows = [{"id": f"INC-{i}", "asset": "gen-1" if i % 2 else "gen-2", "ts": 1.7e9 + i * 86400,
             "failure_mode": "coolant_pump", "embedding": [1.0, 0.1 * i, 0.0]}
            for i in range(5)]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "{not json")
    lines.append(json.dumps({"id": "BAD", "asset": "gen-1", "ts": 1.0}))  # no failure_mode
    lines.append(json.dumps({"id": "DIM", "asset": "gen-1", "ts": 1.0, "failure_mode": "x",
                             "embedding": [1.0, 2.0]}))
    src.write_text("\n".join(lines) + "\n")
    assert await cli("history", "import", str(src), *state) == 1  # some lines rejected
    out = json.loads(capsys.readouterr().out)
    assert (out["read"], out["imported"], out["rejected"], out["total"]) == (8, 5, 3, 5)
    rejected = [json.loads(x) for x in Path(out["rejected_file"]).read_text().splitlines()]
    assert [r["line"] for r in rejected] == [3, 7, 8]  # nothing lost: the text is kept
    assert rejected[0]["text"] == "{not json" and "not JSON" in rejected[0]["error"]
    assert "failure_mode" in rejected[1]["error"] and "holds 3" in rejected[2]["error"]

    csv_src = tmp_path / "more.csv"
    csv_src.write_text("id,asset,ts,failure_mode,embedding,maintenance_refs\n"
                       "C-1,gen-3,2024-01-02T03:04:05,thermostat,0 1 0,WO-1;LOG-1\n")
    assert await cli("history", "import", str(csv_src), *state) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 6

    assert await cli("history", "query", "--asset", "gen-1", "--json", *state) == 0
    found = json.loads(capsys.readouterr().out)
    assert [f["id"] for f in found] == ["INC-3", "INC-1"]
    assert await cli("history", "query", "--since", "2024-01-01", "--until", "2024-12-31",
                     "--json", *state) == 0
    c1 = json.loads(capsys.readouterr().out)
    assert [f["id"] for f in c1] == ["C-1"] and c1[0]["maintenance_refs"] == ["WO-1", "LOG-1"]

    dump = tmp_path / "dump.jsonl"
    assert await cli("history", "export", "-o", str(dump), *state) == 0
    exported = [json.loads(x) for x in dump.read_text().splitlines()]
    assert sorted(e["id"] for e in exported) == sorted([*(r["id"] for r in rows), "C-1"])
    # an export imports again into a new history unchanged
    state2 = ("--state-dir", str(tmp_path / "state2"))
    assert await cli("history", "import", str(dump), *state2) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 6

    assert await cli("history", "correct", "INC-1", "--failure-mode", "thermostat",
                     "--reason", "re-inspected", "--user", "lead", *state) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["failure_mode"] == "thermostat" and fixed["corrections"][0]["by"] == "lead"
    assert await cli("history", "correct", "NOPE", "--failure-mode", "x", *state) == 2
    assert await cli("history", "import", str(tmp_path / "missing.jsonl"), *state) == 2
    assert "cannot read" in capsys.readouterr().err


async def test_import_raw_windows_with_a_bundle(tmp_path: Path, bundle_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from aiotflow.edge.bundle import ModelBundle

    meta = ModelBundle(bundle_path).meta
    rng = np.random.default_rng(0)
    window = {c: (50 + rng.normal(0, 1, meta.window)).tolist() for c in meta.channels}
    src = tmp_path / "windows.jsonl"
    src.write_text(json.dumps({"id": "W-1", "asset": "gen-1", "ts": 1.0,
                               "failure_mode": "injector", "window": window}) + "\n"
                   + json.dumps({"id": "W-2", "asset": "gen-1", "ts": 2.0,
                                 "failure_mode": "injector",
                                 "window": {meta.channels[0]: [1.0]}}) + "\n")
    state = ("--state-dir", str(tmp_path / "s"))
    assert await cli("history", "import", str(src), "--model", str(bundle_path), *state) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["imported"], out["rejected"]) == (1, 1)
    bad = json.loads(Path(out["rejected_file"]).read_text())
    assert "window lacks channels" in bad["error"]
    assert await cli("history", "export", *state) == 0
    (w1,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert w1["asset_type"] == meta.asset_type and len(w1["embedding"]) == meta.n_features


async def test_a_history_that_weighs_the_operating_point(
        tmp_path: Path, bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """history context prints a table that makes a new history weigh the operating point;
    CSV imports carry the point; the engine config loads it."""
    from aiotflow.vectorstore import HistoryStore
    from aiotflow.workflows.settings import EngineSettings

    normal = []
    for i, flow in enumerate((32.0, 76.0)):
        path = tmp_path / f"normal{i}.csv"
        rng = np.random.default_rng(i)
        path.write_text("datetime;flow;temp;anomaly\n" + "".join(
            f"2024-01-01 00:00:{s:02d};{flow + rng.normal(0, 1):.3f};"
            f"{80 + rng.normal(0, 1):.3f};0\n" for s in range(50)))
        normal.append(str(path))
    assert await cli("history", "context", "--csv", *normal) == 0
    table = capsys.readouterr().out
    assert table.startswith("[engine.history.context]\nweight = 2\n")
    assert '"flow" = [53.9' in table and "anomaly" not in table and "datetime" not in table
    config = tmp_path / "engine.toml"
    config.write_text(f'[engine]\nstate_dir = "{tmp_path / "state"}"\n' + table)
    s = EngineSettings.load(str(config), table="engine")
    assert s.history.context is not None and set(s.history.context.channels) == {"flow",
                                                                                  "temp"}
    src = tmp_path / "inc.csv"
    src.write_text("id,asset,ts,failure_mode,embedding,context\n"
                   "V-1,p-1,1,valve_closed,1 0 0,flow=32;temp=80\n"
                   "L-1,p-2,2,fluid_leak,1 0 0,\"{\"\"flow\"\": 76, \"\"temp\"\": 80}\"\n"
                   "X-1,p-3,3,x,1 0 0,flow=lots\n")
    assert await cli("history", "import", str(src), "--config", str(config)) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["imported"], out["rejected"]) == (2, 1)
    async with HistoryStore(settings=s.history_settings) as h:
        d = await h.diagnose([1.0, 0.0, 0.0], asset="p-9", context={"flow": 75.0,
                                                                    "temp": 80.0})
        assert d.neighbours[0].incident.failure_mode == "fluid_leak"
        assert d.neighbours[0].incident.context == {"flow": 76.0, "temp": 80.0}
    assert await cli("history", "context", "--model", str(bundle_path)) == 0
    assert "[engine.history.context.channels]" in capsys.readouterr().out
    assert await cli("history", "context") == 2

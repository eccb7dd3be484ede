"""Engine throughput, decision latency and failover, against bare LangGraph in the same run.

    python benchmarks/engine_throughput.py [--json] [--alerts N] [--rounds R]

- **bare vs sqlite**: N alerts published (QoS 1, a publisher process) to a real Mosquitto
  and run through an automatic workflow of two tool calls (``notify_operator`` twice: two
  recorded effects, no LLM, no approval), timed from the first publish to the last
  completed run. *bare* is an aiomqtt consumer running the same graph with the same
  checkpointer (AsyncSqliteSaver) and the same two writes to the ops database, with the
  same concurrency (8 runs at once); *sqlite* is ``Engine`` on embedded defaults: inbox,
  end-to-end acknowledgement, run ledger, site slots, policy, audit chain, effect records.
  Interleaved A B A B ..., medians reported (the machine is shared and noisy).
- **postgres 1/2/4**: the same alerts through 1, 2 and 4 ``aiotflow run --worker-id``
  processes on one PostgreSQL (each phase on a fresh database) and one shared subscription.
- **decision -> effect**: alerts of a workflow that asks for approval; decided one by one;
  time from the recorded decision to the first tool effect after it (engine on SQLite,
  default approval poll 0.5 s).
- **failover**: two PostgreSQL workers and a real edge (outbox, acknowledgements); one
  worker is killed with -9 mid-stream: time until every run it held is completed elsewhere
  (lease 2 s), and over the whole benchmark alerts lost and duplicate effects (tool
  executions beyond one per step, from the audit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402

from aiotflow import App, ApprovalRequest, ProposedAction, WorkflowContext, approval_node  # noqa: E402

SITES = 16


class State(TypedDict, total=False):
    alert: dict[str, Any]
    approval: dict[str, Any] | None
    result: dict[str, Any]


def _note(step: int):  # type: ignore[no-untyped-def]
    async def node(state: State, runtime: Runtime[WorkflowContext]) -> State:
        ctx = runtime.context
        await ctx.call_tool("notify_operator", {
            "subject": f"{ctx.alert.asset}: step {step}", "message": "bench",
            "priority": "low", "recipient": "bench"})
        return {"result": {"step": step}}
    node.__name__ = f"note{step}"
    return node


def _graph() -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(State, context_schema=WorkflowContext)
    g.add_node("note1", _note(1))
    g.add_node("note2", _note(2))
    g.add_edge(START, "note1")
    g.add_edge("note1", "note2")
    g.add_edge("note2", END)
    return g


#: the automatic workflow (the workers load it as engine_throughput:app)
app = App("bench")
app.workflow(name="auto", scopes={"notify:send"})(_graph)

#: a workflow that waits for a person, then acts
gated = App("bench-gated")


def _request(state: dict[str, Any]) -> ApprovalRequest:
    return ApprovalRequest(title=f"act on {state['alert']['asset']}", summary="bench",
                           actions=[ProposedAction(tool="notify_operator", summary="page")])


@gated.workflow(name="gated", scopes={"notify:send"})
def _gated() -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(State, context_schema=WorkflowContext)
    g.add_node("approval", approval_node(_request))
    g.add_node("note1", _note(1))
    g.add_edge(START, "approval")
    g.add_edge("approval", "note1")
    g.add_edge("note1", END)
    return g


def _alerts(n: int, tag: str) -> list[Any]:
    from aiotflow.contracts.schema import Alert, ChannelSummary

    now = time.time()
    summary = {"temp": ChannelSummary(mean=1.0, min=0.9, max=1.3, last=1.2, slope_per_min=0.1,
                                      z=3.0, contribution=1.0)}
    return [Alert(id=f"{tag}-{i:05d}", site=f"site-{i % SITES}", asset=f"a-{i:05d}", ts=now,
                  episode_start=now, severity="major", score=2.0, threshold=1.0,
                  embedding=[0.0] * 8, summary=summary, model_name="bench",
                  model_version="1") for i in range(n)]


def _edge_key() -> Any:
    """The benchmark's edge: it signs every alert, the engines trust it (as a real
    deployment does; the bare baseline only strips the signature)."""
    global _EDGE
    if _EDGE is None:
        from aiotflow.keys import generate_key

        _EDGE = generate_key("bench-edge")
    return _EDGE


_EDGE: Any = None


def _trust() -> Any:
    from aiotflow.contracts.signing import AlertTrust, TrustedEdge

    return AlertTrust(edges=[TrustedEdge(name="bench-edge", public_key=_edge_key().public_key,
                                         sites=[f"site-{i}" for i in range(SITES)])])


def _trust_toml() -> str:
    sites = ", ".join(f'"site-{i}"' for i in range(SITES))
    return (f'[[engine.trust.edges]]\nname = "bench-edge"\nsites = [{sites}]\n'
            f'public_key = "{_edge_key().public_key}"\n')


def _lines(alerts: list[Any], path: Path) -> Path:
    from aiotflow.contracts.signing import sign_alert

    with path.open("wb") as f:
        for a in alerts:
            topic = f"aiotflow/alerts/{a.site}/{a.asset}"
            f.write(topic.encode() + b" " + sign_alert(_edge_key(), topic,
                                                       a.model_dump_json().encode()) + b"\n")
    return path


async def _publish(port: int, alerts: list[Any], work: Path) -> None:
    from _mqtt import start_publisher

    proc = start_publisher(port, _lines(alerts, work / "lines.txt"), qos=1)
    await asyncio.to_thread(proc.wait)


# ---------------------------------------------------------------------------- bare
async def bare_run(port: int, alerts: list[Any], work: Path) -> float:
    import aiomqtt
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from aiotflow.contracts.schema import Alert
    from aiotflow.contracts.signing import open_alert
    from aiotflow.tools.ops import OpsDatabase

    done = asyncio.Event()
    finished = 0
    slots = asyncio.Semaphore(8)

    def node(step: int):  # type: ignore[no-untyped-def]
        async def fn(state: State) -> State:
            a = state["alert"]
            await ops.notify(recipient="bench", priority="low", subject=f"{a['asset']}: step "
                             f"{step}", message="bench", key=f"{a['id']}/{step}")
            return {"result": {"step": step}}
        return fn

    g = StateGraph(State)
    g.add_node("note1", node(1))
    g.add_node("note2", node(2))
    g.add_edge(START, "note1")
    g.add_edge("note1", "note2")
    g.add_edge("note2", END)
    async with OpsDatabase(work / "ops.db") as ops, \
            AsyncSqliteSaver.from_conn_string(str(work / "checkpoints.db")) as saver:
        graph = g.compile(checkpointer=saver)

        async def run(payload: bytes) -> None:
            nonlocal finished
            alert = Alert.model_validate_json(open_alert(payload).body)
            async with slots:
                await graph.ainvoke({"alert": alert.model_dump(mode="json")},
                                    {"configurable": {"thread_id": f"auto/{alert.id}"}})
            finished += 1
            if finished == len(alerts):
                done.set()

        async with aiomqtt.Client("127.0.0.1", port, identifier="bare", clean_session=False
                                  ) as client, asyncio.TaskGroup() as tg:
            await client.subscribe("aiotflow/alerts/#", qos=1)
            t0 = time.perf_counter()
            pub = tg.create_task(_publish(port, alerts, work))

            async def consume() -> None:
                async for m in client.messages:
                    tg.create_task(run(bytes(m.payload)))  # type: ignore[arg-type]

            consumer = tg.create_task(consume())
            await done.wait()
            elapsed = time.perf_counter() - t0
            consumer.cancel()
            await pub
    return len(alerts) / elapsed


# ---------------------------------------------------------------------------- engine
async def engine_run(url: str, port: int, alerts: list[Any], work: Path) -> float:
    from aiotflow.workflows import Engine, EngineSettings

    done = asyncio.Event()
    finished = 0

    def on(kind: str, data: dict[str, Any]) -> None:
        nonlocal finished
        if kind == "run.completed":
            finished += 1
            if finished == len(alerts):
                done.set()

    s = EngineSettings(state_dir=work / "state", mqtt={"url": url},
                       engine_id=f"bench-{work.name}", trust=_trust())
    async with Engine(app, s) as engine:
        engine.add_listener(on)
        await engine.subscribed.wait()
        t0 = time.perf_counter()
        await _publish(port, alerts, work)
        await done.wait()
        elapsed = time.perf_counter() - t0
    return len(alerts) / elapsed


async def duplicates_in(control_target: Any, steps: int) -> tuple[int, int]:
    """(runs completed, tool executions beyond one per step) from the audit."""
    from aiotflow.tools.control import ControlStore

    async with ControlStore(control_target) as control, control.read() as db:
        done = await db.one("SELECT count(*) FROM runs WHERE status = 'completed'")
        extra = await db.one(
            "SELECT COALESCE(SUM(n - ?), 0) FROM (SELECT thread_id, count(*) AS n FROM audit"
            " WHERE kind = 'tool.ok' GROUP BY thread_id) t WHERE n > ?", (steps, steps))
    return int(done[0]), int(extra[0])  # type: ignore[index]


# ---------------------------------------------------------------------------- workers
class Workers:
    def __init__(self, url: str, broker: str, work: Path, n: int, lease_s: float) -> None:
        self.url, self.broker, self.work, self.n = url, broker, work, n
        self.config = work / "worker.toml"
        # a share group per phase: no member of an earlier phase is still in it
        self.config.write_text(f"[engine]\nlease_s = {lease_s}\nsession_expiry_s = 2\n"
                               f'share_group = "{work.name}"\n' + _trust_toml())
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(HERE))
        for i in range(self.n):
            name = f"w{i + 1}"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiotflow", "run",
                "engine_throughput:app", "--config", str(self.config), "--state-dir",
                str(self.work / name), "--state-url", self.url, "--worker-id", name,
                "--broker", self.broker, env=env, cwd=str(ROOT), stderr=asyncio.subprocess.PIPE)
            assert proc.stderr is not None
            async with asyncio.timeout(90):
                while b"engine.subscribed" not in (line := await proc.stderr.readline()):
                    assert line, f"worker {name} exited during start-up"
            asyncio.get_running_loop().create_task(
                _drain(proc.stderr, self.work / f"{name}.log"))
            self.procs[name] = proc

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            await asyncio.wait_for(proc.wait(), 60)


def _tails(work: Path) -> str:
    return "".join(p.read_text()[-3000:] for p in sorted(work.glob("w*.log")))


async def _drain(stream: asyncio.StreamReader, path: Path) -> None:
    """Keep a worker's log (its warnings and errors) for when a phase goes wrong."""
    with path.open("ab") as f:
        while chunk := await stream.read(65536):
            f.writelines(ln + b"\n" for ln in chunk.split(b"\n")
                         if b"[info" not in ln and ln.strip())


async def _completed(url: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM runs WHERE status = 'completed'")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _until(pred: Any, seconds: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(every)
    raise TimeoutError("benchmark condition not met in time")


async def postgres_run(pg: Any, broker: Any, n_workers: int, alerts: list[Any],
                       work: Path) -> tuple[float, int, int]:
    url = await _upgraded(pg.create_database())
    workers = Workers(url, broker.url, work, n_workers, lease_s=10)
    await workers.start()
    try:
        t0 = time.perf_counter()
        await _publish(broker.port, alerts, work)
        try:
            await _until(lambda: _at_least(url, len(alerts)), 300)
        except TimeoutError:
            done = await _completed(url)
            logs = await asyncio.to_thread(_tails, work)
            raise TimeoutError(f"{n_workers} workers: {done} of {len(alerts)} runs completed"
                               f"; worker logs:\n{logs}") from None
        aps = len(alerts) / (time.perf_counter() - t0)
    finally:
        await workers.stop()
    done, dups = await duplicates_in(url, 2)
    return aps, len(alerts) - done, dups


async def _upgraded(url: str) -> str:
    """A new database with the schema, as `aiotflow db upgrade` makes it."""
    from aiotflow.workflows import EngineSettings
    from aiotflow.workflows.state import upgrade_state

    await upgrade_state(EngineSettings(state_url=url))
    return url


async def _at_least(url: str, n: int) -> bool:
    return await _completed(url) >= n


# ---------------------------------------------------------------------------- decisions
async def decision_latency(url: str, n: int, work: Path) -> list[float]:
    from aiotflow.workflows import Engine, EngineSettings

    s = EngineSettings(state_dir=work / "state", mqtt={"url": url}, engine_id="bench-gated")
    lat: list[float] = []
    async with Engine(gated, s, consume_alerts=False) as engine:
        for a in _alerts(n, "gate"):
            await engine.submit(a)
        pending = await engine.control.approvals(status="pending")
        assert len(pending) == n, len(pending)
        for rec in pending:
            decided = await engine.control.decide(rec.id, "approved", by="bench",
                                                  signer=engine.key)
            assert decided.decided_at is not None

            async def acted(tid: str = rec.thread_id) -> bool:
                return bool(await engine.control.audit_records(thread_id=tid, kind="tool.ok"))

            await _until(acted, 30, every=0.01)
            [ok] = await engine.control.audit_records(thread_id=rec.thread_id, kind="tool.ok")
            lat.append((ok.ts - decided.decided_at) * 1000)
            await asyncio.sleep(0.05)
    return lat


# ---------------------------------------------------------------------------- failover
async def failover(pg: Any, broker: Any, bundle_dir: Path, n: int, work: Path
                   ) -> tuple[float, float, int, int]:
    """(failover s, total s, lost, duplicates) with a real edge sending n alerts."""
    from aiotflow.edge import EdgeRuntime, EdgeSettings, Outbox
    from aiotflow.tools.control import ControlStore
    from aiotflow.training.train import train_simulated
    from aiotflow.workflows.runs import RunLedger

    model = bundle_dir / "model.onnx"
    if not model.exists():
        train_simulated(model, assets=2, seconds=300.0, version="bench")
    url = await _upgraded(pg.create_database())
    lease = 2.0
    workers = Workers(url, broker.url, work, 2, lease_s=lease)
    await workers.start()
    alerts = _alerts(n, "fo")
    from aiotflow.keys import save_key

    es = EdgeSettings(model=model, mqtt={"url": broker.url}, outbox=work / "outbox.db",
                      key_file=save_key(_edge_key(), work / "edge.key"),
                      ack={"timeout_s": 1.0, "max_interval_s": 2.0})
    async with Outbox(es.outbox) as ob:
        await ob.put_many([(a.id, f"aiotflow/alerts/{a.site}/{a.asset}",
                            a.model_dump_json().encode(), 1) for a in alerts], await_ack=True)
    t0 = time.perf_counter()
    fail_s = 0.0
    try:
        async with EdgeRuntime(es):
            await _until(lambda: _at_least(url, n // 3), 300, every=0.01)
            async with ControlStore(url) as control:
                victim = "w1"
                workers.procs[victim].send_signal(signal.SIGKILL)
                killed = time.perf_counter()
                held = [r.thread_id for r in await RunLedger(control).list(status="running")
                        if r.owner == victim]
                async with control.read() as db:
                    inbox = [r[0] for r in await db.all(
                        "SELECT alert_id FROM inbox WHERE processed IS NULL AND owner = ?",
                        (victim,))]
                held += [f"auto/{a}" for a in inbox]

                async def taken_over() -> bool:
                    async with control.read() as db:
                        for tid in held:
                            row = await db.one("SELECT status FROM runs WHERE thread_id = ?",
                                               (tid,))
                            if row is None or row[0] != "completed":
                                return False
                    return True

                await _until(taken_over, 120)
                fail_s = time.perf_counter() - killed
            await _until(lambda: _at_least(url, n), 300)
        total = time.perf_counter() - t0
    finally:
        await workers.stop()
    done, dups = await duplicates_in(url, 2)
    return fail_s, total, n - done, dups


# ---------------------------------------------------------------------------- main
def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decisions", type=int, default=40)
    a = ap.parse_args()
    from _mqtt import Broker

    from aiotflow.logging import configure_logging
    from tests.postgres import Postgres

    configure_logging("ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    broker = Broker()
    pg = Postgres()
    pg.start()
    out: dict[str, Any] = {"alerts": a.alerts}
    lost = dups = 0
    try:
        bare, sqlite = [], []
        for r in range(a.rounds):  # A B A B A B
            alerts = _alerts(a.alerts, f"b{r}")
            bare.append(await bare_run(broker.port, alerts, Path(tempfile.mkdtemp(dir=tmp))))
            alerts = _alerts(a.alerts, f"s{r}")
            w = Path(tempfile.mkdtemp(dir=tmp))
            sqlite.append(await engine_run(broker.url, broker.port, alerts, w))
            done, d = await duplicates_in(w / "state" / "control.db", 2)
            lost += a.alerts - done
            dups += d
        out |= {"bare_aps": round(statistics.median(bare), 1),
                "sqlite_aps": round(statistics.median(sqlite), 1),
                "ratio": round(statistics.median(s / b for s, b in zip(sqlite, bare,
                                                                         strict=True)), 3),
                "bare_runs": [round(x, 1) for x in bare],
                "sqlite_runs": [round(x, 1) for x in sqlite]}
        pgs: dict[str, list[float]] = {"1": [], "2": [], "4": []}
        for r in range(a.rounds):  # 1 2 4 1 2 4 ...
            for k in (1, 2, 4):
                aps, lo, d = await postgres_run(pg, broker, k, _alerts(a.alerts, f"p{k}-{r}"),
                                                Path(tempfile.mkdtemp(dir=tmp)))
                pgs[str(k)].append(round(aps, 1))
                lost += lo
                dups += d
        out["postgres_aps"] = {k: round(statistics.median(v), 1) for k, v in pgs.items()}
        out["postgres_runs"] = pgs
        out["cpus"] = os.cpu_count()
        lat = await decision_latency(broker.url, a.decisions, Path(tempfile.mkdtemp(dir=tmp)))
        out |= {"decision_p50_ms": round(_pct(lat, 50), 1),
                "decision_p99_ms": round(_pct(lat, 99), 1)}
        fo, total, lo, d = await failover(pg, broker, tmp, a.alerts,
                                          Path(tempfile.mkdtemp(dir=tmp)))
        lost += lo
        dups += d
        out |= {"failover_s": round(fo, 2), "failover_lease_s": 2.0,
                "failover_total_s": round(total, 1), "lost": lost, "duplicates": dups}
    finally:
        broker.stop()
        pg.close()
    targets = {"ratio": ">= 0.5", "decision_p99_ms": "<= 1000", "failover_s": "<= 4.0 (2 x lease)",
               "lost": "0", "duplicates": "0"}
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>18}  {v}  {targets.get(k, '')}")
        print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())

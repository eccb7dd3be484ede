"""Benchmark helpers: a real Mosquitto on a free port, and a fast publisher process."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PUBLISHER = r'''
import sys, time, paho.mqtt.client as mqtt
port, path, qos = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
lines = open(path, "rb").read().split(b"\n")
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
c.max_queued_messages_set(0)
c.max_inflight_messages_set(1000)
c.connect("127.0.0.1", port)
c.loop_start()
t0 = time.perf_counter()
infos = []
for line in lines:
    if not line:
        continue
    topic, _, payload = line.partition(b" ")
    infos.append(c.publish(topic.decode(), payload, qos=qos))
for info in infos[-1:]:
    info.wait_for_publish(120)
dt = time.perf_counter() - t0
c.disconnect(); c.loop_stop()
print(len(infos), dt)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """Mosquitto with no per-client queue limit and $SYS every second."""

    def __init__(self, *, max_queued: int = 0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aiotflow-bench-"))
        self.port = free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
                        f"allow_anonymous true\npersistence false\nsys_interval 1\n"
                        f"max_queued_messages {max_queued}\nmax_inflight_messages 0\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


PACED_PUBLISHER = r'''
import sys, time, array, paho.mqtt.client as mqtt
port, path, rate, out = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
lines = [l for l in open(path, "rb").read().split(b"\n") if l]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paced")
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop(0.5)  # CONNACK
# No network thread: without one paho writes each publish to the socket in the calling
# thread, so the time recorded below is when the bytes left, not when they were queued.
sent = array.array("d")
t0 = time.perf_counter() + 0.2
wall0 = time.time() - time.perf_counter()
for i, line in enumerate(lines):
    due = t0 + i / rate
    while True:
        now = time.perf_counter()
        if now >= due:
            break
        time.sleep(min(due - now, 0.001))
    topic, _, payload = line.partition(b" ")
    sent.append(wall0 + time.perf_counter())
    c.publish(topic.decode(), payload, qos=0)
    if i % 1000 == 0:
        c.loop(0)  # keep-alive and anything the broker sent
time.sleep(0.5)
c.loop(0)
c.disconnect()
with open(out, "wb") as fh:
    sent.tofile(fh)
'''


def start_paced_publisher(port: int, lines_file: Path, rate: float,
                          times_file: Path) -> subprocess.Popen[bytes]:
    """Publish ``lines_file`` at ``rate`` messages/s; publish wall times go to
    ``times_file`` (float64 per line)."""
    return subprocess.Popen([sys.executable, "-c", PACED_PUBLISHER, str(port),
                             str(lines_file), str(rate), str(times_file)])


def start_publisher(port: int, lines_file: Path, qos: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(lines_file),
                             str(qos)], stdout=subprocess.PIPE)


async def broker_dropped(port: int) -> int:
    """Mosquitto's own count of messages it dropped (queue limits)."""
    import asyncio

    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe("$SYS/broker/publish/messages/dropped")
        try:
            async with asyncio.timeout(3):
                async for m in c.messages:
                    return int(bytes(m.payload))  # type: ignore[arg-type]
        except TimeoutError:
            return -1
    return -1

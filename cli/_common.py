"""What the command groups share: signals, the engine's state options, the extra check."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Command", "add_metrics_options", "add_mqtt_options", "add_state_options", "command",
           "engine_settings", "mqtt_overrides", "observed", "state_overrides", "stop_event"]

#: one command: parsed arguments in, exit code out
Command = Callable[[argparse.Namespace], Awaitable[int]]


def command(parser: argparse.ArgumentParser, func: Command, *extras: str) -> None:
    """Make ``func`` the command of ``parser``; ``extras`` are checked before it runs."""
    parser.set_defaults(func=func, extras=extras)


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (graceful drain, exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def add_metrics_options(p: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-addr``: where ``/metrics`` is served."""
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics (0: any free "
                        "port, printed at start)")
    p.add_argument("--metrics-addr", default="127.0.0.1",
                   help="address to serve metrics on (default 127.0.0.1; 0.0.0.0 for a "
                        "Prometheus on another host)")


@contextlib.contextmanager
def observed(a: argparse.Namespace, service: str, *registries: Any) -> Any:
    """Traces exported by OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and
    ``/metrics`` served when ``--metrics-port`` is given, for the block's duration;
    yields the metrics server (or None)."""
    from aiotflow import metrics, tracing

    tracing.configure(service)
    server = None
    try:
        server = metrics.serve(getattr(a, "metrics_port", None), *registries,
                               addr=getattr(a, "metrics_addr", "127.0.0.1"))
        if server is not None:
            print(f"aiotflow: metrics on {server.url}", file=sys.stderr, flush=True)
        yield server
    finally:
        if server is not None:
            server.close()
        tracing.shutdown()


def add_mqtt_options(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """``--broker`` and how to authenticate to it: TLS files and credentials kept out of
    the URL (a password on the command line shows in ``ps``: use ``--password-file`` or
    ``AIOTFLOW_MQTT__PASSWORD``)."""
    p.add_argument("--broker", default=default,
                   help="mqtt://host:1883, or mqtts://host:8883 for TLS")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-file", help="file holding the MQTT password")
    p.add_argument("--ca-file", help="mqtts: CA certificates to verify the broker with")
    p.add_argument("--cert-file", help="mqtts: this client's certificate (mutual TLS)")
    p.add_argument("--key-file", help="mqtts: the certificate's private key")
    p.add_argument("--tls-insecure", action="store_true",
                   help="mqtts: do not check the broker's host name (tests only)")


def mqtt_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The MQTT settings given by flags (merged over the file's and environment's)."""
    out: dict[str, Any] = {}
    for flag, key in (("broker", "url"), ("username", "username"),
                      ("password_file", "password_file"), ("ca_file", "ca_file"),
                      ("cert_file", "cert_file"), ("key_file", "key_file")):
        value = getattr(a, flag, None)
        if value:
            out[key] = value
    if getattr(a, "tls_insecure", False):
        out["tls_insecure"] = True
    url = out.get("url")
    if url and urlsplit(url).password is not None:
        print("warning: a password in --broker shows in ps and shell history; use "
              "--password-file or AIOTFLOW_MQTT__PASSWORD", file=sys.stderr)
    return out


def add_state_options(*parsers: argparse.ArgumentParser) -> None:
    """``--config``, ``--state-dir`` and ``--state-url``: where an engine command finds
    its state."""
    for p in parsers:
        p.add_argument("--config", help="TOML file; its [engine] table is used")
        p.add_argument("--state-dir", help="state directory (default .aiotflow)")
        p.add_argument("--state-url", help="postgresql://... shared by many workers "
                                           "(or AIOTFLOW_STATE_URL; default: SQLite files "
                                           "in the state directory)")


def state_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """Engine settings given on the command line (they win over file and environment)."""
    out: dict[str, Any] = {}
    if getattr(a, "state_dir", None):
        out["state_dir"] = Path(a.state_dir)
    if getattr(a, "state_url", None):
        out["state_url"] = a.state_url
    if getattr(a, "worker_id", None):
        out["worker_id"] = a.worker_id
    mqtt = mqtt_overrides(a)
    if mqtt:
        out["mqtt"] = mqtt
    return out


def engine_settings(a: argparse.Namespace) -> Any:
    """The engine's settings for this command: ``--config``'s [engine] table, environment,
    then the command line."""
    from aiotflow.workflows.settings import EngineSettings

    return EngineSettings.load(a.config, table="engine", **state_overrides(a))

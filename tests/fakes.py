"""Fakes for what cannot be reached from here, as real HTTP servers on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class SchedulingService:
    def __init__(self) -> None:
        self.status = 200  # set to 503 to simulate an outage
        self.delay_s = 0.0  # set to answer slowly (timeouts)
        self.requests: list[tuple[str, str]] = []
        self.bookings: dict[str, dict[str, Any]] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                service.requests.append(("GET", self.path))
                if service.delay_s:
                    time.sleep(service.delay_s)
                if service.status != 200:
                    return self._send(service.status, {"error": "down"})
                if "skill=cooling" in self.path:
                    return self._send(200, {"id": "EXT-7", "name": "Remote Tech",
                                            "skills": ["cooling"], "on_call_from": 0})
                return self._send(404, {"error": "nobody"})

            def do_POST(self) -> None:
                service.requests.append(("POST", self.path))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if service.status != 200:
                    return self._send(service.status, {"error": "down"})
                key = self.headers["Idempotency-Key"]
                booking = service.bookings.setdefault(key, {
                    "id": f"EXT-BK-{len(service.bookings) + 1}", "technician_id":
                    body["technician_id"], "asset": body["asset"], "site": body["site"],
                    "start": body["start"], "end": body["start"] + body["hours"] * 3600,
                    "reason": body["reason"]})
                return self._send(201, booking)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SchedulingService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


#: a scripted model: request body -> assistant message
Script = Callable[[dict[str, Any]], dict[str, Any]]


def calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """An assistant message that calls these functions, ``(name, arguments)`` each."""
    return {"tool_calls": [{"id": f"call_{i}_{name}", "type": "function", "function": {
        "name": name, "arguments": json.dumps(args)}} for i, (name, args) in enumerate(calls)]}


def turns(*script: dict[str, Any] | Script) -> Script:
    """A model that answers its n-th turn in a conversation with ``script[n]`` (a message,
    or a function of the request body); past the end it says it is done."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        n = sum(m["role"] == "assistant" for m in body["messages"])
        if n >= len(script):
            return {"content": "done"}
        step = script[n]
        return step(body) if callable(step) else step

    return answer


class ChatCompletionsService:
    """An OpenAI-compatible Chat Completions endpoint on loopback (``/v1``)."""

    def __init__(self, answer: str | Script = "Coolant pump likely failing; dispatch cooling "
                 "tech.") -> None:
        """``answer``: the text of every answer, or a script: a function of the request
        body that returns the assistant message (``content`` and/or ``tool_calls``)."""
        self.answer = answer
        self.status = 200  # 429, 500, ... to simulate failures
        self.delay_s = 0.0  # to simulate a slow endpoint (timeouts)
        self.requests: list[dict[str, Any]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append({"path": self.path, "body": body,
                                         "auth": self.headers.get("Authorization")})
                if service.delay_s:
                    time.sleep(service.delay_s)
                if service.status != 200 or self.path != "/v1/chat/completions":
                    code = service.status if service.status != 200 else 404
                    data = json.dumps({"error": {"message": "unavailable"}}).encode()
                else:
                    code = 200
                    prompt = len(json.dumps(body["messages"])) // 4
                    message = ({"role": "assistant", "content": service.answer}
                               if isinstance(service.answer, str) else
                               {"role": "assistant", "content": None} | service.answer(body))
                    data = json.dumps({
                        "id": f"chatcmpl-{len(service.requests)}", "object": "chat.completion",
                        "created": 1700000000, "model": body["model"],
                        "choices": [{"index": 0, "message": message, "finish_reason":
                                     "tool_calls" if message.get("tool_calls") else "stop"}],
                        "usage": {"prompt_tokens": prompt, "completion_tokens": 20,
                                  "total_tokens": prompt + 20},
                    }).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ChatCompletionsService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback (``/v1/traces``, protobuf), as a tracing
    backend would be: what the processes export, decoded into :attr:`spans`."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                import gzip

                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportTraceServiceRequest.FromString(body)
                got = []
                for rs in req.resource_spans:
                    resource = {a.key: _any(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            got.append({
                                "service": resource.get("service.name"), "name": s.name,
                                "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex() or None, "kind": s.kind,
                                "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                                "status": s.status.code,
                                "attributes": {a.key: _any(a.value) for a in s.attributes}})
                with receiver.lock:
                    receiver.spans.extend(got)
                data = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _any(v: Any) -> Any:
    """An OTLP ``AnyValue`` as Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_any(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None

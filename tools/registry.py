"""Typed tools: registration by decorator, and an executor that guards every call.

A call goes through, in order: input validation -> permission (the caller's scopes,
sites and assets) -> policy (the tool's risk tier runs automatically, needs a human
decision the executor verifies itself - signed by someone the policy allows, for this
exact action with exactly these arguments in this workflow run, spent once - or is
forbidden; see :mod:`aiotflow.tools.decisions`) -> idempotency (a recorded effect is
returned, never repeated) -> circuit breaker (open: refused at once) -> rate limit -> the
tool, each attempt under a timeout, retried with tenacity on transient failures
(:class:`ToolUnavailable`, which a timeout becomes) -> effect record -> audit. Permanent
failures (:class:`ToolFailed`) are never retried and do not trip the breaker: the service
answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from aiotflow import tracing
from aiotflow.metrics import METRICS

from .control import ApprovalRecord, ControlStore
from .decisions import DecisionVerifier, ForgedDecision, filled_fields
from .errors import (
    ApprovalRequired,
    PermissionDenied,
    ToolError,
    ToolInputError,
    ToolNotFound,
    ToolUnavailable,
)
from .failpoints import failpoint
from .failsafe import BreakerSettings, CircuitBreaker, RateLimit, RateLimitSettings
from .policy import TIERS, Policy, RiskTier

__all__ = ["CallContext", "Principal", "RetrySettings", "Tool", "ToolExecutor", "ToolRegistry"]

log = structlog.get_logger("aiotflow.tools")

_CALLS = METRICS.counter(
    "aiotflow_tool_calls", "Tool calls by tool and outcome (ok, invalid, denied, "
    "approval_required, unavailable, failed, error).", ("tool", "outcome"))
_LATENCY = METRICS.histogram(
    "aiotflow_tool_call_duration_seconds",
    "A tool call through the executor's guards, retries included.", ("tool",))
#: outcome label of a tool error (the first class that matches)
_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (ToolInputError, "invalid"), (PermissionDenied, "denied"),
    (ApprovalRequired, "approval_required"), (ToolUnavailable, "unavailable"),
    (ToolError, "failed"))


class Principal(BaseModel):
    """Who is calling: a workflow, an agent or a person, with RBAC scopes and, optionally,
    the sites and assets it may act on (``None``: any)."""

    model_config = ConfigDict(frozen=True)

    name: str
    scopes: frozenset[str] = frozenset()
    sites: frozenset[str] | None = None
    assets: frozenset[str] | None = None

    def refuses(self, args: dict[str, Any]) -> str | None:
        """Why a call with these arguments is outside this principal's sites/assets."""
        site, asset = args.get("site"), args.get("asset")
        if self.sites is not None and site is not None and site not in self.sites:
            return f"may not act on site {site!r} (allowed: {sorted(self.sites)})"
        if self.assets is not None and asset is not None and asset not in self.assets:
            return f"may not act on asset {asset!r} (allowed: {sorted(self.assets)})"
        return None


class CallContext(BaseModel):
    """Per-call context: caller, workflow run, approval and idempotency key."""

    model_config = ConfigDict(frozen=True)

    principal: Principal
    thread_id: str | None = None
    approval_id: str | None = None
    idempotency_key: str | None = Field(
        None, description="Same key, same effect; derived from thread, tool and input if unset."
    )


class RetrySettings(BaseModel):
    """How a tool's transient failures are retried."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(3, ge=1)
    initial_s: float = Field(0.2, ge=0)
    max_s: float = Field(2.0, ge=0)


@dataclass(frozen=True)
class Tool:
    """A registered tool; ``fn`` takes the validated input model, returns the output."""

    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    fn: Callable[[Any], Awaitable[BaseModel]]
    scopes: frozenset[str] = frozenset()
    high_stakes: bool = False
    side_effect: bool = False
    risk: RiskTier = "low"
    retry: RetrySettings = field(default_factory=RetrySettings)
    cost: float = 0.0
    timeout_s: float | None = 30.0
    breaker: BreakerSettings | None = field(default_factory=BreakerSettings)
    rate_limit: RateLimitSettings | None = None
    #: the input field with the money a call spends (its tier rises above the spend limit)
    amount_field: str | None = None

    @property
    def records_effect(self) -> bool:
        return self.high_stakes or self.side_effect or self.risk in ("high", "critical")


class ToolRegistry:
    """Named tools. ``@registry.tool(scopes={"orders:write"}, high_stakes=True)``."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool, *, replace: bool = False) -> Tool:
        if tool.name in self._tools and not replace:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(
        self,
        name: str | None = None,
        *,
        scopes: Iterable[str] = (),
        high_stakes: bool = False,
        side_effect: bool = False,
        risk: RiskTier | None = None,
        retry: RetrySettings | None = None,
        cost: float = 0.0,
        timeout_s: float | None = 30.0,
        breaker: BreakerSettings | None = None,
        rate_limit: RateLimitSettings | None = None,
        amount_field: str | None = None,
        replace: bool = False,
    ) -> Callable[[Callable[[Any], Awaitable[Any]]], Tool]:
        """Register an ``async def fn(args: InModel) -> OutModel``; its docstring is the help.

        ``risk`` is the tool's tier (low, medium, high, critical; the policy says what each
        needs); ``high_stakes=True`` is short for ``risk="high"``. ``amount_field`` names
        the input field that says what a call spends: above the policy's
        ``spend_limit_usd`` the call is high-risk whatever the tool's own tier.
        """
        tier: RiskTier = risk or ("high" if high_stakes else "low")

        def decorate(fn: Callable[[Any], Awaitable[Any]]) -> Tool:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"tool {fn.__name__} must be an async function")
            hints = get_type_hints(fn)
            params = [p for p in inspect.signature(fn).parameters if p in hints]
            in_model = hints.get(params[0]) if params else None
            out_model = hints.get("return")
            for what, model in (("input", in_model), ("output", out_model)):
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise TypeError(f"tool {fn.__name__}: {what} must be a pydantic model")
            assert in_model is not None and out_model is not None
            if amount_field is not None and amount_field not in in_model.model_fields:
                raise TypeError(f"tool {fn.__name__}: no input field {amount_field!r}")
            return self.register(Tool(
                name=name or fn.__name__,
                description=inspect.cleandoc(fn.__doc__ or ""),
                input_model=in_model,
                output_model=out_model,
                fn=fn,
                scopes=frozenset(scopes),
                high_stakes=tier in ("high", "critical"),
                side_effect=side_effect,
                risk=tier,
                retry=retry or RetrySettings(),
                cost=cost,
                timeout_s=timeout_s,
                breaker=breaker or BreakerSettings(),
                rate_limit=rate_limit,
                amount_field=amount_field,
            ), replace=replace)

        return decorate

    def update(self, other: ToolRegistry) -> ToolRegistry:
        """Add (or replace with) every tool of ``other``; returns ``self``."""
        for tool in other._tools.values():
            self.register(tool, replace=True)
        return self

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFound(f"no tool {name!r}; known: {sorted(self._tools)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)


def _idempotency_key(tool: str, thread_id: str | None, args: BaseModel) -> str:
    body = json.dumps([tool, thread_id, args.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


class ToolExecutor:
    """Runs registered tools for callers, enforcing permissions, approvals and idempotency."""

    def __init__(self, registry: ToolRegistry, control: ControlStore, *,
                 policy: Policy | None = None, engine_key: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``engine_key``: the public key of the engine's local console, whose signed
        decisions count when the policy names no operators."""
        self.registry = registry
        self.control = control
        self.policy = policy or Policy()
        self.verifier = DecisionVerifier(self.policy, engine_key=engine_key)
        self.clock = clock
        self.calls = 0
        self.cost = 0.0
        self._breakers: dict[str, CircuitBreaker] = {}
        self._limits: dict[str, RateLimit] = {}

    def tier(self, name: str, args: dict[str, Any] | None = None) -> RiskTier:
        """The risk tier of tool ``name`` (called with ``args``): the policy's override,
        else the tool's own; raised to ``high`` when the call spends more than the
        policy's ``spend_limit_usd``."""
        tool = self.registry.get(name)
        tier = self.policy.tools.get(name) or tool.risk
        if tool.amount_field and args is not None:
            try:
                amount = float(args.get(tool.amount_field) or 0.0)
            except (TypeError, ValueError):
                amount = float("inf")  # not a number: treated as the most it could be
            if amount > self.policy.spend_limit_usd and TIERS.index(tier) < TIERS.index("high"):
                tier = "high"
        return tier

    def breaker(self, name: str) -> CircuitBreaker | None:
        """The circuit breaker of tool ``name`` (``None`` if it has none)."""
        tool = self.registry.get(name)
        if tool.breaker is None:
            return None
        if name not in self._breakers:
            self._breakers[name] = CircuitBreaker(tool.breaker, clock=self.clock)
        return self._breakers[name]

    def _limit(self, tool: Tool) -> RateLimit | None:
        if tool.rate_limit is None:
            return None
        if tool.name not in self._limits:
            self._limits[tool.name] = RateLimit(tool.rate_limit, clock=self.clock)
        return self._limits[tool.name]

    async def call(self, name: str, args: BaseModel | dict[str, Any], ctx: CallContext) -> Any:
        """Call tool ``name``; returns its output model (or the recorded one on replay).

        Each call is an ``execute_tool`` span and counted by outcome in
        ``aiotflow_tool_calls_total``, timed in ``aiotflow_tool_call_duration_seconds``."""
        t0 = time.perf_counter()
        outcome = "error"
        label = name if name in self.registry else "_unknown"
        with tracing.span(f"execute_tool {name}", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                "gen_ai.tool.type": "function", "aiotflow.thread_id": ctx.thread_id,
                "aiotflow.approval_id": ctx.approval_id,
                "aiotflow.principal": ctx.principal.name}) as sp:
            try:
                out = await self._call(name, args, ctx)
                outcome = "ok"
                return out
            except Exception as exc:
                outcome = next((o for t, o in _OUTCOMES if isinstance(exc, t)), "error")
                raise
            finally:
                _CALLS.inc(label, outcome)
                _LATENCY.observe(time.perf_counter() - t0, label)
                tracing.set_attributes(sp, aiotflow__tool__outcome=outcome)

    async def _call(self, name: str, args: BaseModel | dict[str, Any], ctx: CallContext) -> Any:
        tool = self.registry.get(name)
        actor = ctx.principal.name
        try:
            raw = args.model_dump() if isinstance(args, BaseModel) else args
            parsed = tool.input_model.model_validate(raw)
        except ValidationError as exc:
            raise ToolInputError(str(exc), tool=name) from None
        payload = parsed.model_dump(mode="json")
        missing = tool.scopes - ctx.principal.scopes
        if missing:
            await self.control.audit("tool.denied", actor=actor, thread_id=ctx.thread_id,
                                     tool=name, missing=sorted(missing))
            raise PermissionDenied(f"{actor} lacks scopes {sorted(missing)}", tool=name,
                                   missing=frozenset(missing))
        denied = ctx.principal.refuses(payload)
        if denied:
            await self.control.audit("tool.denied", actor=actor, thread_id=ctx.thread_id,
                                     tool=name, reason=denied)
            raise PermissionDenied(f"{actor}: {denied}", tool=name)
        tier = self.tier(name, payload)
        rule = self.policy.rule(tier)
        tracing.annotate(aiotflow__tool__tier=tier, aiotflow__tool__mode=rule.mode)
        if rule.mode == "forbidden":
            await self.control.audit("tool.forbidden", actor=actor, thread_id=ctx.thread_id,
                                     tool=name, tier=tier)
            raise PermissionDenied(f"{tier}-risk tool {name} is forbidden by policy", tool=name)
        key = ctx.idempotency_key or _idempotency_key(name, ctx.thread_id, parsed)
        if rule.mode == "approval":
            try:
                await self._check_grant(tool, ctx, payload, tier, key)
            except ApprovalRequired as exc:
                await self.control.audit("tool.blocked", actor=actor, thread_id=ctx.thread_id,
                                         tool=name, tier=tier, reason=str(exc))
                raise
        # a tool the policy raised to high risk has its effects recorded like one declared so
        records = tool.records_effect or tier in ("high", "critical")
        if records:
            recorded = await self.control.effect(key)
            if recorded is not None:
                await self.control.audit("tool.replayed", actor=actor, thread_id=ctx.thread_id,
                                         tool=name, key=key)
                return tool.output_model.model_validate(recorded)
        started = time.perf_counter()
        attempts = 0
        breaker = self.breaker(name)
        if breaker is not None and not breaker.allow():
            await self.control.audit("tool.circuit_open", actor=actor, thread_id=ctx.thread_id,
                                     tool=name, retry_in_s=round(breaker.retry_in(), 1))
            raise ToolUnavailable(f"circuit open after repeated failures; next probe in "
                                  f"{breaker.retry_in():.0f} s", tool=name)
        limit = self._limit(tool)
        if limit is not None and not await limit.acquire():
            await self.control.audit("tool.rate_limited", actor=actor, thread_id=ctx.thread_id,
                                     tool=name)
            if breaker is not None and breaker.state == "half_open":
                breaker.success()  # the probe never ran; let the next call probe
            raise ToolUnavailable("rate limit reached", tool=name)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(tool.retry.attempts),
                wait=wait_exponential(multiplier=tool.retry.initial_s, max=tool.retry.max_s),
                retry=retry_if_exception_type(ToolUnavailable),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    failpoint(f"tool.before:{name}")
                    try:
                        try:
                            result = await asyncio.wait_for(tool.fn(_with_key(parsed, key)),
                                                            tool.timeout_s)
                        except TimeoutError:
                            raise ToolUnavailable(f"no answer within {tool.timeout_s:g} s",
                                                  tool=name) from None
                    except ToolUnavailable as exc:
                        if breaker is not None and breaker.failure():
                            await self.control.audit(
                                "tool.circuit_opened", actor=actor, thread_id=ctx.thread_id,
                                tool=name, reset_s=breaker.settings.reset_s, error=str(exc))
                            log.warning("tool.circuit_opened", tool=name)
                            raise _Stop(exc) from None
                        raise
        except (ToolError, _Stop) as exc:
            err = exc if isinstance(exc, ToolError) else ToolUnavailable(
                f"{_message(exc.args[0])}; circuit opened after repeated failures", tool=name)
            await self.control.audit(
                "tool.unavailable" if isinstance(err, ToolUnavailable) else "tool.failed",
                actor=actor, thread_id=ctx.thread_id, tool=name, input=payload,
                error=str(err), attempts=attempts)
            err.tool = err.tool or name
            raise err from None
        if breaker is not None and breaker.success() != "closed":
            await self.control.audit("tool.circuit_closed", actor=actor,
                                     thread_id=ctx.thread_id, tool=name)
        self.calls += 1
        self.cost += tool.cost
        out = tool.output_model.model_validate(result)
        output = out.model_dump(mode="json")
        failpoint(f"tool.done:{name}")
        ok = {"tool": name, "input": payload, "output": output, "attempts": attempts,
              "approval_id": ctx.approval_id, "cost": tool.cost,
              "ms": round((time.perf_counter() - started) * 1000, 2)}
        if records:  # the effect and its audit record: one unit of work
            await self.control.record_effect(key, tool=name, thread_id=ctx.thread_id,
                                             input=payload, output=output,
                                             audit=("tool.ok", actor, ok))
        else:
            await self.control.audit("tool.ok", actor=actor, thread_id=ctx.thread_id, **ok)
        log.info("tool.ok", tool=name, thread_id=ctx.thread_id, attempts=attempts)
        failpoint(f"tool.recorded:{name}")
        return out


    async def _check_grant(self, tool: Tool, ctx: CallContext, payload: dict[str, Any],
                           tier: RiskTier, key: str) -> ApprovalRecord:
        """The approval that authorises this exact call, or :class:`ApprovalRequired`.

        Its decision must verify (:class:`DecisionVerifier`: signed by someone the policy
        allows to approve ``tier``, every field matching the record); it must belong to
        this workflow run and propose this tool with exactly these arguments (after the
        tool's own validation: a plan edited after the decision does not match); and that
        proposed action must not have been spent on another call. A decision that does not
        verify is also audited as ``approval.forgery``."""
        name = tool.name
        if not ctx.approval_id:
            raise ApprovalRequired("high-stakes tool called without an approval", tool=name)
        rec = await self.control.approval(ctx.approval_id)
        aid = ctx.approval_id
        if rec is None:
            raise ApprovalRequired(f"approval {aid} does not exist", tool=name)
        if rec.status != "approved":
            raise ApprovalRequired(f"approval {aid} is {rec.status}", tool=name)
        if ctx.thread_id is not None and rec.thread_id != ctx.thread_id:
            raise ApprovalRequired(f"approval {aid} belongs to another workflow run", tool=name)
        if name not in rec.tools:
            raise ApprovalRequired(f"approval {aid} does not cover this tool", tool=name)
        try:
            self.verifier.verify(rec, tier=tier)
        except ForgedDecision as exc:
            await self.control.audit("approval.forgery", actor="tool-layer",
                                     thread_id=ctx.thread_id, approval_id=aid, tool=name,
                                     claimed_by=rec.decided_by, reason=exc.reason)
            raise ApprovalRequired(f"approval {aid}: {exc.reason}", tool=name) from None
        # the proposed arguments, with only the fields the tool leaves to execution taken
        # from the call, must validate to exactly the call: every other field is bound
        filled = {k: payload[k] for k in filled_fields(tool.input_model) if k in payload}
        matches = []
        for i, action in enumerate(rec.actions):
            proposed = action.get("args") or {}
            if action.get("tool") != name or not isinstance(proposed, dict):
                continue
            try:
                candidate = tool.input_model.model_validate(filled | proposed)
            except ValidationError:
                continue
            if candidate.model_dump(mode="json") == payload:
                matches.append(i)
        if not matches:
            proposed_args = [a.get("args") for a in rec.actions if a.get("tool") == name]
            raise ApprovalRequired(f"approval {aid} was given for {name} with "
                                   f"{proposed_args}, not for this call", tool=name)
        for i in matches:
            if await self.control.use_grant(aid, i, tool=name, call_key=key):
                return rec
        raise ApprovalRequired(f"approval {aid} for {name} was already used by another call",
                               tool=name)


class _Stop(Exception):
    """The breaker opened during retries: stop retrying at once."""


def _message(exc: ToolError) -> str:
    """An error's message without its ``tool:`` prefix."""
    text = str(exc)
    return text.removeprefix(f"{exc.tool}: ") if exc.tool else text


def _with_key(args: BaseModel, key: str) -> BaseModel:
    """Hand the idempotency key to tools whose input declares one."""
    if "idempotency_key" in type(args).model_fields and not getattr(args, "idempotency_key"):  # noqa: B009
        return args.model_copy(update={"idempotency_key": key})
    return args

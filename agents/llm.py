"""The LLM client: any OpenAI-compatible Chat Completions endpoint, optional.

Configured by ``OPENAI_API_KEY`` and/or ``OPENAI_BASE_URL`` (a local endpoint may need
no key), ``AIOTFLOW_LLM_MODEL`` (the cheap model, asked first) and
``AIOTFLOW_LLM_MODEL_LARGE`` (the stronger one, asked only when the cheap answer is
uncertain). Without an endpoint every call returns the deterministic answer it was
given, so nothing in a decision depends on the LLM. Answers are cached by their whole
prompt (the evidence); tokens and cost are counted per model, and once a budget (total,
per site, per alert) is spent the client answers offline.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from aiotflow import tracing
from aiotflow.metrics import METRICS

__all__ = ["ChatAnswer", "LLMClient", "LLMResult", "LLMSettings", "LLMText", "ToolCall"]

log = structlog.get_logger("aiotflow.llm")

_REQUESTS = METRICS.counter(
    "aiotflow_llm_requests", "LLM calls by model and outcome (llm, cache, budget, error, "
    "empty).", ("model", "outcome"))
_TOKENS = METRICS.counter("aiotflow_llm_tokens", "LLM tokens spent, by site, model and type "
                          "(input, output).", ("site", "model", "type"))
_COST = METRICS.counter("aiotflow_llm_cost_usd", "LLM spend in US dollars, by site and model.",
                        ("site", "model"))
_LATENCY = METRICS.histogram("aiotflow_llm_request_duration_seconds",
                             "One call to the LLM endpoint.", ("model",))


class LLMSettings(BaseSettings):
    """LLM endpoint, model and budget, from the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    model: str = Field("gpt-4o-mini", validation_alias="AIOTFLOW_LLM_MODEL")
    model_large: str | None = Field(
        None, validation_alias="AIOTFLOW_LLM_MODEL_LARGE",
        description="Asked only when the cheap model's plan is uncertain or disagrees "
                    "with the incident history; unset: the cheap model's answer stands.")
    budget_usd: float = Field(1.0, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_USD")
    usd_per_1k_input: float = Field(
        0.00015, ge=0, validation_alias=AliasChoices("AIOTFLOW_LLM_USD_PER_1K_INPUT"))
    usd_per_1k_output: float = Field(
        0.0006, ge=0, validation_alias=AliasChoices("AIOTFLOW_LLM_USD_PER_1K_OUTPUT"))
    large_usd_per_1k_input: float = Field(
        0.0025, ge=0, validation_alias="AIOTFLOW_LLM_LARGE_USD_PER_1K_INPUT")
    large_usd_per_1k_output: float = Field(
        0.01, ge=0, validation_alias="AIOTFLOW_LLM_LARGE_USD_PER_1K_OUTPUT")
    budget_per_site_usd: float | None = Field(
        None, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_PER_SITE_USD")
    budget_per_alert_usd: float | None = Field(
        0.05, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_PER_ALERT_USD")
    max_tokens: int = Field(350, ge=16)
    timeout_s: float = Field(20.0, gt=0)

    def prices(self, model: str) -> tuple[float, float]:
        """USD per 1,000 input and output tokens of ``model``."""
        if self.model_large and model == self.model_large and model != self.model:
            return self.large_usd_per_1k_input, self.large_usd_per_1k_output
        return self.usd_per_1k_input, self.usd_per_1k_output


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is its raw JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatAnswer:
    """One assistant turn: its text, the calls it asks for, and what it cost."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    source: str  # "llm", "cache" or "offline"
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    reason: str = ""

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def message(self) -> dict[str, Any]:
        """The turn as a Chat Completions ``assistant`` message, to send back."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": c.arguments}} for c in self.tool_calls]
        return msg


@dataclass(frozen=True)
class LLMText:
    text: str
    source: str  # "llm", "cache", "offline" or "refused"
    tokens: int = 0
    cost_usd: float = 0.0
    reason: str = ""


T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    """A structured answer: the validated model, or the fallback and why."""

    value: T
    source: str  # "llm", "cache", "offline" or "refused"
    tokens: int = 0
    cost_usd: float = 0.0
    reason: str = ""


class LLMClient:
    """``async with LLMClient(settings) as llm: await llm.write(system, facts, fallback)``."""

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings()
        self._client: Any = None
        self._cache: dict[str, str] = {}
        self._chat_cache: dict[str, ChatAnswer] = {}
        self.spent_usd = 0.0
        self.spent_by: dict[tuple[str, str], float] = defaultdict(float)  # (kind, key)
        self.tokens = 0
        self.calls = 0
        self.failures = 0
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return bool(self.settings.api_key or self.settings.base_url)

    async def __aenter__(self) -> LLMClient:
        if self.enabled:
            from openai import AsyncOpenAI

            # a local endpoint may want no key; the client insists on one
            self._client = AsyncOpenAI(api_key=self.settings.api_key.get_secret_value()
                                       if self.settings.api_key else "unset",
                                       base_url=self.settings.base_url,
                                       timeout=self.settings.timeout_s, max_retries=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _spend(self, model: str, t_in: int, t_out: int, site: str, alert: str) -> float:
        p_in, p_out = self.settings.prices(model)
        cost = t_in / 1000 * p_in + t_out / 1000 * p_out
        self.calls += 1
        self.tokens += t_in + t_out
        self.spent_usd += cost
        if site:
            self.spent_by["site", site] += cost
        if alert:
            self.spent_by["alert", alert] += cost
        self.spent_by["model", model] += cost
        _TOKENS.inc(site, model, "input", n=t_in)
        _TOKENS.inc(site, model, "output", n=t_out)
        _COST.inc(site, model, n=cost)
        return cost

    async def _create(self, model: str, site: str, alert: str, **kwargs: Any
                      ) -> tuple[Any, int, int, float]:
        """One call to the endpoint, as a GenAI client span (``chat {model}``), its tokens
        and cost counted (:meth:`_spend`): ``(response, input tokens, output tokens,
        cost)``; raises what the client raises."""
        with tracing.span(f"chat {model}", kind="client", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.request.max_tokens": self.settings.max_tokens,
                "server.address": self.settings.base_url,
                "aiotflow.site": site or None, "aiotflow.alert_id": alert or None}) as sp:
            t0 = time.perf_counter()
            try:
                resp = await self._client.chat.completions.create(model=model, **kwargs)
            finally:
                _LATENCY.observe(time.perf_counter() - t0, model)
            t_in, t_out = _usage(resp)
            cost = self._spend(model, t_in, t_out, site, alert)
            finish = [str(c.finish_reason) for c in (resp.choices or [])
                      if getattr(c, "finish_reason", None)]
            tracing.set_attributes(
                sp, gen_ai__response__model=getattr(resp, "model", None) or None,
                gen_ai__response__id=getattr(resp, "id", None) or None,
                gen_ai__usage__input_tokens=t_in, gen_ai__usage__output_tokens=t_out,
                gen_ai__response__finish_reasons=finish or None, aiotflow__cost_usd=cost)
            return resp, t_in, t_out, cost

    def _over_budget(self, worst: float, site: str, alert: str) -> str | None:
        s = self.settings
        if self.spent_usd + worst > s.budget_usd:
            return "budget exhausted"
        if (s.budget_per_site_usd is not None and site
                and self.spent_by["site", site] + worst > s.budget_per_site_usd):
            return f"budget of site {site} exhausted"
        if (s.budget_per_alert_usd is not None and alert
                and self.spent_by["alert", alert] + worst > s.budget_per_alert_usd):
            return "budget per alert exhausted"
        return None

    async def write(self, system: str, prompt: str, *, fallback: str, site: str = "",
                    alert: str = "", json_mode: bool = False) -> LLMText:
        """Text for ``prompt``; ``fallback`` when offline, over budget or on error.

        Spending is counted in total, per ``site`` and per ``alert`` and capped by each
        budget that is set.
        """
        if self._client is None:
            return LLMText(fallback, "offline", reason="no LLM configured")
        key = hashlib.sha256(f"{self.settings.model}\0{system}\0{prompt}".encode()).hexdigest()
        if key in self._cache:
            _REQUESTS.inc(self.settings.model, "cache")
            return LLMText(self._cache[key], "cache")
        s = self.settings
        worst = ((len(system) + len(prompt)) / 4 / 1000 * s.usd_per_1k_input
                 + s.max_tokens / 1000 * s.usd_per_1k_output)
        over = self._over_budget(worst, site, alert)
        if over:
            log.warning("llm.budget_exhausted", reason=over, spent=round(self.spent_usd, 6),
                        site=site, alert=alert)
            _REQUESTS.inc(s.model, "budget")
            return LLMText(fallback, "offline", reason=over)
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if json_mode else {}
        try:
            resp, t_in, t_out, cost = await self._create(
                s.model, site, alert, max_tokens=s.max_tokens, temperature=0.2,
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": prompt}], **extra,
            )
        except Exception as exc:  # any endpoint failure falls back; the decision never waits
            self.failures += 1
            _REQUESTS.inc(s.model, "error")
            log.warning("llm.failed", error=repr(exc)[:300])
            return LLMText(fallback, "offline", reason=f"LLM error: {type(exc).__name__}")
        text = (resp.choices[0].message.content or "").strip() if resp.choices else ""
        _REQUESTS.inc(s.model, "llm" if text else "empty")
        if not text:
            return LLMText(fallback, "offline", t_in + t_out, cost, reason="empty answer")
        if len(self._cache) >= _CACHE_MAX:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = text
        return LLMText(text, "llm", t_in + t_out, cost)

    async def structured(self, system: str, prompt: str, schema: type[T], *, fallback: T,
                         site: str = "", alert: str = "") -> LLMResult[T]:
        """An answer that must parse into ``schema`` (strict JSON); anything else is
        refused and ``fallback`` used instead."""
        fields = ", ".join(f'"{n}"' for n in schema.model_fields)
        system = (f"{system}\nAnswer with one JSON object with exactly the keys {fields} "
                  "and nothing else.")
        out = await self.write(system, prompt, fallback="", site=site, alert=alert,
                               json_mode=True)
        if out.source in ("offline",):
            return LLMResult(fallback, "offline", out.tokens, out.cost_usd, out.reason)
        try:
            value = schema.model_validate_json(out.text)
        except ValidationError as exc:
            self.refused += 1
            self._cache = {k: v for k, v in self._cache.items() if v != out.text}
            first = exc.errors(include_url=False)[0]
            reason = (f"answer refused, not in the schema: {first['msg']} at "
                      f"{'.'.join(str(x) for x in first['loc']) or 'top level'}")
            log.warning("llm.refused", reason=reason)
            return LLMResult(fallback, "refused", out.tokens, out.cost_usd, reason)
        return LLMResult(value, out.source, out.tokens, out.cost_usd)

    async def chat(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None
                   = None, model: str | None = None, site: str = "", alert: str = ""
                   ) -> ChatAnswer:
        """One assistant turn for ``messages`` with ``tools`` offered as functions.

        Never raises for the endpoint's sake: offline, over budget, an error or an empty
        answer come back as ``source="offline"`` with the ``reason``. The same messages
        and tools to the same model are answered from the cache, at no cost.
        """
        s = self.settings
        model = model or s.model
        if self._client is None:
            return ChatAnswer("", (), "offline", model, reason="no LLM configured")
        body = json.dumps([model, messages, tools], sort_keys=True, default=str)
        key = hashlib.sha256(body.encode()).hexdigest()
        if key in self._chat_cache:
            hit = self._chat_cache[key]
            _REQUESTS.inc(model, "cache")
            return ChatAnswer(hit.content, hit.tool_calls, "cache", model)
        p_in, p_out = s.prices(model)
        worst = len(body) / 4 / 1000 * p_in + s.max_tokens / 1000 * p_out
        over = self._over_budget(worst, site, alert)
        if over:
            log.warning("llm.budget_exhausted", reason=over, spent=round(self.spent_usd, 6),
                        site=site, alert=alert)
            _REQUESTS.inc(model, "budget")
            return ChatAnswer("", (), "offline", model, reason=over)
        extra: dict[str, Any] = {"tools": tools, "tool_choice": "auto"} if tools else {}
        try:
            resp, t_in, t_out, cost = await self._create(
                model, site, alert, max_tokens=s.max_tokens, temperature=0.0,
                messages=messages, **extra)
        except Exception as exc:  # any endpoint failure falls back; the decision never waits
            self.failures += 1
            _REQUESTS.inc(model, "error")
            log.warning("llm.failed", error=repr(exc)[:300], model=model)
            return ChatAnswer("", (), "offline", model,
                              reason=f"LLM error: {type(exc).__name__}")
        msg = resp.choices[0].message if resp.choices else None
        calls = tuple(
            ToolCall(str(c.id or f"call-{i}"), str(c.function.name or ""),
                     str(c.function.arguments or ""))
            for i, c in enumerate(getattr(msg, "tool_calls", None) or [])
            if getattr(c, "function", None) is not None)
        content = (getattr(msg, "content", None) or "").strip() if msg is not None else ""
        _REQUESTS.inc(model, "llm" if content or calls else "empty")
        if not content and not calls:
            return ChatAnswer("", (), "offline", model, t_in, t_out, cost, "empty answer")
        answer = ChatAnswer(content, calls, "llm", model, t_in, t_out, cost)
        if len(self._chat_cache) >= _CACHE_MAX:
            self._chat_cache.pop(next(iter(self._chat_cache)))
        self._chat_cache[key] = answer
        return answer


#: answers kept per client, oldest dropped first
_CACHE_MAX = 512


def _usage(resp: Any) -> tuple[int, int]:
    usage = getattr(resp, "usage", None)
    return (int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0))

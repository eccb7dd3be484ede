"""The LLM client: any OpenAI-compatible Chat Completions endpoint, optional.

Configured by ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``, ``AIOTFLOW_LLM_MODEL``).
Without a key every call returns the deterministic text it was given, so nothing in a
decision depends on the LLM. Responses are cached by prompt; tokens and cost are
counted, and once the budget is spent the client answers offline.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LLMClient", "LLMResult", "LLMSettings", "LLMText"]

log = structlog.get_logger("aiotflow.llm")


class LLMSettings(BaseSettings):
    """LLM endpoint, model and budget, from the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    model: str = Field("gpt-4o-mini", validation_alias="AIOTFLOW_LLM_MODEL")
    budget_usd: float = Field(1.0, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_USD")
    usd_per_1k_input: float = Field(
        0.00015, ge=0, validation_alias=AliasChoices("AIOTFLOW_LLM_USD_PER_1K_INPUT"))
    usd_per_1k_output: float = Field(
        0.0006, ge=0, validation_alias=AliasChoices("AIOTFLOW_LLM_USD_PER_1K_OUTPUT"))
    budget_per_site_usd: float | None = Field(
        None, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_PER_SITE_USD")
    budget_per_alert_usd: float | None = Field(
        0.05, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_PER_ALERT_USD")
    max_tokens: int = Field(350, ge=16)
    timeout_s: float = Field(20.0, gt=0)


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
        self.spent_usd = 0.0
        self.spent_by: dict[tuple[str, str], float] = defaultdict(float)  # (kind, key)
        self.tokens = 0
        self.calls = 0
        self.failures = 0
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return bool(self.settings.api_key)

    async def __aenter__(self) -> LLMClient:
        if self.enabled:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=self.settings.api_key.get_secret_value()
                                       if self.settings.api_key else None,
                                       base_url=self.settings.base_url,
                                       timeout=self.settings.timeout_s, max_retries=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

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
            return LLMText(self._cache[key], "cache")
        s = self.settings
        worst = ((len(system) + len(prompt)) / 4 / 1000 * s.usd_per_1k_input
                 + s.max_tokens / 1000 * s.usd_per_1k_output)
        over = self._over_budget(worst, site, alert)
        if over:
            log.warning("llm.budget_exhausted", reason=over, spent=round(self.spent_usd, 6),
                        site=site, alert=alert)
            return LLMText(fallback, "offline", reason=over)
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if json_mode else {}
        try:
            resp = await self._client.chat.completions.create(
                model=s.model, max_tokens=s.max_tokens, temperature=0.2,
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": prompt}], **extra,
            )
        except Exception as exc:  # any endpoint failure falls back; the decision never waits
            self.failures += 1
            log.warning("llm.failed", error=repr(exc)[:300])
            return LLMText(fallback, "offline", reason=f"LLM error: {type(exc).__name__}")
        text = (resp.choices[0].message.content or "").strip() if resp.choices else ""
        usage = getattr(resp, "usage", None)
        t_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        t_out = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = t_in / 1000 * s.usd_per_1k_input + t_out / 1000 * s.usd_per_1k_output
        self.calls += 1
        self.tokens += t_in + t_out
        self.spent_usd += cost
        if site:
            self.spent_by["site", site] += cost
        if alert:
            self.spent_by["alert", alert] += cost
        if not text:
            return LLMText(fallback, "offline", t_in + t_out, cost, reason="empty answer")
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

"""The LLM client: any OpenAI-compatible Chat Completions endpoint, optional.

Configured by ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``, ``AIOTFLOW_LLM_MODEL``).
Without a key every call returns the deterministic text it was given, so nothing in a
decision depends on the LLM. Responses are cached by prompt; tokens and cost are
counted, and once the budget is spent the client answers offline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LLMClient", "LLMSettings", "LLMText"]

log = structlog.get_logger("aiotflow.llm")


class LLMSettings(BaseSettings):
    """LLM endpoint, model and budget, from the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    api_key: str | None = Field(None, validation_alias="OPENAI_API_KEY")
    base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    model: str = Field("gpt-4o-mini", validation_alias="AIOTFLOW_LLM_MODEL")
    budget_usd: float = Field(1.0, ge=0, validation_alias="AIOTFLOW_LLM_BUDGET_USD")
    usd_per_1k_input: float = Field(
        0.00015, ge=0, validation_alias=AliasChoices("AIOTFLOW_LLM_USD_PER_1K_INPUT"))
    usd_per_1k_output: float = Field(
        0.0006, ge=0, validation_alias=AliasChoices("AIOTFLOW_LLM_USD_PER_1K_OUTPUT"))
    max_tokens: int = Field(350, ge=16)
    timeout_s: float = Field(20.0, gt=0)


@dataclass(frozen=True)
class LLMText:
    text: str
    source: str  # "llm", "cache" or "offline"
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
        self.tokens = 0
        self.calls = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self.settings.api_key)

    async def __aenter__(self) -> LLMClient:
        if self.enabled:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=self.settings.api_key,
                                       base_url=self.settings.base_url,
                                       timeout=self.settings.timeout_s, max_retries=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def write(self, system: str, prompt: str, *, fallback: str) -> LLMText:
        """Text for ``prompt``; ``fallback`` when offline, over budget or on error."""
        if self._client is None:
            return LLMText(fallback, "offline", reason="no LLM configured")
        key = hashlib.sha256(f"{self.settings.model}\0{system}\0{prompt}".encode()).hexdigest()
        if key in self._cache:
            return LLMText(self._cache[key], "cache")
        s = self.settings
        worst = ((len(system) + len(prompt)) / 4 / 1000 * s.usd_per_1k_input
                 + s.max_tokens / 1000 * s.usd_per_1k_output)
        if self.spent_usd + worst > s.budget_usd:
            log.warning("llm.budget_exhausted", spent=round(self.spent_usd, 6), budget=s.budget_usd)
            return LLMText(fallback, "offline", reason="budget exhausted")
        try:
            resp = await self._client.chat.completions.create(
                model=s.model, max_tokens=s.max_tokens, temperature=0.2,
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": prompt}],
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
        if not text:
            return LLMText(fallback, "offline", t_in + t_out, cost, reason="empty answer")
        self._cache[key] = text
        return LLMText(text, "llm", t_in + t_out, cost)

"""Who may do what: tool risk tiers, approval rules, operators and their roles.

A deployment writes this in its configuration (``[engine.policy]``), so an operator can
read exactly what runs on its own, what needs whose approval, and what never runs::

    [engine.policy.tiers.high]
    mode = "approval"            # auto | approval | forbidden
    approvers = ["supervisor"]   # roles that may approve (empty: any operator)
    escalate_after_s = 900       # still pending after 15 min: ...
    escalate_to = ["manager"]    # ... these roles may approve it too
    expires_s = 14400            # still pending after 4 h: expired, never runs

    [engine.policy.tools]
    book_technician = "high"     # override a tool's declared tier

    [[engine.policy.operators]]
    name = "ana"
    roles = ["supervisor"]
    pin_hash = "pbkdf2_sha256$200000$…"   # aiotflow operator hash-pin

The tool layer enforces it (:class:`~aiotflow.tools.registry.ToolExecutor`), whatever a workflow's
state says; the console enforces who may decide.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TIERS", "OperatorSpec", "Policy", "RiskTier", "TierRule", "hash_pin", "verify_pin"]

RiskTier = Literal["low", "medium", "high", "critical"]
TIERS: tuple[RiskTier, ...] = ("low", "medium", "high", "critical")


class TierRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["auto", "approval", "forbidden"]
    approvers: list[str] = Field(default_factory=list,
                                 description="Roles that may approve; empty: any operator.")
    escalate_after_s: float | None = Field(None, gt=0)
    escalate_to: list[str] = Field(default_factory=list)
    expires_s: float | None = Field(None, gt=0)


class OperatorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    roles: list[str] = Field(default_factory=list)
    pin_hash: str | None = Field(None, description="From `aiotflow operator hash-pin`.")


def _default_tiers() -> dict[RiskTier, TierRule]:
    return {
        "low": TierRule(mode="auto"),
        "medium": TierRule(mode="auto"),
        "high": TierRule(mode="approval", expires_s=24 * 3600),
        "critical": TierRule(mode="approval", approvers=["manager"], expires_s=4 * 3600),
    }


class Policy(BaseModel):
    """Tier rules, per-tool tier overrides and the operators who may approve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tiers: dict[RiskTier, TierRule] = Field(default_factory=_default_tiers)
    tools: dict[str, RiskTier] = Field(default_factory=dict,
                                       description="Tier overrides by tool name.")
    operators: list[OperatorSpec] = Field(
        default_factory=list,
        description="People who may approve. Empty: anyone at the console (names recorded).")

    def rule(self, tier: RiskTier) -> TierRule:
        return self.tiers.get(tier) or _default_tiers()[tier]

    def operator(self, name: str) -> OperatorSpec | None:
        return next((o for o in self.operators if o.name == name), None)

    def approver_roles(self, tier: RiskTier, *, escalated: bool = False) -> list[str]:
        """Roles that may approve ``tier`` (empty: any operator)."""
        rule = self.rule(tier)
        if not rule.approvers:
            return []
        return [*rule.approvers, *(rule.escalate_to if escalated else [])]

    def may_approve(self, name: str, tier: RiskTier, *, escalated: bool = False
                    ) -> tuple[bool, str]:
        """May person ``name`` decide an approval of ``tier``? ``(yes/no, why not)``."""
        if not self.operators:
            return True, ""
        op = self.operator(name)
        if op is None:
            return False, f"{name!r} is not a configured operator"
        roles = self.approver_roles(tier, escalated=escalated)
        if roles and not set(roles) & set(op.roles):
            return False, (f"{tier}-risk actions need one of the roles {roles}; {name} has "
                           f"{op.roles or 'none'}")
        return True, ""


def hash_pin(pin: str, *, iterations: int = 200_000) -> str:
    """A salted PBKDF2 hash of a PIN or token, for ``pin_hash`` in the configuration."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", pin.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)

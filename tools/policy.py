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

    [engine.policy]
    spend_limit_usd = 1000       # a part order above this needs approval (high)

    [[engine.policy.operators]]
    name = "ana"
    roles = ["supervisor"]
    public_key = "ed25519:…"     # aiotflow operator keygen ana

The tool layer enforces it (:class:`~aiotflow.tools.registry.ToolExecutor`) on decisions
signed with the operators' keys (:mod:`aiotflow.tools.decisions`), whatever a workflow's
state or the database says; the console asks for the operator's PIN (it opens their key)
and locks an operator out after ``pin_attempts`` wrong ones.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiotflow.keys import PublicKey

__all__ = ["MIN_PIN_DIGITS", "TIERS", "OperatorSpec", "Policy", "RiskTier", "TierRule",
           "check_pin"]

#: the shortest PIN an operator key may have
MIN_PIN_DIGITS = 6

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
    public_key: PublicKey = Field(description="The public half of the operator's key, from "
                                        "`aiotflow operator keygen NAME`: their decisions "
                                        "are signed with it.")

    @model_validator(mode="before")
    @classmethod
    def _no_pin_hash(cls, data: Any) -> Any:
        if isinstance(data, dict) and "pin_hash" in data:
            raise ValueError("pin_hash is replaced by public_key: run `aiotflow operator "
                             "keygen NAME` and put the key it prints here")
        return data


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
        description="People who may approve, each with their key. Empty: the engine's "
                    "local console (whoever can read its state dir) decides, signed with "
                    "the engine's key.")
    spend_limit_usd: float = Field(
        1000.0, ge=0, description="A tool that spends money (its amount field, e.g. "
                                  "order_part's max_total_usd) runs on its own up to this "
                                  "much per call; above it the call is high-risk.")
    pin_attempts: int = Field(5, ge=1, description="Wrong PINs in a row before an operator "
                                                   "is locked out.")
    lockout_s: float = Field(900.0, gt=0, description="How long a lock-out lasts.")
    pin_backoff_s: float = Field(2.0, ge=0, description="After a wrong PIN the next try "
                                                        "waits this long, doubled each time.")

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


def check_pin(pin: str) -> None:
    """``ValueError`` unless ``pin`` is at least :data:`MIN_PIN_DIGITS` digits, or a
    passphrase of 12 characters or more."""
    if len(pin) >= 12 or (pin.isdigit() and len(pin) >= MIN_PIN_DIGITS):
        return
    raise ValueError(f"a PIN is at least {MIN_PIN_DIGITS} digits (or use a passphrase of "
                     "12 characters or more)")

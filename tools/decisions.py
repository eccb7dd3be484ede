"""Decisions the engine can verify itself: signed, bound to what was approved, used once.

A person's decision is a small document signed with their key at the console::

    {"v": 1, "approval_id": ..., "thread_id": ..., "workflow": ..., "decision": "approved",
     "by": "ana", "at": 1700000000.0, "comment": ..., "risk": "high", "escalated": false,
     "request_digest": sha256(the request as the person saw it), "actions": [...]}

It is stored beside the approval row, but the row proves nothing: where a high-stakes tool
runs (:class:`~aiotflow.tools.registry.ToolExecutor`) and where a paused run is resumed,
the :class:`DecisionVerifier` checks the signature against the keys of the engine's own
policy, that every field of the document matches the row (so an edited row, a decision
copied from another approval or a re-used one is refused) and that the signer may decide
the tier. An approval then covers each proposed action once, with exactly its arguments.

Who may sign:

* with operators in the policy, the operator named ``by``, with the key whose public half
  is in the policy (``public_key``);
* with no operators, the engine's own key (its local console: whoever can read the
  engine's state dir, which is ``0700``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from aiotflow.keys import SigningKey, key_id, verify_signature

from .policy import Policy, RiskTier

if TYPE_CHECKING:
    from .control import ApprovalRecord

__all__ = ["FILLED", "DecisionVerifier", "ForgedDecision", "canonical_json",
           "decision_document", "filled_fields", "request_digest", "sign_decision"]

#: ``Field(json_schema_extra=FILLED)`` marks an input field the workflow fills in when the
#: approved action runs (a work order's description naming the booked technician, the
#: booking's id): an approval binds every other field exactly, and these not at all
FILLED: dict[str, Any] = {"aiotflow_filled": True}

_DOMAIN = b"aiotflow-decision-v1\n"


class ForgedDecision(Exception):
    """A decision that does not verify; ``reason`` says what is wrong with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_json(value: Any) -> str:
    """One spelling of ``value`` as JSON (sorted keys, no spaces): what is signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def request_digest(request: dict[str, Any]) -> str:
    """sha256 of an approval request as stored (what the person was shown)."""
    return hashlib.sha256(canonical_json(request).encode()).hexdigest()


def decision_document(rec: ApprovalRecord, decision: str, *, by: str, at: float,
                      comment: str | None) -> dict[str, Any]:
    """The document a person signs to decide ``rec``."""
    return {
        "v": 1, "approval_id": rec.id, "thread_id": rec.thread_id, "workflow": rec.workflow,
        "decision": decision, "by": by, "at": at, "comment": comment, "risk": rec.risk,
        "escalated": rec.escalated_at is not None, "request_digest": request_digest(rec.request),
        "actions": [{"tool": a.get("tool"), "args": a.get("args") or {}} for a in rec.actions],
    }


def sign_decision(doc: dict[str, Any], key: SigningKey) -> tuple[str, str, str]:
    """``(document JSON, signature, key id)`` of ``doc`` signed by ``key``."""
    text = canonical_json(doc)
    return text, key.sign(_DOMAIN + text.encode()), key.key_id


def filled_fields(model: type[Any]) -> frozenset[str]:
    """The fields of a tool's input model that an approval does not bind (see
    :data:`FILLED`), and ``idempotency_key``, which the executor sets."""
    out = {"idempotency_key"}
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra
        if isinstance(extra, dict) and extra.get("aiotflow_filled"):
            out.add(name)
    return frozenset(out)


class DecisionVerifier:
    """Checks decisions against the engine's policy and key (see the module docstring)."""

    def __init__(self, policy: Policy, *, engine_key: str | None = None) -> None:
        self.policy = policy
        self.engine_key = engine_key

    def signer_key(self, by: str) -> str | None:
        """The public key ``by``'s decisions must carry (``None``: nobody's will do)."""
        if self.policy.operators:
            op = self.policy.operator(by)
            return op.public_key if op is not None else None
        return self.engine_key

    def verify(self, rec: ApprovalRecord, *, tier: RiskTier | None = None) -> dict[str, Any]:
        """The verified decision document of ``rec``, or :class:`ForgedDecision`.

        ``tier``: the risk tier of the action about to run (the policy's, not the row's);
        the signer must be allowed to decide it."""
        if rec.status == "expired":
            return self._verify_expiry(rec)
        if not rec.decision_doc or not rec.signature:
            raise ForgedDecision(f"the decision {rec.status} by {rec.decided_by} is not signed")
        try:
            doc = json.loads(rec.decision_doc)
        except ValueError:
            raise ForgedDecision("the decision document is not JSON") from None
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ForgedDecision("the decision document has an unknown format")
        by = str(doc.get("by") or "")
        public = self.signer_key(by)
        if public is None:
            who = "a configured operator" if self.policy.operators else "the engine's console"
            raise ForgedDecision(f"{by!r} is not {who}: no key to verify the decision with")
        if rec.signer and rec.signer != key_id(public):
            raise ForgedDecision(f"signed with key {rec.signer}, not {by}'s key {key_id(public)}")
        if not verify_signature(public, _DOMAIN + rec.decision_doc.encode(), rec.signature):
            raise ForgedDecision(f"the signature is not {by}'s")
        want = {"approval_id": rec.id, "thread_id": rec.thread_id, "workflow": rec.workflow,
                "decision": rec.status, "by": rec.decided_by, "comment": rec.comment,
                "request_digest": request_digest(rec.request)}
        for name, value in want.items():
            if doc.get(name) != value:
                raise ForgedDecision(
                    f"the signed decision says {name}={doc.get(name)!r}, the record "
                    f"{value!r}" + (" (a decision copied from another approval)"
                                    if name == "approval_id" else ""))
        rule = self.policy.rule(tier or rec.risk)
        at = float(doc.get("at") or 0)
        escalated = bool(doc.get("escalated"))
        if escalated and (rule.escalate_after_s is None or rec.escalated_at is None):
            raise ForgedDecision("the decision claims an escalation the policy had not made")
        if rule.expires_s is not None and at - rec.requested_at > rule.expires_s:
            raise ForgedDecision("decided after the approval had expired")
        if rec.status == "approved":
            ok, why = self.policy.may_approve(by, tier or rec.risk, escalated=escalated)
            if not ok:
                raise ForgedDecision(f"{by} may not approve this: {why}")
        return doc

    def _verify_expiry(self, rec: ApprovalRecord) -> dict[str, Any]:
        rule = self.policy.rule(rec.risk)
        age = (rec.decided_at or 0) - rec.requested_at
        if rec.decided_by != "policy" or rule.expires_s is None or age < rule.expires_s - 1:
            raise ForgedDecision("expired before the policy's time")
        return {"decision": "expired", "by": "policy", "actions": []}

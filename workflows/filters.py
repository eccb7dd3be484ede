"""Which alerts start which workflow."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from aiotflow.contracts.schema import Alert

__all__ = ["AlertFilter"]

_RANK = {"warning": 0, "major": 1, "critical": 2}


class AlertFilter(BaseModel):
    """Match alerts by site, asset (glob patterns), asset type, severity and model."""

    model_config = ConfigDict(frozen=True)

    sites: list[str] = Field(default_factory=list, description="Glob patterns; any if empty.")
    assets: list[str] = Field(default_factory=list, description="Glob patterns; any if empty.")
    asset_types: list[str] = Field(default_factory=list)
    min_severity: str = Field("warning", pattern="^(warning|major|critical)$")
    models: list[str] = Field(default_factory=list, description="Model names; any if empty.")
    kinds: list[str] = Field(default_factory=lambda: ["anomaly"],
                             description="Alert kinds: anomaly (default), model_drift.")

    def matches(self, alert: Alert) -> bool:
        return (
            (not self.sites or any(fnmatchcase(alert.site, p) for p in self.sites))
            and (not self.assets or any(fnmatchcase(alert.asset, p) for p in self.assets))
            and (not self.asset_types or alert.asset_type in self.asset_types)
            and _RANK[alert.severity] >= _RANK[self.min_severity]
            and (not self.models or alert.model_name in self.models)
            and alert.kind in self.kinds
        )

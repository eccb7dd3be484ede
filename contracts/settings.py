"""The settings base of every aiotflow component: frozen pydantic models loaded from a
TOML file, overridden by environment variables, overridden by code.

A bad file fails at start-up with :class:`~aiotflow.contracts.ConfigError` naming the field.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from .errors import ConfigError

__all__ = ["FileSettings", "config_error"]

_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_DATA", default=None)


class FileSettings(BaseSettings):
    """Settings read from a TOML file, overridden by environment, overridden by code."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_source = InitSettingsSource(settings_cls, init_kwargs=_FILE_DATA.get() or {})
        return (init_settings, env_settings, file_source)

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, table: str | None = None, **overrides: Any
    ) -> Any:
        """Load ``path`` (TOML; only its ``[table]`` if given), then environment, then
        ``overrides``. Raises :class:`ConfigError` naming the bad field."""
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError("no such config file", field=str(p))
            try:
                data = tomllib.loads(p.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"not valid TOML: {exc}", field=str(p)) from None
            if table is not None:
                # a misspelt table ([engin]) or a key outside the table would otherwise be
                # ignored, and the component start on defaults
                for name in data:
                    if name != table:
                        raise ConfigError(f"unknown table or key: only [{table}] is read from "
                                          f"this file", field=name)
                data = data.get(table, {})
                if not isinstance(data, dict):
                    raise ConfigError(f"must be a table [{table}]", field=table)
        token = _FILE_DATA.set(data)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise config_error(exc) from None
        finally:
            _FILE_DATA.reset(token)


def config_error(exc: ValidationError) -> ConfigError:
    """A :class:`ConfigError` naming the first bad field of a validation error."""
    err = exc.errors(include_url=False)[0]
    return ConfigError(err["msg"], field=".".join(str(p) for p in err["loc"]) or None)

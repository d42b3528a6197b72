"""Load :class:`Settings` from a TOML file and the environment, with errors people can act on."""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from config.errors import ConfigError
from config.secrets import SECRET_KEY_ENV
from config.settings import Settings, _file_data

CONFIG_ENV = "READMODEL_CONFIG"
_SECRET_PARTS = ("url", "dsn", "password", "secret", "key")
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (or ``$READMODEL_CONFIG``; no file means embedded defaults).

    ``READMODEL_...`` environment variables override the file; ``overrides``
    (keyword arguments) override both.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(Path(path))
    env_keys = _env_keys()
    _check_env_keys(env_keys)
    _check_env_sources(env_keys, data)
    token = _file_data.set(data)
    try:
        settings = Settings(**overrides)
        settings._config_file = None if path is None else str(path)
        settings._env_keys = frozenset(env_keys)
        return settings
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, data, env_keys)) from None
    except SettingsError as exc:  # a variable of a list or a table that is not JSON
        raise ConfigError(_not_json(exc, env_keys)) from None
    finally:
        _file_data.reset(token)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _env_keys() -> set[str]:
    prefix = "READMODEL_"
    return {
        name[len(prefix) :].lower()
        for name in os.environ
        if name.startswith(prefix) and name not in (CONFIG_ENV, SECRET_KEY_ENV)
    }


def _check_env_keys(env_keys: set[str]) -> None:
    """Unknown ``READMODEL_...`` variables are errors, like unknown keys in the file.

    ``READMODEL_TEST_...`` is left to test suites.
    """
    for key in sorted(env_keys):
        top = key.split("__", 1)[0]
        if top not in Settings.model_fields and not key.startswith("test_"):
            raise ConfigError(
                f"invalid configuration:\n  environment variable READMODEL_{key.upper()}: "
                f"unknown key {top!r} (nested keys are joined by '__', e.g. READMODEL_STORE__URL)"
            )


def _check_env_sources(env_keys: set[str], data: dict[str, Any]) -> None:
    """A variable for a source the file does not have adds that source, unless its name
    reads as a member of a source group (``READMODEL_SOURCES__POS_ACME__URL`` beside
    ``[tenants.pos]`` or ``[sources."pos:..."]``): a variable cannot spell ``:``, so it
    would add an ungrouped ``pos_acme`` reading a tenant's database with nothing to read
    its events. Such a variable is refused; members are added in the file or registry."""
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    tenants = data.get("tenants") if isinstance(data.get("tenants"), dict) else {}
    spelled = {str(n).lower() for n in sources} | {
        str(n).lower().replace(":", "_") for n in sources
    }
    registries = {str(n).lower() for n in tenants}
    registries |= {k.split("__")[1] for k in env_keys if k.startswith("tenants__") and "__" in k}
    static_groups = {str(n).partition(":")[0].lower() for n in sources if ":" in str(n)}
    for key in sorted(env_keys):
        parts = key.split("__")
        if parts[0] != "sources" or len(parts) < 2 or parts[1] in spelled:
            continue
        name = parts[1]
        for group in sorted(registries | static_groups, key=len, reverse=True):
            if not name.startswith(f"{group}_"):
                continue
            member = f"{group}:{name[len(group) + 1 :]}"
            if group in registries:
                remedy = (
                    f"{member!r} would be a member of tenant registry {group!r}, whose DSNs "
                    f"come from the registry: change the tenant's row there"
                )
            else:
                remedy = (
                    f"the file has no source {member!r}: add it there (a variable only "
                    f"overrides a member the file has)"
                )
            raise ConfigError(
                f"invalid configuration:\n  environment variable READMODEL_{key.upper()}: "
                f"it would add a source {name!r} outside source group {group!r}, reading a "
                f"tenant's database that no projection of the group reads; {remedy}"
            )


def _not_json(exc: SettingsError, env_keys: set[str]) -> str:
    """The variables that give a list or a table (which a variable spells as JSON) something
    that is not JSON, by name and key; never their values, which may be DSNs."""
    found = re.search(r'field "([^"]+)"', str(exc))
    top = found.group(1).lower() if found else ""
    names = {
        name[len("READMODEL_") :].lower(): name
        for name in os.environ
        if name.startswith("READMODEL_")
    }
    keys = sorted(k for k in env_keys if k.split("__")[0] == top) or sorted(env_keys)
    blamed = [k for k in keys if _takes_json(k.split("__")) and not _is_json(os.environ[names[k]])]
    lines = [
        f"environment variable {names[k]}: {'.'.join(k.split('__'))}: expected JSON, as a "
        f'variable gives a list (["a", "b"]) or a table ({{"key": "value"}})'
        for k in blamed or keys
    ]
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _takes_json(parts: list[str]) -> bool:
    """Whether the key at ``parts`` (a variable's, in lower case) holds a list or a table."""
    annotation: Any = Settings
    for part in parts:
        annotation = _unwrapped(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {n.lower(): f for n, f in annotation.model_fields.items()}
            fields |= {f.alias.lower(): f for f in annotation.model_fields.values() if f.alias}
            if part not in fields:
                return False
            annotation = fields[part].annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]  # ``part`` is a name: a source's, a store's
        else:
            return False
    annotation = _unwrapped(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return get_origin(annotation) in (list, dict, set, tuple, frozenset)


def _unwrapped(annotation: Any) -> Any:
    """``annotation`` without ``Annotated[...]`` and ``| None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            kept = [a for a in get_args(annotation) if a is not type(None)]
            if len(kept) != 1:
                return annotation
            annotation = kept[0]
        else:
            return annotation


def _describe(
    exc: ValidationError, path: str | Path | None, data: dict[str, Any], env_keys: set[str]
) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc) or "(top level)"
        # A missing key is the business of whoever set the table it is missing from.
        variables = _env_keys_for(loc[:-1] if error["type"] == "missing" else loc, env_keys)
        missing = error["type"] == "missing"
        places = [f"{path}"] if path is not None and _in_file(data, loc, missing) else []
        if variables:
            names = ", ".join(f"READMODEL_{name.upper()}" for name in variables)
            places.append(f"environment variable{'s' if len(variables) > 1 else ''} {names}")
        where = " and ".join(places) or (f"{path}" if path is not None else "settings")
        message = _message(error)
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{where}: {key}: {message}{_shown_input(loc, error)}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _env_keys_for(loc: list[str], env_keys: set[str]) -> list[str]:
    """The variables that set the key at ``loc``, a key inside it, or a table holding it."""
    name = "__".join(loc).lower().replace(":", "_")  # a group member's name, as variables spell it
    return sorted(
        key
        for key in env_keys
        if key == name or key.startswith(f"{name}__") or name.startswith(f"{key}__")
    )


def _in_file(data: dict[str, Any], loc: list[str], missing: bool) -> bool:
    """Whether the file sets the key at ``loc`` (or, for a ``missing`` key, its table); the
    names of sources and stores are compared as the environment does, without case."""
    node: Any = data
    for depth, part in enumerate(loc):
        if not isinstance(node, dict):
            return False
        match = next((k for k in node if str(k).lower() == part.lower()), None)
        if match is None:
            return missing and depth == len(loc) - 1 and depth > 0  # a table it has
        node = node[match]
    return True


def _message(error: Any) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _shown_input(loc: list[str], error: Any) -> str:
    if error["type"] in {"extra_forbidden", "missing"}:
        return ""
    if any(part in name.lower() for name in loc for part in _SECRET_PARTS):
        return ""
    value = error.get("input")
    if isinstance(value, dict | list) or repr(value) in str(error["msg"]):
        return ""
    if isinstance(value, str) and _CREDENTIALS.search(value):
        # A DSN put under the wrong key (``store = "postgresql://u:pw@h/db"``): mask its password.
        value = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    return f" (got {value!r})"

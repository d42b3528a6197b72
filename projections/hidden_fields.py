"""Which values of a payload model a :class:`projections.api.PayloadError` must not show.

A field declared ``SecretStr``, ``SecretBytes`` or ``Secret[...]`` (alone or inside
``Optional``, a list, a dict...), or with ``Field(repr=False)`` (``field(repr=False)`` in a
dataclass), holds a value that is never shown: not in the error's message, which is stored
as a parked event's reason and printed by ``readmodel parked``. Fields are those of a
model, a dataclass (pydantic's or the standard one) or a ``TypedDict``, found by name or
by alias (pydantic's ``loc`` names the alias). A rejected value is hidden when the error's
``loc`` leads to such a field, or when what it leads to (a nested model, a list of them,
the whole payload) holds one, or when a step of it is not understood where a type that
holds one could have taken it: the value given there may hold the secret.

Only declarations are read: a type of its own that wraps a secret in its core schema, or a
serializer that masks a value, is not recognised (a schema walk would still miss a
validator that builds the secret itself); the README says to declare it ``repr=False``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    Secret,
    SecretBytes,
    SecretStr,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType
from typing_extensions import is_typeddict

_SECRET_TYPES = (SecretStr, SecretBytes, Secret)


class _Field(typing.NamedTuple):
    keys: frozenset[str]  # the name, its aliases: what a ``loc`` may name it by
    annotation: Any
    hidden: bool  # repr=False


def hidden(model: type[BaseModel], loc: Sequence[str | int]) -> bool:
    """Whether the value pydantic rejected at ``loc`` of ``model`` must not be shown."""
    candidates: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for candidate in candidates:
            fields = _fields(candidate)
            if fields is not None:
                matched = [f for f in fields if isinstance(part, str) and part in f.keys]
                for field in matched:
                    if field.hidden or _holds_secret_type(field.annotation):
                        return True
                    following.append(field.annotation)
                if matched:
                    continue
                if part == getattr(candidate, "__name__", None):  # a union member's tag
                    following.append(candidate)
                    continue
                if holds_hidden(candidate):  # a step not understood: it may hold one
                    return True
                continue
            following += _members(candidate)  # a list item, a dict value, a union tag...
        if not following:  # a step not understood: hide what the remaining types may hold
            return any(holds_hidden(candidate) for candidate in candidates)
        candidates = following
    return any(holds_hidden(candidate) for candidate in candidates)


def hidden_in_union(members: Sequence[Any], loc: Sequence[str | int]) -> bool:
    """Whether the value pydantic rejected at ``loc`` (after the member's tag) of a payload
    given to each of ``members`` (a union's) must not be shown: a member that declares the
    payload's field there hides it (:func:`hidden`), or any member does when none declares
    it. A member without that field never read the value."""
    readers = [m for m in members if not loc or _declares(m, loc[0])]
    return any(hidden(member, loc) for member in readers or members)


def _declares(annotation: Any, part: str | int) -> bool:
    fields = _fields(annotation)
    if fields is None:  # a mapping, say: every key is its
        return True
    return any(isinstance(part, str) and part in field.keys for field in fields)


def holds_hidden(annotation: Any, _seen: set[int] | None = None) -> bool:
    """Whether a value of ``annotation`` may hold a hidden field's value."""
    seen = set() if _seen is None else _seen
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if _holds_secret_type(annotation):
        return True
    fields = _fields(annotation)
    if fields is not None:
        return any(field.hidden or holds_hidden(field.annotation, seen) for field in fields)
    return any(holds_hidden(member, seen) for member in _members(annotation))


def _holds_secret_type(annotation: Any) -> bool:
    kind = typing.get_origin(annotation) or annotation
    if isinstance(kind, type) and issubclass(kind, _SECRET_TYPES):
        return True
    if _repr_hidden(annotation):  # Annotated[X, Field(repr=False)] in a list, say
        return True
    return any(_holds_secret_type(member) for member in _members(annotation))


def _fields(annotation: Any) -> list[_Field] | None:
    """The fields of a model, a dataclass or a TypedDict; ``None`` for any other type."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [_field(name, info) for name, info in annotation.model_fields.items()]
    infos = getattr(annotation, "__pydantic_fields__", None)  # a pydantic dataclass
    if isinstance(infos, dict):
        return [_field(name, info) for name, info in infos.items()]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        hints = _hints(annotation)
        return [
            _Field(frozenset({f.name}), hints.get(f.name, Any), not f.repr)
            for f in dataclasses.fields(annotation)
        ]
    if is_typeddict(annotation):
        return [_Field(frozenset({name}), hint, False) for name, hint in _hints(annotation).items()]
    return None


def _field(name: str, info: FieldInfo) -> _Field:
    keys = {name}
    for alias in (info.alias, info.validation_alias):
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                keys.add(choice)
            elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                keys.add(choice.path[0])
    return _Field(frozenset(keys), info.annotation, info.repr is False)


def _hints(annotation: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(annotation, include_extras=True)
    except Exception:  # a name it cannot resolve: what the class says, unresolved
        return dict(getattr(annotation, "__annotations__", {}))


def _repr_hidden(annotation: Any) -> bool:
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(
        isinstance(meta, FieldInfo) and meta.repr is False
        for meta in typing.get_args(annotation)[1:]
    )


def _members(annotation: Any) -> Iterable[Any]:
    """The types ``annotation`` is made of (``list[X]``: X; ``dict[K, V]``: K and V;
    ``Annotated[X, ...]``: X), never a model's fields."""
    if typing.get_origin(annotation) is typing.Annotated:
        return [typing.get_args(annotation)[0]]
    return [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]


def hides_all(model: type[BaseModel], exc: ValidationError) -> bool:
    """Whether no value given may be shown: the model asks pydantic to hide them
    (``hide_input_in_errors``), or the error is another model's (a ``model_validate`` of
    its own that validates with one), whose ``loc`` this model's fields cannot place."""
    return hides_input(model) or exc.title != model.__name__


def hides_input(annotation: Any) -> bool:
    """Whether a model (a pydantic dataclass, a ``TypedDict``) asks pydantic to hide the
    values given in its errors (``hide_input_in_errors``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        config: Any = annotation.model_config
    else:
        config = getattr(annotation, "__pydantic_config__", None)
    return isinstance(config, Mapping) and bool(config.get("hide_input_in_errors"))


# pydantic's own error types, whose message never holds the value given; a validator's
# (``value_error``, ``assertion_error``, a ``PydanticCustomError``'s type) may hold it,
# ``uuid_parsing`` names a character of it and ``union_tag_invalid`` the tag given.
_OWN_MESSAGES = frozenset(typing.get_args(ErrorType)) - {
    "value_error",
    "assertion_error",
    "uuid_parsing",
    "union_tag_invalid",
}


def hidden_message(error: ErrorDetails) -> str:
    """pydantic's message of ``error`` at a hidden value, unless it may show the value (a
    validator's own message): then its type alone. A discriminated union's tag that none of
    its members has: the tags expected, not the one given."""
    if error["type"] in _OWN_MESSAGES:
        return error["msg"]
    context = error.get("ctx") or {}
    if error["type"] == "union_tag_invalid" and "expected_tags" in context:
        return (
            f"Input tag found using {context.get('discriminator', 'its discriminator')} does "
            f"not match any of the expected tags: {context['expected_tags']}"
        )
    return f"rejected: {error['type']} (message hidden)"


class HiddenValidationError(ValueError):
    """A pydantic ``ValidationError`` a handler or an upcaster raised, validating a model of
    its own (not the payload's: :class:`projections.api.PayloadError`): its fields and
    messages without the values given, which may be secrets (which model raised it, and so
    which of its fields are secret, is not known here). The handler's failure, retried."""


def without_values(exc: ValidationError) -> HiddenValidationError:
    """``exc`` as a :class:`HiddenValidationError`: each field and pydantic's message."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "(value)"
        if error["type"] == "missing":
            problems.append(f"{field}: {error['msg']}")
        else:
            problems.append(f"{field}: {hidden_message(error)} (value hidden)")
    shown = "; ".join(problems[:5])
    if len(problems) > 5:
        shown += f"; and {len(problems) - 5} more"
    return HiddenValidationError(f"{exc.title} rejected a value: {shown}")


def data_location(model: Any, loc: Sequence[str | int]) -> tuple[str, bool]:
    """``loc`` dotted as a message shows it, and whether the value rejected there is data of
    a mapping (never shown). The keys of a mapping (``dict[str, Any]``, ``dict[str, int]``...)
    are the payload's data, not its schema: each is shown as ``*``, and so is a step not
    understood (an undeclared field, a step under ``Any``), which may be one. A value at
    or inside a mapping, or under such a step, is data too: only its location and its
    error's type are shown. A step some member of a union reads as a key is one."""
    parts: list[str] = []
    candidates = _concrete(model)
    data = False
    for part in loc:
        following: list[Any] = []
        key = False
        for candidate in candidates:
            fields = _fields(candidate)
            if fields is not None:
                for field in fields:
                    if isinstance(part, str) and part in field.keys:
                        following += _concrete(field.annotation)
                if part == getattr(candidate, "__name__", None):  # a union member's tag
                    following.append(candidate)
            elif _is_mapping(candidate):
                key = True
                arguments = typing.get_args(candidate)
                following += _concrete(arguments[1] if len(arguments) == 2 else Any)
            elif isinstance(part, int):
                for member in _members(candidate):
                    following += _concrete(member)
        masked = key or not following  # a key, or a step not understood: it may be one
        data = data or masked
        parts.append("*" if isinstance(part, str) and masked else str(part))
        candidates = following
    data = data or any(_is_mapping(candidate) for candidate in candidates)
    return ".".join(parts), data


def _concrete(annotation: Any) -> list[Any]:
    """``annotation``'s members where it is a union (``Optional``, ``X | Y``), each without
    ``Annotated``: the types a value there may be validated as, without a step of ``loc``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _concrete(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [c for member in typing.get_args(annotation) for c in _concrete(member)]
    return [annotation]


def _is_mapping(annotation: Any) -> bool:
    kind = typing.get_origin(annotation) or annotation
    return isinstance(kind, type) and issubclass(kind, Mapping)

"""Which values of a payload model a :class:`projections.api.PayloadError` must not show.

A field declared ``SecretStr`` or ``SecretBytes`` (alone or inside ``Optional``, a list, a
dict...), or with ``Field(repr=False)``, holds a value that is never shown: not in the
error's message, which is stored as a parked event's reason and printed by ``readmodel
parked``. A rejected value is hidden when the error's ``loc`` leads to such a field, in the
model or in a nested one, or when what it leads to (a nested model, a list of them, the
whole payload) holds one: the value given there may hold the secret.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

_SECRET_TYPES = (SecretStr, SecretBytes)


def hidden(model: type[BaseModel], loc: Sequence[str | int]) -> bool:
    """Whether the value pydantic rejected at ``loc`` of ``model`` must not be shown."""
    candidates: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for candidate in candidates:
            if _is_model(candidate):
                field = candidate.model_fields.get(part) if isinstance(part, str) else None
                if field is not None:
                    if field.repr is False or _holds_secret_type(field.annotation):
                        return True
                    following.append(field.annotation)
                    continue
                if part == candidate.__name__:  # a union member's tag
                    following.append(candidate)
                    continue
            following += _members(candidate)  # a list item, a dict value, a union tag...
        if not following:  # a step not understood: hide what the remaining types may hold
            return any(holds_hidden(candidate) for candidate in candidates)
        candidates = following
    return any(holds_hidden(candidate) for candidate in candidates)


def holds_hidden(annotation: Any, _seen: set[int] | None = None) -> bool:
    """Whether a value of ``annotation`` may hold a hidden field's value."""
    seen = set() if _seen is None else _seen
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if _holds_secret_type(annotation):
        return True
    if _is_model(annotation):
        return any(
            field.repr is False or holds_hidden(field.annotation, seen)
            for field in annotation.model_fields.values()
        )
    return any(holds_hidden(member, seen) for member in _members(annotation))


def _holds_secret_type(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, _SECRET_TYPES):
        return True
    return any(_holds_secret_type(member) for member in _members(annotation))


def _members(annotation: Any) -> Iterable[Any]:
    """The types ``annotation`` is made of (``list[X]``: X; ``dict[K, V]``: K and V;
    ``Annotated[X, ...]``: X), never a model's fields."""
    if typing.get_origin(annotation) is typing.Annotated:
        return [typing.get_args(annotation)[0]]
    return [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)

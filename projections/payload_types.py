"""What a handler's ``event: Event[...]`` annotation asks of its payloads, read when its
projection class is defined (:func:`payload_type`).

``Event[Model]`` (a pydantic model): the payload validated as ``Model``, by the model's own
validator (the fast path of every handler of one model). ``Event[dict]``, ``Event[Any]``, a
bare ``Event`` or no annotation: the payload as decoded, a ``dict``. Any other type whose
values are JSON objects is validated with a pydantic ``TypeAdapter`` (:class:`PayloadAdapter`):
a union of models (``Event[OrderPaid | OrderShipped]``, ``Union[...]``, ``Optional[...]``,
``Annotated[A | B, Field(discriminator="kind")]``), a dataclass, a ``TypedDict``, a model in
``Annotated[...]`` with validators of its own. A member's ``model_validate`` of its own is
called as ``Event[Model]`` calls it (:mod:`projections.payload_overrides`); in a union
pydantic validates in its smart mode (``A | B``), where it cannot be, it is refused. A type
that cannot be validated so (a member that is no object, such as ``int``, or one pydantic
cannot build a validator for) is refused, naming the handler: its payloads would reach it
unvalidated, or every one be refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from typing_extensions import is_typeddict

from projections.payload_overrides import OwnValidation, own_validation

_NONE = type(None)


@dataclass(frozen=True, eq=False)
class PayloadAdapter:
    """A payload type other than one model, validated by a pydantic ``TypeAdapter``.
    ``members``: the types a payload may be validated as (``None`` left out); ``name``
    (``OrderPaid | OrderShipped``) is what a :class:`projections.api.PayloadError` names;
    ``title`` the one pydantic gives this validator's errors; ``tagged``: whether each
    error's ``loc`` starts with the member (or the discriminator's tag) tried; ``own``: what
    validates instead of ``adapter`` when a member has a ``model_validate`` of its own,
    which the adapter would never call (:mod:`projections.payload_overrides`)."""

    annotation: Any
    members: tuple[Any, ...]
    name: str
    adapter: TypeAdapter[Any]
    title: str
    tagged: bool
    own: OwnValidation | None = None

    def model_validate(self, payload: Any) -> Any:
        if self.own is None:
            return self.adapter.validate_python(payload)
        return self.own.validate(payload)


def payload_type(
    function: Callable[..., None], attr: str, owner: type, defined_in: type, event: type
) -> type[BaseModel] | PayloadAdapter | None:
    """The payload type of the handler's ``event: Event[...]`` (``event``: that class): a
    model, a :class:`PayloadAdapter`, or ``None`` for the payload as a ``dict``. Its names are
    looked up where the handler is written (``defined_in``'s module and body), not where
    ``owner``, a subclass perhaps in another module, is: there its payload would reach it
    unvalidated. An annotation naming what is not there at run time (a model imported under
    ``TYPE_CHECKING``) is refused: every event's payload would reach the handler as a dict.
    ``Event`` itself, when the module imports it only for type checkers, is ``event``: a
    bare ``event: Event`` names no model, and ``Event[Model]`` is read for its ``Model``."""
    params = [p for p in inspect.signature(function).parameters if p != "self"]
    if not params:
        raise TypeError(f"{owner.__name__}.{attr}: a handler takes (self, event, tx)")
    target = inspect.unwrap(function)
    annotation = getattr(target, "__annotations__", {}).get(params[0])
    if annotation is None:
        return None

    def probe() -> None: ...

    probe.__annotations__ = {params[0]: annotation}
    globalns = getattr(target, "__globals__", None) or {}
    localns = dict(vars(defined_in))
    if "Event" not in globalns:
        localns.setdefault("Event", event)
    try:
        hints = typing.get_type_hints(
            probe, globalns=globalns, localns=localns, include_extras=True
        )
    except Exception as exc:
        raise TypeError(
            f"{owner.__name__}.{attr}: the annotation of {params[0]!r} ({annotation}) cannot "
            f"be read ({type(exc).__name__}: {exc}): the payload model must be found in the "
            "handler's module at run time (not imported under `if TYPE_CHECKING:`) or in its "
            "class body, not among a function's local names"
        ) from exc
    hint = _unannotated(hints[params[0]])
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) is not event or not arguments:
        return None
    return _of(arguments[0], f"{owner.__name__}.{attr}: Event[{_name(arguments[0])}]")


def _of(argument: Any, where: str) -> type[BaseModel] | PayloadAdapter | None:
    if isinstance(argument, type) and issubclass(argument, BaseModel):
        return argument
    if argument is Any or argument is object or _is_mapping(argument):
        return None
    members = tuple(m for m in _members(argument) if m is not _NONE)
    others = [m for m in members if not _holds_object(m)]
    if others or not members:
        what = f"{_name(others[0])} is" if others else "None is"
        raise TypeError(
            f"{where}: {what} no type of a payload, a JSON object: each type it may be is "
            "a pydantic model, a dataclass, a TypedDict or a dict"
        )
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(argument)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TypeError(
            f"{where}: pydantic cannot validate payloads as that ({type(exc).__name__}: {first})"
        ) from exc
    title = adapter.validator.title  # type: ignore[union-attr]
    name = " | ".join(_name(m) for m in _members(argument))
    own = own_validation(adapter.core_schema, title, members, where)
    tagged = _tagged(adapter.core_schema)
    return PayloadAdapter(argument, members, name, adapter, title, tagged, own)


def _unannotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The types a value of ``annotation`` may be (a union's members), without ``Annotated``."""
    annotation = _unannotated(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for member in typing.get_args(annotation) for m in _members(member)]
    return [annotation]


def _holds_object(annotation: Any) -> bool:
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return True
    return is_typeddict(annotation) or _is_mapping(annotation)


def _is_mapping(annotation: Any) -> bool:
    kind = typing.get_origin(annotation) or annotation
    return isinstance(kind, type) and issubclass(kind, Mapping)


def _name(annotation: Any) -> str:
    if annotation is _NONE:
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return " | ".join(_name(m) for m in _members(annotation))
    return repr(annotation).replace("typing.", "")


_WRAPPERS = frozenset({"nullable", "function-after", "function-before", "function-wrap", "default"})


def _tagged(schema: Any) -> bool:
    """Whether the errors of a validator of core schema ``schema`` name the member of a
    union they come from first in their ``loc`` (pydantic's ``union`` and ``tagged-union``:
    the member's name, or the discriminator's tag)."""
    definitions: dict[str, Any] = {}
    while isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("union", "tagged-union"):
            return True
        if kind == "definitions":
            definitions.update({d.get("ref"): d for d in schema.get("definitions", ())})
            schema = schema.get("schema")
        elif kind == "definition-ref":
            schema = definitions.get(schema.get("schema_ref"))
        elif kind in _WRAPPERS:
            schema = schema.get("schema")
        else:
            return False
    return False

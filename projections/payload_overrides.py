"""Members of a payload annotation with a ``model_validate`` of their own (a classmethod that
upgrades an old payload shape, normalises a field...), called where ``Event[A | B]``,
``Event[A | None]`` or ``Event[Annotated[A, ...]]`` validates a payload as that member, as
``Event[A]`` calls it. pydantic's ``TypeAdapter`` never calls it: it validates each member
through its core schema.

Which member a payload is validated as stays pydantic's choice: in the adapter's core
schema, the member's own schema is replaced by a validator that calls ``A.model_validate``
(:func:`own_validation`), so a discriminated union's tag, a ``left_to_right`` union's order,
``Optional``'s ``None`` and the validators of an ``Annotated`` work as before, and each error
names the member (``(as A)``) or the tag as before. A union in pydantic's default smart mode
(``A | B``) is refused: it tries every member strictly, then laxly, and keeps the exact or
fullest fit, a weighing a ``model_validate`` of one's own cannot take part in (what it does is
neither strict nor lax). Its work belongs in a ``@model_validator(mode="before")``, part of
the model's core schema, which every annotation runs.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError, SchemaValidator
from pydantic_core import core_schema as cs
from pydantic_core.core_schema import ErrorType

# the members whose own model_validate raised another model's error, during one validation
_foreign: ContextVar[list[type[BaseModel]] | None] = ContextVar("_foreign", default=None)

_KNOWN_ERRORS = frozenset(typing.get_args(ErrorType))
_WRAPPERS = ("nullable", "default", "function-before", "function-after", "function-wrap")


def overrides_validate(model: Any) -> bool:
    """Whether ``model`` is a pydantic model whose ``model_validate`` is not pydantic's own."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    return getattr(model.model_validate, "__func__", None) is not BaseModel.model_validate.__func__


class _Escaped(Exception):
    """A member's ``model_validate`` raised what is no ``ValidationError``: carried through
    pydantic-core (which would turn a ``ValueError`` into a validation error) to be raised as
    ``Event[A]`` raises it (the handler's failure, retried)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class OwnValidation:
    """A payload validator that calls the own ``model_validate`` of the members in ``called``."""

    def __init__(self, schema: cs.CoreSchema, title: str, called: tuple[type[BaseModel], ...]):
        self.validator = SchemaValidator(schema, cs.CoreConfig(title=title))
        self.title = title
        self.called = called

    def validate(self, payload: Any) -> Any:
        """The payload validated; a ``ValidationError`` a member's ``model_validate`` raised for
        another model (whose fields the members' cannot place) comes back under another title,
        so that no value of it is shown (:func:`projections.payload_errors.payload_error`)."""
        token = _foreign.set([])
        escaped: Exception | None = None
        rejected: ValidationError | None = None
        try:
            return self.validator.validate_python(payload)
        except _Escaped as exc:
            escaped = exc.error
        except ValidationError as exc:
            if not _foreign.get():
                raise
            rejected = exc
        finally:
            _foreign.reset(token)
        if escaped is not None:  # raised outside the except: its own context kept
            raise escaped
        assert rejected is not None
        raise _retitled(rejected, f"{self.title} (another model's error)")


def own_validation(
    schema: cs.CoreSchema, title: str, members: Iterable[Any], where: str
) -> OwnValidation | None:
    """The validator of a ``TypeAdapter``'s core ``schema`` (of ``title``) that calls the
    own ``model_validate`` of those of ``members`` that have one; ``None`` when none has. A
    ``TypeError`` starting with ``where`` when one cannot be called as ``Event[A]`` calls it."""
    overriding = [m for m in members if overrides_validate(m)]
    if not overriding:
        return None
    walk = _Walk({ref: m for m in overriding if (ref := _own_ref(m)) is not None}, where)
    replaced = walk.node(schema, smart=False)
    missed = [m for m in overriding if m not in walk.called]
    if missed:
        raise TypeError(
            f"{where}: {missed[0].__name__} has a model_validate of its own, which this "
            f"annotation cannot call as Event[{missed[0].__name__}] does: " + _instead(missed[0])
        )
    return OwnValidation(replaced, title, tuple(walk.called))


class _Walk:
    """Replaces, where a payload is validated as a member in ``own`` (by its core schema's
    ``ref``), the member's schema by a call of its ``model_validate``; copies each node it
    changes (the members' schemas are the models' own)."""

    def __init__(self, own: dict[str, type[BaseModel]], where: str) -> None:
        self.own = own
        self.where = where
        self.called: list[type[BaseModel]] = []

    def node(self, schema: Any, smart: bool) -> Any:
        model = self._member(schema)
        if model is not None:
            if smart:
                raise TypeError(
                    f"{self.where}: {model.__name__} has a model_validate of its own, which a "
                    "union validated in pydantic's smart mode (the default of A | B) cannot "
                    f"call as Event[{model.__name__}] does: " + _instead(model) + ", or "
                    "validate the union by a discriminator (Field(discriminator=...)) or in "
                    "order (Field(union_mode='left_to_right')), which call it"
                )
            if model not in self.called:
                self.called.append(model)
            return cs.no_info_plain_validator_function(_calling(model))
        kind = schema.get("type")
        if kind == "definitions" or kind in _WRAPPERS:
            inner = self.node(schema["schema"], smart)
            return schema if inner is schema["schema"] else {**schema, "schema": inner}
        if kind == "union":
            smart = smart or schema.get("mode", "smart") == "smart"
            choices = [self._choice(choice, smart) for choice in schema["choices"]]
            unchanged = all(a is b for a, b in zip(choices, schema["choices"], strict=True))
            return schema if unchanged else {**schema, "choices": choices}
        if kind == "tagged-union":
            tagged = {tag: self.node(choice, smart) for tag, choice in schema["choices"].items()}
            unchanged = all(tagged[tag] is choice for tag, choice in schema["choices"].items())
            return schema if unchanged else {**schema, "choices": tagged}
        return schema

    def _choice(self, choice: Any, smart: bool) -> Any:
        inner, label = choice if isinstance(choice, tuple) else (choice, None)
        replaced = self.node(inner, smart)
        if replaced is inner:
            return choice
        model = self._member(inner)
        if label is None and model is not None:
            label = model.__name__  # the member's name, as pydantic labels a model's errors
        return replaced if label is None else (replaced, label)

    def _member(self, schema: Any) -> type[BaseModel] | None:
        if not isinstance(schema, dict):
            return None
        ref = schema.get("schema_ref") if schema.get("type") == "definition-ref" else None
        ref = ref or schema.get("ref")
        return self.own.get(ref) if isinstance(ref, str) else None


def _own_ref(model: type[BaseModel]) -> str | None:
    schema: Any = model.__pydantic_core_schema__
    if schema.get("type") == "definitions":
        schema = schema["schema"]
    return schema.get("ref")


def _instead(model: type[BaseModel]) -> str:
    return (
        f"move what it does into a @model_validator(mode='before') of {model.__name__}, "
        "which every annotation runs"
    )


def _calling(model: type[BaseModel]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            foreign = _foreign.get()
            if exc.title != model.__name__ and foreign is not None:
                foreign.append(model)
            raise  # pydantic-core takes its errors in, under the member's name or tag
        except _Escaped:  # a union's of its own, within
            raise
        except Exception as exc:
            raise _Escaped(exc) from exc

    return validate


def _retitled(exc: ValidationError, title: str) -> ValidationError:
    errors: list[Any] = []
    for error in exc.errors(include_url=False):
        kind = error["type"]
        line: dict[str, Any] = {"loc": error["loc"], "input": error.get("input")}
        if kind in _KNOWN_ERRORS:
            line["type"] = kind
            if "ctx" in error:
                line["ctx"] = error["ctx"]
        else:  # a validator's own error type: its message kept as it was
            line["type"] = PydanticCustomError(
                kind, error["msg"]
            )  # no context: not formatted again
        errors.append(line)
    return ValidationError.from_exception_data(title, errors)

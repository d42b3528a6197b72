"""The error of a payload its handler's model rejects (:class:`PayloadError`, parked at once)
and its message (:func:`payload_error`), which never shows a hidden value
(:mod:`projections.hidden_fields`). Both are :mod:`projections.api`'s too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from pydantic import BaseModel, ValidationError

from projections.hidden_fields import (
    data_location,
    hidden,
    hidden_in_union,
    hidden_message,
    hides_all,
    hides_input,
    holds_hidden,
)
from projections.payload_types import PayloadAdapter


class PayloadError(ValueError):
    """An event's payload does not match its handler's model (after the projection's
    upcasters): no attempt can change that, so the engine parks its event at the first
    failure (``payload rejected, not retried``), for ``readmodel parked retry`` once a
    deploy accepts it. A handler or an upcaster may raise it too, to the same end.
    ``fields``: the payload's fields the model rejected, dotted (``lines.0.sku``)."""

    def __init__(self, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


def payload_error(
    event_type: str,
    model: type[BaseModel] | PayloadAdapter,
    exc: ValidationError,
    *,
    upcast: bool = False,
) -> PayloadError:
    """The :class:`PayloadError` of a payload ``model`` rejected: each field it rejected
    with pydantic's message, and the value given (shortened) unless it was missing or is
    hidden (:mod:`projections.hidden_fields`: ``SecretStr``, ``Field(repr=False)``, and
    every value of a model with ``hide_input_in_errors`` or another model's error). Keys
    of a mapping (``dict[str, Any]``) and undeclared fields are data: shown as ``*``, their
    values hidden (:func:`~projections.hidden_fields.data_location`).

    For a union (a :class:`~projections.payload_types.PayloadAdapter`), each error names
    the member that rejected it (``at (as OrderPaid): ...``, a discriminator's tag: ``(as
    paid)``); a value is hidden when a member that declares its field hides it, whichever
    member rejected it (each is given the same payload:
    :func:`~projections.hidden_fields.hidden_in_union`); ``fields`` lists each of the
    payload's fields once."""
    conceals: Callable[[Sequence[str | int]], bool]
    if isinstance(model, PayloadAdapter):
        name, annotation, tagged = model.name, model.annotation, model.tagged
        conceals = partial(hidden_in_union, model.members)
        hide_all = any(hides_input(m) for m in model.members) or exc.title != model.title
    else:
        name, annotation, tagged = model.__name__, model, False
        conceals = partial(hidden, model)
        hide_all = hides_all(model, exc)
    problems: list[str] = []
    fields: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        tag = f" (as {loc[0]})" if tagged and loc else ""
        loc = loc[1:] if tag else loc
        field = ".".join(str(part) for part in loc) or "(payload)"
        if not tag or field not in fields:  # each member's errors: the payload's fields
            fields.append(field)  # whole, for code; the message shows no key of a mapping
        shown_field, data = data_location(annotation, loc)
        shown_field = shown_field or "(payload)"
        if len(shown_field) > 80:
            shown_field = shown_field[:79] + "…"
        shown_field += tag
        if error["type"] == "missing":
            problem = f"{shown_field}: {error['msg']}"
        elif hide_all or data or conceals(loc):
            problem = f"{shown_field}: {hidden_message(error)} (value hidden)"
        else:
            given = repr(error.get("input"))
            given = given if len(given) <= 40 else given[:39] + "…"
            problem = f"{shown_field}: {error['msg']} (got {given})"
        problems.append(problem)
    shown = "; ".join(problems[:5])
    if len(problems) > 5:
        shown += f"; and {len(problems) - 5} more"
    what = f"{event_type} payload" + (" after upcasting" if upcast else "")
    return PayloadError(f"{what} does not match {name}: {shown}", fields)


def hides_cause(model: type[BaseModel] | PayloadAdapter, exc: ValidationError) -> bool:
    """Whether pydantic's own error (whose text shows the values given) must not be kept as
    the :class:`PayloadError`'s cause: a value it shows may be hidden."""
    if isinstance(model, PayloadAdapter):
        return holds_hidden(model.annotation) or (
            any(hides_input(m) for m in model.members) or exc.title != model.title
        )
    return holds_hidden(model) or hides_all(model, exc)

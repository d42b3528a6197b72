"""Handler failures no retry can change: the engine parks their event at the first failure.

A handler failure is retried with back-off (``engine.max_attempts``), as it may be the
passing trouble of the handler's own connections or code. These are not, and their event
is parked at once, holding its aggregate (never its lane) until ``readmodel parked retry``
or ``skip``:

- a value the store refused for good (:meth:`projections.store.Store.refused_for_good`);
- a payload its handler's model rejects (:class:`projections.api.PayloadError`), after the
  projection's upcasters too (an upcaster's own exception is retried like the handler's);
- a row or document a tenant projection cannot place (:class:`projections.api.TenantError`
  ``for_good``): an event without a tenant, or a row the handler wrote for another tenant.

Replays retry nothing: a failing event stops them, or is skipped with ``--skip-errors``.
"""

from __future__ import annotations

from projections.api import PayloadError, TenantError
from projections.store import HandlerFailed, Store

RETRY_HINT = (
    "once a deploy accepts it, `readmodel parked retry` applies it and the events held "
    "behind it (`readmodel parked skip` drops it)"
)


def parked_at_once(store: Store, failure: HandlerFailed) -> str | None:
    """The reason to park ``failure``'s event at its first failure, ``None`` to retry it."""
    error = failure.error
    if failure.refused and store.refused_for_good(error):
        return f"refused for good, not retried: {error!r}"
    if isinstance(error, PayloadError):
        return f"payload rejected, not retried: {error!r}; {RETRY_HINT}"
    if isinstance(error, TenantError) and error.for_good:
        return f"tenant refused, not retried: {error!r}; {error.remedy or RETRY_HINT}"
    return None

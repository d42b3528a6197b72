"""How the failures of a :class:`projections.mongo_tx.DocumentTx`'s writes are told apart:
a document the driver cannot send (:class:`RefusedDocument`), another tenant's ``_id``
(:class:`TenantConflict`), a refusal alike on every attempt (:func:`refused_for_good`), a
write conflict or a lost connection, run again (:func:`retryable`)."""

from __future__ import annotations

from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteError,
)

from projections.api import TenantError, UnstorableValueError
from projections.document_refusals import error_without_values


class RefusedDocument(Exception):
    """The driver cannot send a document for what it holds (a value BSON cannot hold, a
    field name starting with ``$``, text that is not UTF-8, too large): the event that
    wrote it is poison."""


class TenantConflict(RefusedDocument):
    """A tenant's write of an ``_id`` that another tenant's document holds in the same
    collection: :attr:`error` is the :class:`TenantError` of the event that wrote it."""

    def __init__(self, error: TenantError) -> None:
        super().__init__(str(error))
        self.error = error


def untenanted(
    projection: str, tenant: str, collection: str, key: object, field: str
) -> TenantConflict:
    """The conflict of a tenant's upsert with a document without a tenant (the field absent
    or null), as a readmodel before tenant checks left it: no later event frees that ``_id``,
    and whose document it is, is not known; a rebuild from the log places every document."""
    return TenantConflict(
        TenantError(
            f"{projection}: tenant {tenant!r} cannot write the document of {collection!r} "
            f"with _id {key!r}: a document without a tenant holds that _id (no {field!r}, as "
            "a readmodel before tenant checks left it when a handler did not write the "
            "field): not overwritten, as its other fields may be any tenant's",
            remedy="rebuild the projection from the event log, which writes every document "
            f"in its event's tenant and applies this event again: `readmodel replay "
            f"{projection} --yes` (`readmodel parked skip` drops the event instead)",
        )
    )


def refused_for_good(error: BaseException) -> bool:
    """Whether ``error`` refuses a value written, alike on every attempt: an integer past 64
    bits (any :class:`UnstorableValueError`), a document the driver cannot send. Not a
    duplicate key (another lane may free it) nor another tenant's ``_id``
    (:class:`TenantConflict`)."""
    if isinstance(error, TenantConflict):
        return False
    return isinstance(error, UnstorableValueError | RefusedDocument)


def handler_error(exc: BaseException) -> BaseException:
    """The failure to record for the event whose writes or handler raised ``exc``: another
    tenant's ``_id`` as its :class:`TenantError`; a MongoDB error (a handler's own write on
    its own client too) without the values it quotes, as the Tx's writes are told."""
    return exc.error if isinstance(exc, TenantConflict) else error_without_values(exc)


# Writes the server or the driver refuses for what they hold (a duplicate on a unique
# index, a document too large, a value BSON cannot hold, a field name it refuses): the same
# writes fail again, so one of the batch's events is poison.
REFUSED_WRITES = (BulkWriteError, WriteError, RefusedDocument)


# A server not (or no longer) primary, stepping down or shutting down, a node it cannot
# reach, an operation it interrupted or timed out: the retryable writes spec's codes (as
# pymongo's helpers hold them), with Interrupted. The same call may pass on the next attempt.
_PASSING_CODES = frozenset(
    {10058, 10107, 13435, 13436, 11602, 189, 11600, 91, 7, 6, 89, 9001, 262, 134, 11601}
)
# Refused for who is asking, not for what: every event of every lane would fail alike.
_STORE_WIDE_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed


def retryable(exc: BaseException) -> bool:
    """A write conflict, a lost connection or a server's passing state (not primary,
    stepping down, shutting down, interrupting): the transaction may be run again."""
    if not isinstance(exc, PyMongoError):
        return False
    if transient(exc) or is_connection_error(exc) or exc.has_error_label("RetryableWriteError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _PASSING_CODES


def the_stores(exc: PyMongoError) -> bool:
    """Whether a MongoDB error raised while a handler ran is the store's trouble (retried as
    the store's, never counted against the event: :func:`retryable`; or refused for the
    credentials, alike for every event), not the handler's failure. Any other (a query the
    server refuses, an unknown operator or pipeline stage, on the Tx or the handler's own
    client) is the handler's: retried ``engine.max_attempts`` times, then parked."""
    if retryable(exc):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _STORE_WIDE_CODES


def transient(exc: BaseException) -> bool:
    """A write conflict with another transaction (retried), not a refusal of the data."""
    if not isinstance(exc, PyMongoError):
        return False
    if exc.has_error_label("TransientTransactionError"):
        return True
    if isinstance(exc, BulkWriteError):
        return any(error.get("code") == 112 for error in exc.details.get("writeErrors", []))
    return isinstance(exc, OperationFailure) and exc.code == 112


def is_connection_error(exc: PyMongoError) -> bool:
    return isinstance(exc, AutoReconnect | ConnectionFailure)

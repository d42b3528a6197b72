"""readmodel's exceptions, so a caller (and the CLI) can tell what went wrong in one line.

    ReadmodelError
    ├── SourceError         a service database or its outbox table is unreachable or unusable
    │   ├── SourceConfigError  the outbox table is not what the configuration maps
    │   └── NotLeaderError  another relay holds the source
    ├── LogError            the event log (in the read store) cannot be read or written
    │   └── BinaryIdsConflict  a relay's binary_ids is not the rule the log records
    ├── NotParked           a parked entry named was settled meanwhile: nothing done to it
    └── StoreError          a read-model store failed (projections)
        ├── CommitUncertain  the connection was lost at a COMMIT: done or not, unknown
        └── SchemaError     readmodel's tables in the read store cannot be migrated
            └── SchemaOutdated  the read store is not at the revision this readmodel needs

    KeyboardInterrupt
    └── CommitInterrupted  Ctrl-C while a COMMIT was in hand: done or not, unknown

Configuration errors are :class:`config.ConfigError`, which ``config/`` defines itself.
Messages never contain a password or a full DSN.
"""

from __future__ import annotations


class ReadmodelError(Exception):
    """Base class of every error readmodel raises on purpose."""


class SourceError(ReadmodelError):
    """A source database or its outbox table cannot be used."""


class SourceConfigError(SourceError):
    """The outbox table does not match the source's configuration: no such table, a mapped
    column missing, a position column that is not unique, ``binary_ids`` on no binary id
    column. The operator's to fix (the CLI exits 2), not a database that cannot be reached."""


class NotLeaderError(SourceError):
    """Another relay process is the active relay of this source."""


class LogError(ReadmodelError):
    """The event log cannot be read or written."""


class BinaryIdsConflict(LogError):
    """A relay's ``binary_ids`` setting is not the rule the event log records for its source:
    appending would key the source's aggregates two ways, so nothing is appended.

    ``where`` the setting is made (``[sources.auth] in auth.toml``), or the ``variable``
    that overrides the file, and the ``config_file`` the switch command is to read, go into
    the message only."""

    def __init__(
        self,
        source: str,
        setting: str,
        recorded: str,
        *,
        where: str | None = None,
        variable: str | None = None,
        config_file: str | None = None,
    ) -> None:
        self.source = source
        self.setting = setting
        self.recorded = recorded
        switch = f"readmodel outbox binary-ids {source} {setting}"
        if config_file is not None:
            switch += f" --config {config_file}"
        if variable is not None:
            where, fix = f"environment variable {variable}", f"Set {variable}={recorded}"
        else:
            fix = f'Set binary_ids = "{recorded}" there'
        super().__init__(
            f"source {source!r}: binary_ids = {setting!r} ({where or 'its settings'}) is not "
            f"the rule the event log records for it, {recorded!r}: its aggregates would get "
            f"other ids than those of the events logged under {recorded!r}, splitting each "
            f"aggregate in two. Nothing was relayed; the rows stay in the outbox. {fix}, as "
            f"every relay of the source must have it; or, to switch the rule on purpose (which "
            f"re-keys the aggregates, see the README on binary ids), stop the source's relays, "
            f"set the new rule in each one's config and run `{switch}`"
        )


class NotParked(ReadmodelError):
    """A parked projection event a command named is not parked (any more): skipped, retried
    or replayed (``status``), or gone (``None``). Nothing was done to it."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreError(ReadmodelError):
    """A read-model store failed."""


class EventLogError(StoreError):
    """Reading the event log (in ``[store]``) failed: an error of the log, not of the store
    of the projection that was reading it, whose name it does not take
    (:func:`projections.store_names.naming`)."""


class CommitUncertain(StoreError):
    """The connection was lost while the store committed: the transaction may have been
    committed or not, and the client cannot tell until it reads the data again. A caller
    reports what it was doing as unknown, never as not done."""


class CommitInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) came while the store committed: the server may have committed the
    transaction or not. Still a :class:`KeyboardInterrupt`, so the command stops as for any
    Ctrl-C (exit 130); a caller counting what it did reports that work as unknown, as for
    :class:`CommitUncertain`."""


def read_store_at(location: str, name: str | None = None) -> str:
    """``read store NAME at LOCATION`` for a message (``location``: where it is, no
    password); without ``NAME`` (``None``) when the store is the only one configured."""
    return f"read store {name} at {location}" if name else f"read store at {location}"


class SchemaError(StoreError):
    """readmodel's tables in a read store cannot be migrated (unknown revision, other columns)."""


class SchemaOutdated(SchemaError):
    """The read store is not at the schema revision this readmodel needs."""

    def __init__(
        self,
        url: str,
        current: str | None,
        head: str,
        *,
        newer: bool = False,
        store: str | None = None,
    ) -> None:
        self.url = url
        self.store = store
        """The store's name in the message (:meth:`config.Settings.store_label`)."""
        self.current = current
        self.head = head
        self.newer = newer
        """The store is at a revision this readmodel does not know: a newer one migrated it."""
        super().__init__(
            f"the {read_store_at(url, store)} is at revision {current or 'none'}, "
            f"this readmodel needs {head}"
        )

    def remedy(self, migrate_command: str) -> str:
        """What to do about it, in one line."""
        if self.newer:
            return f"{self}: a newer readmodel migrated it; run that version of readmodel"
        return f"{self}: run `{migrate_command}`"

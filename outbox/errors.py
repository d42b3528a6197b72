"""readmodel's exceptions, so a caller (and the CLI) can tell what went wrong in one line.

    ReadmodelError
    ├── SourceError         a service database or its outbox table is unreachable or unusable
    │   └── NotLeaderError  another relay holds the source
    ├── LogError            the event log (in the read store) cannot be read or written
    └── StoreError          a read-model store failed (projections)
        └── SchemaError     readmodel's tables in the read store cannot be migrated
            └── SchemaOutdated  the read store is not at the revision this readmodel needs

Configuration errors are :class:`config.ConfigError`, which ``config/`` defines itself.
Messages never contain a password or a full DSN.
"""


class ReadmodelError(Exception):
    """Base class of every error readmodel raises on purpose."""


class SourceError(ReadmodelError):
    """A source database or its outbox table cannot be used."""


class NotLeaderError(SourceError):
    """Another relay process is the active relay of this source."""


class LogError(ReadmodelError):
    """The event log cannot be read or written."""


class StoreError(ReadmodelError):
    """A read-model store failed."""


class SchemaError(StoreError):
    """readmodel's tables in a read store cannot be migrated (unknown revision, other columns)."""


class SchemaOutdated(SchemaError):
    """The read store is not at the schema revision this readmodel needs."""

    def __init__(self, url: str, current: str | None, head: str, *, newer: bool = False) -> None:
        self.url = url
        self.current = current
        self.head = head
        self.newer = newer
        """The store is at a revision this readmodel does not know: a newer one migrated it."""
        super().__init__(
            f"the read store at {url} is at revision {current or 'none'}, "
            f"this readmodel needs {head}"
        )

    def remedy(self, migrate_command: str) -> str:
        """What to do about it, in one line."""
        if self.newer:
            return f"{self}: a newer readmodel migrated it; run that version of readmodel"
        return f"{self}: run `{migrate_command}`"

"""readmodel's exceptions, so a caller (and the CLI) can tell what went wrong in one line.

    ReadmodelError
    ├── SourceError         a service database or its outbox table is unreachable or unusable
    │   └── NotLeaderError  another relay holds the source
    ├── LogError            the event log (in the read store) cannot be read or written
    └── StoreError          a read-model store failed (projections)

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

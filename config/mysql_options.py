"""The query options of a MySQL/MariaDB DSN, checked against what PyMySQL takes: an unknown
``?charset=`` failed every connection with ``AttributeError: 'NoneType' object has no
attribute 'encoding'``, an unknown option with a ``TypeError``, a value that is not a
number (``?connect_timeout=ten``) with a bare ``ValueError``, none naming the option."""

from __future__ import annotations

import inspect

from sqlalchemy.engine import URL


def check_mysql_options(url: URL) -> None:
    """Raise ``ValueError`` naming the option (never its value but a charset's, never the
    password) when PyMySQL would refuse the query options of ``url``."""
    if url.get_backend_name() not in ("mysql", "mariadb") or not url.query:
        return
    if "+" not in url.drivername:  # readmodel's driver (outbox/db.py)
        url = url.set(drivername=f"{url.get_backend_name()}+pymysql")
    elif url.get_driver_name() != "pymysql":
        return
    import pymysql
    from pymysql.charset import charset_by_name

    try:
        _, options = url.get_dialect()().create_connect_args(url)
    except (TypeError, ValueError):
        names = ", ".join(sorted(url.query))
        raise ValueError(
            f"a query option of the DSN ({names}) has a value the MySQL driver cannot take "
            f"(a number expected?)"
        ) from None
    known = set(inspect.signature(pymysql.connections.Connection.__init__).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"query option {unknown[0]!r} of the DSN is not one the MySQL driver (PyMySQL) takes"
        )
    charset = options.get("charset")
    if charset is not None and charset_by_name(str(charset)) is None:
        raise ValueError(
            f"query option charset={charset!r} of the DSN is not a character set the MySQL "
            f"driver knows (e.g. utf8mb4)"
        )

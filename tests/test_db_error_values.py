""":func:`outbox.db.describe_db_error` and :func:`outbox.db_errors.without_values` tell a
database's refusal without the value refused, which PostgreSQL quotes in a data exception's
message and an integrity error's DETAIL, MariaDB in its message, SQLAlchemy in the
statement's parameters: the SQLSTATE (or error code), the message and the names stay."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
import sqlalchemy as sa

from outbox.db import create_engine, describe_db_error
from outbox.db_errors import without_values

SECRET = "hunter2-s3cr3t"


def refusal(url: str, statements: list[str], failing: str, **params: object) -> BaseException:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text(failing), params)
        return caught.value
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("failing", "said"),
    [
        (
            "insert into t (id, email) values ('b', :v)",
            'duplicate key value violates unique constraint "t_email_key" '
            "(SQLSTATE 23505; constraint t_email_key; table t)",
        ),
        (
            "insert into t (id, email, amount) values ('c', :v, -1)",
            'new row for relation "t" violates check constraint "positive" '
            "(SQLSTATE 23514; constraint positive; table t)",
        ),
        (
            "insert into t (id, email, amount) values (null, :v, 1)",
            'null value in column "id" of relation "t" violates not-null constraint '
            "(SQLSTATE 23502; table t; column id)",
        ),
        (
            "insert into t (id, address) values ('d', cast(:v as inet))",
            'invalid input syntax for type inet: "(value hidden)" (SQLSTATE 22P02)',
        ),
        (
            "insert into t (id, amount) values ('e', cast(:v as integer))",
            'invalid input syntax for type integer: "(value hidden)" (SQLSTATE 22P02)',
        ),
        (
            "insert into t (id, amount) values ('f', cast(:v || '99999999999' as bigint))",
            'invalid input syntax for type bigint: "(value hidden)" (SQLSTATE 22P02)',
        ),
        (
            "insert into t (id, amount) values ('g', length(:v) + cast('99999999999' as bigint))",
            "integer out of range (SQLSTATE 22003)",
        ),
        (
            "insert into t (id, email) values ('h', convert_from(convert_to(:v, 'UTF8') "
            "|| '\\xe980'::bytea, 'UTF8'))",
            'invalid byte sequence for encoding "(value hidden)": (bytes hidden) (SQLSTATE 22021)',
        ),
    ],
)
def test_a_postgresql_refusal_is_told_without_the_value(
    failing: str, said: str, pg_database: Callable[[], str]
) -> None:
    create = (
        "create table t (id text primary key, email text unique, address inet, "
        "amount integer constraint positive check (amount > 0))"
    )
    value = f'x" {SECRET} "y'  # quotes in the value: hidden from the first to the last
    statements = [create, f"insert into t (id, email) values ('a', '{value}')"]
    error = refusal(pg_database(), statements, failing, v=value)
    assert SECRET in str(error)  # what the server said, and SQLAlchemy's parameters
    described = describe_db_error(error)
    assert described == f"{type(error.orig).__name__}: {said}", described
    hidden = without_values(error)
    assert type(hidden) is type(error.orig) and isinstance(hidden, psycopg.Error)
    assert hidden.sqlstate == error.orig.sqlstate  # type: ignore[union-attr]
    assert str(hidden) == said and SECRET not in repr(hidden)
    assert describe_db_error(hidden) == described  # told once, whoever tells it again


def test_a_mariadb_refusal_is_told_without_the_value(mysql_database: Callable[[], str]) -> None:
    create = "create table t (id varchar(40) primary key, amount integer)"
    value = f"x' for key 'y {SECRET}"
    error = refusal(
        mysql_database(),
        [create, "insert into t (id) values ('a')"],
        "insert into t (id) values ('a'), (:v), (:v)",
        v=value,
    )
    assert SECRET in str(error)
    described = describe_db_error(error)
    assert SECRET not in described, described
    assert described.startswith("IntegrityError: (1062) Duplicate entry '(value hidden)' for key")
    hidden = without_values(error)
    assert type(hidden) is type(error.orig) and SECRET not in repr(hidden)
    assert hidden.args[0] == 1062


def test_a_mariadb_function_refusal_is_told_without_the_value(
    mysql_database: Callable[[], str],
) -> None:
    """1411: ``Incorrect datetime value: '...' for function str_to_date`` (a value of a
    function's, not a column's: before, the message kept it)."""
    error = refusal(
        mysql_database(),
        ["create table t (id integer primary key, d date)", "insert into t (id) values (1)"],
        "update t set d = str_to_date(:v, '%Y')",
        v=SECRET,
    )
    assert SECRET in str(error)
    described = describe_db_error(error)
    assert described == (
        "OperationalError: (1411) Incorrect datetime value: '(value hidden)' for function "
        "str_to_date"
    )
    assert SECRET not in repr(without_values(error))


def test_a_sqlite_refusal_is_told_without_the_parameters(
    sqlite_database: Callable[[], str],
) -> None:
    error = refusal(
        sqlite_database(),
        ["create table t (id text primary key, email text unique)"],
        "insert into t (id, email) values ('a', :v), ('b', :v)",
        v=SECRET,
    )
    assert SECRET in str(error)  # SQLAlchemy's [parameters: ...]
    assert describe_db_error(error) == "IntegrityError: UNIQUE constraint failed: t.email"
    assert repr(without_values(error)) == "IntegrityError('UNIQUE constraint failed: t.email')"


def test_a_replay_batch_refused_tells_no_value(pg_database: Callable[[], str]) -> None:
    """A rebuild batch whose write was refused (narrowed down by halves) carries the error
    without the value, should its text ever be shown or kept in a traceback."""
    from projections.replay_apply import Refused

    error = refusal(
        pg_database(),
        ["create table t (id text primary key, email text unique)"],
        "insert into t (id, email) values ('a', :v), ('b', :v)",
        v=SECRET,
    )
    refused = Refused(error)
    assert SECRET not in str(refused) and SECRET not in repr(refused)
    assert "UniqueViolation" in str(refused) and "t_email_key" in str(refused)
    assert refused.error is error  # the caller still has the driver's error to classify

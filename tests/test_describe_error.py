"""``outbox.error_text.describe_error`` over errors the real drivers raise: one line of at
most 200 characters, no password, no SQL statement or parameters, no value a database
quotes, no nested driver reprs.

Before: the log lines of the stuck-events journal, the worker's start-up, the near cache
and the handler timeout logged ``error=repr(exc)``: a SQLAlchemy error's repr holds the
statement and its parameters (``[SQL: ...]``, ``[parameters: ...]``), a pika or redis-py
one nested driver reprs."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pika
import pika.exceptions
import psycopg
import pymysql
import pytest
import redis
import sqlalchemy as sa
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError, ServerSelectionTimeoutError

from outbox.db import create_engine, libpq_conninfo
from outbox.error_text import MAX_TEXT, describe_error

PASSWORD = "s3cret-Pw-4417"
VALUE = "secret-payload-value"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean(text: str) -> str:
    assert len(text) <= MAX_TEXT, text
    assert "\n" not in text
    for leak in (PASSWORD, VALUE, "[SQL:", "[parameters:", "INSERT", "Topology Description"):
        assert leak not in text, text
    return text


def test_a_psycopg_error_of_a_bad_query(pg_database: Callable[[], str]) -> None:
    with psycopg.connect(libpq_conninfo(pg_database())) as conn:
        conn.execute("CREATE TABLE t (n integer)")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("INSERT INTO t VALUES (%s)", (VALUE,))
    assert VALUE in str(raised.value)  # the server quotes it
    text = _clean(describe_error(raised.value))
    assert text.startswith("InvalidTextRepresentation: invalid input syntax for type integer")
    assert "SQLSTATE 22P02" in text


def test_a_sqlalchemy_error_around_psycopg(pg_database: Callable[[], str]) -> None:
    engine = create_engine(pg_database())
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (name text UNIQUE)")
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": VALUE})
        with pytest.raises(sa.exc.IntegrityError) as raised, engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": VALUE})
    finally:
        engine.dispose()
    assert "[parameters:" in str(raised.value) and VALUE in repr(raised.value)
    text = _clean(describe_error(raised.value))
    assert text.startswith("UniqueViolation: duplicate key value violates unique constraint")
    assert "t_name_key" in text


def test_a_pymysql_error_quoting_the_value(mysql_database: Callable[[], str]) -> None:
    url = sa.make_url(mysql_database())
    conn = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, database=url.database
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE t (name VARCHAR(40) UNIQUE)")
            cursor.execute("INSERT INTO t VALUES (%s)", (VALUE,))
            with pytest.raises(pymysql.MySQLError) as raised:
                cursor.execute("INSERT INTO t VALUES (%s)", (VALUE,))
    finally:
        conn.close()
    assert VALUE in str(raised.value)
    assert _clean(describe_error(raised.value)).startswith("IntegrityError: (1062) Duplicate")


def test_redis_on_a_closed_port_with_a_password() -> None:
    port = _closed_port()
    client = redis.Redis.from_url(f"redis://user:{PASSWORD}@127.0.0.1:{port}/0")
    with pytest.raises(redis.ConnectionError) as raised:
        client.ping()
    client.close()
    text = _clean(describe_error(raised.value))
    assert "connection refused" in text.lower()
    assert f"127.0.0.1:{port}" in text
    assert "ConnectionError(" not in text


def test_pika_on_a_closed_port_with_a_password() -> None:
    url = f"amqp://user:{PASSWORD}@127.0.0.1:{_closed_port()}/"
    with pytest.raises(pika.exceptions.AMQPConnectionError) as raised:
        pika.BlockingConnection(pika.URLParameters(url))
    assert _clean(describe_error(raised.value)) == "connection refused"


def test_mongo_server_selection_on_a_closed_port() -> None:
    url = f"mongodb://user:{PASSWORD}@127.0.0.1:{_closed_port()}/db"
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=200)
    try:
        with pytest.raises(ServerSelectionTimeoutError) as raised:
            client.admin.command("ping")
    finally:
        client.close()
    assert "Topology Description" in str(raised.value)
    text = _clean(describe_error(raised.value))
    assert text.startswith("ServerSelectionTimeoutError: 127.0.0.1:")
    assert "connection refused" in text.lower()


def test_mongo_duplicate_keys_without_the_key(mongo_database: Callable[[], str]) -> None:
    url = mongo_database()
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        collection = client.get_default_database()["people"]
        collection.insert_one({"_id": VALUE, "note": VALUE})
        with pytest.raises(DuplicateKeyError) as one:
            collection.insert_one({"_id": VALUE, "note": VALUE})
        with pytest.raises(BulkWriteError) as bulk:
            collection.insert_many([{"_id": VALUE, "note": VALUE}])
    finally:
        client.close()
    assert VALUE in str(one.value) and VALUE in str(bulk.value)
    assert _clean(describe_error(one.value)).startswith("DuplicateKeyError: E11000 duplicate key")
    assert _clean(describe_error(bulk.value)).startswith("BulkWriteError: ")


def test_other_errors_are_their_type_and_redacted_text_cut_short() -> None:
    error = ValueError(f"cannot open postgresql://app:{PASSWORD}@db/shop: " + "x" * 400)
    text = _clean(describe_error(error))
    assert text.startswith("ValueError: cannot open postgresql://app:***@db/shop: xxx")
    assert text.endswith("...") and len(text) == MAX_TEXT
    assert describe_error(KeyError("attempt")) == "KeyError: 'attempt'"
    assert describe_error(RuntimeError()) == "RuntimeError"


def test_a_file_error_names_the_file(tmp_path: object) -> None:
    with pytest.raises(OSError) as raised:
        open(f"{tmp_path}/missing/journal")  # noqa: SIM115
    assert describe_error(raised.value) == f"no such file or directory: {tmp_path}/missing/journal"

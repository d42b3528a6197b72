"""A blue/green rebuild builds the indexes behind what was made by hand on a live table in
the tablespace the live ones are in: a hand-made index, a UNIQUE constraint's, an EXCLUDE
constraint's (PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from tests.replay_helpers import EVENTS, Pipeline, query, replay_twice


def _dsn(p: Pipeline) -> str:
    url = sa.make_url(p.store_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@pytest.fixture
def tablespace(pg: Pipeline) -> Iterator[str]:
    """A tablespace of the test's own, made "in place" (a directory the server makes in its
    data directory, removed with the tablespace: the developer option
    ``allow_in_place_tablespaces``, PostgreSQL 15), so that no directory has to be made for
    the server's user. Dropped after the test, once what is left in it is moved out."""
    name = f"rm_test_space_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_dsn(pg), autocommit=True) as conn:
        try:
            conn.execute("SET allow_in_place_tablespaces = on")
        except psycopg.Error as exc:
            pytest.skip(f"no in-place tablespaces on this server: {exc}")
        conn.execute(f"CREATE TABLESPACE {name} LOCATION ''")
    try:
        yield name
    finally:
        with psycopg.connect(_dsn(pg), autocommit=True) as conn:
            conn.execute(f"ALTER INDEX ALL IN TABLESPACE {name} SET TABLESPACE pg_default")
            conn.execute(f"ALTER TABLE ALL IN TABLESPACE {name} SET TABLESPACE pg_default")
            conn.execute(f"DROP TABLESPACE {name}")
        with psycopg.connect(_dsn(pg)) as conn:
            left = conn.execute("SELECT 1 FROM pg_tablespace WHERE spcname = %s", (name,))
            assert left.fetchall() == []


_SPACES = """
SELECT c.relname, s.spcname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  LEFT JOIN pg_tablespace s ON s.oid = c.reltablespace
 WHERE i.indrelid = 'last_deposit'::regclass ORDER BY 1
"""
_DEFINITIONS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'last_deposit'::regclass ORDER BY 1
"""


def test_hand_made_indexes_and_constraints_keep_their_tablespace(
    pg: Pipeline, tablespace: str
) -> None:
    pg.feed("bank", EVENTS)
    for statement in (
        "ALTER TABLE last_deposit ADD CONSTRAINT one_ref EXCLUDE USING btree (tenant WITH =) "
        f"WITH (fillfactor = 80) USING INDEX TABLESPACE {tablespace} WHERE (seq > 0) "
        "DEFERRABLE",
        f"ALTER TABLE last_deposit ADD CONSTRAINT ref_seq UNIQUE (ref, seq) "
        f"USING INDEX TABLESPACE {tablespace}",
        f"CREATE INDEX by_tenant ON last_deposit (tenant) TABLESPACE {tablespace}",
    ):
        pg.execute(statement)
    spaces = query(pg, _SPACES)
    assert {name for name, space in spaces if space == tablespace} == {
        "one_ref",
        "ref_seq",
        "by_tenant",
    }
    definitions = query(pg, _DEFINITIONS)

    replay_twice(pg)

    assert query(pg, _SPACES) == spaces
    assert query(pg, _DEFINITIONS) == definitions
    with pytest.raises(sa.exc.IntegrityError, match="one_ref"):  # still enforced
        pg.execute("UPDATE last_deposit SET tenant = 'same'")

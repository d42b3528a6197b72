"""A blue/green rebuild never opens the projection wider than the live tables are (PostgreSQL):
views keep their security options."""

from __future__ import annotations

from collections.abc import Callable

from tests import test_replay_catalog as catalog
from tests.test_replay import Pipeline
from tests.test_replay_catalog import EVENTS, as_role, query, replay_twice

make_pipeline, pg, make_role = catalog.make_pipeline, catalog.pg, catalog.make_role  # fixtures

SEEN = "SELECT account FROM last_deposit ORDER BY 1"
OWN = [("acct-1",), ("acct-4",)]


def _tenant_rls(pg: Pipeline, tenant: str) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("ALTER TABLE last_deposit ENABLE ROW LEVEL SECURITY")
    pg.execute("ALTER TABLE last_deposit FORCE ROW LEVEL SECURITY")
    pg.execute(
        f'CREATE POLICY own ON last_deposit FOR SELECT TO "{tenant}" '
        "USING (account IN ('acct-1', 'acct-4'))"
    )


def test_views_keep_their_security_options(pg: Pipeline, make_role: Callable[[str], str]) -> None:
    """A security_invoker view over a table with row-level security shows a tenant its
    rows only; redefined without its options it would run as its owner: every row."""
    tenant = make_role("tenant")
    _tenant_rls(pg, tenant)
    pg.execute(
        "CREATE VIEW my_deposits WITH (security_invoker = true, security_barrier = true, "
        "check_option = local) AS SELECT account, amount FROM last_deposit"
    )
    pg.execute("CREATE VIEW plain_deposits AS SELECT account FROM last_deposit")
    pg.execute(f'GRANT SELECT ON last_deposit, my_deposits TO "{tenant}"')
    options = (
        "SELECT relname, reloptions FROM pg_class "
        "WHERE relname IN ('my_deposits', 'plain_deposits') ORDER BY 1"
    )
    before = query(pg, options)
    assert before[0][1] == ["security_invoker=true", "security_barrier=true", "check_option=local"]
    assert before[1][1] is None

    replay_twice(pg)

    assert query(pg, options) == before
    assert as_role(pg, tenant, "SELECT account FROM my_deposits ORDER BY 1") == OWN

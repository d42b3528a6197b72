"""Settings: TOML file, environment overrides, durations, and error messages people can act on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from config import CONFIG_ENV, ConfigError, Settings, load_settings
from outbox.db import engine_kind
from tests.cli_helpers import write_config

SECRET = "Hunter2-Pa55word"


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


def test_defaults_without_a_file() -> None:
    settings = load_settings()

    assert settings.store.url == "sqlite:///readmodel.db"
    assert settings.sources == {}
    assert settings.relay.standby_retry == timedelta(seconds=1)
    assert settings.relay.purge_every == timedelta(minutes=5)
    assert settings.logging.level == "info"
    assert settings.logging.json_output is False


def test_source_defaults_follow_the_debezium_convention(tmp_path: Path) -> None:
    path = write_config(tmp_path / "rm.toml", {"sources": {"orders": {"url": "sqlite:///o.db"}}})

    source = load_settings(path).sources["orders"]

    assert source.table == "outbox"
    assert source.schema_name is None
    assert source.on_dispatch == "delete"
    assert source.retention == timedelta(days=7)
    assert source.batch_size == 2000
    assert source.notify is True
    assert source.binary_ids == "text"  # binary ids read as UTF-8, as before the key existed
    columns = source.columns
    assert (columns.position, columns.event_id, columns.aggregate_type) == (
        "seq",
        "id",
        "aggregatetype",
    )
    assert (columns.aggregate_id, columns.event_type, columns.payload) == (
        "aggregateid",
        "type",
        "payload",
    )
    assert (columns.occurred_at, columns.tenant, columns.headers) == (
        "timestamp",
        "tenant_id",
        "headers",
    )


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": "postgresql://reader@db.internal/readstore"},
            "relay": {"standby_retry": "250ms", "purge_every": "15m"},
            "logging": {"level": "debug", "json": True},
            "sources": {
                "orders": {
                    "url": "postgresql://svc@orders-db/orders",
                    "table": "OutboxEvent",
                    "schema": "app",
                    "on_dispatch": "mark",
                    "retention": "12h",
                    "batch_size": 500,
                    "poll_min": "10ms",
                    "poll_max": "30s",
                    "notify": False,
                    "tenant": "acme",
                    "columns": {"aggregate_id": "aggregateId", "headers": ""},
                }
            },
        },
    )

    settings = load_settings(path)

    assert settings.store.url == "postgresql://reader@db.internal/readstore"
    assert settings.relay.standby_retry == timedelta(milliseconds=250)
    assert settings.relay.purge_every == timedelta(minutes=15)
    assert settings.logging.level == "debug"
    assert settings.logging.json_output is True
    orders = settings.sources["orders"]
    assert (orders.table, orders.schema_name, orders.on_dispatch) == ("OutboxEvent", "app", "mark")
    assert orders.retention == timedelta(hours=12)
    assert orders.batch_size == 500
    assert (orders.poll_min, orders.poll_max) == (timedelta(milliseconds=10), timedelta(seconds=30))
    assert orders.notify is False
    assert orders.tenant == "acme"
    assert orders.columns.aggregate_id == "aggregateId"
    assert orders.columns.headers == ""
    assert orders.columns.payload == "payload"


def test_config_file_from_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "env.toml", {"store": {"url": "sqlite:///from-env.db"}})
    monkeypatch.setenv(CONFIG_ENV, str(path))

    assert load_settings().store.url == "sqlite:///from-env.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("1.5h", timedelta(minutes=90)),
        (" 10 s ", timedelta(seconds=10)),
        (90, timedelta(seconds=90)),
        (0.5, timedelta(milliseconds=500)),
    ],
)
def test_durations(tmp_path: Path, text: Any, expected: timedelta) -> None:
    path = write_config(
        tmp_path / "rm.toml",
        {"sources": {"s": {"url": "sqlite:///s.db", "retention": text}}},
    )

    assert load_settings(path).sources["s"].retention == expected


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": "sqlite:///file-store.db"},
            "sources": {"x": {"url": "sqlite:///x.db", "batch_size": 10, "table": "events"}},
        },
    )
    monkeypatch.setenv("READMODEL_STORE__URL", "postgresql://env@store/readstore")
    monkeypatch.setenv("READMODEL_SOURCES__X__BATCH_SIZE", "77")

    settings = load_settings(path)

    assert settings.store.url == "postgresql://env@store/readstore"
    x = settings.sources["x"]
    assert x.batch_size == 77
    # The rest of the source still comes from the file.
    assert (x.url, x.table) == ("sqlite:///x.db", "events")


def test_explicit_arguments_beat_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "rm.toml", {"store": {"url": "sqlite:///file.db"}})
    monkeypatch.setenv("READMODEL_STORE__URL", "sqlite:///env.db")

    settings = load_settings(path, store={"url": "sqlite:///argument.db"})

    assert settings.store.url == "sqlite:///argument.db"


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "rm.toml", {"sources": {"x": {"url": "sqlite:///x.db"}}})
    monkeypatch.setenv("READMODEL_SOURCES__X__BATCH_SIZE", "lots")

    message = _load_error(path)

    assert "environment variable READMODEL_SOURCES__X__BATCH_SIZE" in message
    assert "sources.x.batch_size" in message
    assert "valid integer" in message


def test_environment_overrides_a_source_named_in_capitals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variable names are case-insensitive: READMODEL_SOURCES__POS_A__URL overrides the
    file's [sources.POS_A] instead of adding a source pos_a beside it."""
    path = write_config(tmp_path / "rm.toml", {"sources": {"POS_A": {"url": "sqlite:///dev.db"}}})
    monkeypatch.setenv("READMODEL_SOURCES__POS_A__URL", "sqlite:///prod.db")

    settings = load_settings(path)

    assert {name: s.url for name, s in settings.sources.items()} == {"POS_A": "sqlite:///prod.db"}


@pytest.mark.parametrize(
    ("variable", "value", "blamed"),
    [
        pytest.param(
            "READMODEL_SOURCES__NEW__BATCH_SIZE",
            "10",
            "environment variable READMODEL_SOURCES__NEW__BATCH_SIZE: sources.new.url: "
            "required key is missing",
            id="missing-key-of-an-env-source",
        ),
        pytest.param(
            "READMODEL_SOURCES__X__POLL_MIN",
            "5s",
            "rm.toml and environment variable READMODEL_SOURCES__X__POLL_MIN: sources.x: "
            "poll_max must not be shorter than poll_min",
            id="check-across-file-and-env",
        ),
        pytest.param(
            "READMODEL_SOURCES__X__BATCH_SIZE",
            "abc",
            "\n  environment variable READMODEL_SOURCES__X__BATCH_SIZE: sources.x.batch_size: "
            "Input should be a valid integer",
            id="bad-value-of-a-key-the-file-lacks",
        ),
        pytest.param(
            "READMODEL_STORE",
            '{"url": "mysql://reader@db/readstore"}',
            "environment variable READMODEL_STORE: store.url: expected a DSN",
            id="table-from-env",
        ),
    ],
)
def test_errors_an_environment_variable_caused_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, blamed: str
) -> None:
    path = write_config(tmp_path / "rm.toml", {"sources": {"x": {"url": "sqlite:///x.db"}}})
    monkeypatch.setenv(variable, value)

    message = _load_error(path)

    assert blamed in message.replace(f"{tmp_path}/", "")


def _source(**values: Any) -> dict[str, Any]:
    return {"sources": {"orders": {"url": "postgresql://svc@db/orders", **values}}}


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        pytest.param(_source(batchsize=5), "sources.orders.batchsize", "unknown key", id="unknown"),
        pytest.param(
            {"storage": {"url": "sqlite:///x.db"}}, "storage", "unknown key", id="unknown-section"
        ),
        pytest.param(
            _source(columns={"aggregateId": "x"}),
            "sources.orders.columns.aggregateId",
            "unknown key",
            id="unknown-column-field",
        ),
        pytest.param(
            _source(batch_size="many"), "sources.orders.batch_size", "valid integer", id="type"
        ),
        pytest.param(
            _source(batch_size=0),
            "sources.orders.batch_size",
            "greater than or equal to 1",
            id="range",
        ),
        pytest.param(
            _source(notify="sometimes"), "sources.orders.notify", "valid boolean", id="bool"
        ),
        pytest.param(
            _source(columns={"payload": 'payload"; DROP TABLE outbox; --'}),
            "sources.orders.columns.payload",
            "not a valid SQL identifier",
            id="column-injection",
        ),
        pytest.param(
            _source(columns={"aggregate_id": "aggregate id"}),
            "sources.orders.columns.aggregate_id",
            "not a valid SQL identifier",
            id="column-space",
        ),
        pytest.param(
            _source(table="outbox`; DELETE FROM users"),
            "sources.orders.table",
            "not a valid SQL identifier",
            id="table-injection",
        ),
        pytest.param(
            _source(schema="public.evil"),
            "sources.orders.schema",
            "not a valid SQL identifier",
            id="schema",
        ),
        pytest.param(
            _source(columns={"position": ""}),
            "sources.orders.columns",
            "columns.position is required",
            id="required-column",
        ),
        pytest.param(
            _source(retention="soon"),
            "sources.orders.retention",
            "expected a duration such as 30s",
            id="duration",
        ),
        pytest.param(
            _source(poll_max="5 weeks"),
            "sources.orders.poll_max",
            "expected a duration such as 30s",
            id="duration-unit",
        ),
        pytest.param(
            _source(retention=True),
            "sources.orders.retention",
            "expected a duration",
            id="duration-bool",
        ),
        pytest.param(
            _source(poll_min=-1),
            "sources.orders.poll_min",
            "expected a duration",
            id="duration-negative",
        ),
        pytest.param(
            _source(poll_min="2s", poll_max="250ms"),
            "sources.orders",
            "poll_max must not be shorter than poll_min",
            id="poll-order",
        ),
        pytest.param(
            _source(on_dispatch="mark", columns={"dispatched_at": ""}),
            "sources.orders",
            "on_dispatch = 'mark' needs columns.dispatched_at",
            id="mark-needs-column",
        ),
        pytest.param(
            _source(binary_ids="base64"),
            "sources.orders.binary_ids",
            "'text', 'uuid', 'uuid-swapped' or 'hex'",
            id="binary-ids",
        ),
        pytest.param(
            _source(binary_ids="auto"),
            "sources.orders.binary_ids",
            "'text', 'uuid', 'uuid-swapped' or 'hex'",
            id="binary-ids-no-auto",
        ),
        pytest.param(
            {"sources": {"chat": {"url": "mongodb://db:27017/chat", "binary_ids": "uuid"}}},
            "sources.chat",
            "binary_ids does not apply to MongoDB",
            id="binary-ids-mongodb",
        ),
        pytest.param(
            _source(on_dispatch="archive"),
            "sources.orders.on_dispatch",
            "'delete' or 'mark'",
            id="on-dispatch",
        ),
        pytest.param(
            {"sources": {"orders": {"url": "oracle://svc@db/orders"}}},
            "sources.orders.url",
            "expected a DSN starting with postgresql://, mysql://, mariadb://, sqlite:/// or mongodb://",
            id="dsn-scheme",
        ),
        pytest.param(
            {"sources": {"orders": {"url": "orders-db:5432"}}},
            "sources.orders.url",
            "expected a DSN",
            id="dsn-no-scheme",
        ),
        pytest.param(
            {"store": {"url": "mysql://reader@db/readstore"}},
            "store.url",
            "expected a DSN starting with postgresql:// or sqlite:///",
            id="store-scheme",
        ),
        pytest.param(
            {"sources": {"orders": {"url": f"mysql://root:{SECRET}@127.0.0.1:33O6/auth"}}},
            "sources.orders.url",
            "the port is not a number",
            id="dsn-port-letter",
        ),
        pytest.param(
            {"sources": {"orders": {"url": "mysql+py-mysql://root@127.0.0.1/auth"}}},
            "sources.orders.url",
            "the driver after '+' is unknown",
            id="dsn-driver",
        ),
        pytest.param(
            {"store": {"url": "postgresql://reader@db:99999/readstore"}},
            "store.url",
            "the port is out of range",
            id="dsn-port-range",
        ),
        pytest.param(
            {"sources": {"orders": {"batch_size": 5}}},
            "sources.orders.url",
            "required key is missing",
            id="missing-url",
        ),
        pytest.param(
            {"sources": {"bad name!": {"url": "sqlite:///x.db"}}},
            "sources",
            "source name 'bad name!'",
            id="source-name",
        ),
        pytest.param(
            {"broker": {"namespace": "dramatiq:mine"}},
            "broker.namespace",
            "use letters, digits",
            id="broker-namespace",
        ),
        pytest.param(
            {"logging": {"level": "verbose"}},
            "logging.level",
            "'debug', 'info', 'warning' or 'error'",
            id="log-level",
        ),
    ],
)
def test_invalid_values_name_file_key_and_expectation(
    tmp_path: Path, data: dict[str, Any], key: str, expected: str
) -> None:
    path = write_config(tmp_path / "readmodel.toml", data)

    message = _load_error(path)

    line = next((line for line in message.splitlines() if f": {key}: " in line), None)
    assert line is not None, message
    assert str(path) in line
    assert expected in line
    assert SECRET not in message


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "rm.toml", _source(batch_size="many", retention="soon", colour="blue")
    )

    message = _load_error(path)

    for key in ("sources.orders.batch_size", "sources.orders.retention", "sources.orders.colour"):
        assert key in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "readmodel.toml"

    message = _load_error(path)

    assert message == f"config file not found: {path}"


def test_missing_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "absent.toml"
    monkeypatch.setenv(CONFIG_ENV, str(path))

    with pytest.raises(ConfigError, match="config file not found: .*absent.toml"):
        load_settings()


def test_unreadable_file(tmp_path: Path) -> None:
    message = _load_error(tmp_path)

    assert str(tmp_path) in message
    assert "cannot be read" in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[sources.orders\nurl = "sqlite:///x.db"\n', encoding="utf-8")

    message = _load_error(path)

    assert str(path) in message
    assert "is not valid TOML" in message
    assert "line 1" in message


def test_invalid_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[store]\nurl = "sqlite:///caf\xe9.db"\n')

    message = _load_error(path)

    assert str(path) in message
    assert "cannot be read" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param(
            {"sources": {"orders": {"url": f"oracle://svc:{SECRET}@db/orders"}}},
            "sources.orders.url",
            id="bad-scheme",
        ),
        pytest.param(
            {"store": {"url": f"mysql://reader:{SECRET}@db/readstore"}},
            "store.url",
            id="store-engine",
        ),
        pytest.param(
            {"sources": {"orders": f"postgresql://svc:{SECRET}@db/orders"}},
            "sources.orders",
            id="dsn-instead-of-table",
        ),
        pytest.param(
            {"store": f"postgresql://reader:{SECRET}@db/readstore"},
            "store",
            id="store-dsn-instead-of-table",
        ),
        pytest.param(
            {
                "sources": {
                    "orders": {
                        "url": "postgresql://svc@db/orders",
                        "notify": f"postgresql://svc:{SECRET}@db/orders",
                    }
                }
            },
            "sources.orders.notify",
            id="dsn-under-wrong-key",
        ),
    ],
)
def test_passwords_never_appear_in_errors(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path = write_config(tmp_path / "rm.toml", data)

    message = _load_error(path)

    assert f": {key}: " in message
    assert str(path) in message
    assert SECRET not in message


def test_password_in_bad_environment_url_is_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMODEL_STORE__URL", f"mysql://reader:{SECRET}@db/readstore")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert "environment variable READMODEL_STORE__URL: store.url" in message
    assert SECRET not in message


def test_a_dsn_scheme_in_capitals_is_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": "PostgreSQL://reader@db/readstore"},
            "sources": {
                "orders": {"url": "MySQL://svc@db/orders"},
                "auth": {"url": "postgres://svc@db:5432/auth"},  # Heroku's DATABASE_URL form
                "shop": {"url": "postgres+psycopg://svc@db/shop"},
            },
        },
    )
    settings = load_settings(path)
    assert settings.store.url == "postgresql://reader@db/readstore"
    assert engine_kind(settings.sources["orders"].url) == "mysql"
    assert engine_kind(settings.sources["auth"].url) == "postgresql"
    assert settings.sources["shop"].url == "postgres+psycopg://svc@db/shop"


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings: Settings = load_settings()

    with pytest.raises(Exception, match="frozen"):
        settings.store.url = "sqlite:///other.db"  # type: ignore[misc]


def test_unknown_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READMODEL_STORE_URL", "sqlite:///x.db")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    message = str(caught.value)
    assert "READMODEL_STORE_URL" in message and "unknown key 'store_url'" in message
    assert "READMODEL_STORE__URL" in message


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://svc:Tenant Pa55 word@db/orders", "contains a space: write it as %20"),
        ("postgresql://my user:Pa55@db/orders", "contains a space: write it as %20"),
        ("postgresql://team/svc:Pa55@db/orders", "contains '/': write it as %2F"),
    ],
)
def test_a_dsn_whose_password_masking_would_miss_is_refused(
    tmp_path: Path, dsn: str, expected: str
) -> None:
    """Masking finds the password between ':' and '@': with a space in it, or a '/' in the
    user, the password was shown in clear by status and the relay's log."""
    path = write_config(tmp_path / "rm.toml", {"sources": {"orders": {"url": dsn}}})
    message = _load_error(path)
    assert "sources.orders.url" in message and expected in message
    assert "Pa55" not in message


def test_broker_and_cache_urls_may_be_encrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.secrets import encrypt, new_key

    key = new_key()
    monkeypatch.setenv("READMODEL_SECRET_KEY", key)
    broker, cache = "amqp://svc:Pa55@mq:5672/%2F", "redis://:Pa55@cache:6379/0"
    path = write_config(
        tmp_path / "rm.toml",
        {"broker": {"url": encrypt(broker, key)}, "cache": {"url": encrypt(cache, key)}},
    )
    settings = load_settings(path)
    assert (settings.broker.url, settings.cache.url) == (broker, cache)


@pytest.mark.parametrize(
    "example",
    sorted((Path(__file__).resolve().parents[1] / "config" / "examples").glob("*.toml")),
    ids=lambda path: path.name,
)
def test_every_example_config_loads(example: Path) -> None:
    settings = load_settings(example)
    assert (settings.sources or settings.tenants) and settings.config_file == str(example)


def test_a_store_named_default_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "readmodel.toml"
    path.write_text('[stores.default]\nurl = "mongodb://127.0.0.1/docs"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"stores: .*'default' is \[store\]"):
        load_settings(path)

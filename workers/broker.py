"""The Dramatiq broker for a broker URL: Redis (with wake-ups), RabbitMQ (publisher confirms)
or in-process."""

from __future__ import annotations

import importlib

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker

from config import BrokerSettings, ConfigError
from workers.redis_broker import WakingRedisBroker, broker_client


def make_broker(settings: BrokerSettings) -> dramatiq.Broker:
    """A new broker (also installed as Dramatiq's global broker)."""
    scheme = settings.url.split("://", 1)[0].lower()
    broker: dramatiq.Broker
    if scheme in ("redis", "rediss"):
        broker = WakingRedisBroker(
            client=broker_client(settings.url),
            namespace=settings.namespace,
            heartbeat_timeout=15_000,
        )
    elif scheme in ("amqp", "amqps"):
        broker = RabbitmqBroker(url=settings.url, confirm_delivery=True)
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    for spec in settings.middleware:
        broker.add_middleware(_middleware(spec))
    dramatiq.set_broker(broker)
    return broker


def _middleware(spec: str) -> dramatiq.Middleware:
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"broker.middleware: cannot import {spec!r}: {exc}") from None
    return cls()


def is_in_process(settings: BrokerSettings) -> bool:
    return settings.url.lower().startswith("memory://")

"""Encrypted credentials in the configuration: a DSN written ``fernet:<token>``.

Tenants' database credentials (one source per tenant database) need not sit in the config
file in clear: ``readmodel secret encrypt`` turns a DSN into a Fernet token (AES with an
HMAC, from the ``cryptography`` package), decrypted when the settings are loaded with
the key in ``READMODEL_SECRET_KEY``. Several keys, comma-separated, allow rotation: the
first encrypts, any decrypts. The clear DSN exists only in memory, and like every DSN is
shown with its password masked.
"""

from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SECRET_KEY_ENV = "READMODEL_SECRET_KEY"
PREFIX = "fernet:"


def new_key() -> str:
    """A new random key for ``READMODEL_SECRET_KEY``."""
    return Fernet.generate_key().decode()


def encrypt(secret: str, keys: str | None = None) -> str:
    """``secret`` as ``fernet:<token>``, with the first key of ``keys`` (default: the
    environment's)."""
    return PREFIX + _fernet(keys).encrypt(secret.encode()).decode()


def reveal(value: str) -> str:
    """``value`` itself, or decrypted when it is ``fernet:<token>``; a ``ValueError`` that
    never holds the value when it cannot be."""
    if not value.startswith(PREFIX):
        return value
    try:
        return _fernet(None).decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise ValueError(
            f"an encrypted value that {SECRET_KEY_ENV} cannot decrypt (another key, or the "
            f"token was cut)"
        ) from None


def _fernet(keys: str | None) -> MultiFernet:
    text = os.environ.get(SECRET_KEY_ENV, "") if keys is None else keys
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(
            f"an encrypted value (fernet:...) needs its key in {SECRET_KEY_ENV} "
            f"(readmodel secret key makes one)"
        )
    try:
        return MultiFernet([Fernet(part.encode()) for part in parts])
    except ValueError:
        raise ValueError(
            f"{SECRET_KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes; "
            f"readmodel secret key makes one)"
        ) from None

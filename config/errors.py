"""Configuration errors. `config/` imports nothing of the project, so its error lives here."""


class ConfigError(Exception):
    """A configuration file or variable is missing, unreadable or invalid.

    The message names the file, the key and what was expected, and never
    contains a password or a full DSN.
    """

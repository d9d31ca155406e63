"""The one exception tree of the project.

``StreamrecError``
    Root: catch this to catch anything streamrec raises on purpose.
``ConfigError``
    A setting (environment variable or CLI option) is missing or malformed.
    The message names the variable and says what a valid value looks like.
``EmbeddedServiceError``
    The embedded broker or Redis could not be started or did not become ready.
    The message carries the tail of the service's log.
``RedisUnavailableError``
    Redis stayed unreachable longer than ``STREAMREC_REDIS_RETRY_BUDGET``; the worker stops.
``DatasetError``
    A dataset file is missing or not in the documented format.
``gateway.tokens.TokenError``
    A gateway access token is missing, forged, expired or for another user (HTTP 401/403).

Bad *input events* are not exceptions: they are data and go to the dead-letter
outputs with a reason (see ``models.events``).
"""

__all__ = ["StreamrecError", "ConfigError", "EmbeddedServiceError", "DatasetError",
           "RedisUnavailableError"]


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class ConfigError(StreamrecError, ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


class EmbeddedServiceError(StreamrecError, RuntimeError):
    """The embedded Kafka broker or Redis server failed to start or to answer."""


class DatasetError(StreamrecError, ValueError):
    """A dataset file is missing or not in the documented format."""


class RedisUnavailableError(StreamrecError, RuntimeError):
    """Redis did not answer for longer than the retry budget; the message says what to check."""

"""Worker logging: plain lines by default, one JSON object per line with
``STREAMREC_LOG_FORMAT=json``; passwords in URLs masked either way.

JSON lines carry ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, any
``extra={...}`` fields of the call, and ``exc`` for a traceback. An extra field named
``user_id`` is written as a keyed hash (``u:`` + 16 hex digits), never in clear; the key
is ``STREAMREC_LOG_SALT`` (set the same value on every process to correlate lines), else
random per process.

>>> import io
>>> out = io.StringIO()
>>> handler = logging.StreamHandler(out)
>>> handler.setFormatter(JsonFormatter(salt=b"k")); handler.addFilter(RedactingFilter())
>>> demo = logging.getLogger("streamrec.doctest"); demo.propagate = False
>>> demo.addHandler(handler)
>>> demo.warning("Redis %s down", "redis://app:s3cret@db:6379/0", extra={"user_id": "alice", "n": 3})
>>> line = orjson.loads(out.getvalue())
>>> line["level"], line["logger"], line["message"], line["n"], line["user_id"][:2]
('WARNING', 'streamrec.doctest', 'Redis redis://app:***@db:6379/0 down', 3, 'u:')
>>> "alice" in out.getvalue()
False
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from datetime import datetime, timezone

import orjson

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging", "pseudonym"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# scheme://user:password@host  and  password=... in query strings or config dumps
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_KEY_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd|sasl\.password|secret)=)[^&\s,;'\"]+",
                           re.IGNORECASE)


def redact_text(text: str) -> str:
    """Mask passwords in URLs and ``password=`` pairs.

    >>> redact_text("rediss://u:p@h:1/0?password=p and sasl.password=x")
    'rediss://u:***@h:1/0?password=*** and sasl.password=***'
    """
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _KEY_PASSWORD.sub(r"\g<head>***", text)


def pseudonym(user_id: str, salt: bytes) -> str:
    """A keyed hash of a user id for logs: lines of one user correlate, the id stays hidden."""
    return "u:" + hashlib.blake2b(user_id.encode(), key=salt[:64], digest_size=8).hexdigest()


class RedactingFilter(logging.Filter):
    """Masks passwords in the formatted message of every record (a safety net: the
    code logs ``redact_url(...)`` already, library messages may not)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def __init__(self, salt: bytes | None = None) -> None:
        super().__init__()
        self.salt = salt or secrets.token_bytes(16)

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if key == "user_id" and isinstance(value, str):
                value = pseudonym(value, self.salt)
            line[key] = value
        if record.exc_info:
            line["exc"] = redact_text(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Set up the root logger for a worker process (replaces earlier handlers)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        salt = os.environ.get("STREAMREC_LOG_SALT", "").encode() or None
        handler.setFormatter(JsonFormatter(salt))
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

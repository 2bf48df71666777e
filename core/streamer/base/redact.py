"""Secrets never reach a screen or a log: how config values are shown.

A value is a secret when its key is named like one (``password``, ``passwd``, ``token``,
``secret``: :data:`SECRET_KEY`), or when it is the password part of a URL's user-info
(``redis://user:PASSWORD@host``), including URLs too malformed to parse
(``redis:/:PASSWORD@host``). Secrets are shown as ``***``. Pure and standard library only:
``streamer check`` and ``streamer list`` use it without importing gRPC.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "SECRET_KEY", "RedactingFilter", "is_secret_key", "redact", "redact_text"]

MASK = "***"

SECRET_KEY = re.compile(r"pass(word|wd)?|pwd|token|secret", re.IGNORECASE)
"""Keys whose values are secrets wherever they appear (``password``, ``auth_token``, ...)."""

# scheme, any number of slashes (a malformed URL still hides its password), user, ":", password,
# "@". The password runs to the last "@" before the host, so an "@" inside it is hidden too.
_URL_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*:/*)(?P<user>[^\s:/@'\"]*):(?P<pw>[^\s/'\"]*)@"
)
# key=value pairs (query strings, "password=..." in messages) and quoted 'key': 'value' pairs
# (dict reprs, JSON) whose key looks secret
_SECRET_NAME = r"[\w.-]*(?:pass(?:word|wd)?|pwd|token|secret)[\w.-]*"
_VALUE = r"(?P<val>\"[^\"]*\"|'[^']*'|[^\s&;,'\"}\]]+)"
_SECRET_PAIR = re.compile(
    rf"(?P<key>\b{_SECRET_NAME}\s*=\s*|(?P<q>['\"]){_SECRET_NAME}(?P=q)\s*[:=]\s*){_VALUE}",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


def redact_text(text: str) -> str:
    """``text`` with URL passwords and ``secret-key=value`` pairs replaced by ``***``."""
    if ":" not in text and "=" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}{m['user']}:{MASK}@", text)
    return _SECRET_PAIR.sub(_mask_pair, text)


def _mask_pair(m: re.Match[str]) -> str:
    val = m["val"]
    if val.strip("'\"") == MASK:
        return m[0]
    quote = val[0] if val[0] in "'\"" else ""
    return f"{m['key']}{quote}{MASK}{quote}"


def redact(value: Any, key: object = None) -> Any:
    """A copy of a config value fit to show: values of secret-named keys (at any depth) become
    ``***``, URL passwords in strings become ``***``."""
    if key is not None and is_secret_key(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message (and traceback text) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True

"""The targets' URLs hold secrets (a mail password, a bot token): read them, and keep them out of sight.

A URL comes from the config file, a file (``url_file``) or the environment (``url_env``). Every part of
it that could be a secret (the whole URL, its user and password, each path segment and query value
of four characters or more) is redacted to ``***`` wherever text leaves the notifier: log lines of
every logger (Apprise's own included; a log record factory rewrites each record as it is made),
status fields and error messages.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from appliance.config import ConfigError, NotifyTarget

MIN_SECRET = 4
"""Shorter parts (``json``, a port) are left as they are: redacting them would redact everything."""


def read_url(target: NotifyTarget, index: int) -> str:
    """The target's URL, from the config, its file or its environment variable; a clear error naming
    the key (never the URL) when it cannot be had."""
    key = f"notify.targets.{index}"
    if target.url is not None:
        url = target.url.get_secret_value()
    elif target.url_file is not None:
        try:
            url = target.url_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}.url_file = {str(target.url_file)!r}: cannot read it: {exc.strerror or exc}") \
                from None
    else:
        url = os.environ.get(target.url_env or "", "").strip()
        if not url:
            raise ConfigError(f"{key}.url_env = {target.url_env!r}: the environment has no such variable")
    if not re.match(r"^[a-z][a-z0-9+.-]*://", url, re.IGNORECASE):
        raise ConfigError(f"{key}: the URL is not an Apprise URL (scheme://...): see docs/notifications.md")
    return url


def secret_parts(url: str) -> set[str]:
    """Everything in ``url`` that may be a secret, as written and decoded."""
    parts = {url}
    split = urlsplit(url)
    for piece in (split.username, split.password,
                  *split.path.split("/"), *(value for _, value in parse_qsl(split.query)),
                  split.netloc, split.fragment):
        if piece and len(piece) >= MIN_SECRET:
            parts.update({piece, unquote(piece)})
    return {part for part in parts if len(part) >= MIN_SECRET}


class Redactor:
    """Replaces every known secret in a text; installs itself into logging for as long as it is needed."""

    def __init__(self, urls: Iterable[str]) -> None:
        secrets = set()
        for url in urls:
            secrets |= secret_parts(url)
        # Longest first, so a URL goes whole before its parts are looked for.
        ordered = sorted(secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(secret) for secret in ordered)) if ordered else None
        self._previous: Callable[..., logging.LogRecord] | None = None

    def __call__(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern is not None and text else text

    def install(self) -> None:
        """From now on every log record, of every logger, is made with its secrets redacted."""
        if self._pattern is None or self._previous is not None:
            return
        previous = logging.getLogRecordFactory()
        self._previous = previous

        def make(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a malformed record stays as it was; logging reports it
                return record
            cleaned = self(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            return record

        logging.setLogRecordFactory(make)

    def uninstall(self) -> None:
        if self._previous is not None:
            logging.setLogRecordFactory(self._previous)
            self._previous = None

"""Secrets in config URLs, kept out of every log line, `status` and `check-config`.

A webhook URL often is its own credential (``https://hooks.slack.com/services/T0/B0/XXXX``). Three parts of a
URL count as secret: the userinfo (``user:password@``), the query string's values, and path segments the config
marks ``{secret:...}``: ``url = "https://hooks.slack.com/services/T0/B0/{secret:XXXX}"`` is sent as
``.../B0/XXXX`` and shown as ``.../B0/***``. Redaction works two ways at once: the secret values the config
holds are replaced wherever they appear (an exception text that quotes them), and any URL in a text has its
userinfo and query values replaced, whether the config knew it or not.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rollbackd.host.http_url import parse_url

if TYPE_CHECKING:
    from rollbackd.config.model import Config

MASK = "***"
SECRET_SEGMENT = re.compile(r"\{secret:([^{}/?#\s]+)\}")
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@?#\"']+@", re.IGNORECASE)
# "?a=1&b=2" after a URL or a URL path (/x?...), up to whitespace, a quote or a fragment; punctuation that ends a
# sentence ("...?token=x: not delivered") is not part of it, so a line redacted twice reads the same.
_QUERY = re.compile(r"(?P<lead>/[^\s?#\"'<>]*)\?(?P<query>[^\s#\"'<>]+?)(?=[:;,.)]*(?:[\s#\"'<>]|$))")
# Values shorter than this are not hunted for in free text (a "1" would blank every digit); the URL
# patterns still catch them where they stand in a URL.
MIN_HUNTED_LENGTH = 6


def unwrap_secrets(url: str) -> str:
    """The URL to send: ``{secret:XXXX}`` markers replaced by their value."""
    return SECRET_SEGMENT.sub(lambda match: match.group(1), url)


def _mask_query(match: re.Match[str]) -> str:
    parts = [re.sub(r"=.*", "=" + MASK, part) if "=" in part else MASK for part in match.group("query").split("&")]
    return f"{match.group('lead')}?{'&'.join(parts)}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with marked segments, known secret values, URL userinfo and query values replaced by ***."""
    text = SECRET_SEGMENT.sub(MASK, text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_HUNTED_LENGTH:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda match: f"{match.group('scheme')}{MASK}@", text)
    return _QUERY.sub(_mask_query, text)


def secrets_of_url(url: str) -> list[str]:
    """The secret values written in one URL (or URL path): marked segments, userinfo, query values."""
    found = [match.group(1) for match in SECRET_SEGMENT.finditer(url)]
    plain = unwrap_secrets(url)
    try:
        parts = urlsplit(plain if "://" in plain else "http://host" + plain)
    except ValueError:
        return found
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.append(userinfo)
        found.extend(piece for piece in userinfo.split(":", 1) if piece)
        found.append(_basic_credentials(plain))  # as the client sends it: a receiver may echo its headers
    for pair in parts.query.split("&") if parts.query else ():
        value = pair.split("=", 1)[1] if "=" in pair else pair
        if value:
            found.append(value)
    return found


def _basic_credentials(url: str) -> str:
    """The base64 of the Authorization header the HTTP client sends for ``url``'s userinfo ('' for none)."""
    try:
        return parse_url(url).authorization.removeprefix("Basic ")
    except ValueError:
        return ""


def config_urls(config: Config) -> list[str]:
    """Every URL and URL path the config holds, as written."""
    urls = [webhook.url for webhook in [*config.daemon.webhooks, *config.daemon.alertmanager]]
    for service in config.service:
        urls.append(service.base_url)
        urls.append(service.health_path)
        urls.extend(service.probes.latency.paths)
        urls.extend(service.verify.latency_paths or ())
        urls.extend(step.path for step in service.verify.smoke)
    return urls


def secrets_in(config: Config) -> list[str]:
    """The secret values the config holds, to be redacted wherever they appear."""
    return [secret for url in config_urls(config) for secret in secrets_of_url(url)]


def redact_data(data: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of plain data (dicts, lists, strings) with every string redacted."""
    secrets = list(secrets)
    if isinstance(data, str):
        return redact_text(data, secrets)
    if isinstance(data, dict):
        return {key: redact_data(value, secrets) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(value, secrets) for value in data]
    return data


def exposed_secrets_warning(path: Path, config: Config) -> str | None:
    """A warning when the config file holds a secret and others may read it, else None."""
    if not secrets_in(config):
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if not mode & stat.S_IROTH:
        return None
    return (
        f"{path} holds secrets (URL credentials, query values or {{secret:...}} segments) and is readable by "
        f"every user (mode {stat.S_IMODE(mode):04o}): chmod o-r {path}"
    )


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with its secrets redacted, before any handler
    formats it. Installed on the log handler, so every logger's records pass through it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True

"""A JSON POST to a notification receiver, retried with doubling pauses: what webhooks and Alertmanager share."""

from __future__ import annotations

import asyncio
from typing import Any

from rollbackd.host.http_client import HttpClient, HttpError

FIRST_BACKOFF = 0.5  # seconds before the first retry; each next one waits twice as long


async def post_with_backoff(
    client: HttpClient, url: str, body: Any, *, timeout: float, retries: int, with_response_text: bool = False
) -> str | None:
    """POST ``body`` as JSON up to ``retries + 1`` times; None once a receiver took it (a status below 300), else the
    last problem ("HTTP 503", or the transport error; ``with_response_text``: the first 200 characters the receiver
    answered, which Alertmanager fills with why it refused)."""
    delay = FIRST_BACKOFF
    problem = ""
    for attempt in range(retries + 1):
        try:
            response = await client.post(url, json=body, timeout=timeout)
            if response.status < 300:
                return None
            problem = f"HTTP {response.status}" + (f": {response.text[:200]}" if with_response_text else "")
        except HttpError as error:
            problem = f"{type(error).__name__}: {error}"
        if attempt < retries:
            await asyncio.sleep(delay)
            delay *= 2
    return problem

"""HTTP header values BaluPi reads and writes: dates (RFC 9110 IMF-fixdate) and entity tags.

One definition for the fast lane, PROPFIND, the NAS client and the downloads, so that a date or an
ETag means the same on every path.
"""

from __future__ import annotations

from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache


@lru_cache(maxsize=8192)
def http_date(ts: float) -> str:
    """`ts` (seconds since the epoch) as an HTTP date (cached: listings repeat the same times)."""
    return formatdate(ts, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP date as seconds since the epoch; None when absent or unreadable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.strip()).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def strip_etag(value: str | None) -> str | None:
    """An ETag header's tag without quotes or the weak prefix; None when absent."""
    if not value:
        return None
    return value.strip().removeprefix("W/").strip('"')


def etag_list(value: str) -> list[str]:
    """The tags of an If-Match / If-None-Match header, each as `strip_etag` gives it."""
    return [tag.strip().removeprefix("W/").strip('"') for tag in value.split(",") if tag.strip()]

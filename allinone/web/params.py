"""The API's query parameters read and checked: sighting filters, times (unix seconds or ISO 8601), paging.

Every problem is a BadRequest naming the parameter, which the app answers 400: a query string is user input."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

from allinone.records import STATUSES
from allinone.watch.config import CAMERA_NAME
from allinone.watch.sightings import ANY_NAMED, ANY_UNKNOWN, UNKNOWN_ID

PAGE_LIMIT = 200  # a page the browser renders at once; Sightings allows more for imports and tests
NAME_MAX = 100
FILTER_KEYS = ("camera", "person", "since", "until", "status", "limit", "before_id")


class BadRequest(ValueError):
    """Input the API answers 400, its message shown as is."""


class NotFound(LookupError):
    """Something the API answers 404: an id or a name it does not hold."""


@dataclass(frozen=True)
class SightingFilter:
    """One page's query: Sightings.page's arguments, checked."""

    camera: str | None = None
    person: str | None = None
    since: float | None = None
    until: float | None = None
    status: str | None = None
    limit: int = 50
    before_id: int | None = None


def parse_time(text: str, what: str) -> float:
    """Unix seconds ("1733462400", "1733462400.5") or ISO 8601 ("2026-12-06T05:00:00Z"; no zone: UTC)."""
    try:
        value = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise BadRequest(f"{what} must be unix seconds or an ISO 8601 time, got {text!r}") from None
        if when.tzinfo is None:  # a server's local zone is nobody's guess from a browser: UTC, as said
            when = when.replace(tzinfo=timezone.utc)
        value = when.timestamp()
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{what} must be a time after 1970, got {text!r}")
    return value


def positive_int(text: str, what: str, high: int | None = None) -> int:
    if not text.isdigit() or int(text) < 1 or (high is not None and int(text) > high):
        upto = f" up to {high}" if high is not None else ""
        raise BadRequest(f"{what} must be a whole number from 1{upto}, got {text!r}")
    return int(text)


def sighting_filter(query: Mapping[str, str]) -> SightingFilter:
    """The filters of GET /api/sightings; unknown parameters are refused (a typo would silently list all)."""
    extra = sorted(set(query) - set(FILTER_KEYS))
    if extra:
        raise BadRequest(f"unknown parameter {extra[0]!r}; the filters are {', '.join(FILTER_KEYS)}")
    q = {k: v for k, v in query.items() if v != ""}  # an empty form field means "any"
    camera = q.get("camera")
    if camera is not None and not CAMERA_NAME.fullmatch(camera):
        raise BadRequest(f"camera {camera!r} is not a camera name")
    person = q.get("person")
    if person is not None and person not in (ANY_UNKNOWN, ANY_NAMED) and not UNKNOWN_ID.fullmatch(person):
        check_name(person, "person")
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    since = parse_time(q["since"], "since") if "since" in q else None
    until = parse_time(q["until"], "until") if "until" in q else None
    if since is not None and until is not None and since > until:
        raise BadRequest("the time range ends before it starts (since is after until)")
    return SightingFilter(camera=camera, person=person, since=since, until=until, status=status,
                          limit=positive_int(q["limit"], "limit", PAGE_LIMIT) if "limit" in q else 50,
                          before_id=positive_int(q["before_id"], "before_id") if "before_id" in q else None)


def check_name(name, what: str = "name") -> str:
    """A person's name as the API takes it: a string, 1 to NAME_MAX characters once stripped (the gallery's name
    rule is checked where the name is stored)."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(f"{what} must be a non-empty string")
    if len(name.strip()) > NAME_MAX:
        raise BadRequest(f"{what} has at most {NAME_MAX} characters, got {len(name.strip())}")
    return name.strip()


__all__ = ["BadRequest", "NotFound", "PAGE_LIMIT", "SightingFilter", "check_name", "parse_time", "positive_int",
           "sighting_filter"]

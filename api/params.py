"""Shared parameter types, bounded so the database never sees an out-of-range value."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

from api.pagination import MAX_LIMIT


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 2026-11-23T08:00:00Z)")
    if value is not None and not (1970 <= value.year <= 9000):
        raise ValueError("timestamp out of range")
    return value


DeviceId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the device's numeric id")]
BigId = Annotated[int, Path(ge=1, le=2**63 - 1)]
SiteId = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,64}$")]
SiteFilter = Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=2000)]
AwareTime = Annotated[datetime | None, AfterValidator(_aware)]

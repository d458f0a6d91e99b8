"""Timestamps: one representation inside (UTC-aware datetimes, or int64 microseconds in
arrays and files) and the exact wire formats caveclient expects outside."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from .errors import InvalidRequest

#: The format caveclient parses for version timestamps: microseconds always, no offset.
VERSION_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A naive datetime is taken as UTC (caveclient's convention)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_timestamp(value: object, *, field: str = "timestamp") -> datetime:
    """Parse what clients send: datetimes, ISO 8601 strings (with or without an offset or
    ``Z``) and POSIX seconds (int, float or numeric string)."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, bool):
        raise InvalidRequest(f"{field} must be a timestamp, not a boolean")
    if isinstance(value, int | float):
        return _from_posix(float(value), field)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _from_posix(float(text), field)
        except ValueError:
            pass
        if text.lower() == "now":
            return now()
        try:
            return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise InvalidRequest(
        f"{field} {value!r} is not a timestamp; send ISO 8601 (e.g. "
        f"'2024-01-22T08:10:01.497934') or POSIX seconds (e.g. 1705911001.497934)"
    )


def _from_posix(seconds: float, field: str) -> datetime:
    if not math.isfinite(seconds):
        raise InvalidRequest(f"{field} must be a finite number of POSIX seconds")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidRequest(f"{field} {seconds} is out of range") from exc


def format_version_timestamp(value: datetime) -> str:
    """``2024-01-22T08:10:01.497934``: what caveclient's ``convert_timestamp`` parses."""
    return as_utc(value).strftime(VERSION_FORMAT)


def format_iso(value: datetime | None) -> str | None:
    """Naive ISO form used in metadata (``2020-11-02T18:56:35.530100``)."""
    if value is None:
        return None
    return as_utc(value).strftime(VERSION_FORMAT)


def to_micros(value: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    delta = as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))


def to_posix(value: datetime) -> float:
    return to_micros(value) / 1e6

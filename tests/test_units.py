from __future__ import annotations

import pytest

from rollbackd.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("1m", 60),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("1.5s", 1.5),
        (" 10 s ", 10),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "s", "5 sec", "-1s", "1h-30m", "5x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.5, 1, 59, 60, 3600, 5400, 86400, 90061, 604800, 0.001])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("1KiB", 1024), ("512MiB", 512 * 1024**2), ("2GB", 2 * 10**9), ("1 gib", 1024**3)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("size", [0, 1, 1024, 1536, 512 * 1024**2, 3 * 1024**4])
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size

"""Sizes in bytes as people write them: `16M`, `512K`, `1.5GiB`, `2000000`.

Suffixes follow GNU coreutils (`head -c`, `split -b`): K, M, G (and KiB,
MiB, GiB) are powers of 1024; KB, MB, GB are powers of 1000. Written in a
dozen lines rather than taken from a package: the ones that do this
(humanfriendly) are unmaintained or far heavier than the job.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes in `text`; ValueError when it is not a positive size."""
    found = _SIZE.fullmatch(str(text).strip())
    if found is None:
        raise ValueError(f"'{text}' is not a size (e.g. 16M, 512K, 2G, or a number of bytes)")
    number, prefix, unit = found.groups()
    if not prefix and unit.lower() not in ("", "b"):
        raise ValueError(f"'{text}' is not a size (e.g. 16M, 512K, 2G, or a number of bytes)")
    base = 1000 if unit.lower() == "b" and prefix else 1024
    size = int(float(number) * base ** _POWERS[prefix.lower()])
    if size <= 0:
        raise ValueError(f"'{text}' is not a positive size")
    return size


def format_size(size: int) -> str:
    """`size` bytes the short way: 16 MiB, 1.5 GiB, 900 bytes."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size >= 1024**power:
            return f"{size / 1024**power:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"

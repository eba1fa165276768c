"""Reading the runtime values miniwdl leaves to a backend: disks, time limits, retry waits."""

import re
from typing import Any

from WDL import Error
from WDL._util import parse_byte_size

GiB = 1 << 30


def parse_disks(value: Any) -> int | None:
    """Bytes requested by runtime.disks: 100 (GiB), "100 GiB", "/mnt 10 GiB", "local-disk 100
    SSD". ValueError for a value with no size in it."""
    total = 0
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, int | float):
            total += int(item * GiB)
            continue
        tokens = str(item).split()
        for i, token in enumerate(tokens):
            if re.fullmatch(r"\d+(\.\d+)?", token):
                unit = tokens[i + 1] if i + 1 < len(tokens) else ""
                try:
                    total += parse_byte_size(token + unit)
                except ValueError:
                    total += int(float(token) * GiB)  # "local-disk 100 SSD": GiB
                break
        else:
            raise ValueError(f"no size in {item!r}")
    return total or None


def parse_duration(value: Any) -> int | None:
    """Seconds from runtime.omnibio_time_limit: 3600, "90m", "2h", "1d", "45s"."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
    if not match:
        raise Error.RuntimeError(
            f"invalid setting of runtime.omnibio_time_limit: {value!r} (use e.g. 3600, 90m, 2h)"
        )
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return max(1, int(float(match.group(1)) * unit))


def retry_delay(retries: int, first: float, most: float) -> float:
    """Seconds to wait before retry number ``retries`` (1, 2, ...): doubling from ``first``."""
    return min(first * 2 ** (retries - 1), most) if retries > 0 else 0.0

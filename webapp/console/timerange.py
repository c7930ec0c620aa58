from datetime import datetime, timedelta

from django.utils import timezone

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
          "30d": timedelta(days=30), "all": None}


def since(range_key: str) -> datetime | None:
    delta = RANGES.get(range_key or "24h", RANGES["24h"])
    return None if delta is None else timezone.now() - delta

"""Token-bucket rate limits keyed by account, address or device, with bounded memory.

Time is passed in. When more than `max_keys` keys are tracked, the least recently used are
forgotten first (a forgotten key starts with a full bucket, which errs towards service).
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated_ms: int


class RateLimiter:
    def __init__(self, *, capacity: float, per_seconds: float, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.refill_per_ms = capacity / (per_seconds * 1000) if per_seconds > 0 else float("inf")
        self.max_keys = max_keys
        self._buckets: collections.OrderedDict[object, _Bucket] = collections.OrderedDict()

    def _bucket(self, key: object, now_ms: int) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.capacity, now_ms)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0, now_ms - bucket.updated_ms)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.refill_per_ms)
            bucket.updated_ms = now_ms
        return bucket

    def take(self, key: object, now_ms: int) -> bool:
        """Take a token; False (and nothing taken) when the bucket is empty."""
        bucket = self._bucket(key, now_ms)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def give_back(self, key: object) -> None:
        """Return a token taken by `take` (capped at the capacity)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.capacity, bucket.tokens + 1)

    def retry_after_seconds(self, key: object, now_ms: int) -> float:
        bucket = self._bucket(key, now_ms)
        missing = max(0.0, 1 - bucket.tokens)
        return missing / self.refill_per_ms / 1000 if self.refill_per_ms else 0.0

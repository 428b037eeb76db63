"""A mergeable quantile sketch with a stated relative-error bound.

This is the logarithmic-bucket sketch of Masson, Rim and Lee, "DDSketch: a fast
and fully-mergeable quantile sketch with relative-error guarantees" (VLDB 2019):
a value ``v > 0`` goes to bucket ``ceil(log_gamma(v))`` with
``gamma = (1 + alpha) / (1 - alpha)``.  Buckets hold integer counts, so merging
is exact addition: associative, commutative, and independent of how the
population was split into minutes.

Quantiles use the nearest-rank rule over the merged population
(rank = ``ceil(p * n)``, 1-based); the returned value is within a relative
error ``alpha`` (default 1 %) of the true nearest-rank value.  Values with
``|v| < 1e-9`` count as zero; negative values are kept in a mirrored store.
"""

from __future__ import annotations

import math

import msgspec

DEFAULT_RELATIVE_ACCURACY = 0.01
_ZERO_BAND = 1e-9


class Sketch:
    """Mergeable quantile sketch (DDSketch, relative accuracy ``alpha``).

    Args:
        alpha: relative accuracy in (0, 1); quantiles are within ``alpha·|v|``.

    Raises:
        ValueError: for an ``alpha`` outside (0, 1) or a non-finite value added.
    """

    __slots__ = ("alpha", "_gamma_log", "positive", "negative", "zero_count")

    def __init__(self, alpha: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"sketch relative accuracy must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self._gamma_log = math.log((1 + alpha) / (1 - alpha))
        self.positive: dict[int, int] = {}  # bin index -> count (plain dicts: a sketch per partial is made
        self.negative: dict[int, int] = {}  # on the write path, and Counter() costs 5x a dict to create)
        self.zero_count = 0

    @property
    def count(self) -> int:
        """Number of values added."""
        return self.zero_count + sum(self.positive.values()) + sum(self.negative.values())

    def _index(self, magnitude: float) -> int:
        return math.ceil(math.log(magnitude) / self._gamma_log)

    def _value(self, index: int) -> float:
        gamma = math.exp(self._gamma_log)
        return 2 * gamma**index / (gamma + 1)

    def add(self, value: float, count: int = 1) -> None:
        """Add ``value`` ``count`` times."""
        if not math.isfinite(value):
            raise ValueError("a sketch accepts finite values only")
        if abs(value) < _ZERO_BAND:
            self.zero_count += count
        elif value > 0:
            index = self._index(value)
            self.positive[index] = self.positive.get(index, 0) + count
        else:
            index = self._index(-value)
            self.negative[index] = self.negative.get(index, 0) + count

    def merge(self, other: Sketch) -> None:
        """Add every value of ``other`` into this sketch (in place).

        Raises:
            ValueError: if the two sketches have different accuracies.
        """
        if other.alpha != self.alpha:
            raise ValueError("cannot merge sketches of different relative accuracy")
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count
        self.zero_count += other.zero_count

    def quantile(self, p: float) -> float | None:
        """Nearest-rank ``p``-quantile (0 < p <= 1), or ``None`` when empty.

        Raises:
            ValueError: if ``p`` is outside (0, 1].
        """
        if not 0 < p <= 1:
            raise ValueError(f"quantile p must be in (0, 1], got {p}")
        n = self.count
        if n == 0:
            return None
        rank = max(1, math.ceil(p * n - 1e-12))
        seen = 0
        for index in sorted(self.negative, reverse=True):
            seen += self.negative[index]
            if seen >= rank:
                return -self._value(index)
        seen += self.zero_count
        if seen >= rank:
            return 0.0
        for index in sorted(self.positive):
            seen += self.positive[index]
            if seen >= rank:
                return self._value(index)
        return self._value(max(self.positive))  # unreachable with consistent counts

    def to_bytes(self) -> bytes:
        """Compact JSON encoding (stored in the rollup table)."""
        return msgspec.json.encode(
            {"a": self.alpha, "z": self.zero_count, "p": dict(self.positive), "n": dict(self.negative)}
        )

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Sketch:
        """Inverse of ``to_bytes``."""
        raw = msgspec.json.decode(data)
        sketch = cls(raw["a"])
        sketch.zero_count = raw["z"]
        sketch.positive = {int(k): v for k, v in raw["p"].items()}
        sketch.negative = {int(k): v for k, v in raw["n"].items()}
        return sketch

    def bins(self) -> list[tuple[int, int, int]]:
        """The sketch as additive histogram bins ``(side, index, count)``: side 1 for positive
        values, -1 for negative, 0 (index 0) for the zero band.  Two sketches merge by adding the
        counts of equal ``(side, index)``, which is how the store keeps them (``rollup_sketch_bin``)."""
        out = [(1, i, c) for i, c in self.positive.items() if c]
        out += [(-1, i, c) for i, c in self.negative.items() if c]
        if self.zero_count:
            out.append((0, 0, self.zero_count))
        return out

    def add_bin(self, side: int, index: int, count: int) -> None:
        """Add ``count`` values to bin ``(side, index)`` (inverse of ``bins``).

        Raises:
            ValueError: for a side other than -1, 0 or 1.
        """
        if side == 1:
            self.positive[index] = self.positive.get(index, 0) + count
        elif side == -1:
            self.negative[index] = self.negative.get(index, 0) + count
        elif side == 0:
            self.zero_count += count
        else:
            raise ValueError(f"sketch bin side must be -1, 0 or 1, got {side}")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Sketch)
            and self.alpha == other.alpha
            and self.zero_count == other.zero_count
            and {i: c for i, c in self.positive.items() if c} == {i: c for i, c in other.positive.items() if c}
            and {i: c for i, c in self.negative.items() if c} == {i: c for i, c in other.negative.items() if c}
        )

    def copy(self) -> Sketch:
        """An independent copy."""
        clone = Sketch(self.alpha)
        clone.merge(self)
        return clone

"""Routing arithmetic for the pool: integer weights, smooth weighted round-robin.

Pure functions over plain numbers so the exact sequences can be tested (and
property-tested) without any pool state around them.
"""

from __future__ import annotations

import math
from collections.abc import MutableSequence, Sequence
from fractions import Fraction

# Weights like 0.1 or 2.5 are scaled to integers so the round-robin arithmetic
# stays exact forever (floats would drift after millions of sessions).
_MAX_WEIGHT_DENOMINATOR = 1000


def integer_weights(weights: Sequence[float]) -> list[int]:
    """Scale ``weights`` to integers with the same ratios (negative counts as 0).

    ``[3, 1]`` stays ``[3, 1]``; ``[0.5, 0.25]`` becomes ``[2, 1]``.
    """
    fractions = [
        Fraction(str(max(w, 0.0))).limit_denominator(_MAX_WEIGHT_DENOMINATOR) for w in weights
    ]
    scale = math.lcm(*(f.denominator for f in fractions)) if fractions else 1
    ints = [int(f * scale) for f in fractions]
    divisor = math.gcd(*ints) if any(ints) else 1
    return [i // divisor for i in ints]


def smooth_wrr_pick(weights: Sequence[int], current: MutableSequence[int]) -> int:
    """Pick an index by nginx's smooth weighted round-robin; updates ``current``.

    Each call adds every weight to its running ``current`` value, picks the
    largest (first on ties) and subtracts the total from the winner. Over any
    ``sum(weights)`` consecutive calls each index wins exactly its weight, and
    winners are spread out (3:1 gives a, a, b, a rather than a, a, a, b).
    ``weights`` must hold at least one positive value.
    """
    total = 0
    best = -1
    for i, weight in enumerate(weights):
        current[i] += weight
        total += weight
        if weight > 0 and (best < 0 or current[i] > current[best]):
            best = i
    current[best] -= total
    return best

"""Shapley values by their definition, the reference the TreeSHAP tests compare against."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np


def brute_force_shapley(p: int, value: Callable[[set[int]], float]) -> np.ndarray:
    """Each of ``p`` features' Shapley value of the game ``value(known features)``: the
    weighted sum of its marginal contribution over every subset of the others."""
    phi = np.zeros(p)
    for i in range(p):
        others = [j for j in range(p) if j != i]
        for size in range(p):
            w = math.factorial(size) * math.factorial(p - size - 1) / math.factorial(p)
            for subset in itertools.combinations(others, size):
                s = set(subset)
                phi[i] += w * (value(s | {i}) - value(s))
    return phi

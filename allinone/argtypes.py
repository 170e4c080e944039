"""argparse value types shared by the commands (each a one-line error in argparse's usual form)."""
from __future__ import annotations

import argparse
import math


def int_in_range(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high] (no upper bound when high is None)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low or (high is not None and v > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {v}")
        return v
    return parse


positive_int = int_in_range(1)


def unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {v}")
    return v


def nonnegative_float(text: str, what: str = "a number") -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected {what} (finite, >= 0), got {text!r}")
    return v


def threshold_arg(text: str) -> float | None:
    """argparse type for --threshold: 'auto' (None) or a finite distance >= 0 (the metric's range is checked once
    the metric is known)."""
    if text.strip().lower() == "auto":
        return None
    return nonnegative_float(text, "auto or a distance")

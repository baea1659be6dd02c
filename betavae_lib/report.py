"""Headline metrics: the numbers a chapter reports, printed so the book's executor can
record them."""

from __future__ import annotations

import json
import math

MARKER = "headline metrics:"


def _clean(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    raise TypeError(
        f"headline metrics must be numbers or strings, got {type(value).__name__}"
    )


def headline(**metrics) -> dict:
    """Print ``metrics`` as one JSON line after :data:`MARKER`; returns the cleaned
    dict.

    The executor (``tools/execute_book.py``) collects these lines into the run manifest.
    """
    clean = {k: _clean(v) for k, v in metrics.items()}
    print(MARKER, json.dumps(clean, sort_keys=True))
    return clean


def parse_headlines(text: str) -> dict:
    """All headline metrics printed in ``text`` (later lines override earlier keys)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(MARKER):
            found.update(json.loads(line[len(MARKER) :]))
    return found


def claim(text: str, holds: bool, *, strict: bool) -> bool:
    """Print whether a sentence of a chapter holds in this run, and return it.

    A chapter's prose describes its full-profile run; ``strict=True`` (that run) raises
    AssertionError when the sentence is false, so a re-execution that changes the
    result stops instead of publishing text the numbers contradict. Shorter profiles
    pass ``strict=False`` and only print.
    """
    holds = bool(holds)
    print(f"{'holds' if holds else 'does NOT hold'} in this run: {text}")
    if strict and not holds:
        raise AssertionError(f"the chapter says {text!r}, which this run contradicts")
    return holds

"""Fault campaign cases of issue 20: outputs: both-or-neither exports, long names, scratch space, one job per output, inputs unchanged until the end.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""

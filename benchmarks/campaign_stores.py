"""Fault campaign cases of issue 20: stores verified when read: a missing or damaged chunk, metadata that lies.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""

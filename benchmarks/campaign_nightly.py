"""Fault campaign cases of issue 20: the nightly service: completeness from the run itself, changed runs re-masked, publish outside the watched tree.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""

"""The nightly re-masking service (`rmm nightly`): discovery, catalog, versioned publication."""

from .service import run_nightly, status_rows
from .settings import Settings, read_settings

__all__ = ["Settings", "read_settings", "run_nightly", "status_rows"]

"""The nightly re-masking service (`rmm nightly`): discovery, catalog, versioned publication."""

from .settings import Settings, read_settings
from .service import run_nightly, status_rows

__all__ = ["Settings", "read_settings", "run_nightly", "status_rows"]

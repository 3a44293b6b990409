"""``python -m rmm_dask`` is the ``rmm`` command (used in Slurm batch scripts)."""

import sys

from .cli import main

sys.exit(main())

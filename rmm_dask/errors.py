"""Errors the user can fix. The command line prints them as one line and exits non-zero."""

from __future__ import annotations

import os
import re

#: characters that would break a line of output or a log (newline, carriage return, escape, ...)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (a newline as ``\\n``), so that a path with a
    newline or a terminal escape in its name can neither split an error line nor forge log lines."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), str(text))


class InputError(ValueError):
    """Bad input: names the file (or run, or store) and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # raised inside Dask tasks: must survive pickling back to the client
        return type(self), (self.path, self.problem)


class ClusterError(RuntimeError):
    """The cluster could not run the job (no worker started, sbatch refused the job, ...)."""

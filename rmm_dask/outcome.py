"""What a command has published so far: the honest last line when it is interrupted.

A command announces each output before it starts writing it (:meth:`Outcome.expect`)
and moves through its stages (building, computing, publishing, published). When Ctrl-C
or SIGTERM ends it, :meth:`Outcome.summary` says what was published, judged from the
files themselves: an output counts as published when the name now holds something other
than what was there when it was announced (a new directory or file is renamed into
place, so its inode differs), whatever the stage was when the signal came.
"""

from __future__ import annotations

import os
from pathlib import Path

STAGES = ("starting", "building", "computing", "publishing", "published")


def _identity(path: Path):
    """What is at ``path`` now (device, inode), or None; a link is not followed."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Outcome:
    """The outputs a command announced, what was at their names before, and its stage."""

    def __init__(self) -> None:
        self.stage = "starting"
        self._before: dict[Path, object] = {}
        self.note: str | None = None  #: replaces the summary where the command knows better (nightly, demo)

    def expect(self, path) -> Path:
        """Announce an output about to be written; remembers what is at its name now."""
        target = Path(os.path.abspath(os.fspath(path)))
        self._before.setdefault(target, _identity(target))
        return target

    def enter(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        self.stage = stage

    def published(self) -> list[Path]:
        """The announced outputs whose names now hold something new."""
        return [p for p, before in self._before.items() if _identity(p) not in (None, before)]

    def summary(self) -> str:
        """'nothing was published' or the outputs that were, for the line after 'interrupted; '."""
        if self.note:
            return self.note
        done = self.published()
        if not done:
            return "nothing was published"
        names = ", ".join(str(p) for p in done)
        missing = [p for p in self._before if p not in done]
        rest = f" ({', '.join(str(p) for p in missing)} not)" if missing else ""
        return f"{names} {'was' if len(done) == 1 else 'were'} published{rest}"

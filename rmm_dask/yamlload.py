"""The one way rmm reads YAML: bounded, without aliases, any locale, one line per problem.

Every YAML file rmm reads goes through :func:`load_yaml`: ``--config``, ``--jobqueue``, a
detector description (``--detector FILE.yaml``), the nightly configuration and its run lists,
and the package's own defaults. Such files are a few kilobytes written by hand, so

* a file larger than :data:`MAX_BYTES` is refused before it is parsed (a multi-GB file, or
  ``/dev/zero``, is never read whole: at most one byte more than the bound is read);
* anchors and aliases (``&name``, ``*name``) are refused: none of these files needs them, and
  nested aliases ("billion laughs") expand a file of a few hundred bytes into a tree that
  takes minutes and all memory to walk, print or copy (a MemoryError after 40 s);
* nesting deeper than :data:`MAX_DEPTH` is refused (a deep ``[[[[...`` exhausts the stack);
* the bytes are decoded by YAML itself (UTF-8, or UTF-16 with a byte order mark), never by
  the locale: a non-ASCII path in a configuration reads the same under ``LC_ALL=C``;
* only plain data is built (PyYAML's safe loader: no Python objects from tags).

The checks walk the parser's events (libyaml's, when PyYAML has it) before anything is
built, so a bomb is refused in milliseconds. Problems raise
:class:`rmm_dask.errors.InputError` naming the file, its message on one line.
"""

from __future__ import annotations

import os

import yaml

from .errors import InputError

MAX_BYTES = 4 * 2**20  #: a configuration, description or run list is far smaller (a run list of 100k runs: 2 MB)
MAX_DEPTH = 32  #: nested mappings and lists; the deepest of rmm's files nests 5 deep

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def load_yaml(path: str | os.PathLike, what: str = "configuration file"):
    """The data of the YAML file at ``path`` (None for an empty file), checked as the module says.

    ``what`` names the kind of file in the messages ("detector description", ...)."""
    data = _read(path, what)
    _check_events(path, data, what)
    try:
        return yaml.load(data, Loader=_Loader)  # noqa: S506  (a safe loader: plain data only)
    except yaml.YAMLError as err:
        raise InputError(path, f"not YAML: {yaml_problem(err)}") from None


def _read(path, what: str) -> bytes:
    """At most MAX_BYTES of the file (InputError when it holds more or cannot be read)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise InputError(path, f"cannot read the {what}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise InputError(path, f"larger than {MAX_BYTES // 2**20} MiB: too large for a {what}")
    return data


def _check_events(path, data: bytes, what: str) -> None:
    """Refuse anchors, aliases and deep nesting, from the parser's events (nothing is built yet)."""
    depth = 0
    try:
        for event in yaml.parse(data, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                raise InputError(path, f"YAML aliases (*{event.anchor}{_at(event)}) are not accepted in a {what}: "
                                       f"write the values out, and quote a value that starts with '*'")
            if getattr(event, "anchor", None):
                raise InputError(path, f"YAML anchors and aliases (&{event.anchor}{_at(event)}) are not accepted in a "
                                       f"{what}: write the values out")
            if isinstance(event, _STARTS):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InputError(path, f"nested more than {MAX_DEPTH} levels deep{_at(event)}: not a {what}")
            elif isinstance(event, _ENDS):
                depth -= 1
    except yaml.YAMLError as err:
        raise InputError(path, f"not YAML: {yaml_problem(err)}") from None


def _at(event) -> str:
    mark = event.start_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message (which spans lines: the problem, the context and a quote of the file) as
    one line: the problem and where it is."""
    if isinstance(err, yaml.reader.ReaderError):  # bytes that are no text in YAML's encodings
        return f"not UTF-8 (or UTF-16) text: {err.reason} at byte {err.position}"
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = getattr(err, "context", None)
    problem = getattr(err, "problem", None) or str(err)
    return " ".join((f"{context}; {problem}" if context else problem).split()) + where

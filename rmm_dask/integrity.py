"""Stores verified when read: every chunk written, carrying its checksum, and the metadata as it was written.

A mask store (format :data:`FORMAT`) is written so that damage can be seen:

- every array has the crc32c codec last (Zarr v3's ``crc32c``): each chunk ends with the
  checksum of its bytes, so a chunk overwritten, truncated or corrupted on disk is told
  from a good one by reading it, nothing more;
- every chunk is written, also one equal to the fill value (an all-good mask block, a
  module id 0), which Zarr leaves out by default: a chunk that is not there is missing,
  never "all zeros";
- chunks are named ``<array>/c.<i>.<j>...`` (Zarr's default key encoding with the ``.``
  separator): the chunks of an array are one directory, listed in one call;
- the root's ``arrays`` attribute records, for every array, the shape, chunk shape and
  dtype it was written with (:func:`manifest`).

:func:`verify` is what every reader does first (``rmm show``, ``diff``, ``export``,
:func:`rmm_dask.apply.open_mask`, the HTML report, the nightly service, all through
:func:`rmm_dask.store.open_store` / :func:`~rmm_dask.store.open_tree`): the metadata of every
array, in its own ``zarr.json`` and in the root's consolidated copy, must be what was
recorded, and every chunk must exist (one directory listing per array). It returns a
:class:`VerifiedStore`, through which every chunk read is checked again: a chunk that has
gone meanwhile or does not match its checksum raises :class:`~rmm_dask.errors.InputError`
naming the store and the chunk, so that no reader ever turns damage into a mask of zeros
or into a traceback. (Zarr's codec checks the checksum once more as it decodes; crc32c runs
at over 1 GB/s, a small part of reading a chunk, and the store's own check is what can name
the chunk.)

Stores written before (format :data:`LEGACY`) had no checksums and left out chunks equal
to the fill value: they are still read, unverified (a missing chunk cannot be told from an
all-zero one), with a note (:func:`note`); a chunk of theirs that does not decode to its
size is refused in one line all the same.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
from zarr.storage import LocalStore

from .errors import InputError, printable

FORMAT = "rmm-dask mask store 2"
LEGACY = "rmm-dask mask store 1"  #: before issue 20: no checksums, chunks equal to the fill value not written

#: Zarr's chunk key encoding for the store's arrays: ``c.0.1.0.0.0``, one directory per array
KEY_ENCODING = {"name": "default", "separator": "."}


def array_options() -> dict:
    """Keyword arguments of ``zarr.Group.create_array`` for every array of a store: zstd then crc32c,
    every chunk written (``write_empty_chunks``), chunks named with the ``.`` separator."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {
        "compressors": (ZstdCodec(level=0), Crc32cCodec()),
        "chunk_key_encoding": KEY_ENCODING,
        "config": {"write_empty_chunks": True},
    }


def manifest(group, prefix: str = "") -> dict:
    """``{array path: {"shape", "chunks", "dtype"}}`` of every array below ``group`` (a zarr.Group
    being written): what the store's ``arrays`` attribute records and :func:`verify` checks."""
    out = {}
    for name in sorted(group.array_keys()):
        arr = group[name]
        out[prefix + name] = {"shape": list(arr.shape), "chunks": list(arr.chunks), "dtype": str(arr.dtype)}
    for name in sorted(group.group_keys()):
        out.update(manifest(group[name], f"{prefix}{name}/"))
    return out


def chunk_names(entry: dict) -> list[str]:
    """The chunk file names of one array of the manifest (``c.0.0.1.0.0``, ...), in order."""
    counts = [math.ceil(s / c) if c else 0 for s, c in zip(entry["shape"], entry["chunks"])]
    if not entry["shape"]:
        return ["c"]
    return [".".join(("c", *map(str, index))) for index in itertools.product(*(range(n) for n in counts))]


def damaged(path, problem: str) -> InputError:
    """The one line for a damaged store: what is wrong, and that it is not read."""
    return InputError(path, f"damaged store: {problem}; not reading it")


def _read_json(path: Path):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return err


def root_metadata(path: Path) -> dict:
    """The store's root ``zarr.json`` (attributes and consolidated metadata), or InputError saying why not."""
    if not path.is_dir():
        raise InputError(path, "not a Zarr store (not a directory)")
    meta = _read_json(path / "zarr.json")
    if meta is None:
        raise InputError(path, "not a Zarr store (no zarr.json)")
    if isinstance(meta, OSError):
        raise InputError(path, f"cannot read its zarr.json: {printable(meta.strerror or meta)}")
    if not isinstance(meta, dict):
        why = (str(meta).splitlines() or [""])[0] if isinstance(meta, Exception) else "not a JSON object"
        raise InputError(path, f"not a Zarr store (its zarr.json is not readable JSON: {printable(why)})")
    return meta


def note(attrs) -> str | None:
    """What a reader should say about a store it reads unverified (format :data:`LEGACY`), else None."""
    if attrs.get("format") == LEGACY:
        return (f"store format '{LEGACY}' (written before stores carried checksums): its chunks are not verified, "
                "and a missing chunk reads as good pixels; mask the runs again for a verified store")
    return None


def verify(path: Path) -> VerifiedStore:
    """Check a store before it is read; a :class:`VerifiedStore` of it, or InputError naming the damage.

    Format :data:`FORMAT`: the ``arrays`` attribute must list ``mask``; every array listed must
    have, in its own ``zarr.json`` and in the root's consolidated metadata, the shape, chunk
    shape and dtype recorded there and the crc32c codec last; and every chunk file must exist.
    Format :data:`LEGACY`: read as it is (see :func:`note`). Anything else is not a mask store.
    Reads only metadata and lists one directory per array: no chunk is read.
    """
    meta = root_metadata(path)
    attrs = meta.get("attributes") or {}
    consolidated = (meta.get("consolidated_metadata") or {}).get("metadata") or {}
    fmt = attrs.get("format")
    if fmt == LEGACY:
        if "mask" not in consolidated and not (path / "mask" / "zarr.json").is_file():
            raise InputError(path, "not an rmm-dask mask store (no 'mask' array or format attribute)")
        return VerifiedStore(path, None)
    arrays = attrs.get("arrays")
    if isinstance(fmt, str) and fmt.startswith("rmm-dask") and fmt != FORMAT:  # a newer rmm-dask's store
        raise InputError(path, f"store format {printable(fmt)!r}: this rmm-dask reads {FORMAT!r} and {LEGACY!r}")
    if fmt != FORMAT:
        raise InputError(path, "not an rmm-dask mask store (no 'mask' array or format attribute)")
    if not isinstance(arrays, dict) or "mask" not in arrays:
        raise damaged(path, "its 'arrays' attribute (the arrays it was written with) is missing or has no 'mask'")
    for name, entry in arrays.items():
        _check_metadata(path, name, entry, _read_json(path / name / "zarr.json"), "zarr.json")
        if consolidated:
            _check_metadata(path, name, entry, consolidated.get(name), "consolidated metadata")
        _check_chunks(path, name, entry)
    return VerifiedStore(path, arrays)


def _check_metadata(path: Path, name: str, entry: dict, meta, where: str) -> None:
    """One array's metadata (``where``: its own zarr.json, or the root's consolidated copy) against the manifest."""
    source = f"{name}/zarr.json" if where == "zarr.json" else f"zarr.json (the consolidated metadata of {name})"
    if meta is None:
        missing = "its zarr.json is missing (deleted?)" if where == "zarr.json" else f"not in the {where}"
        raise damaged(path, f"array {name}: {missing}")
    if isinstance(meta, Exception) or not isinstance(meta, dict):
        raise damaged(path, f"{source} is not readable JSON")
    try:
        found = {
            "shape": list(meta["shape"]),
            "chunks": list(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            "dtype": str(np.dtype(meta["data_type"])),
        }
        codecs = [c["name"] if isinstance(c, dict) else c for c in meta["codecs"]]
        encoding = meta["chunk_key_encoding"]
    except (KeyError, TypeError, ValueError):
        raise damaged(path, f"{source} is not the metadata of a Zarr v3 array") from None
    for key, what in (("shape", "shape"), ("dtype", "dtype"), ("chunks", "chunk shape")):
        if found[key] != entry[key]:
            show = (lambda v: tuple(v)) if key != "dtype" else str
            raise damaged(path, f"{source} says {what} {show(found[key])}, but the store was written "
                                f"with {show(entry[key])}")
    if not codecs or codecs[-1] != "crc32c" or encoding.get("configuration", {}).get("separator") != ".":
        raise damaged(path, f"{source} names codecs {codecs} and chunk keys {encoding}, not those "
                            "the store was written with (crc32c last, '.' separator)")


def _check_chunks(path: Path, name: str, entry: dict) -> None:
    """Every chunk of one array exists (one directory listing); the first missing one named."""
    expected = chunk_names(entry)
    try:
        present = {e.name for e in os.scandir(path / name) if e.is_file(follow_symlinks=False)}
    except FileNotFoundError:
        present = set()
    except OSError as err:
        raise InputError(path, f"cannot read the store: {name}: {err.strerror}") from None
    missing = [n for n in expected if n not in present]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(expected)})" if len(missing) > 1 else ""
        raise damaged(path, f"chunk {name}/{missing[0]} is missing (deleted?){more}")


class VerifiedStore(LocalStore):
    """A published store, read-only, whose chunk reads are checked (what :func:`verify` returns).

    ``arrays``: the manifest (format :data:`FORMAT`): a chunk of a listed array must exist and
    end with the crc32c of its bytes. ``None`` (format :data:`LEGACY`): a chunk that is there must
    decompress to its chunk's size (the array's metadata, read on first use). Any other key is
    read as by ``LocalStore``. Failures raise :class:`InputError` naming the store and the chunk;
    the store pickles (dask workers read through it).
    """

    def __init__(self, root, arrays: dict | None, *, read_only: bool = True) -> None:
        super().__init__(root, read_only=True)
        self.arrays = arrays
        self._legacy_sizes: dict[str, int | None] = {}

    def with_read_only(self, read_only: bool = False):
        return type(self)(self.root, self.arrays)

    def _array_of(self, key: str) -> str | None:
        """The array whose chunk ``key`` is (``mask`` for ``mask/c.0.0.1.0.0``), else None (metadata)."""
        if self.arrays is None:  # legacy stores: the "/" separator, mask/c/0/0/1/0/0
            head, sep, _ = key.partition("/c/")
            return head if sep else None
        array, _, name = key.rpartition("/")
        return array if array in self.arrays and (name == "c" or name.startswith("c.")) else None

    def _checked(self, key: str, buf):
        array = self._array_of(key)
        if array is None:
            return buf
        if buf is None:
            if self.arrays is None:  # legacy: chunks equal to the fill value were not written
                return None
            raise damaged(self.root, f"chunk {key} is missing (deleted?)")
        data = buf.as_numpy_array()
        if self.arrays is not None:
            import google_crc32c

            if data.size < 4 or np.uint32(google_crc32c.value(data[:-4])).tobytes() != data[-4:].tobytes():
                raise damaged(self.root, f"chunk {key} does not match its checksum (overwritten or corrupted on disk)")
        else:
            self._check_legacy(key, array, data)
        return buf

    def _check_legacy(self, key: str, array: str, data: np.ndarray) -> None:
        """A legacy (zstd, no checksum) chunk must decompress to the size its array's metadata gives."""
        if array not in self._legacy_sizes:
            meta = _read_json(Path(self.root) / array / "zarr.json")
            try:
                chunk = meta["chunk_grid"]["configuration"]["chunk_shape"]
                self._legacy_sizes[array] = int(np.prod(chunk)) * np.dtype(meta["data_type"]).itemsize
            except (KeyError, TypeError, ValueError):
                self._legacy_sizes[array] = None
        size = self._legacy_sizes[array]
        from numcodecs import Zstd

        try:
            n = len(Zstd().decode(data))
        except Exception:  # numcodecs raises RuntimeError for invalid zstd data
            raise damaged(self.root, f"chunk {key} cannot be decompressed (overwritten or corrupted on disk)") from None
        if size is not None and n != size:
            raise damaged(self.root, f"chunk {key} holds {n} bytes, its array's metadata says {size}")

    async def get(self, key, prototype=None, byte_range=None):
        buf = await super().get(key, prototype, byte_range)
        return buf if byte_range is not None else self._checked(key, buf)

    def get_sync(self, key, *, prototype=None, byte_range=None):
        buf = super().get_sync(key, prototype=prototype, byte_range=byte_range)
        return buf if byte_range is not None else self._checked(key, buf)

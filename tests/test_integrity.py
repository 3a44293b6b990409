"""Stores verified when read (issue 20): every chunk written with its checksum, and every reader
(``rmm show``, ``diff``, ``export``, ``open_mask``/``bad_pixels``) refusing a store with a chunk
missing or damaged, or metadata that lies, in one line naming it; a CrystFEL export is both
files or neither. The stores are copies of the session's ``store``, damaged on disk.
"""

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import rmm_dask
from rmm_dask import integrity, publish
from rmm_dask.cli import main
from rmm_dask.errors import InputError
from rmm_dask.store import STORE_FORMAT, walk_arrays

from .cli_errors import one_line_error

CHUNK = "mask/c.0.0.1.0.0"  #: module 0, all gain stages, cell index 1


def writable_copy(store: Path, where: Path, name: str = "m.zarr") -> Path:
    """A copy of a published (read-only) store that the test may damage."""
    out = where / name
    shutil.copytree(store, out)
    for p in [out, *out.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return out


def edit_metadata(store: Path, array: str, key: str, value, *, consolidated: bool = True) -> None:
    """Change ``key`` of ``array``'s metadata in its zarr.json (and in the root's consolidated copy)."""
    files = [(store / array / "zarr.json", lambda m: m)]
    if consolidated:
        files.append((store / "zarr.json", lambda m: m["consolidated_metadata"]["metadata"][array]))
    for path, part in files:
        meta = json.loads(path.read_text())
        part(meta)[key] = value
        path.write_text(json.dumps(meta))


def refused_by_every_reader(capsys, damaged: Path, reference: Path, out: Path, *needles, when_opened=True) -> None:
    """show (with --png and --html), diff (with --json), export (crystfel, h5) and open_mask/bad_pixels:
    exit 2, one line naming the store and the damage, nothing written in ``out``; nothing on stdout
    either if the damage is found ``when_opened`` (a damaged chunk's bytes are found when read: ``rmm
    show`` has printed the store's header by then)."""
    out.mkdir()
    commands = [
        ["show", str(damaged), "--png", str(out / "png"), "--html", str(out / "r.html")],
        ["diff", str(reference), str(damaged), "--json", str(out / "d.json")],
        ["export", str(damaged), "--to", "crystfel", "--out", str(out / "x.h5")],
        ["export", str(damaged), "--to", "h5", "--out", str(out / "y.h5")],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" or not when_opened, argv
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
        line = captured.err.strip()
        assert line.startswith(f"rmm {argv[0]}: {damaged}: damaged store: ") and line.endswith("; not reading it"), line
        assert all(n in line for n in needles), line
    assert os.listdir(out) == []
    with pytest.raises(InputError, match="damaged store: ") as err:
        rmm_dask.bad_pixels(rmm_dask.open_mask(damaged), "dark").compute()
    assert all(n in str(err.value) for n in needles), err.value


def test_every_chunk_is_written_with_its_checksum_and_recorded(store):
    root = zarr.open_group(store, mode="r")
    assert root.attrs["format"] == STORE_FORMAT == integrity.FORMAT
    recorded = root.attrs["arrays"]
    assert recorded == integrity.manifest(root) and "mask" in recorded and "module" in recorded
    for name, arr in walk_arrays(root):
        assert [c.to_dict()["name"] for c in arr.metadata.codecs][-2:] == ["zstd", "crc32c"], name
        files = sorted(p.name for p in (store / name).iterdir() if p.name != "zarr.json")
        assert files == sorted(integrity.chunk_names(recorded[name])) and files, name
    # chunks equal to the fill value are there too: module id 0, the rejected frames (none rejected here)
    assert root["module"][:].tolist() == [0] and (store / "module" / "c.0").is_file()
    assert not root["rejected_frames/high"][:].any() and (store / "rejected_frames/high/c.0.0.0").is_file()
    assert isinstance(integrity.verify(store), integrity.VerifiedStore)


def test_a_deleted_chunk_is_refused_by_every_reader(store, tmp_path, capsys):
    damaged = writable_copy(store, tmp_path)
    (damaged / CHUNK).unlink()
    refused_by_every_reader(capsys, damaged, store, tmp_path / "out", f"chunk {CHUNK} is missing (deleted?)")
    # the first missing chunk of any array is named, with how many more
    for name in ("c.0.0.0.0.0", "c.0.0.1.0.0"):
        (damaged / "features/noise" / name).unlink()
    (damaged / CHUNK).touch()  # there again (empty: its checksum fails when read)
    with pytest.raises(InputError) as err:
        integrity.verify(damaged)
    assert "chunk features/noise/c.0.0.0.0.0 is missing (deleted?) (and 1 more of its 2)" in str(err.value)


def test_a_garbage_chunk_is_refused_by_every_reader(store, tmp_path, capsys):
    damaged = writable_copy(store, tmp_path)
    (damaged / CHUNK).write_bytes(np.random.default_rng(0).bytes(3000))
    needle = f"chunk {CHUNK} does not match its checksum"
    refused_by_every_reader(capsys, damaged, store, tmp_path / "out", needle, when_opened=False)


@pytest.mark.parametrize(
    "key, value, consolidated, needle",
    [
        ("shape", [1, 3, 2, 512, 64], True,
         "mask/zarr.json says shape (1, 3, 2, 512, 64), but the store was written with (1, 3, 2, 512, 128)"),
        ("data_type", "uint16", True, "mask/zarr.json says dtype uint16, but the store was written with uint8"),
        ("data_type", "int8", False, "mask/zarr.json says dtype int8"),  # the same size: would read silently
        ("shape", [1, 3, 4, 512, 128], False, "mask/zarr.json says shape (1, 3, 4, 512, 128)"),  # its own file only
    ],
    ids=["shape", "dtype", "dtype-same-size", "shape-own-file-only"],
)
def test_metadata_that_lies_is_refused_by_every_reader(store, tmp_path, capsys, key, value, consolidated, needle):
    damaged = writable_copy(store, tmp_path)
    edit_metadata(damaged, "mask", key, value, consolidated=consolidated)
    refused_by_every_reader(capsys, damaged, store, tmp_path / "out", needle)


def test_a_chunk_damaged_after_opening_is_refused_when_it_is_read(store, tmp_path):
    damaged = writable_copy(store, tmp_path)
    ds = rmm_dask.open_mask(damaged)  # verified here; the arrays are read lazily, through the verifying store
    tree = rmm_dask.store.open_tree(damaged)
    good = ds["mask"].values
    (damaged / CHUNK).write_bytes((damaged / CHUNK).read_bytes()[:-1] + b"\0")
    with pytest.raises(InputError, match=f"{CHUNK} does not match its checksum"):
        ds["mask"].values
    (damaged / CHUNK).unlink()
    with pytest.raises(InputError, match=f"{CHUNK} is missing"):
        rmm_dask.bad_pixels(ds).compute()
    with pytest.raises(InputError, match=f"{CHUNK} is missing"):
        tree["mask"][0].values
    assert good.shape == (1, 3, 2, 512, 128)


def legacy_copy(store: Path, where: Path) -> Path:
    """The store as rmm-dask wrote it before issue 20 (format 1): zarr's default codecs without a
    checksum, chunks named with '/', chunks equal to the fill value left out, no 'arrays' attribute."""
    out = where / "old.zarr"
    src = zarr.open_group(store, mode="r")
    root = zarr.open_group(out, mode="w-", zarr_format=3)
    for name, arr in walk_arrays(src):
        root.create_array(name, data=arr[:], chunks=arr.chunks, dimension_names=arr.metadata.dimension_names,
                          attributes=dict(arr.attrs), fill_value=0)
    root.attrs.update({**{k: v for k, v in src.attrs.items() if k != "arrays"}, "format": integrity.LEGACY})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(out)
    return out


def test_a_store_of_format_1_is_read_unverified_with_a_note(store, tmp_path, capsys):
    old = legacy_copy(store, tmp_path)
    assert not (old / "module" / "c").exists()  # module id 0 = the fill value: not written then
    assert main(["show", str(old)]) == 0
    captured = capsys.readouterr()
    assert "note: store format 'rmm-dask mask store 1'" in captured.out and "not verified" in captured.out
    assert captured.err == ""
    assert main(["diff", str(store), str(old)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # lines folded to the terminal's width joined again
    assert "0 pixel-planes newly bad (0 distinct pixels), 0 recovered (0 distinct pixels)" in out
    assert f"note: {old}: store format" in out
    np.testing.assert_array_equal(rmm_dask.open_mask(old)["mask"].values, rmm_dask.open_mask(store)["mask"].values)
    # a chunk of it that does not decompress is refused all the same, in one line
    (old / "mask/c/0/0/1/0/0").write_bytes(b"garbage" * 100)
    assert main(["export", str(old), "--to", "nexus", "--out", str(tmp_path / "x.nxs")]) == 2
    one_line_error(capsys, f"{old}: damaged store: chunk mask/c/0/0/1/0/0 cannot be decompressed")
    assert not (tmp_path / "x.nxs").exists()


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _fail_at(step: str, nth: int, err: OSError):
    """A publish hook that raises ``err`` at the ``nth`` time the protocol reaches ``step``."""
    seen = []

    def hook(name):
        seen.append(name)
        if name == step and seen.count(step) == nth:
            raise err

    return hook


@pytest.mark.parametrize(
    "step, nth, needle",
    [
        ("written", 1, "x.h5: cannot write the export: no space left on device (ENOSPC)"),  # the mask file
        ("sealed", 2, "x.geom: cannot publish the geometry lines: "),  # the geometry, once x.h5 is in place
    ],
    ids=["mask-file-fails", "geometry-fails-last"],
)
def test_a_crystfel_export_is_both_files_or_neither(store, tmp_path, capsys, monkeypatch, step, nth, needle):
    out = tmp_path / "out"
    out.mkdir()
    injected = _os_error(errno.ENOSPC if step == "written" else errno.EIO)
    monkeypatch.setattr(publish, "_HOOK", _fail_at(step, nth, injected))
    assert main(["export", str(store), "--to", "crystfel", "--out", str(out / "x.h5")]) == 2
    one_line_error(capsys, needle, "neither x.h5 nor x.geom was published")
    assert os.listdir(out) == []
    monkeypatch.setattr(publish, "_HOOK", None)
    assert main(["export", str(store), "--to", "crystfel", "--out", str(out / "x.h5")]) == 0
    assert sorted(os.listdir(out)) == ["x.geom", "x.h5"]
    # with --overwrite the old mask file is gone once the new one replaced it: the line says what is left
    before = (out / "x.geom").read_text()
    monkeypatch.setattr(publish, "_HOOK", _fail_at("sealed", 2, _os_error(errno.EIO)))
    assert main(["export", str(store), "--to", "crystfel", "--out", str(out / "x.h5"), "--overwrite"]) == 2
    one_line_error(capsys, "the new x.h5 was removed again, x.geom is as it was")
    assert os.listdir(out) == ["x.geom"] and (out / "x.geom").read_text() == before

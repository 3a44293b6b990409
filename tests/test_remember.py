"""A mask that remembers (issue #23, item 3): ``history: {min-fraction, last}`` in nightly.yaml gives each version
the layer ``layers/history``, counted from the pixel history of the nights before it; every export, `rmm show`,
`rmm diff`, `open_mask` and the sanity checks take it into account; a damaged history is rebuilt first, one that
cannot be written holds the version.

One tree of three nights (1 module, 1 cell): nights 1-2 are masked once for the module, each test copies what was
published and masks night 3 its own way."""

import json
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
import zarr

from rmm_dask import history as kernels
from rmm_dask.cli import main
from rmm_dask.exports import CRYSTFEL_HISTORY, EUXFEL_HISTORY, NEXUS_HISTORY
from rmm_dask.nightly.settings import Remember, read_settings
from rmm_dask.synth.nights import plan_nights, write_night, write_nightly_config

from .cli_errors import one_line_error

RULE = {"min-fraction": 0.2, "last": 20}
SMALL = {"onset_night": 2, "heal_after": 2, "seed": 3}


def nightly_config(tmp_path: Path, facility: Path, **extra) -> Path:
    return write_nightly_config(tmp_path / "nightly.yaml", facility, state=tmp_path / "state",
                                publish_dir=tmp_path / "masks", extra={"history": RULE, **extra})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Nights 1 and 2 masked by one pass with ``history: {min-fraction: 0.2, last: 20}`` (published versions and
    state kept as they were), then night 3's runs written into the same tree."""
    root = tmp_path_factory.mktemp("remember")
    facility = root / "facility"
    truth = plan_nights(3, **SMALL)
    for night in (1, 2):
        write_night(facility, truth, night)
    config = nightly_config(root, facility)
    assert main(["nightly", "--config", str(config), "--once"]) == 0
    write_night(facility, truth, 3)
    return root, facility


def night_three(base, tmp_path: Path, capsys, damage=None, code=0, **extra) -> tuple[Path, str]:
    """The published versions of nights 1-2 copied to ``tmp_path``, ``damage(detector directory)`` done to them, and
    night 3 masked by one pass; its exit code checked; the detector directory and the pass's log."""
    root, facility = base
    for name in ("masks", "state"):
        shutil.copytree(root / name, tmp_path / name, symlinks=True)
    det = tmp_path / "masks" / "AGIPD"
    if damage is not None:
        damage(det)
    capsys.readouterr()
    assert main(["nightly", "--config", str(nightly_config(tmp_path, facility, **extra)), "--once"]) == code
    return det, " ".join(capsys.readouterr().out.split())


def mask_of(version: Path) -> np.ndarray:
    return zarr.open_group(version / "mask.zarr", mode="r")["mask"][()]


def expected_layer(det: Path, versions, fraction=0.2) -> np.ndarray:
    """The layer from the masks themselves: planes bad (seen, any bit but ASIC_EDGE) on >= fraction of the nights."""
    bad = sum(kernels.verdicts(mask_of(det / v))[1].astype(int) for v in versions)
    return (bad >= max(1, math.ceil(round(fraction * len(versions), 9)))).astype(np.uint8)


def layer_of(version: Path):
    root = zarr.open_group(version / "mask.zarr", mode="r")
    return root["layers/history"] if "layers" in root and "history" in root["layers"] else None


@pytest.mark.parametrize("value, needles", [
    ({"min-fraction": 0, "last": 20}, ["history: min-fraction must be a number in (0, 1]", "not 0"]),
    ({"min-fraction": 1.5, "last": 20}, ["min-fraction must be a number in (0, 1]", "not 1.5"]),
    ({"min-fraction": "a lot", "last": 20}, ["min-fraction must be a number", "'a lot'"]),
    ({"min-fraction": 0.2, "last": 65}, ["history: last must be a whole number of nights from 1 to 64", "not 65"]),
    ({"min-fraction": 0.2, "last": 2.5}, ["last must be a whole number", "not 2.5"]),
    ({"min-fraction": 0.2}, ["history: last missing"]),
    ({"min-fraction": 0.2, "last": 20, "since": 3}, ["history: unknown keys ['since']; known: ['last', 'min-fraction']"]),
    ("yes", ["history: expected {min-fraction: 0.2, last: 20} (or null), not 'yes'"]),
])
def test_history_setting_checked(tmp_path, capsys, value, needles):
    """A bad ``history:`` (nightly-wide or a detector's) is one line naming the file and the key, exit 2, and
    nothing is created; a detector's own setting wins over the nightly-wide one, ``null`` turns it off."""
    for where in ("nightly", "detector"):
        config = write_nightly_config(tmp_path / f"{where}.yaml", tmp_path / "facility", state=tmp_path / "state",
                                      publish_dir=tmp_path / "masks")
        data = yaml.safe_load(config.read_text())
        (data["nightly"] if where == "nightly" else data["nightly"]["detectors"][0])["history"] = value
        os.chmod(config, 0o644)
        config.write_text(yaml.safe_dump(data))
        assert main(["nightly", "--config", str(config), "--dry-run"]) == 2
        err = one_line_error(capsys, f"rmm nightly: {config}: ", *needles)
        assert ("AGIPD: history:" in err) == (where == "detector") and "invalid setting" not in err
        assert not (tmp_path / "state").exists() and not (tmp_path / "masks").exists()
    data["nightly"]["history"] = RULE
    entry = {k: v for k, v in data["nightly"]["detectors"][0].items() if k != "history"}
    data["nightly"]["detectors"] = [dict(entry, name=n, trees=list(entry["trees"]), **({"history": h} if h != 0 else {}))
                                    for n, h in (("A", 0), ("B", None), ("C", {"min-fraction": 0.5, "last": 3}))]
    config.write_text(yaml.safe_dump(data))
    assert [w.history for w in read_settings(config).detectors] == [Remember(0.2, 20), None, Remember(0.5, 3)]


def test_remembered_kernel():
    """``remembered`` against a count of the bits one by one, with and without the newest nights skipped."""
    rng = np.random.default_rng(1)
    recent = rng.integers(0, 2**63, size=500, dtype=np.uint64) & rng.integers(0, 2**63, size=500, dtype=np.uint64)
    bits = (recent[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)  # bit k: k nights before the newest
    for nights, fraction, skip in ((1, 1.0, 0), (9, 0.2, 0), (20, 0.2, 1), (3, 0.5, 5), (64, 0.3, 0), (10, 0.3, 54)):
        need = max(1, math.ceil(round(fraction * nights, 9)))
        want = bits[:, skip:skip + nights].sum(axis=1) >= need
        got = kernels.remembered(recent, nights, fraction, skip)
        assert got.dtype == np.uint8 and np.array_equal(got, want.astype(np.uint8)), (nights, fraction, skip)
    assert kernels.remembered(np.array([0b11], dtype=np.uint64), 10, 0.2).tolist() == [1]  # 2 of 10: 0.2 x 10 is 2
    with pytest.raises(ValueError, match="the history keeps 64 nights"):
        kernels.remembered(recent, 10, 0.2, 60)


def test_layer_not_in_the_fits(runs, store, tmp_path):
    """The layer changes nothing in the mask, its features and SNRs (bit for bit against the same runs masked
    without one): it is stored apart, as layers/history, as given."""
    import dask.array as da
    import xarray as xr

    from rmm_dask.io import open_run
    from rmm_dask.job import run_mask
    from rmm_dask.pipeline import Params
    from rmm_dask.store import walk_arrays

    darks = {g: open_run(runs / "raw" / f"r{n:04d}") for g, n in (("high", 1), ("medium", 2), ("low", 3))}
    flat = open_run(runs / "raw" / "r0004")
    mask = zarr.open_group(store, mode="r")["mask"]
    given = (np.random.default_rng(0).random(mask.shape) < 0.1).astype(np.uint8)
    layer = xr.DataArray(da.from_array(given, chunks=(1, 3, 2, 512, 128)), dims=("module", "gain", "cell", "y", "x"),
                         attrs={"min_fraction": 0.2, "last": 20, "nights": 1})
    out = run_mask(darks, flat, tmp_path / "m.zarr", params=Params(), detector="AGIPD1M", n_workers=1,
                   echo=lambda _: None, history=layer)
    with_layer = dict(walk_arrays(zarr.open_group(out, mode="r")))
    without = dict(walk_arrays(zarr.open_group(store, mode="r")))
    assert set(with_layer) - set(without) == {"layers/history"}
    for name, arr in without.items():
        assert np.array_equal(arr[()], with_layer[name][()], equal_nan=arr.dtype.kind == "f"), name
    stored = with_layer["layers/history"]
    assert np.array_equal(stored[()], given) and stored.attrs["layer"] == "history" and stored.attrs["last"] == 20


def test_night_three_remembers(base, tmp_path, capsys):
    """Night 3's version has layers/history: its planes bad on >= 20% of nights 1-2 (from their masks), which the
    summary, `rmm show`, `rmm diff`, every export and open_mask report or mask; the flagged fraction and the change
    the sanity check counts are those of what the version masks; the history records the masks' own verdicts; a
    version that replaces night 3 counts nights 1-2 alone."""
    det, log = night_three(base, tmp_path, capsys)
    assert "history layer: bad in >= 20% of the last 20 nights, over 2 night(s) of the pixel history (v0001 .. v0002)" \
        in log and "pass complete: 1 set(s) processed, 0 failed" in log
    assert layer_of(det / "v0001") is None  # the first night: nothing to remember
    assert layer_of(det / "v0002").attrs["versions"] == ["v0001"]
    v3 = det / "v0003"
    layer = layer_of(v3)
    want = expected_layer(det, ["v0001", "v0002"])
    assert np.array_equal(layer[()], want) and dict(layer.attrs) == {
        "min_fraction": 0.2, "last": 20, "nights": 2, "versions": ["v0001", "v0002"],
        "history": str(det / "history.zarr"), "layer": "history"}
    tonight = kernels.verdicts(mask_of(v3))[1]
    kept, union = int((want.astype(bool) & ~tonight).sum()), int((want.astype(bool) | tonight).sum())
    assert kept > 300  # the 100 healed pixels in 3 gains, and intermittent ones good tonight
    summary = json.loads((v3 / "summary.json").read_text())
    assert summary["status"] == "published" and os.readlink(det / "current") == "v0003"
    h = summary["history"]
    assert (h["layer"], h["kept"], h["flagged"], h["planes"], h["nights"]) == (True, kept, union, int(want.sum()), 2)
    assert summary["counts"]["flagged"] == union and summary["counts"]["bad_fraction"] == union / want.size
    assert "A mask that remembers: history layer: bad in &gt;= 20%" in (v3 / "summary.html").read_text()

    # the history holds the masks' verdicts alone: a remembered pixel good tonight is not bad on night 3
    history = zarr.open_group(det / "history.zarr", mode="r")
    assert [n["version"] for n in history.attrs["nights"]] == ["v0001", "v0002", "v0003"]
    assert np.array_equal(history["bad"][()], sum(kernels.verdicts(mask_of(det / f"v000{i}"))[1] for i in (1, 2, 3)))

    # rmm diff: the layer's changes apart from the mask's, and the union's (the sanity check's max-change)
    old_layer, old_mask = layer_of(det / "v0002")[()].astype(bool), mask_of(det / "v0002") != 0
    assert main(["diff", str(det / "v0002" / "mask.zarr"), str(v3 / "mask.zarr"), "--json", str(tmp_path / "d.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    d = json.loads((tmp_path / "d.json").read_text())["history"]
    new_union = want.astype(bool) | (mask_of(v3) != 0)
    assert d["history_newly"] == int((~old_layer & want.astype(bool)).sum())
    assert d["history_cleared"] == int((old_layer & ~want.astype(bool)).sum())
    assert d["union"]["recovered"] == int(((old_layer | old_mask) & ~new_union).sum())
    assert f"history layer: {d['history_newly']} pixel-planes newly remembered" in out
    assert summary["diff"]["history"] == d

    # rmm show: the layer's count apart
    assert main(["show", str(v3 / "mask.zarr")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"kept by the history: {kept} pixel-planes, bad in >= 20% of the last 20 nights (counted over 2" in out

    # every export marks the pixels of the layer with its own bit
    pixels = want.any(axis=(1, 2))[0]  # (y, x) of the one module
    exports = {fmt: tmp_path / f"m.{fmt}.h5" for fmt in ("nexus", "euxfel", "crystfel", "cheetah", "h5")}
    for fmt, path in exports.items():
        assert main(["export", str(v3 / "mask.zarr"), "--to", fmt, "--out", str(path)]) == 0
    with h5py.File(exports["nexus"]) as f:
        words = f["entry/instrument/detector/pixel_mask"][0]  # the store's one module, module 0
        assert np.array_equal((words & NEXUS_HISTORY) != 0, pixels) and NEXUS_HISTORY & 0xFFFF
    with h5py.File(exports["euxfel"]) as f:
        assert np.array_equal(f["history_mask"][()], want.astype(np.uint32) * EUXFEL_HISTORY)
    with h5py.File(exports["crystfel"]) as f:
        assert np.array_equal((f["data/mask"][0] & CRYSTFEL_HISTORY) != 0, pixels)
    assert f"mask3_badbits = {CRYSTFEL_HISTORY:#x}" in exports["crystfel"].with_suffix(".geom").read_text()
    with h5py.File(exports["cheetah"]) as f:
        history_map = f["data/history"][()].reshape(16, 512, 128)[0]
        assert np.array_equal(history_map == 0, pixels) and not f["data/data"][()].reshape(16, 512, 128)[0][pixels].any()
    with h5py.File(exports["h5"]) as f:
        assert np.array_equal(f["layers/history"][()], want)

    from rmm_dask.apply import bad_pixels, open_mask
    from rmm_dask.nightly.remember import history_layer

    ds = open_mask(v3 / "mask.zarr")
    assert np.array_equal(ds["history_mask"].values, want)
    with_layer = bad_pixels(ds).values
    assert np.array_equal(with_layer, bad_pixels(ds, layers=False).values | want.astype(bool).any(axis=1))
    assert np.array_equal(bad_pixels(ds, layers=("history",), gain="low").values,
                          bad_pixels(ds, layers=False, gain="low").values | want[:, 2].astype(bool))

    # a version of night 3's darks with another flat (what a late flat makes) counts the nights before night 3
    # only: the history's night 3 is skipped in its bitset, and the layer is night 3's own again
    runs, said = summary["runs"], []
    again = history_layer(det, {**runs, "flat": runs["flat"] + "-late"}, Remember(0.2, 20), want.shape,
                          ["high", "medium", "low"], said.append)
    assert said == []  # the history was up to date: nothing written
    assert again.attrs["versions"] == ["v0001", "v0002"] and "without night 3 (v0003)" in again.note
    assert np.array_equal(again.data.values, want)
    other = history_layer(det, {"dark-high": "elsewhere"}, Remember(0.2, 20), (1, 3, 2, 512, 128),
                          ["high", "medium", "low"], said.append)
    assert other.data is None and other.problem is None and "holds pixel-planes (1, 3, 1, 512, 128)" in other.note


def test_damaged_history_rebuilt_first(base, tmp_path, capsys):
    """A history damaged at masking time is rebuilt from the published versions before the layer is read: night 3
    gets the same layer as from a sound history, and the log says why it was rebuilt."""
    def damage(det):
        chunk = next((det / "history.zarr" / "recent").glob("c.*"))
        os.chmod(chunk, 0o644)
        chunk.write_bytes(chunk.read_bytes()[:-4] + b"\0\0\0\0")

    det, log = night_three(base, tmp_path, capsys, damage)
    assert "AGIPD history: rebuilt from 2 published version(s), as it was damaged: chunk recent/c." in log
    assert np.array_equal(layer_of(det / "v0003")[()], expected_layer(det, ["v0001", "v0002"]))
    assert json.loads((det / "v0003" / "summary.json").read_text())["status"] == "published"


def test_unwritable_history_holds(base, tmp_path, capsys):
    """A history that cannot be brought up to date (a symbolic link planted at its name): night 3 is published
    without the layer and held (its reason says why), current stays, the pass exits 1; nothing is written
    through the link."""
    elsewhere = tmp_path / "elsewhere"

    def plant(det):
        shutil.move(det / "history.zarr", elsewhere)
        os.symlink(elsewhere, det / "history.zarr")

    det, log = night_three(base, tmp_path, capsys, plant, code=1)
    summary = json.loads((det / "v0003" / "summary.json").read_text())
    assert summary["status"] == "held" and os.readlink(det / "current") == "v0002"
    assert any(r.startswith("no history layer (bad in >= 20% of the last 20 nights): the pixel history could not be"
                            " brought up to date or read") and "symbolic link" in r for r in summary["reasons"])
    assert layer_of(det / "v0003") is None and summary["history"]["layer"] is False
    assert "AGIPD history: not updated:" in log and "symbolic link" in log
    assert [n["version"] for n in zarr.open_group(elsewhere, mode="r").attrs["nights"]] == ["v0001", "v0002"]

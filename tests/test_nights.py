"""The synthetic facility tree of nights (issue #23): what is planted, that `rmm nightly` finds one set per
night, that each night's published mask flags that night's bad pixels and no others, and the truth file."""

import dataclasses
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from rmm_dask.cli import main
from rmm_dask.errors import InputError
from rmm_dask.synth.model import Defect
from rmm_dask.synth.nights import (
    TRUTH_NAME,
    VARYING,
    NightKind,
    NightsPlan,
    flagged_pixels,
    plan_nights,
    read_truth_nights,
    score_night,
    tree_of,
    write_night,
    write_nightly_config,
    write_nights,
)

NIGHTS = 3  #: the smallest tree that shows every kind change: onset from night 2, healed after night 2
SMALL = {"onset_night": 2, "heal_after": 2}


def same_truth(a, b) -> None:
    """Assert two NightsTruth are equal: the plan and every array, dtype included."""
    assert a.plan == b.plan
    for field in dataclasses.fields(a):
        if field.name != "plan":
            x, y = getattr(a, field.name), getattr(b, field.name)
            assert x.dtype == y.dtype and np.array_equal(x, y), field.name


def test_plan_of_ten_nights():
    """The acceptance tree's pattern: 300 intermittent pixels bad on 3 of 10 nights each, 100 from night 4,
    100 up to night 6; always-bad pixels every night, always-good and edge pixels never; drawn from the seed."""
    truth = plan_nights(10, seed=0)
    counts = {k: int(truth.of_kind(k).sum()) for k in NightKind}
    assert counts[NightKind.INTERMITTENT] == 300 and counts[NightKind.ONSET] == 100 and counts[NightKind.HEALING] == 100
    assert counts[NightKind.ALWAYS_BAD] > 1000 and counts[NightKind.EDGE] == int(truth.edges.sum())
    assert sum(counts.values()) == 512 * 128
    per_night = truth.bad.transpose(1, 2, 3, 0)  # (module, y, x, night)
    assert (per_night[truth.of_kind(NightKind.INTERMITTENT)].sum(axis=1) == 3).all()
    assert (per_night[truth.of_kind(NightKind.ONSET)] == (np.arange(1, 11) >= 4)).all()
    assert (per_night[truth.of_kind(NightKind.HEALING)] == (np.arange(1, 11) <= 6)).all()
    assert per_night[truth.of_kind(NightKind.ALWAYS_BAD)].all()
    assert not per_night[truth.of_kind(NightKind.ALWAYS_GOOD) | truth.of_kind(NightKind.EDGE)].any()
    # every night a different ~30% of the intermittent pixels; each pixel on a night of its own choice
    share = truth.bad[:, truth.of_kind(NightKind.INTERMITTENT)].mean(axis=1)
    patterns = {tuple(row) for row in per_night[truth.of_kind(NightKind.INTERMITTENT)]}
    assert ((0.2 < share) & (share < 0.4)).all() and len(patterns) > 50
    # the varying pixels are clean in the detector's own truth, and each hot or noisy
    varying = np.isin(truth.kind, VARYING)
    assert not (truth.defects != 0).any(axis=(1, 2))[varying].any() and not truth.edges[varying[0]].any()
    assert set(np.unique(truth.how[varying])) == {int(Defect.HOT), int(Defect.NOISY)} and not truth.how[~varying].any()
    assert (truth.strength[truth.how == Defect.HOT] >= 375).all()  # ADU: >= 14 robust sigmas of the offsets
    assert (truth.strength[truth.how == Defect.NOISY] >= 3).all()  # times the pixel's own noise
    assert truth.runs[3].tolist() == [13, 14, 15, 16] and np.allclose(np.diff(truth.times[:, 0]), 86400)
    same_truth(truth, plan_nights(10, seed=0))
    assert not np.array_equal(plan_nights(10, seed=1).kind, truth.kind)


def test_nights_masked_by_the_nightly_service(tmp_path, capsys):
    """Three nights written as one tree: `rmm nightly --dry-run` finds three sets, each of a night's runs
    with its own flat; one `--once` pass publishes a version per night, and each night's mask flags >= 99%
    of the pixels planted bad that night and at most 1e-4 of the always-good pixels; the truth file reads
    back equal to what was returned; writing the tree again is refused and changes nothing."""
    facility = tmp_path / "facility"
    truth = write_nights(facility, NIGHTS, seed=3, **SMALL)
    config = write_nightly_config(tmp_path / "nightly.yaml", facility, state=tmp_path / "state",
                                  publish_dir=tmp_path / "masks")
    runs = sorted(p.name for p in tree_of(facility).iterdir())
    assert runs == [f"r{n:04d}" for n in range(1, 4 * NIGHTS + 1)]
    assert sorted(p.name for p in facility.iterdir()) == ["p700000", TRUTH_NAME]
    for night in range(1, NIGHTS + 1):  # the files carry the night's time: a day apart, 10 min between runs
        for number, when in zip(truth.runs[night - 1], truth.times[night - 1]):
            files = list((tree_of(facility) / f"r{number:04d}").iterdir())
            assert len(files) == 1 and files[0].stat().st_mtime == when

    assert main(["nightly", "--config", str(config), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for night in range(1, NIGHTS + 1):
        flat, high, medium, low = (f"r{n:04d}" for n in truth.runs[night - 1])
        assert f"would mask: AGIPD: dark-high {high}, dark-medium {medium}, dark-low {low}, flat {flat}" in out
        assert f"flat {flat}, 10 min before its darks" in out
    assert f"dry run: {NIGHTS} set(s) would be processed; nothing was changed" in out
    assert not (tmp_path / "state").exists() and not (tmp_path / "masks").exists()

    assert main(["nightly", "--config", str(config), "--once"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"pass complete: {NIGHTS} set(s) processed, 0 failed" in out
    published = tmp_path / "masks" / "AGIPD"
    assert sorted(p.name for p in published.glob("v*")) == ["v0001", "v0002", "v0003"]  # (beside them: the history)
    assert os.readlink(published / "current") == "v0003"
    for night in range(1, NIGHTS + 1):
        version = published / f"v{night:04d}"
        summary = json.loads((version / "summary.json").read_text())
        assert summary["status"] == "published"
        mask = zarr.open_group(version / "mask.zarr", mode="r")["mask"][()]
        assert mask.shape == (1, 3, 1, 512, 128)
        scores = score_night(flagged_pixels(mask), truth, night)
        kinds = scores["kinds"]
        assert scores["recall"] >= 0.99, (night, kinds)
        assert scores["false_positive_fraction"] <= 1e-4, (night, kinds["ALWAYS_GOOD"])
        for kind in ("INTERMITTENT", "ONSET", "HEALING"):  # found on their bad nights, not on their good ones
            found, flagged = kinds[kind]["found"], kinds[kind]["flagged"]
            assert found >= 0.99 * kinds[kind]["bad"] and flagged <= 1, (night, kind, kinds[kind])
        assert kinds["ONSET"]["bad"] == (100 if night >= 2 else 0)
        assert kinds["HEALING"]["bad"] == (100 if night <= 2 else 0)
        assert 50 < kinds["INTERMITTENT"]["bad"] < 150  # one night in three of each intermittent pixel

    truth_file = facility / TRUTH_NAME
    same_truth(read_truth_nights(truth_file), truth)
    before = truth_file.stat()
    with pytest.raises(InputError, match="r0001: exists and is not an empty directory; not overwriting it"):
        write_nights(facility, NIGHTS, seed=3, **SMALL)
    assert truth_file.stat().st_mtime_ns == before.st_mtime_ns and len(list(tree_of(facility).iterdir())) == 4 * NIGHTS


def test_truth_file_refused_when_not_one(tmp_path):
    """Reading a missing file, an HDF5 file that is not a nights truth, or another file: InputError naming it."""
    with pytest.raises(InputError, match="no such file"):
        read_truth_nights(tmp_path / TRUTH_NAME)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["bad"] = np.zeros((1, 1, 2, 2), dtype=bool)
    with pytest.raises(InputError, match="not a truth file of nights: missing attribute nights") as err:
        read_truth_nights(other)
    assert str(other) in str(err.value)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(InputError) as err:
        read_truth_nights(text)
    assert str(text) in str(err.value)


def test_night_in_the_future_refused(tmp_path):
    """A night whose runs would carry a future time would wait for a flat forever: refused, nothing written."""
    truth = plan_nights(2, start=NightsPlan().start + 10 * 365 * 86400)
    with pytest.raises(ValueError, match="night 1 would be taken in the future"):
        write_night(tmp_path / "facility", truth, 1)
    assert not (tmp_path / "facility").exists()
    assert not list(Path(tmp_path).iterdir())


def test_ten_nights_remembered(tmp_path, capsys):
    """Issue #23's acceptance: the 10-night tree (the NightsPlan defaults: 300 intermittent pixels bad on 3 nights
    each, 100 from night 4, 100 up to night 6) masked by one pass with ``history: {min-fraction: 0.2, last: 20}``.
    The history's counts are the published masks' verdicts exactly, and per pixel those of the truth; night 10's
    remembering mask (mask | layers/history) catches every intermittent pixel (its mask alone ~30%), flags the
    healed ones while within ``last`` (with last: 3, nights 7-9, none), and at most 1e-4 of the always-good."""
    from rmm_dask import history as kernels

    facility = tmp_path / "facility"
    truth = write_nights(facility, 10)
    config = write_nightly_config(tmp_path / "nightly.yaml", facility, state=tmp_path / "state",
                                  publish_dir=tmp_path / "masks", extra={"history": {"min-fraction": 0.2, "last": 20}})
    assert main(["nightly", "--config", str(config), "--once"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pass complete: 10 set(s) processed, 0 failed" in out
    det = tmp_path / "masks" / "AGIPD"
    versions = [f"v{n:04d}" for n in range(1, 11)]
    masks = [zarr.open_group(det / v / "mask.zarr", mode="r")["mask"][()] for v in versions]
    assert all(json.loads((det / v / "summary.json").read_text())["status"] == "published" for v in versions)

    # the history: every counter as the masks' verdicts give it, and per pixel the truth's nights bad
    history = zarr.open_group(det / "history.zarr", mode="r")
    assert [n["version"] for n in history.attrs["nights"]] == versions
    seen, bad = (np.sum(x, axis=0) for x in zip(*(kernels.verdicts(m) for m in masks)))
    assert np.array_equal(history["seen"][()], seen) and np.array_equal(history["bad"][()], bad)
    assert (seen == 10).all()  # every plane has data every night
    per_pixel = kernels.bad_in_last(kernels.pixel_recent(history["recent"][()], (1, 2)), 10)  # (module, y, x)
    nights_bad = truth.nights_bad()
    for kind in (*VARYING, NightKind.ALWAYS_GOOD, NightKind.ALWAYS_BAD):
        of = truth.of_kind(kind)
        assert np.array_equal(per_pixel[of], nights_bad[of]), (kind.name, int((per_pixel[of] != nights_bad[of]).sum()))
    assert not per_pixel[truth.of_kind(NightKind.EDGE)].any()  # edges are geometry: never a bad night

    # night 10: its layer is the history's nights 1-9, and the remembering mask catches what the truth planted
    root = zarr.open_group(det / "v0010" / "mask.zarr", mode="r")
    layer = root["layers/history"]
    assert layer.attrs["nights"] == 9 and layer.attrs["versions"] == versions[:9]
    assert np.array_equal(layer[()], kernels.remembered(history["recent"][()], 9, 0.2, skip=1))
    tonight = flagged_pixels(masks[-1])
    remembering = tonight | layer[()].astype(bool).any(axis=(1, 2))
    intermittent = truth.of_kind(NightKind.INTERMITTENT)
    alone, caught = (np.count_nonzero(x & intermittent) / intermittent.sum() for x in (tonight, remembering))
    assert 0.2 < alone < 0.4 and caught >= 0.99, (alone, caught)
    healing = truth.of_kind(NightKind.HEALING)
    assert not (tonight & healing).any() and (remembering & healing).sum() >= 0.99 * healing.sum()
    within_3 = kernels.remembered(history["recent"][()], 3, 0.2, skip=1).astype(bool).any(axis=(1, 2))
    assert not (within_3 & healing).any()  # last: 3 is nights 7-9, all good for them
    good = truth.of_kind(NightKind.ALWAYS_GOOD)
    assert np.count_nonzero(remembering & good) <= 1e-4 * good.sum()
    summary = json.loads((det / "v0010" / "summary.json").read_text())
    assert summary["history"]["kept"] > 0 and summary["counts"]["bad_fraction"] <= 0.10

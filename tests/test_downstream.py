"""Downstream programs: the DIALS mask path (rmm_dask.dials_mask) and CrystFEL's geometry lines, on real exports.

Small detectors of our own (YAML) give real stores in a second: a full frame of two modules
with a gap between them (as PILATUS, EIGER, a JUNGFRAU full frame), three modules written
apart (as a LAMBDA 2M's module files) and one module alone (a LAMBDA 750K). DIALS itself
runs in `make validate`; here only where it is installed (the pickle read back by DIALS).
"""

import json
import os
import shutil
import subprocess

import dask
import h5py
import numpy as np
import pytest

from rmm_dask import dials_mask
from rmm_dask.detectors import get_detector
from rmm_dask.exports import export, parse_geometry
from rmm_dask.io import open_run
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store

from .cli_errors import one_line_error

LAYOUTS = {
    "frame": "modules: 2\nmodule-grid: [2, 1]\nmodule-gap: [3, 0]\n",  # a (35, 24) frame, rows 16-18 a gap
    "files": "modules: 3\n",  # modules stored apart: (frame, 3, 16, 24)
    "one": "modules: 1\n",  # one module: (frame, 16, 24)
}
HOT = [(0, 2, 3), (1, 9, 20)]  #: (module, y, x) of the planted hot pixels (module 1: in every layout but "one")


@pytest.fixture(scope="module", params=list(LAYOUTS))
def made(request, tmp_path_factory):
    """(layout, detector, store, user mask) of a dark run with hot pixels, and a user mask, in one of the layouts."""
    layout = request.param
    out = tmp_path_factory.mktemp(layout)
    yaml = out / f"{layout}.yaml"
    yaml.write_text(f"name: TINY-{layout.upper()}\n{LAYOUTS[layout]}module-shape: [16, 24]\nasic-shape: [8, 12]\n"
                    "counting: false\ndataset: /data\n")
    det = get_detector(str(yaml))
    modules = np.random.default_rng(3).normal(1000, 5, (40, det.n_modules, 16, 24)).astype(np.float32)
    for m, y, x in HOT:
        if m < det.n_modules:
            modules[:, m, y, x] += 400
    frames = det.join_frame(modules) if det.frame_shape else (modules[:, 0] if det.n_modules == 1 else modules)
    with h5py.File(out / "dark.h5", "w") as f:
        f["data"] = frames
    user = np.zeros((det.n_modules, 16, 24), np.uint8)
    user[-1, 12:14, 0:5] = 1  # a beamstop's shadow on the last module
    darks = {"high": open_run(out / "dark.h5", str(yaml), dataset="data")}
    ds = build_mask(darks, detector=det, user_mask=user)
    store = write_store(ds, out / "m.zarr", compute=lambda c: dask.compute(c, scheduler="sync"))
    return layout, det, store, user


def experiments(path, panels) -> str:
    """A DIALS experiment list's detector part (what dials_mask reads): panels as (slow, fast)."""
    detector = {"panels": [{"name": f"p{i}", "image_size": [fast, slow]} for i, (slow, fast) in enumerate(panels)]}
    path.write_text(json.dumps({"__id__": "ExperimentList", "experiment": [], "detector": [detector, detector]}))
    return str(path)


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------------------- DIALS


def test_dials_panels_from_the_nexus_export(made, tmp_path):
    """The export's NXdetector_module slices split the mask as dxtbx splits a master's: one panel per module,
    or the whole frame in one panel, or one module's with --module; bad = any NeXus reject bit."""
    layout, det, store, user = made
    (nexus,) = export(store, "nexus", tmp_path / "m.nxs")
    with h5py.File(nexus) as f:
        pixel_mask = f["entry/instrument/detector/pixel_mask"][()]
    stack = det.split_frame(pixel_mask) if det.frame_shape else pixel_mask
    for m, y, x in HOT:
        if m < det.n_modules:
            assert stack[m, y, x] & 16  # noisy: found by the mask maker
    assert ((stack & 256) != 0).tolist() == (user != 0).tolist()  # the user's layer

    per_module = dials_mask.dials_panels(nexus, experiments(tmp_path / "n.expt", [(16, 24)] * det.n_modules))
    assert len(per_module) == det.n_modules
    for m, good in enumerate(per_module):
        assert good.shape == (16, 24) and good.tolist() == ((stack[m] & 0xFFFF) == 0).tolist()
    assert all(not per_module[m][y, x] for m, y, x in HOT if m < det.n_modules)
    assert not per_module[-1][12:14, 0:5].any()  # the beamstop
    last = dials_mask.dials_panels(nexus, experiments(tmp_path / "one.expt", [(16, 24)]), module=det.n_modules - 1)
    assert [p.tolist() for p in last] == [per_module[-1].tolist()]
    if det.frame_shape:  # one panel: the whole frame, gaps bad (NeXus bit 0)
        (whole,) = dials_mask.dials_panels(nexus, experiments(tmp_path / "f.expt", [det.frame_shape]))
        assert whole.shape == (35, 24) and not whole[16:19].any()
        assert whole.tolist() == ((pixel_mask & 0xFFFF) == 0).tolist()


def test_dials_mask_refuses_a_layout_that_does_not_match(made, tmp_path, capsys):
    """Wrong panels, a module that is not there, no export, an existing --out: exit 2, one line, nothing published."""
    layout, det, store, _ = made
    (nexus,) = export(store, "nexus", tmp_path / "m.nxs")
    wrong = experiments(tmp_path / "wrong.expt", [(619, 487)])
    out = tmp_path / "mask.pickle"
    assert dials_mask.main([str(nexus), wrong, "--out", str(out)]) == 2
    one_line_error(capsys, "rmm dials-mask:", "wrong.expt", "its detector has 1 panel of 619 x 487 (slow x fast)",
                   "m.nxs", "nothing was published")
    assert dials_mask.main([str(nexus), wrong, "--out", str(out), "--module", "7"]) == 2
    one_line_error(capsys, "m.nxs", "has no module 7", f"--module 0-{det.n_modules - 1}", "nothing was published")
    assert dials_mask.main([str(tmp_path / "wrong.expt"), wrong, "--out", str(out)]) == 2  # JSON is no HDF5 export
    one_line_error(capsys, "wrong.expt", "not readable as an rmm NeXus export", "nothing was published")
    out.write_bytes(b"keep")
    ok = experiments(tmp_path / "ok.expt", [(16, 24)])
    assert dials_mask.main([str(nexus), ok, "--out", str(out), "--module", "0"]) == 2
    one_line_error(capsys, "mask.pickle", "exists already")
    assert out.read_bytes() == b"keep"
    assert listing(tmp_path) == ["m.nxs", "mask.pickle", "ok.expt", "wrong.expt"]


DIALS = shutil.which("dials.import")


@pytest.mark.skipif(DIALS is None, reason="DIALS not installed (apt-get install dials); `make validate` runs it")
def test_the_pickle_is_what_dials_reads(made, tmp_path, capsys):
    """With DIALS installed: the published pickle, loaded by DIALS' Python, is one flex.bool per panel, as split."""
    layout, det, store, _ = made
    (nexus,) = export(store, "nexus", tmp_path / "m.nxs")
    expt = experiments(tmp_path / "n.expt", [(16, 24)] * det.n_modules)
    out = tmp_path / "mask.pickle"
    assert dials_mask.main([str(nexus), expt, "--out", str(out)]) == 0
    assert "written:" in capsys.readouterr().out and out.stat().st_mode & 0o222 == 0  # published read-only
    read = ("import pickle, sys\nmask = pickle.load(open(sys.argv[1], 'rb'))\n"
            "print(type(mask).__name__, [list(m.all()) for m in mask], [m.count(False) for m in mask])")
    done = subprocess.run([dials_mask.dials_python(), "-c", read, str(out)], capture_output=True, text=True, check=True)
    expected = [int((~p).sum()) for p in dials_mask.dials_panels(nexus, expt)]
    assert done.stdout.split(" [", 1)[0] == "tuple" and f"{[[16, 24]] * det.n_modules} {expected}" in done.stdout
    assert listing(tmp_path) == ["m.nxs", "mask.pickle", "n.expt"]


# ---------------------------------------------------------------------------- CrystFEL


def test_crystfel_geometry_panels_cover_the_mask(made, tmp_path):
    """Every panel's fs/ss range lies in the mask dataset, the panels overlap nowhere and cover every pixel
    of every module (the gaps of a full frame: none), and the dims say how the mask is laid out."""
    layout, det, store, _ = made
    mask_file, geom_file = export(store, "crystfel", tmp_path / "m.crystfel.h5")
    text = geom_file.read_text()
    top, panels = parse_geometry(text)
    with h5py.File(top["mask0_file"]) as f:
        assert top["mask0_data"] in f
        shape = f[top["mask0_data"]].shape
    dims = [top.get(f"dim{i}") for i in range(4)]
    stacked = layout == "files"
    assert dims == (["%", None, "ss", "fs"] if stacked else ["%", "ss", "fs", None])
    data_dims = sum(d is not None for d in dims) + stacked  # and each panel's own dim1 = <module>
    assert len(shape) == data_dims - 1  # the mask: the data's layout less the frame axis (CrystFEL skips it)
    covered = np.zeros(shape, int)
    assert sorted(panels) == [f"m{m}" for m in range(det.n_modules)]
    for name, p in panels.items():
        assert {"min_fs", "max_fs", "min_ss", "max_ss", "fs", "ss"} <= set(p)
        fs, ss = slice(int(p["min_fs"]), int(p["max_fs"]) + 1), slice(int(p["min_ss"]), int(p["max_ss"]) + 1)
        assert 0 <= fs.start < fs.stop <= shape[-1] and 0 <= ss.start < ss.stop <= shape[-2]
        if stacked:
            assert p["dim1"] == name[1:]
            covered[int(p["dim1"]), ss, fs] += 1
        else:
            assert "dim1" not in p
            covered[ss, fs] += 1
    assert covered.max() == 1  # no pixel in two panels
    modules = ~det.gap_mask() if det.frame_shape else np.ones(shape, bool)
    assert (covered == 1).tolist() == modules.tolist()  # every module pixel in one panel, the gaps in none
    if det.frame_shape:
        corners = [(panels[f"m{m}"]["corner_x"], panels[f"m{m}"]["corner_y"]) for m in range(2)]
        assert corners == [("0", "0"), ("0", "19")]  # where each module lies in the frame
    else:
        assert "; add: m0/corner_x = ..." in text and "corner_x" not in panels["m0"]  # positions are the user's
    assert "; add: clen =" in text and "; add: photon_energy =" in text
    assert "; add: res =" in text  # TINY has no known pixel size
    assert ("join the module files" in text) == stacked

"""From an rmm mask to DIALS: the ``mask.pickle`` that ``dials.import ... mask=mask.pickle`` applies.

::

    rmm export m.zarr --to nexus --out m.nxs
    dials.import DATA... output.experiments=imported.expt       # the panels of your data
    python -m rmm_dask.dials_mask m.nxs imported.expt --out mask.pickle
    dials.import DATA... mask=mask.pickle                       # now masked, on top of dxtbx's own mask

Why a pickle: dxtbx applies the ``pixel_mask`` of the data's own NXmx master (any non-zero
value masked, one slice per ``NXdetector_module``: dxtbx/nexus ``get_static_mask``) but reads
no mask from another file; CBF, LAMBDA and other formats have none. DIALS takes an external
mask only as a pickled tuple of one ``flex.bool`` per panel of the imported detector, in panel
order, each ``(slow, fast)`` = the panel's ``image_size`` reversed, True = good.

The panels come from the ``nexus`` export's ``pixel_mask`` by dxtbx's own rule for NXmx
masters: module k's pixels are ``pixel_mask[data_origin : data_origin + data_size]`` of the
export's k-th ``NXdetector_module`` (full frames: its place in the frame; stacks: ``[k]``):

* the detector has one panel per module (a multi-panel import): panel k = module k;
* it has one panel (a PILATUS CBF, an EIGER NXmx, one LAMBDA module's file): the whole
  ``pixel_mask`` when it is that panel's frame, or one module's with ``--module K`` (rmm's
  module number: 0 for a LAMBDA's ``_m1`` file); a one-module export needs no ``--module``;
* anything else is refused, naming both layouts; nothing is published.

A pixel is bad where any of the NeXus reject bits 0-15 is set (rmm's bits, the user's and the
manufacturer's layers, the gaps between modules); bit 31 alone (a LAMBDA's virtual pixels,
information only) is not. The pickle is written by DIALS' own Python (``dials.python``, else the
interpreter ``dials.import`` runs with: Debian's ``/usr/bin/python3``, or ``--dials-python``),
running :mod:`rmm_dask.dials_pickle`, and published as every rmm output is
(:func:`rmm_dask.publish.output`: complete or not at all, read-only, ``--overwrite`` to replace).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from . import publish
from .chips import NEXUS_REJECT
from .errors import InputError, printable

__all__ = ["dials_panels", "experiment_panels", "export_modules", "write_pickle", "main"]

PIXEL_MASK = "entry/instrument/detector/pixel_mask"
PICKLER = Path(__file__).with_name("dials_pickle.py")


def export_modules(nexus) -> tuple[np.ndarray, list[tuple[slice, ...]]]:
    """The ``nexus`` export's ``pixel_mask`` (uint32) and each module's slices into it, in module order.

    The slices are the ``data_origin``/``data_size`` of its ``NXdetector_module`` groups; an
    export written before it had them is one module (a 2-D mask) or one per ``[k]`` (a stack).
    """
    if not os.path.isfile(nexus):
        raise InputError(nexus, "no such file")
    try:
        with h5py.File(nexus, "r") as f:
            if PIXEL_MASK not in f:
                raise InputError(nexus, f"no /{PIXEL_MASK}: not an rmm `export --to nexus` file")
            pixel_mask = f[PIXEL_MASK][()]
            detector = f[PIXEL_MASK].parent
            groups = [g for _, g in sorted(detector.items()) if isinstance(g, h5py.Group)
                      and g.attrs.get("NX_class") in ("NXdetector_module", b"NXdetector_module")]
            slices = [tuple(slice(int(a), int(a) + int(n)) for a, n in zip(g["data_origin"][()], g["data_size"][()]))
                      for g in groups]
    except (OSError, KeyError) as err:
        raise InputError(nexus, f"not readable as an rmm NeXus export ({type(err).__name__}: {err})") from None
    if pixel_mask.ndim not in (2, 3):
        raise InputError(nexus, f"pixel_mask has {pixel_mask.ndim} dimensions, not 2 (frames) or 3 (module stack)")
    if not slices:
        slices = [(slice(None),) * 2] if pixel_mask.ndim == 2 else [(k,) for k in range(pixel_mask.shape[0])]
    return pixel_mask, slices


def experiment_panels(experiments) -> list[tuple[int, int]]:
    """(slow, fast) of each panel of the detector in a DIALS experiment list (``.expt``: JSON), in panel order."""
    try:
        with open(experiments, "rb") as f:
            detectors = json.load(f)["detector"]
        layouts = {tuple((int(p["image_size"][1]), int(p["image_size"][0])) for p in d["panels"]) for d in detectors}
    except OSError as err:
        raise InputError(experiments, f"cannot be read ({err.strerror})") from None
    except (ValueError, KeyError, TypeError, IndexError) as err:
        problem = f"not a DIALS experiment list with a detector ({type(err).__name__}: {err})"
        raise InputError(experiments, problem) from None
    if not layouts:
        raise InputError(experiments, "has no detector: `dials.import` the images first")
    if len(layouts) != 1:
        raise InputError(experiments, f"holds {len(layouts)} detector layouts: import one detector's images at a time")
    return list(layouts.pop())


def dials_panels(nexus, experiments, module: int | None = None) -> list[np.ndarray]:
    """One bool array per panel of ``experiments`` (True = good) from the ``nexus`` export, by the rules above."""
    pixel_mask, slices = export_modules(nexus)
    panels = experiment_panels(experiments)
    modules = [pixel_mask[s].reshape(pixel_mask[s].shape[-2:]) for s in slices]
    described = (f"{len(modules)} module{'s' if len(modules) > 1 else ''} of {_shape(modules[0].shape)} "
                 f"in a {_shape(pixel_mask.shape)} pixel_mask")
    if module is not None:
        if not 0 <= module < len(modules):
            raise InputError(nexus, f"has no module {module}: it holds {described} (--module 0-{len(modules) - 1})")
        chosen = [modules[module]]
    elif len(panels) == len(modules) and len(panels) > 1:
        chosen = modules
    elif len(panels) == 1 and pixel_mask.ndim == 2:
        chosen = [pixel_mask]
    elif len(panels) == 1 and len(modules) == 1:
        chosen = modules
    else:
        raise InputError(experiments, f"its detector has {_panels(panels)}, {os.fspath(nexus)} {described}: "
                         "no panel layout matches (one module's own file: give --module K); nothing was published")
    if [m.shape for m in chosen] != panels:
        raise InputError(experiments, f"its detector has {_panels(panels)}, but the mask gives "
                         f"{_panels([m.shape for m in chosen])} from {os.fspath(nexus)}: nothing was published")
    return [(m & NEXUS_REJECT) == 0 for m in chosen]


def _shape(shape) -> str:
    return " x ".join(str(n) for n in shape)


def _panels(shapes) -> str:
    """'1 panel of 619 x 487' or '3 panels: 195 x 487, ...' (slow x fast)."""
    if len(set(shapes)) == 1:
        return f"{len(shapes)} panel{'s' if len(shapes) > 1 else ''} of {_shape(shapes[0])} (slow x fast)"
    listed = ", ".join(_shape(s) for s in shapes[:4]) + (", ..." if len(shapes) > 4 else "")
    return f"{len(shapes)} panels: {listed} (slow x fast)"


def dials_python(given: str | None = None) -> str:
    """The Python that runs DIALS: ``given``, ``dials.python`` on PATH, or the one ``dials.import``'s ``#!`` names."""
    if given:
        return given
    found = shutil.which("dials.python")
    if found:
        return found
    script = shutil.which("dials.import")
    if script:
        with open(script, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
        words = first[2:].split() if first.startswith("#!") else []
        if words and Path(words[0]).name == "env" and len(words) > 1:  # #!/usr/bin/env python3
            return shutil.which(words[-1]) or words[-1]
        if words:
            return words[0]
    raise InputError("dials.import", "not found on PATH: install DIALS (Debian: apt-get install dials), "
                     "or give --dials-python")


def write_pickle(panels: list[np.ndarray], out, *, python: str | None = None, overwrite: bool = False) -> Path:
    """Publish ``panels`` as DIALS' ``mask.pickle`` at ``out``, written by DIALS' Python running dials_pickle.py."""
    python = dials_python(python)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"panel{i}": p for i, p in enumerate(panels)})
    with publish.output(out, overwrite=overwrite, what="the DIALS mask") as tmp:
        try:
            done = subprocess.run([python, os.fspath(PICKLER), os.fspath(tmp.tmp)], input=buffer.getvalue(),
                                  capture_output=True, timeout=600)
        except OSError as err:
            raise InputError(python, f"cannot run DIALS' Python ({err.strerror}); nothing was published") from None
        if done.returncode:
            last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
            raise InputError(python, f"could not write the DIALS mask ({last}; is this DIALS' Python? --dials-python); "
                             "nothing was published")
    return tmp.target


def main(argv: list[str] | None = None) -> int:
    """``python -m rmm_dask.dials_mask NEXUS EXPERIMENTS --out mask.pickle``: 0 published, 2 a user error (one line)."""
    parser = argparse.ArgumentParser(prog="python -m rmm_dask.dials_mask", description=__doc__.split("\n\n")[0])
    parser.add_argument("nexus", help="the mask as `rmm export STORE --to nexus --out FILE` wrote it")
    parser.add_argument("experiments", help="`dials.import`'s experiment list (.expt) of the data to mask")
    parser.add_argument("--out", required=True, help="the pickle to write, for `dials.import ... mask=FILE`")
    parser.add_argument("--module", type=int, help="one module's mask (rmm's module number), for a module's own file")
    parser.add_argument("--dials-python", help="the Python DIALS runs in (default: dials.python, or dials.import's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        publish.prepare(args.out, overwrite=args.overwrite, what="the DIALS mask")  # before anything is read
        panels = dials_panels(args.nexus, args.experiments, args.module)
        path = write_pickle(panels, args.out, python=args.dials_python, overwrite=args.overwrite)
    except InputError as err:
        problem = err.problem if "published" in err.problem else f"{err.problem}; nothing was published"
        print(printable(f"rmm dials-mask: {err.path}: {problem}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(printable(f"rmm dials-mask: interrupted; {args.out} was not published"), file=sys.stderr)
        return 130
    bad = sum(int((~p).sum()) for p in panels)
    print(printable(f"written: {path} ({_panels([p.shape for p in panels])}, {bad} pixels masked); "
                    f"use it as: dials.import ... mask={path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

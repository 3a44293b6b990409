"""Fault campaign cases of issue 22 (figures): what `rmm show --png` draws of a mask, read back from the PNGs.

A LAMBDA GaAs module (516 x 1554, gap columns, its pixel mask with dead pixels and 20 more rejects planted
on good pixels) masked by `rmm mask`: verdict.png draws rmm's verdict against that pixel mask (known, new,
not confirmed, gaps) in its colours, the mask figure draws the gaps and the manufacturer's rejects in
theirs; a two-module AGIPD mask gets its SNR histograms per module. Damaged layer and SNR chunks are
refused in one line with nothing published. Registered into benchmarks/fault_campaign.py (``make campaign``)
by :func:`register`.
"""

from __future__ import annotations

import os

#: a LAMBDA GaAs series of one module (argv[1]: its directory), 10 dark frames, gap columns, and the
#: manufacturer's pixel mask with 20 rejects more (dead, row 5, columns 100-119: good pixels for rmm) and
#: 10 hot pixels (row 7, columns 200-209: 40 counts a frame) that it marks noisy (known to both)
LAMBDA_SNIPPET = """
import sys
import numpy as np
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.counting import LAMBDA_GAAS, LAMBDA_GAAS_GAP
from rmm_dask.synth.write_lambda import write_lambda_run
calib = synthesize(SynthConfig(detector=LAMBDA_GAAS, modules=1, cells=1, frames=10, flat_frames=10,
                               gap_columns=LAMBDA_GAAS_GAP, seed=22))
mask = calib.model["pixel_mask"]
mask[0, 5, 100:120] |= np.uint32(1 << 1)
frames = calib.dark["high"].analog[:, 0]  # (module, frame, y, x)
frames[0, :, 7, 200:210] += 40
mask[0, 7, 200:210] |= np.uint32(1 << 4)
write_lambda_run(sys.argv[1], frames, LAMBDA_GAAS, pixel_mask=mask)
"""

SECTION = "figures-22"


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import shutil
    import subprocess
    import sys

    import fault_campaign as fc

    def lambda_mask(c):
        """The LAMBDA GaAs run in ``c.dir / "run"`` and its mask ``c.dir / "m.zarr"`` (from `rmm mask`)."""
        run = c.dir / "run"
        done = subprocess.run([sys.executable, "-c", LAMBDA_SNIPPET, str(run)], env=c.env(), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        store = c.dir / "m.zarr"
        c.rmm("mask", "--dark-high", run, "--out", store, "--workers", 1, expect=0)
        return run, store

    def colours_in(png_path, colours) -> dict:
        """How many pixels of the PNG have each of ``colours`` (names or hex), within PNG rounding."""
        import numpy as np
        from matplotlib.colors import to_rgb
        from matplotlib.image import imread

        png = imread(png_path)[..., :3]
        return {c: int(np.all(np.abs(png - np.asarray(to_rgb(c))) < 0.02, axis=-1).sum()) for c in colours}

    def damaged_copy(c, store, name):
        """A writable copy ``name`` of ``store`` (beside it), and its snapshot once damaged by the caller."""
        copy = c.dir / name
        shutil.copytree(store, copy, symlinks=True)
        fc.chmod_writable(copy)
        for p in copy.rglob("*"):
            if p.is_file():
                os.chmod(p, 0o644)
        return copy

    def refused(c, store, chunk):
        """`rmm show STORE --png DIR --html FILE` of a store missing ``chunk``: exit 2, one line naming the
        store and the chunk, no figures, no page, the store as it was."""
        (store / chunk).unlink()
        before = fc.snapshot(store)
        c.rmm("show", store, "--png", c.dir / "bad-png", "--html", c.dir / "bad.html", expect=2,
              needles=(str(store), f"damaged store: chunk {chunk} is missing"))
        c.expect(not (c.dir / "bad-png").exists() and not (c.dir / "bad.html").exists(),
                 "figures or a page were published from a damaged store")
        c.same(before, store, "the damaged store")

    @case(SECTION, "show --png of a LAMBDA GaAs mask with its pixel mask: verdict.png, known/new/not confirmed/gap")
    def case_figures_verdict(c):
        from rmm_dask.summary import GAP_COLOUR, VERDICT_GAP, VERDICT_STYLE, verdict_counts

        run, store = lambda_mask(c)
        counts = verdict_counts(store)
        c.expect(counts is not None and counts["not confirmed"] >= 20 and counts["new"] > 0 and counts["known"] >= 10,
                 f"the verdict counts of the planted mask: {counts}")
        c.rmm("show", store, "--png", c.dir / "png", expect=0)
        names = sorted(os.listdir(c.dir / "png")) if (c.dir / "png").is_dir() else []
        expected = ["manufacturer_bits.png", "mask_module00.png", "snr_module00.png", "verdict.png"]  # 1 module
        c.expect(names == expected, f"the figures published: {names}, not {expected}")
        if "verdict.png" in names:
            wanted = {VERDICT_STYLE[code][1].split(":")[0]: VERDICT_STYLE[code][0] for code in (1, 2, 3)}
            found = colours_in(c.dir / "png" / "verdict.png", [*wanted.values(), VERDICT_STYLE[VERDICT_GAP][0]])
            for what, colour in [*wanted.items(), ("gap", GAP_COLOUR)]:
                c.expect(found[colour] > 0, f"verdict.png has no pixel of {what} ({colour}): {found}")
        refused(c, damaged_copy(c, store, "damaged.zarr"), "layers/manufacturer/c.0.0.0")
        c.only(c.dir, ["TMP", "run", "m.zarr", "png", "damaged.zarr"])

    @case(SECTION, "show --png and --html of a LAMBDA GaAs mask: gaps and the manufacturer's rejects in own colours")
    def case_figures_marks(c):
        from rmm_dask.summary import GAP_COLOUR, REJECTED_COLOUR

        run, store = lambda_mask(c)
        old = c.dir / "png"  # figures of an earlier rmm-dask, pooled histograms: replaced whole with --overwrite
        old.mkdir()
        (old / "snr_histograms.png").write_bytes(b"old")
        c.rmm("show", store, "--png", old, "--html", c.dir / "r.html", "--overwrite", expect=0)
        names = sorted(os.listdir(old))
        c.expect("snr_histograms.png" not in names and "mask_module00.png" in names,
                 f"the figures directory after --overwrite: {names}")
        if "mask_module00.png" in names:
            found = colours_in(old / "mask_module00.png", [GAP_COLOUR, REJECTED_COLOUR])
            c.expect(found[GAP_COLOUR] > 0 and found[REJECTED_COLOUR] > 0,
                     f"mask_module00.png: no gap or no manufacturer's reject drawn in its colour: {found}")
        page = (c.dir / "r.html").read_text() if (c.dir / "r.html").is_file() else ""
        for figure in ("verdict", "mask_module00", "snr_module00"):
            c.expect(f'alt="{figure}"' in page, f"the report page does not embed {figure}")
        c.only(c.dir, ["TMP", "run", "m.zarr", "png", "r.html"])

    @case(SECTION, "show --png of a two-module AGIPD mask: SNR histograms per module; a damaged SNR chunk refused")
    def case_figures_snr_per_module(c):
        store = c.dir / "m.zarr"
        c.rmm(*c.shared.mask_args(store, runs=c.shared.s2m), expect=0)
        c.rmm("show", store, "--png", c.dir / "png", expect=0)
        names = sorted(os.listdir(c.dir / "png")) if (c.dir / "png").is_dir() else []
        c.expect([n for n in names if n.startswith("snr")] == ["snr_module00.png", "snr_module01.png"],
                 f"the SNR figures published: {names}")
        refused(c, damaged_copy(c, store, "damaged.zarr"), "snr/offset/c.1.0.0.0.0")
        c.only(c.dir, ["TMP", "m.zarr", "png", "damaged.zarr"])

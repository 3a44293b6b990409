"""The flat check: lit flats accepted, darks given as flat refused, on a few frames, before any cluster."""

import dask
import numpy as np
import pytest
import zarr

from rmm_dask.cli import main
from rmm_dask.detectors import get_detector
from rmm_dask.errors import InputError
from rmm_dask.flatcheck import MIN_SIGNAL, check_flat
from rmm_dask.io import open_run
from rmm_dask.io.sample import sample_frames
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import DARK_RATE, FLAT_COUNTS, NOISE_BASE, PHOTONS_MEAN, SynthConfig, synthesize
from rmm_dask.synth.on_disk import write_synthetic

#: a bright, stable flat: 480 photons of 0.4 ADU per pixel and frame (dark noise 12 ADU)
BRIGHT = dict(flat_level=60.0, adu_per_photon=0.4)


def write_set(out, detector="AGIPD1M", **kw):
    """A calibration set and a second acquisition's dark runs (the same pixels, new frames) as runs 5, 6, ..."""
    base = dict(modules=1, cells=2, frames=24, flat_frames=24, seed=3, detector=get_detector(detector))
    if base["detector"].counting:
        base.update(modules=base["detector"].n_modules, cells=1)
    paths = write_synthetic(synthesize(SynthConfig(**base, **kw)), out)
    again = synthesize(SynthConfig(**base, acquisition=1))
    numbers = {f"dark-{g}": 5 + i for i, g in enumerate(again.dark)}
    for key, path in write_synthetic(again, out, run_numbers=numbers, truth=None).items():
        paths[key + "-again"] = path
    return paths


@pytest.fixture(scope="module")
def agipd(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("agipd"), **BRIGHT)


def darks_of(paths, *stages, detector="AGIPD1M"):
    return {g: open_run(paths[f"dark-{g}"], detector) for g in stages}


def test_a_bright_stable_flat_is_accepted(agipd):
    result = check_flat(darks_of(agipd, "high", "medium", "low"), open_run(agipd["flat"]))
    # truth: mean photons x ADU per photon over the dark noise; photon noise over dark noise
    signal = PHOTONS_MEAN * BRIGHT["flat_level"] * BRIGHT["adu_per_photon"] / NOISE_BASE["high"]
    ratio = np.sqrt(1 + PHOTONS_MEAN * BRIGHT["flat_level"] * BRIGHT["adu_per_photon"] ** 2 / NOISE_BASE["high"] ** 2)
    assert result["signal"] == pytest.approx(signal, rel=0.15)
    assert result["noise_ratio"] == pytest.approx(ratio, rel=0.1) and result["noise_ratio"] < 1.5  # the old rule refused it
    assert result["stage"] == "high" and result["stage_fractions"]["high"] > 0.95
    assert result["accepted_by_option"] is False and "problem" not in result
    assert result["frames"] == 16 and result["blocks"] == [[0, 0], [0, 1]]


def test_a_dark_of_the_same_stage_is_refused(agipd):
    with pytest.raises(InputError, match=r"r0005: the flat run is not lit: median signal -?0\.\d\d dark-noise sigmas"):
        check_flat(darks_of(agipd, "high", "medium", "low"), open_run(agipd["dark-high-again"]))


@pytest.mark.parametrize("stages", [("high", "medium", "low"), ("high",)])
def test_another_stage_dark_is_refused_by_its_gain(agipd, stages):
    darks = darks_of(agipd, *stages)
    flat = open_run(agipd["dark-medium-again"])
    expected = "are at the gain level of the medium dark" if len(stages) > 1 else "have gain values more than 20 gain sigmas from the high dark's"
    with pytest.raises(InputError, match=f"r0006: not a flat in high gain: (9[5-9]|100)% of its pixels {expected}") as err:
        check_flat(darks, flat)
    signal = float(str(err.value).split("(signal ")[1].split()[0])
    assert signal > MIN_SIGNAL  # above the high offset: the signal alone would have taken it for lit
    result = check_flat(darks, flat, accept=True)
    assert result["accepted_by_option"] is True and result["stage"] == ("medium" if len(stages) > 1 else "other")


def test_build_mask_callers_without_the_check_are_refused_in_the_tasks(agipd, tmp_path):
    ds = build_mask(darks_of(agipd, "high", "medium"), open_run(agipd["dark-medium-again"]))
    assert ds.attrs["flat_check"] == {"checked": "in each chunk task"}
    with pytest.raises(InputError, match="not a flat in high gain"):
        write_store(ds, tmp_path / "m.zarr", compute=lambda d: dask.compute(d, scheduler="sync"))
    assert list(tmp_path.iterdir()) == []


class NoCluster(Exception):
    pass


def refuse_clusters(monkeypatch):
    import distributed

    def no_cluster(*args, **kwargs):
        raise NoCluster("a cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)


def test_refused_before_a_cluster_starts_and_nothing_written(agipd, tmp_path, monkeypatch, capsys):
    refuse_clusters(monkeypatch)
    out = tmp_path / "m.zarr"
    for flat, says in ((agipd["dark-medium-again"], "not a flat in high gain"), (agipd["dark-high-again"], "not lit")):
        args = ["mask", "--dark-high", str(agipd["dark-high"]), "--dark-medium", str(agipd["dark-medium"]), "--flat", str(flat), "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err and "--accept-flat" in err and str(flat) in err, err
        assert list(tmp_path.iterdir()) == []


def test_accept_flat_is_recorded_in_the_store(agipd, tmp_path, capsys):
    out = tmp_path / "m.zarr"
    args = ["mask", "--dark-high", str(agipd["dark-high"]), "--flat", str(agipd["dark-high-again"]), "--out", str(out), "--workers", "1", "--accept-flat"]
    assert main(args) == 0
    assert "used as flat because of --accept-flat" in capsys.readouterr().out
    check = zarr.open_group(out, mode="r").attrs["flat_check"]
    assert check["accepted_by_option"] is True and "not lit" in check["problem"] and abs(check["signal"]) < 1


@pytest.fixture(scope="module")
def jungfrau(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("jungfrau"), "JUNGFRAU1M")


def test_jungfrau_gain_bits(jungfrau):
    darks = darks_of(jungfrau, "high", detector="JUNGFRAU1M")
    lit = check_flat(darks, open_run(jungfrau["flat"], "JUNGFRAU1M"))
    assert lit["stage"] == "high" and lit["stage_fractions"]["high"] > 0.95 and lit["signal"] > MIN_SIGNAL
    with pytest.raises(InputError, match="not a flat in high gain: the gain bits of (9[5-9]|100)% of its pixels say medium"):
        check_flat(darks, open_run(jungfrau["dark-medium-again"], "JUNGFRAU1M"))


@pytest.fixture(scope="module")
def pilatus(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("pilatus"), "PILATUS300K")


def test_counting_rates(pilatus):
    darks = darks_of(pilatus, "high", detector="PILATUS300K")
    lit = check_flat(darks, open_run(pilatus["flat"], "PILATUS300K"))
    assert lit["flat_rate"] == pytest.approx(FLAT_COUNTS, rel=0.2) and lit["dark_rate"] == pytest.approx(DARK_RATE, abs=0.05)
    assert "stage" not in lit  # no gain indicator
    with pytest.raises(InputError, match=r"the flat run is not lit: it counts 0\.0\d* counts/frame per pixel, the dark 0\.0\d*"):
        check_flat(darks, open_run(pilatus["dark-high-again"], "PILATUS300K"))


def test_the_sample_is_the_first_frames_of_the_block(agipd, pilatus):
    for path, det in ((agipd["flat"], "AGIPD1M"), (pilatus["flat"], "PILATUS300K")):
        ds = open_run(path, det)
        m = ds.sizes["module"] - 1
        full = ds.analog.data.blocks[m, 0].compute(scheduler="sync")
        np.testing.assert_array_equal(sample_frames(ds.analog.data, m, 0, 5), full[:, :, :5])
        assert sample_frames(ds.analog.data, m, 0, 100).shape[2] == ds.sizes["frame"]


def test_the_sample_of_a_multi_module_cbf_run_decodes_only_its_frames(pilatus, monkeypatch):
    """A PILATUS 300K run in full frames of 3 modules: its regions are not for streaming (each
    module would decode every frame), but a sample reads only the frames asked for."""
    import fabio

    from rmm_dask.io.regions import frame_sources

    ds = open_run(pilatus["flat"], "PILATUS300K")
    assert ds.sizes["module"] == 3 and frame_sources(ds.analog.data) is None  # not streamed
    opened = []
    real = fabio.open
    monkeypatch.setattr(fabio, "open", lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    sample = sample_frames(ds.analog.data, 1, 0, 4)
    assert len(opened) == 4 < ds.sizes["frame"]
    np.testing.assert_array_equal(sample, ds.analog.data.blocks[1, 0].compute(scheduler="sync")[:, :, :4])


def test_regions_read_only_the_frames_asked_for(agipd, pilatus):
    import os

    from rmm_dask.io.cbf import _CbfBlock, _read_cbf_block
    from rmm_dask.io.regions import frame_sources

    ds = open_run(agipd["flat"])
    sources = frame_sources(ds.analog.data, ds.gain.data)  # both variables from one read
    assert sources.shape == ds.analog.data.numblocks[:2]
    m = ds.sizes["module"] - 1
    full_a, full_g = ds.analog.data.blocks[m, 0].compute(scheduler="sync"), ds.gain.data.blocks[m, 0].compute(scheduler="sync")
    source = sources[m, 0]
    assert source.n_frames == ds.sizes["frame"]
    for a, b in ((0, 3), (3, 7), (ds.sizes["frame"] - 2, ds.sizes["frame"] + 5)):
        analog, gain = source.frames(a, b).read()
        np.testing.assert_array_equal(analog, full_a[:, :, a:b])
        np.testing.assert_array_equal(gain, full_g[:, :, a:b])
    assert frame_sources(ds.analog.data[:, :, :5]) is None  # not as the reader made it: no regions
    files = sorted(os.path.join(pilatus["flat"], f) for f in os.listdir(pilatus["flat"]) if f.endswith(".cbf"))
    block = _CbfBlock(files[4:10], get_detector("PILATUS300K"), (0, 1), "frame", 4)  # run frames 4..9
    assert block.frames(0, 4).n_frames == 0 and block.frames(6, 100).paths == tuple(files[6:10])
    np.testing.assert_array_equal(_read_cbf_block(block.frames(5, 7)), _read_cbf_block(block)[:, :, 1:3])


def test_the_sample_of_an_nxmx_stack_reads_its_first_frames(pilatus, tmp_path):
    from rmm_dask.synth.write_hdf5 import write_nxmx

    det = get_detector("PILATUS300K")
    frames = np.arange(20 * np.prod(det.frame_shape), dtype=np.int32).reshape(20, *det.frame_shape) % 1000
    master = write_nxmx(tmp_path / "r_master.h5", frames, det, frames_per_file=7)  # parts of 7, 7 and 6 frames
    ds = open_run(master, det)
    sample = sample_frames(ds.analog.data, 1, 0, 9)
    np.testing.assert_array_equal(sample[0, 0], det.split_frame(frames[:9])[:, 1])

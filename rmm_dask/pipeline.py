"""The mask as a Dask graph: the kernels of :mod:`rmm_dask.mask` mapped per (module, cells) chunk.

``build_mask(darks, flat)`` takes the lazy datasets of :func:`rmm_dask.io.open_run`
and returns a lazy ``xarray.Dataset``: nothing is read until it is computed. The graph
is a few high-level ``blockwise`` layers over the (module, cell-chunk) grid, whatever the
size of the detector (as flox builds its reductions):

    one layer per dark run:  stage task  -> DarkStage (F1, F2, F3, F5)     (object blocks)
    one finish layer:        stages + flat + layers -> ModuleMask (F4, F6, verdicts)
    one layer per output:    mask, each feature and SNR, rejected frames per run:
                             the chunk's array taken from its ModuleMask

Written by :func:`rmm_dask.store.write_store`, whose one write task per chunk takes
every output of the chunk, dask's blockwise fusion makes of all this a single task per
chunk (with the user's or the manufacturer's layers: a task per stage, the finish and
the write): a full AGIPD-1M set of three dark runs and a flat is ~5,600 tasks. A run as
a reader made it (its regions registered in :mod:`rmm_dask.io.regions`) enters the stage
and finish tasks as its chunk's :class:`~rmm_dask.io.regions.FrameSource`: the task
reads its frames itself, in blocks of :data:`rmm_dask.mask.FRAME_BLOCK`
(:func:`rmm_dask.mask.dark_stage_blocks`; the flat through F6's sums in frame order), so
worker memory stays flat in the number of frames (but for the F1 sample, 8 KiB per frame
and cell). Any other array (numpy-backed, sliced, rechunked) enters as its chunk, all
frames in memory, with the same results bit for bit. A chunk's result depends only on
its own cells, so the mask is the same whatever the chunking, the number of workers or
the cluster.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.layers import ArrayBlockwiseDep

from .codes import MASK_DTYPE, BadPixel
from .detectors import Detector, description, run_detector
from .errors import InputError
from .io.fingerprint import fingerprint
from .io.regions import FrameSource, frame_sources
from .mask import FRAME_BLOCK, ModuleMask, Params, dark_stage, dark_stage_blocks, mask_from_stages

DIMS = ("module", "gain", "cell", "y", "x")
GAINLESS = {"flat_snr"}  #: features without a gain axis: F6 is measured once per pixel and cell


def _path(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("path", "<run>"))


def _check_runs(darks: dict[str, xr.Dataset], flat: xr.Dataset | None, detector: Detector, params: Params):
    """Metadata checks: same modules, cells and module shape in every run; enough frames."""
    runs = list(darks.items()) + ([("flat", flat)] if flat is not None else [])
    ref_name, ref = runs[0]
    for name, ds in runs:
        if "analog" not in ds:
            raise InputError(_path(ds), f"{name} run has no 'analog' data")
        if ds.analog.dims != ("module", "cell", "frame", "y", "x"):
            raise InputError(_path(ds), f"{name} run has dims {ds.analog.dims}, expected (module, cell, frame, y, x)")
        shape = (ds.sizes["y"], ds.sizes["x"])
        if shape != detector.module_shape:
            raise InputError(_path(ds), f"{name} run has modules of {shape} pixels, {detector.name} has {detector.module_shape}")
        for coord in ("module", "cell"):
            if not np.array_equal(ds[coord].values, ref[coord].values):
                raise InputError(
                    _path(ds),
                    f"{name} run has {coord}s {_short(ds[coord].values)}, but the {ref_name} run "
                    f"({_path(ref)}) has {_short(ref[coord].values)}",
                )
        if ds.sizes["frame"] < params.min_frames:
            raise InputError(_path(ds), f"{name} run has {ds.sizes['frame']} frames per cell, at least {params.min_frames} needed")


def check_runs(darks: dict, flat=None, *, detector=None, params: Params = Params(), flat_stage: str | None = None):
    """The checks of :func:`build_mask` on the runs' metadata (nothing read): ``(detector, stages, flat_stage)``.

    ``stages`` are the dark runs' gain stages in the detector's order; ``flat_stage`` the
    flat's (default: the first). ValueError for inconsistent arguments, InputError for runs
    that do not fit together.
    """
    if not darks:
        raise ValueError("at least one dark run is needed")
    detector = run_detector(darks, flat, detector)
    unknown = set(darks) - set(detector.gain_stages)
    if unknown:
        raise ValueError(f"{detector.name} has gain stages {detector.gain_stages}, not {sorted(unknown)}")
    stages = [g for g in detector.gain_stages if g in darks]
    flat_stage = flat_stage or stages[0]
    if flat is not None and flat_stage not in darks:
        raise ValueError(f"the flat run is in the {flat_stage} stage, but no dark run of that stage is given")
    _check_runs({g: darks[g] for g in stages}, flat, detector, params)
    return detector, stages, flat_stage


def _short(values) -> str:
    values = list(np.asarray(values).tolist())
    return str(values) if len(values) <= 8 else f"[{values[0]}, ..., {values[-1]}] ({len(values)})"


# ---------------------------------------------------------------------------- chunk tasks


class _FlatBlocks:
    """A flat run's (module, cells) chunk as blocks of frames, read in order each time it is iterated."""

    def __init__(self, source: FrameSource, block: int):
        self.source, self.block, self.n_frames = source, block, source.n_frames

    def __iter__(self):
        for a in range(0, self.n_frames, self.block):
            (values,) = self.source.frames(a, min(a + self.block, self.n_frames)).read()
            yield values[0]


def _stage_task(analog, gain, detector, params, block):
    """Chunk task: one dark run's :class:`DarkStage`, streamed from its regions or from the chunk in memory."""
    if isinstance(analog, FrameSource):

        def read(a, b):
            values = analog.frames(a, b).read()
            return values[0][0], (values[1][0] if len(values) > 1 else None)

        return dark_stage_blocks(read, analog.n_frames, detector, params, block)
    return dark_stage(analog[0], None if gain is None else gain[0], detector, params)


def _finish_task(*args, n_stages, detector, params, flat_index, flat_path, check, block):
    """Chunk task: verdicts of one (module, cells) chunk (a :class:`ModuleMask`).

    ``args`` are the stages, the flat (a region or the chunk in memory, or None), the
    flat's gain (only for ``check``) and the manufacturer's and the user's layers (or None).
    ``check`` (the stage names) is given only when the flat was not checked before the
    graph was built (:func:`rmm_dask.flatcheck.check_flat`): then this chunk's flat is
    judged by the same rule, on all its frames (read into memory for that).
    """
    stages, (flat, flat_gain, manufacturer, user) = list(args[:n_stages]), args[n_stages:]
    if isinstance(flat, FrameSource):
        flat = _FlatBlocks(flat, block)
    elif flat is not None:
        flat = flat[0]
    if flat is not None and check is not None:
        from .flatcheck import flat_evidence, flat_problem

        stage = check[flat_index]
        ev = flat_evidence(flat, None if flat_gain is None else flat_gain[0], dict(zip(check, stages)), detector, stage)
        problem = flat_problem(ev, stage, detector)
        if problem is not None:
            raise InputError(flat_path, problem)
    return mask_from_stages(stages, flat, detector, params, flat_index, known=_known((manufacturer, user)))


def _known(layers) -> np.ndarray | None:
    """(y, x) bool from the module's layers: any bit of the manufacturer's low 16 (NeXus: reject) or the user's."""
    known = None
    for layer, bits in zip(layers or (), (0xFFFF, 0xFF)):
        if layer is not None:
            layer = np.asarray(layer)
            hit = (layer.reshape(layer.shape[-2:]) & bits) != 0  # a (1, y, x) block of the module
            known = hit if known is None else known | hit
    return known


def _take(result: ModuleMask, what: str, name: str | int | None):
    """One output of a chunk's :class:`ModuleMask`, with the module axis in front."""
    if what == "mask":
        return result.mask[None]
    return getattr(result, what)[name][None]


# ---------------------------------------------------------------------------- graph layers


class _Regions(ArrayBlockwiseDep):
    """The :class:`FrameSource` of each (module, cells) chunk of a reader's run, as a blockwise
    argument: each task carries its own (a few paths and numbers), no task reads them out."""

    def __init__(self, sources: np.ndarray, chunks: tuple, token: str):
        super().__init__(chunks)
        self.sources, self.token = sources, token

    def __getitem__(self, index):
        return self.sources[index]

    def __dask_tokenize__(self):
        return self.token


def _chunk_input(ds: xr.Dataset, names: tuple, cell_chunks: tuple, streamed: bool) -> list:
    """Blockwise arguments ``(argument, index)`` of a run's variables per (module, cells) chunk.

    When the run's arrays are as a reader made them, chunked like the graph, and
    ``streamed``: one :class:`_Regions` ``m c`` (one region per chunk, all variables read at
    once; the task streams its frames) and None for the other variables. Otherwise each
    variable as a dask array ``m c f y x`` rechunked to whole chunks (numpy-backed or
    derived arrays: the generic path, a chunk in memory).
    """
    arrays = [ds[v].data for v in names]
    sources = frame_sources(*arrays) if streamed else None
    chunks = ((1,) * ds.sizes["module"], tuple(cell_chunks))
    if sources is not None and tuple(arrays[0].chunks[:2]) == chunks:
        token = tokenize("regions", *(a.name for a in arrays))
        return [(_Regions(sources, chunks, token), "mc")] + [(None, None)] * (len(names) - 1)
    out = []
    for arr in arrays:
        if not isinstance(arr, da.Array):
            arr = da.from_array(arr, chunks=(1, cell_chunks, -1, -1, -1))
        out.append((arr.rechunk((1, cell_chunks, -1, -1, -1)), "mcfyx"))
    return out


def _objects(func, *args, **kwargs) -> da.Array:
    """A blockwise layer ``m c`` whose blocks are Python objects (a stage, a chunk's result)."""
    flat_args = [x for pair in args for x in pair]
    return da.blockwise(func, "mc", *flat_args, concatenate=True, align_arrays=False, meta=np.empty((0, 0), dtype=object), **kwargs)


def build_mask(
    darks: dict[str, xr.Dataset],
    flat: xr.Dataset | None = None,
    *,
    detector: Detector | str | None = None,
    params: Params = Params(),
    flat_stage: str | None = None,
    user_mask=None,
    flat_check: dict | None = None,
    history: xr.DataArray | None = None,
) -> xr.Dataset:
    """The lazy mask of the given runs.

    ``darks`` maps gain-stage names (the detector's, e.g. ``high``) to dark runs;
    ``flat`` is the flat-field run, taken in ``flat_stage`` (default: the first
    stage given). Returns a Dataset with ``mask`` (uint8, dims module, gain, cell,
    y, x), the features and their SNRs (float32, same dims, but ``flat_snr`` has no
    gain axis; attrs ``role`` ``feature`` or ``snr``) and ``rejected_frames_<stage>`` (bool, module, cell,
    frame_<stage>).

    Two informational layers are kept apart from the mask's bits (role ``layer``): the
    manufacturer's ``pixel_mask`` of the first dark run, when its files have one (uint32
    module, y, x), and ``user_mask`` (uint8 module, y, x; non-zero = masked by the user:
    beamstop, shadows), from :func:`rmm_dask.usermask.read_user_mask`. Pixels in either
    are kept out of the model fits; exports combine the layers as their formats allow.

    ``history`` (a lazy uint8 DataArray (module, gain, cell, y, x), 1 = bad on enough of the
    last nights: :func:`rmm_dask.nightly.remember.history_layer`) becomes the layer
    ``history`` of a mask that remembers, with its attrs. It is NOT kept out of the fits nor
    merged into the mask's bits: tonight's verdicts stay tonight's, and the pixel history,
    which counts those, never counts a remembered pixel as bad again.

    ``flat_check`` is the result of :func:`rmm_dask.flatcheck.check_flat` on these runs
    (it reads a few frames: call it before starting a cluster); it is recorded in the
    attrs. Without it, each chunk task judges its flat by the same rule, on all its
    frames, and fails the computation with :class:`InputError` for a doubted flat.
    """
    detector, stages, flat_stage = check_runs(darks, flat, detector=detector, params=params, flat_stage=flat_stage)
    flat_index = stages.index(flat_stage)

    ref = darks[stages[0]]
    cell_chunks = ref.analog.data.chunks[1] if isinstance(ref.analog.data, da.Array) else (ref.sizes["cell"],)
    in_task_check = flat is not None and flat_check is None
    has_gain = all("gain" in darks[g] for g in stages)

    n_mod, n_gain = ref.sizes["module"], len(stages)
    ny, nx = detector.module_shape
    names = ["offset", "noise"] + (["gain_mean"] if has_gain else [])
    feature_names = names + (["gain_std"] if has_gain else []) + (["flat_snr"] if flat is not None else [])
    snr_names = names + (["flat_snr"] if flat is not None else [])

    manufacturer = ref["pixel_mask"].data if "pixel_mask" in ref else None
    if manufacturer is not None:
        manufacturer = manufacturer.rechunk((1, ny, nx))
    if user_mask is not None:
        user_mask = (np.asarray(user_mask) != 0).astype(np.uint8)  # 1 = masked by the user
        if user_mask.shape != (n_mod, ny, nx):
            raise ValueError(f"the user mask is {user_mask.shape}, expected (module, y, x) = {(n_mod, ny, nx)}")
        user_mask = da.from_array(user_mask, chunks=(1, ny, nx))  # one graph key per module, not a copy per task
    if manufacturer is not None and not isinstance(manufacturer, da.Array):
        manufacturer = da.from_array(np.asarray(manufacturer), chunks=(1, ny, nx))
    kw = dict(detector=detector, params=params, block=FRAME_BLOCK)
    stage_objects = []
    variables = ("analog", "gain") if has_gain else ("analog",)
    for g in stages:
        inputs = _chunk_input(darks[g], variables, cell_chunks, streamed=True)
        if not has_gain:
            inputs.append((None, None))
        stage_objects.append((_objects(_stage_task, *inputs, **kw), "mc"))
    flat_inputs = [(None, None), (None, None)]
    if flat is not None:
        flat_inputs = _chunk_input(flat, ("analog", "gain") if in_task_check and "gain" in flat else ("analog",), cell_chunks, streamed=not in_task_check)
        flat_inputs = (flat_inputs + [(None, None)])[:2]
    layers = [(None, None) if layer is None else (layer, "myx") for layer in (manufacturer, user_mask)]
    result = _objects(
        _finish_task, *stage_objects, *flat_inputs, *layers, n_stages=n_gain, flat_index=flat_index,
        flat_path=_path(flat) if flat is not None else "", check=list(stages) if in_task_check else None, **kw,
    )

    def output(what, name, index, dtype, **new_axes):
        return da.blockwise(_take, index, result, "mc", what, None, name, None, new_axes=new_axes, dtype=dtype, concatenate=True)

    pixels = dict(y=ny, x=nx)
    pieces = {"mask": output("mask", None, "mgcyx", MASK_DTYPE, g=n_gain, **pixels)}
    for f in feature_names:
        pieces[f] = output("features", f, "mcyx" if f in GAINLESS else "mgcyx", np.float32, **({} if f in GAINLESS else {"g": n_gain}), **pixels)
    for f in snr_names:
        pieces[_snr_name(f)] = output("snr", f, "mcyx" if f in GAINLESS else "mgcyx", np.float32, **({} if f in GAINLESS else {"g": n_gain}), **pixels)
    for i, g in enumerate(stages):
        pieces[f"rejected_frames_{g}"] = output("rejected_frames", i, "mcf", bool, f=darks[g].sizes["frame"])

    coords = {
        "module": ref.module.values,
        "gain": np.arange(n_gain),
        "cell": ref.cell.values,
        "y": np.arange(ny),
        "x": np.arange(nx),
    }
    data_vars = {"mask": (DIMS, pieces["mask"], {"role": "mask", "flag_meanings": _bit_names()})}
    for f in feature_names:
        data_vars[f] = (_dims(f), pieces[f], {"role": "feature"})
    for f in snr_names:
        data_vars[_snr_name(f)] = (_dims(f), pieces[_snr_name(f)], {"role": "snr", "feature": f})
    for g in stages:
        frame = f"frame_{g}"
        data_vars[f"rejected_frames_{g}"] = (("module", "cell", frame), pieces[f"rejected_frames_{g}"], {"role": "rejected_frames", "gain_stage": g})
        if "train_id" in darks[g].coords:
            coords[f"train_id_{g}"] = (frame, darks[g].train_id.values)
    if manufacturer is not None:
        data_vars["pixel_mask"] = (("module", "y", "x"), manufacturer, {"role": "layer", "layer": "manufacturer", "source": ref.attrs.get("path", "")})
    if user_mask is not None:
        data_vars["user_mask"] = (("module", "y", "x"), user_mask, {"role": "layer", "layer": "user"})
    if history is not None:
        if history.shape != pieces["mask"].shape:
            raise ValueError(f"the history layer is {history.shape}, expected the mask's {pieces['mask'].shape}")
        remembered = da.asarray(history.data).astype(np.uint8).rechunk(pieces["mask"].chunks)  # on the mask's grid
        data_vars["history_layer"] = (DIMS, remembered, {**history.attrs, "role": "layer", "layer": "history"})
    inputs = {f"dark-{g}": _describe(darks[g]) for g in stages}
    if flat is not None:
        inputs["flat"] = _describe(flat)
    attrs = {
        "detector": detector.name,
        "detector_description": description(detector),  # stores of detectors from your own YAML stay readable
        "detector_source": ref.attrs.get("detector_source") or "given",
        "chips": ref.attrs.get("chips") or "from the description",
        "gain_stages": list(stages),
        "flat_stage": flat_stage if flat is not None else None,
        "parameters": _jsonable(asdict(params)),
        "inputs": inputs,
    }
    if flat is not None:
        attrs["flat_check"] = _jsonable(flat_check) if flat_check is not None else {"checked": "in each chunk task"}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _snr_name(feature: str) -> str:
    """The dataset variable of a feature's SNR: ``snr_<feature>``, and ``snr_flat`` for F6's ``flat_snr``."""
    return "snr_flat" if feature == "flat_snr" else f"snr_{feature}"


def _dims(feature: str) -> tuple:
    return tuple(d for d in DIMS if d != "gain") if feature in GAINLESS else DIMS


def _bit_names() -> str:
    return " ".join(f"{b.name}={int(b)}" for b in BadPixel)


def _describe(ds: xr.Dataset) -> dict:
    """Provenance of an input run: where it is, what it holds, and its files' fingerprints (:mod:`rmm_dask.io.fingerprint`)."""
    keep = ("path", "run", "format", "source", "notes", "dataset")
    info = {k: _jsonable(ds.attrs[k]) for k in keep if k in ds.attrs} | {"frames": int(ds.sizes["frame"])}
    files = ds.attrs.get("files") or ([ds.attrs["path"]] if os.path.isfile(ds.attrs.get("path", "")) else [])
    info["files"] = [fingerprint(name) for name in files]
    return info


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value

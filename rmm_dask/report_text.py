"""What ``rmm show`` and the HTML reports say of a store in words: when and by what it was made, its
parameters with their meaning, its input runs and every file of them, the frames F1 rejected per dark
run, rmm's verdict against the manufacturer's pixel mask, and the figures' captions.

Each function returns plain rows or text (no rich, no HTML), so that the terminal and the page say the
same of a mask; :mod:`rmm_dask.tables` prints them in 80 columns, :mod:`rmm_dask.report` puts them on
the page. Stores of earlier versions lack some attributes (files, train ids): what is not recorded is
left out, never invented.
"""

from __future__ import annotations

import datetime as dt
import os
import re

#: the stored parameters (``Params`` fields) -> the name a user sets them by (``--config`` keys,
#: options) and what they mean; a key not listed here is shown under its stored name, meaning unknown
PARAMETERS = {
    "lam": ("lambda", "robust sigmas from the model beyond which a pixel is bad (--lambda)"),
    "method": ("method", "statistics of the normal pixels' model: rmm (the paper's robust fit), mad "
                         "(median and MAD) or nonrobust (mean and std)"),
    "window": ("window", "the model's windows [y, x]; none: one model per chip (ASIC)"),
    "flat_tile": ("flat-tile", "F6: tile [y, x] of the flat's local background plane"),
    "f1_lambda": ("f1.lambda", "F1: robust sigmas beyond which a dark frame is dropped"),
    "f1_min_sigma": ("f1.min-sigma", "F1: floor of a frame level's sigma, in ADU"),
    "f1_pixels": ("f1.pixels", "F1: pixels sampled per frame for its level"),
    "min_frames": ("min-frames", "fewer valid frames than this: NO_DATA"),
    "features": ("features", "the features that may set bits (F2 offset, F3 noise, F4 gain separation, "
                             "F5 gain level, F6 flat)"),
    "counting_test": ("counting-test", "photon counting, F2 and F6: poisson (exact test of the total count) "
                                       "or floor (the paper's sigma of at least 1/6)"),
}


def parameter_rows(attrs) -> list[tuple[str, str, str]]:
    """(name, value, meaning) of each parameter of a store, in the order of :data:`PARAMETERS`, then any
    other stored key as it is: what a reader needs to know what the mask was made with, without the
    program's field names (``lam``) or a raw dict."""
    params = dict(attrs.get("parameters") or {})
    rows = [(name, _value(params.pop(key)), meaning) for key, (name, meaning) in PARAMETERS.items() if key in params]
    return rows + [(str(key), _value(value), "") for key, value in params.items()]


def _value(value) -> str:
    """A parameter's value as text: none, a number, a list joined by commas, [y, x] sizes as they are."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            return f"[{value[0]}, {value[1]}]"
        return ", ".join(str(v) for v in value)
    return str(value)


def _time(text) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text)).astimezone(dt.timezone.utc)
    except (TypeError, ValueError):
        return None


def made_line(attrs) -> str:
    """"made by rmm-dask 0.1.0 on HOST, 2026-12-07 20:03:37 - 20:03:48 UTC (11 s)": by what, where and when
    the store was made, in UTC and to the second (the attributes as they are when they are not times)."""
    start, end = _time(attrs.get("start_time")), _time(attrs.get("end_time"))
    if start and end:
        last = end.strftime("%H:%M:%S" if end.date() == start.date() else "%Y-%m-%d %H:%M:%S")
        when = f"{start:%Y-%m-%d %H:%M:%S} - {last} UTC ({(end - start).total_seconds():.0f} s)"
    else:
        when = f"{attrs.get('start_time')} - {attrs.get('end_time')}"
    host = f" on {attrs['host']}" if attrs.get("host") else ""
    return f"made by {attrs.get('software')}{host}, {when}"


def size_text(n: int) -> str:
    """A size in bytes as 980 B, 21.3 MB, 1.2 GB (decimal units, as ``ls -h --si``)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def run_size(info: dict) -> str:
    """The size of a run's files together (:func:`size_text`), or "" when the store records no files."""
    files = info.get("files") or ()
    return size_text(sum(int(f.get("size") or 0) for f in files)) if files else ""


def input_line(role: str, info: dict) -> str:
    """"dark-high: /raw/r0001 (40 frames per cell; 12 files, 254.1 MB)": a run in one line, its files counted."""
    files = info.get("files")
    what = [f"{info.get('frames')} frames per cell"]
    if files:
        what.append(f"{len(files)} file{'s' if len(files) != 1 else ''}, {run_size(info)}")
    return f"{role}: {info.get('path')} ({'; '.join(what)})"


def file_rows(info: dict) -> list[tuple[str, str, str]]:
    """(file, size, modified) of each file of a run: the name inside the run's directory when it is there
    (the full path otherwise, e.g. a VDS source elsewhere), the size, the modification time in UTC."""
    base = str(info.get("path") or "")
    rows = []
    for record in info.get("files") or ():
        path = str(record.get("path"))
        name = path[len(base):].lstrip("/") if base and path.startswith(base.rstrip("/") + "/") else path
        when = _time(record.get("mtime"))
        rows.append((name, size_text(int(record.get("size") or 0)),
                     f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else str(record.get("mtime"))))
    return rows


def rejected_frames(tree) -> dict:
    """Per dark run (``dark-high``, ...) the frames F1 rejected, from ``/rejected_frames/<stage>`` (bool
    (module, cell, frame)): ``rejected`` of ``frames`` (module x cell x frame series), ``shape``, per module
    (``modules``: {module: n}) and the train ids of the frames rejected anywhere (``trains``, sorted; None
    when the store records none). ``tree``: the store's :func:`rmm_dask.store.open_tree`. A store without
    the group (made before F1 was recorded) gives {}."""
    import numpy as np

    if "rejected_frames" not in tree.children:
        return {}
    node = tree["rejected_frames"]
    modules = [int(m) for m in tree["module"].values]
    out = {}
    for stage, var in node.data_vars.items():
        if stage.startswith("train_id_"):
            continue
        hit = np.asarray(var.values, dtype=bool)  # (module, cell, frame): small, one flag per frame
        ids = node.data_vars.get(f"train_id_{stage}")
        anywhere = hit.any(axis=(0, 1))
        out[f"dark-{stage}"] = {
            "rejected": int(hit.sum()), "frames": int(hit.size), "shape": tuple(int(n) for n in hit.shape),
            "modules": {m: int(n) for m, n in zip(modules, hit.sum(axis=(1, 2)))},
            "trains": None if ids is None else [int(t) for t in np.asarray(ids.values)[anywhere]],
        }
    order = {"dark-high": 0, "dark-medium": 1, "dark-low": 2}  # as the inputs list them, not by name
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def rejected_line(info: dict, max_trains: int = 8) -> str:
    """"4 of 160 frames (2 modules x 2 cells x 40); module 0: 3, module 1: 1; trains 110003, ...": the frames
    F1 rejected of one run of :func:`rejected_frames`, the modules named only where their counts differ,
    at most ``max_trains`` train ids listed (the page lists them all)."""
    m, c, f = info["shape"]
    text = (f"{info['rejected']} of {info['frames']} frames "
            f"({m} module{'s' if m != 1 else ''} x {c} cell{'s' if c != 1 else ''} x {f})")
    if info["rejected"] and len(set(info["modules"].values())) > 1:
        text += "; " + ", ".join(f"module {k}: {n}" for k, n in info["modules"].items())
    trains = info.get("trains")
    if trains:
        shown = trains[:max_trains]
        more = len(trains) - len(shown)
        text += f"; train{'s' if len(trains) != 1 else ''} " + ", ".join(map(str, shown))
        text += f" and {more} more" if more else ""
    return text


#: what each verdict of :func:`rmm_dask.summary.verdict_counts` means
VERDICT_MEANING = {
    "known": "rejected by the manufacturer and masked by rmm",
    "new": "found bad by rmm, not rejected by the manufacturer",
    "not confirmed": "rejected by the manufacturer, good in every plane of rmm's mask",
}

VERDICT_TITLE = "rmm's verdict against the manufacturer's pixel_mask (pixels; gaps left out)"
NO_VERDICT = "no manufacturer's pixel_mask in the store: no verdict against it"


def verdict_rows(counts: dict | None) -> list[tuple[str, str, str]]:
    """(verdict, pixels, meaning) of :func:`rmm_dask.summary.verdict_counts`' counts; [] for None (no layer)."""
    if counts is None:
        return []
    return [(name, str(n), VERDICT_MEANING.get(name, "")) for name, n in counts.items()]


#: figure file names (the part before the module number) -> their captions
_CAPTIONS = {
    "mask_module": "module {n}: masked pixels per gain stage",
    "snr_module": "module {n}: SNR histograms of the features, lambda drawn",
    "detector": "the whole detector, assembled",
    "verdict": "rmm's verdict against the manufacturer's pixel_mask",
    "manufacturer_bits": "the manufacturer's pixel_mask per NeXus bit",
}


def caption(name: str) -> str:
    """The caption of a figure from its file name (``mask_module02.png`` -> "module 2: masked pixels per gain
    stage"); a name not known here in words from its stem (underscores as spaces)."""
    stem = os.path.splitext(os.path.basename(name))[0]
    match = re.fullmatch(r"(.*?)(\d+)?", stem)
    key, number = match.group(1), match.group(2)
    if key in _CAPTIONS and ("{n}" in _CAPTIONS[key]) == (number is not None):
        return _CAPTIONS[key].format(n=int(number) if number else "")
    return stem.replace("_", " ")

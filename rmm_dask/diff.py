"""What changed between two masks of the same detector: pixels newly bad, recovered, per bit,
module, gain stage and cell. Read through xarray (:func:`rmm_dask.store.open_tree`), one module at a time."""

from __future__ import annotations

import numpy as np

from .codes import BadPixel, describe
from .errors import InputError
from .integrity import note
from .store import gain_names, open_tree


def diff_masks(old, new, *, max_pixels: int = 1000) -> dict:
    """Compare two published stores; a JSON-able dict of counts and pixels.

    Counts are of pixel-planes (module, gain, cell, y, x): ``newly_bad``: good in ``old``
    (0), bad in ``new``; ``recovered``: the reverse (``newly_bad_distinct``, ``recovered_distinct``:
    the distinct pixels (module, y, x) with such a plane in any gain stage or cell, overall and per
    module: a pixel bad in 352 cells is one pixel, 352 planes); per bit ``set`` / ``cleared``: the
    bit absent in old and present in new, and the reverse (``set_distinct``, ``cleared_distinct``: in how many
    distinct pixels). ``newly_bad_pixels`` and
    ``recovered_pixels`` list the pixels (module, y, x) with such planes: how many planes,
    and the bits of the bad side ('OFFSET|NOISE') (``new`` for newly bad, ``old`` for recovered); at most
    ``max_pixels`` each, in (module, y, x) order, with ``pixels_truncated`` saying so.
    ``notes``: what to know about a store read unverified (format 1, :func:`rmm_dask.integrity.note`).

    When either store has the layer of a mask that remembers (``layers/history``), ``history`` counts it
    apart from the mask: ``history_newly`` (planes in new's layer, not in old's; a store without the layer
    has none), ``history_cleared`` (the reverse), and ``union`` the planes newly bad and recovered of what
    each version masks, its mask or its layer (a remembered pixel that looks good tonight is no change):
    what the nightly sanity check's max-change counts. Without the layer in both: ``history`` is None.
    Both stores are verified when opened and read (a damaged one raises InputError naming it).
    """
    a, b = open_tree(old), open_tree(new)
    for name in ("module", "gain", "cell"):
        if not np.array_equal(a[name].values, b[name].values):
            raise InputError(new, f"has {name}s {b[name].values.tolist()}, but {old} has {a[name].values.tolist()}: not the same detector layout")
    if a["mask"].shape != b["mask"].shape:
        raise InputError(new, f"mask shape {b['mask'].shape} differs from {a['mask'].shape} in {old}")
    gains = gain_names(b)
    cells = [int(c) for c in b["cell"].values]
    out = {
        "old": str(old),
        "new": str(new),
        "newly_bad": 0,
        "recovered": 0,
        "newly_bad_distinct": 0,
        "recovered_distinct": 0,
        "bits": {bit.name: {"set": 0, "cleared": 0, "set_distinct": 0, "cleared_distinct": 0} for bit in BadPixel},
        "module": {},
        "gain": {g: {"newly_bad": 0, "recovered": 0} for g in gains},
        "cell": {c: {"newly_bad": 0, "recovered": 0} for c in cells},
        "newly_bad_pixels": [],
        "recovered_pixels": [],
        "pixels_truncated": False,
        "notes": [f"{path}: {note(tree.attrs)}" for path, tree in ((old, a), (new, b)) if note(tree.attrs)],
    }
    ha, hb = _history(a), _history(b)
    history = None if ha is None and hb is None else {
        "history_newly": 0, "history_cleared": 0, "history_newly_distinct": 0, "history_cleared_distinct": 0,
        "union": {"newly_bad": 0, "recovered": 0, "newly_bad_distinct": 0, "recovered_distinct": 0}}
    out["history"] = history
    for i, m in enumerate(b["module"].values):
        ma, mb = a["mask"][i].values, b["mask"][i].values  # (gain, cell, y, x)
        if history is not None:
            _diff_history(history, ma, mb, _plane(ha, i, ma.shape), _plane(hb, i, mb.shape))
        row = out["module"][int(m)] = {}
        for key, hit in (("newly_bad", (ma == 0) & (mb != 0)), ("recovered", (ma != 0) & (mb == 0))):
            per_gain = hit.sum(axis=(1, 2, 3))
            per_cell = hit.sum(axis=(0, 2, 3))
            row[key] = int(per_gain.sum())
            out[key] += row[key]
            row[f"{key}_distinct"] = int(np.count_nonzero(hit.any(axis=(0, 1))))
            out[f"{key}_distinct"] += row[f"{key}_distinct"]
            for g, n in zip(gains, per_gain):
                out["gain"][g][key] += int(n)
            for c, n in zip(cells, per_cell):
                out["cell"][c][key] += int(n)
            out["pixels_truncated"] |= _list_pixels(out[f"{key}_pixels"], int(m), hit, mb if key == "newly_bad" else ma, max_pixels)
        for bit in BadPixel:
            va, vb = (ma & np.uint8(bit)) != 0, (mb & np.uint8(bit)) != 0
            for key, hit in (("set", ~va & vb), ("cleared", va & ~vb)):
                out["bits"][bit.name][key] += int(hit.sum())
                out["bits"][bit.name][f"{key}_distinct"] += int(np.count_nonzero(hit.any(axis=(0, 1))))
    return out


def _history(tree):
    """The store's layer of a mask that remembers, or None."""
    return tree["layers"]["history"] if "layers" in tree.children and "history" in tree["layers"].data_vars else None


def _plane(layer, i: int, shape: tuple) -> np.ndarray:
    """Bool (gain, cell, y, x): module index ``i`` of the history layer (all False without one)."""
    return np.zeros(shape, dtype=bool) if layer is None else layer[i].values != 0


def _diff_history(history: dict, ma, mb, ha, hb) -> None:
    """Add one module's changes of the history layers ``ha`` -> ``hb`` and of the union (mask or layer) to
    ``history``."""
    ua, ub = (ma != 0) | ha, (mb != 0) | hb
    for key, hit in (("history_newly", ~ha & hb), ("history_cleared", ha & ~hb)):
        history[key] += int(np.count_nonzero(hit))
        history[f"{key}_distinct"] += int(np.count_nonzero(hit.any(axis=(0, 1))))
    for key, hit in (("newly_bad", ~ua & ub), ("recovered", ua & ~ub)):
        history["union"][key] += int(np.count_nonzero(hit))
        history["union"][f"{key}_distinct"] += int(np.count_nonzero(hit.any(axis=(0, 1))))


def _list_pixels(rows: list, module: int, hit: np.ndarray, bad_side: np.ndarray, limit: int) -> bool:
    """Append the pixels of one module with ``hit`` planes (gain, cell, y, x) to ``rows``; True if cut."""
    planes = hit.sum(axis=(0, 1))
    bits = np.bitwise_or.reduce(np.where(hit, bad_side, 0).reshape(-1, *planes.shape), axis=0)
    ys, xs = np.nonzero(planes)
    room = max(limit - len(rows), 0)
    for y, x in zip(ys[:room], xs[:room]):
        rows.append({"module": module, "y": int(y), "x": int(x), "planes": int(planes[y, x]), "bits": describe(bits[y, x])})
    return len(ys) > room

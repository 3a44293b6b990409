"""What ``rmm history`` prints: the numbers of :func:`rmm_dask.nightly.history.report` as narrow tables (80 columns).

The rows are made here once (:func:`k_rows`, :func:`night_rows`, :func:`changed_rows`) for the console's tables
and the HTML page of ``--html`` (:mod:`rmm_dask.history_page`): both say the same."""

from __future__ import annotations

from .tables import compact, table

#: how the tables count, said below them
PIXEL_RULE = ("a pixel (module, y, x) is bad on a night when any of its planes (gain, cell) is; newly bad and healed: "
              "against the last night the plane was seen (not NO_DATA)")
#: what the history does not tell, said on the HTML page
UNTOLD = ("nights held or not published are not counted (a night is one published version of a set of dark runs); "
          "a night without data for a pixel (NO_DATA) counts neither good nor bad; counts over the last N nights "
          "reach back 64 nights at most (N <= 64); ASIC edge pixels are never bad (geometry); why a pixel was bad, "
          "and what its features were, is in that night's mask store, not here.")


def _k(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


def k_rows(result: dict) -> list[list[str]]:
    """Rows (k, pixels, fraction): the distinct pixels bad in k of the last N nights (k in bins for N > 16)."""
    total = max(result["pixels"], 1)
    return [[_k(*row["k"]), compact(row["pixels"]), f"{row['pixels'] / total:.2e}"] for row in result["bins"]]


def night_rows(result: dict) -> list[list[str]]:
    """Rows (night, version, darks' date, flagged, newly bad, healed) of the last N nights, pixel-planes."""
    return [[str(row["night"]), row["version"], (row["date"] or "")[:16].replace("T", " "), compact(row["flagged"]),
             compact(row["newly_bad"]), compact(row["healed"])] for row in result["per_night"]]


def changed_rows(result: dict) -> list[list[str]]:
    """Rows (module, gain, cell, y, x, changes, bad/seen) of the pixel-planes that changed state most often."""
    return [[str(p["module"]), str(p["gain"]), str(p["cell"]), str(p["y"]), str(p["x"]), str(p["changes"]),
             f"{p['bad']}/{p['seen']}"] for p in result["most_changed"]]


def history_tables(result: dict) -> list:
    """Three tables: distinct pixels bad in k of the last N nights (k grouped in bins for N > 16), the last N nights
    (flagged, newly bad and healed pixel-planes) and the pixel-planes that changed state most often; then the notes."""
    from rich.text import Text

    n = result["last"]
    k_table = table()
    for col in ("k", "pixels", "fraction"):
        k_table.add_column(col, justify="right", no_wrap=True)
    for row in k_rows(result):
        k_table.add_row(*row)

    nights = table()
    for col, justify in (("night", "right"), ("version", "left"), ("darks (UTC)", "left"), ("flagged", "right"),
                         ("newly bad", "right"), ("healed", "right")):
        nights.add_column(col, justify=justify, no_wrap=True)
    for row in night_rows(result):
        nights.add_row(*row)

    out = [Text(f"distinct pixels bad in k of the last {n} night(s):"), k_table,
           Text(f"the last {n} night(s), pixel-planes:"), nights]
    if result["most_changed"]:
        changed = table()
        for col in ("module", "gain", "cell", "y", "x", "changes", "bad/seen"):
            changed.add_column(col, justify="left" if col == "gain" else "right", no_wrap=True)
        for row in changed_rows(result):
            changed.add_row(*row)
        out += [Text("the pixel-planes that changed state most often (good <-> bad between nights seen):"), changed]
    else:
        out.append(Text("no pixel changed state between nights"))
    out.append(Text(PIXEL_RULE))
    return out + [Text(f"note: {note}") for note in result["notes"]]

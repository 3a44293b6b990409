"""What ``rmm history`` prints: the numbers of :func:`rmm_dask.nightly.history.report` as narrow tables (80 columns)."""

from __future__ import annotations

from .tables import compact, table


def _k(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


def history_tables(result: dict) -> list:
    """Three tables: distinct pixels bad in k of the last N nights (k grouped in bins for N > 16), the last N nights
    (flagged, newly bad and healed pixel-planes) and the pixel-planes that changed state most often; then the notes."""
    from rich.text import Text

    n, total = result["last"], max(result["pixels"], 1)
    k_table = table()
    for col in ("k", "pixels", "fraction"):
        k_table.add_column(col, justify="right", no_wrap=True)
    for row in result["bins"]:
        k_table.add_row(_k(*row["k"]), compact(row["pixels"]), f"{row['pixels'] / total:.2e}")

    nights = table()
    for col, justify in (("night", "right"), ("version", "left"), ("darks (UTC)", "left"), ("flagged", "right"),
                         ("newly bad", "right"), ("healed", "right")):
        nights.add_column(col, justify=justify, no_wrap=True)
    for row in result["per_night"]:
        date = (row["date"] or "")[:16].replace("T", " ")
        nights.add_row(str(row["night"]), row["version"], date, compact(row["flagged"]), compact(row["newly_bad"]),
                       compact(row["healed"]))

    out = [Text(f"distinct pixels bad in k of the last {n} night(s):"), k_table,
           Text(f"the last {n} night(s), pixel-planes:"), nights]
    if result["most_changed"]:
        changed = table()
        for col in ("module", "gain", "cell", "y", "x", "changes", "bad/seen"):
            changed.add_column(col, justify="left" if col == "gain" else "right", no_wrap=True)
        for p in result["most_changed"]:
            changed.add_row(str(p["module"]), str(p["gain"]), str(p["cell"]), str(p["y"]), str(p["x"]),
                            str(p["changes"]), f"{p['bad']}/{p['seen']}")
        out += [Text("the pixel-planes that changed state most often (good <-> bad between nights seen):"), changed]
    else:
        out.append(Text("no pixel changed state between nights"))
    out.append(Text("a pixel (module, y, x) is bad on a night when any of its planes (gain, cell) is; newly bad and "
                    "healed: against the last night the plane was seen (not NO_DATA)"))
    return out + [Text(f"note: {note}") for note in result["notes"]]

"""What the commands print (rich, 80 columns): their console, and the tables of a store's counts, of a diff, of the nightly catalog."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import printable

#: column names of the per-module, gain and cell counts (at most 5 characters: 80-column terminals)
SHORT = {
    "OFFSET": "OFFS", "NOISE": "NOISE", "GAIN_SEPARATION": "GSEP", "GAIN_LEVEL": "GLVL",
    "FLAT_HIGH": "FHIGH", "FLAT_LOW": "FLOW", "ASIC_EDGE": "EDGE", "NO_DATA": "NODAT", "any": "any",
}


def console():
    """The console of the commands' output: a terminal's width (or ``COLUMNS``, which rich reads, also when the
    output goes to a pipe or a file), else wide enough for the count tables in a log."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160
    return Console(highlight=False, markup=False, width=width)  # markup off: '[/b]' in a path is text


#: what a folded line's continuation starts with: a line of its own never does (it cannot be forged by a path)
CONTINUATION = "    "


def folded(text: str, width: int | None) -> str:
    """One line of text (control characters already escaped) folded to ``width`` columns, each
    continuation indented by :data:`CONTINUATION`: a long path stays readable on an 80-column
    terminal, and its text, where the line is folded, can never pass for a line of its own."""
    import textwrap

    if not width or len(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width, subsequent_indent=CONTINUATION, break_on_hyphens=False))


def compact(n: int) -> str:
    """A count in at most 5 characters: exact below 100000, else 123k, 1.2M, 12M, 1.2G."""
    if n < 100_000:
        return str(n)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f}{suffix}" if v < 9.95 else f"{v:.0f}{suffix}"
    return str(n)


def table(title: str | None = None, caption: str | None = None):
    """A rich table without vertical rules, its cells never wrapped: as narrow as the content."""
    from rich import box
    from rich.table import Table

    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, title_justify="left", caption_justify="left")


#: the bits each feature of ``Params.features`` sets
FEATURE_BITS = {"offset": ("OFFSET",), "noise": ("NOISE",), "gain_separation": ("GAIN_SEPARATION",),
                "gain_level": ("GAIN_LEVEL",), "flat": ("FLAT_HIGH", "FLAT_LOW")}


def untested(attrs) -> dict:
    """The bits a store's analysis could not set, and why: ``{bit name: reason}`` (no flat run, no gain
    recorded, one gain stage, a feature not asked for), so that a report says "not tested", never 0."""
    from .detectors import detector_of

    out = {}
    asked = (attrs.get("parameters") or {}).get("features")
    for feature, bits in FEATURE_BITS.items():
        if asked is not None and feature not in asked:
            out.update(dict.fromkeys(bits, f"{feature} not among the features asked for"))
    try:
        det = detector_of(attrs)
    except (KeyError, ValueError):
        det = None
    if not attrs.get("flat_stage"):
        out.update(dict.fromkeys(FEATURE_BITS["flat"], "no flat run"))
    if det is not None and det.gain == "none":
        out.update(dict.fromkeys(("GAIN_SEPARATION", "GAIN_LEVEL"), f"{det.name} records no gain stage"))
    elif len(attrs.get("gain_stages") or ()) < 2:
        out.setdefault("GAIN_SEPARATION", "one gain stage's dark run: nothing to separate")
    return out


def untested_line(missing: dict) -> str:
    """"not tested: FLAT_HIGH, FLAT_LOW (no flat run); ..." for :func:`untested`'s result."""
    by_reason = {}
    for bit, reason in missing.items():
        by_reason.setdefault(reason, []).append(bit)
    return "not tested: " + "; ".join(f"{', '.join(bits)} ({reason})" for reason, bits in by_reason.items())


def counts_tables(counts: dict, per_cell: bool, missing: dict | None = None) -> list:
    """The counts of ``summary.count_bits`` as two tables that fit 80 columns: per bit (exact,
    with the short names), and per module, gain stage (and cell) with the short names. The bits
    in ``missing`` (:func:`untested`) read "not tested" and "-", not 0."""
    from .codes import BadPixel

    missing = missing or {}
    names = [b.name for b in BadPixel] + ["any"]
    per_plane = counts["pixels"]
    totals = table()
    for col, justify in (("bit", "left"), ("column", "left"), ("pixel-planes", "right"), ("fraction", "right")):
        totals.add_column(col, justify=justify, no_wrap=True)
    for n in names:
        if n in missing:
            totals.add_row(n, SHORT[n], "not tested", "-")
        else:
            totals.add_row(n, SHORT[n], str(counts["total"][n]), f"{counts['total'][n] / per_plane:.2e}")
    caption = "columns: the bits above; counts of 100000 and more rounded: k = 10^3, M = 10^6, G = 10^9"
    breakdown = table(caption=caption + ("; -: not tested" if missing else ""))
    breakdown.add_column("", no_wrap=True)
    for n in names:
        breakdown.add_column(SHORT[n], justify="right", no_wrap=True)
    for axis in ("module", "gain") + (("cell",) if per_cell else ()):
        for key, row in counts[axis].items():
            breakdown.add_row(f"{axis} {key}", *("-" if n in missing else compact(row[n]) for n in names))
    return [totals, breakdown]


def gap_line(counts: dict) -> str:
    """What ``rmm show`` says of the gap pixels of ``summary.count_bits``' counts: how many, and that they
    are missing data by design, not defects, so that a reader does not take the table's NODAT for them."""
    pixels = (counts.get("manufacturer_bits") or {}).get("gap", 0)
    return (f"gap pixels: {pixels} ({counts['total']['gap']} pixel-planes), no sensor behind them (manufacturer's "
            "bit 0): missing data, not defects; their NO_DATA is not counted above "
            "(the mask and exports still mask them)")


def detector_lines(root) -> list[str]:
    """What ``rmm show`` and the HTML reports say of a store's detector (``root``: the open store, or its tree):
    modules, chips, and where their description came from, so that a reader sees which layout the mask was
    made for (chips from the run's own pixel mask or from the description) without reading its attributes."""
    from .detectors import detector_of

    attrs = root.attrs
    det = detector_of(attrs, None)
    chips = attrs.get("chips") or "from the description"
    if chips == "from the description":
        rows, columns = ([a for a, _ in det.asic_windows(axis)] + [det.module_shape[axis]] for axis in (0, 1))
        chips = f"chip rows {rows}, columns {columns} from the description"
    return [f"detector: {det.name}, {det.n_modules} module(s) of {det.module_shape[0]} x {det.module_shape[1]} pixels; "
            f"description: {attrs.get('detector_source') or 'by its name'}", f"chips: {chips}"]


def _say(console):
    """Print one line of text on ``console``, control characters escaped, folded to its width
    (:func:`folded`): a long path or list stays within an 80-column terminal."""
    def say(text: str) -> None:
        console.print(folded(printable(text), console.width), soft_wrap=True)
    return say


def print_counts(console, store, per_cell: bool, root=None) -> None:
    """Print the counts of a store (per bit; per module, gain stage and, with ``per_cell``, cell), its gap pixels
    (missing data, counted apart from the defects: :func:`gap_line`) and its layers.

    ``root``: the store as :func:`rmm_dask.store.open_store` opened it already (verified once, not twice)."""
    from .integrity import note
    from .store import open_store
    from .summary import count_bits

    say = _say(console)
    root = open_store(store) if root is None else root
    counts = count_bits(root)
    if note(root.attrs):
        say(f"note: {note(root.attrs)}")
    say(f"masked pixel-planes in {store}:")
    missing = untested(root.attrs)
    for t in counts_tables(counts, per_cell, missing):
        console.print(t)
    if missing:
        say(untested_line(missing))
    if not per_cell and len(counts["cell"]) > 1:
        any_bad = [row["any"] for row in counts["cell"].values()]
        say(f"per cell (any bit): min {min(any_bad)}, max {max(any_bad)} over {len(any_bad)} cells; --cells lists them")
    if counts["total"].get("gap"):
        say(gap_line(counts))
    bits = counts.get("manufacturer_bits")
    for name, n in counts.get("layers", {}).items():
        if name == "manufacturer" and bits:  # gaps and virtual pixels are information, not defects
            per_bit = ", ".join(f"{bit} {k}" for bit, k in bits.items() if bit not in ("reject", "any"))
            say(f"layer manufacturer: {bits['reject']} pixels rejected (NeXus bits 0-15), {bits['any']} with any bit: "
                f"{per_bit}")
        elif name == "history" and counts.get("history"):  # a mask that remembers: pixel-planes, not pixels
            from .summary import history_line

            say(history_line(counts["history"]))
        else:
            say(f"layer {name}: {n} pixels masked (kept apart from the bits above; exports combine them)")


def print_inputs(console, tree, files: bool = False) -> None:
    """Print what a store was made from (``tree``: its :func:`rmm_dask.store.open_tree`): per run its path,
    frames per cell and how many files of what size, the frames F1 rejected of each dark run (per module
    where the modules differ, with their train ids), and with ``files`` every file (name, size, time) in a
    table; without, a line saying how many there are and that ``--files`` lists them."""
    from .report_text import file_rows, input_line, rejected_frames, rejected_line

    say = _say(console)
    rejected = rejected_frames(tree)
    listed = table("input files", caption="modified: the time the job found on the file, UTC")
    for col, justify in (("run", "left"), ("file", "left"), ("size", "right"), ("modified", "left")):
        listed.add_column(col, justify=justify, no_wrap=col != "file", overflow="fold")
    for role, info in (tree.attrs.get("inputs") or {}).items():
        say(f"  {input_line(role, info)}")
        if role in rejected:
            say(f"  {role}, rejected by F1: {rejected_line(rejected[role])}")
        for row in file_rows(info):
            listed.add_row(role, *(printable(cell) for cell in row))
    if files and listed.row_count:
        console.print(listed)
    elif listed.row_count:
        say(f"  files: {listed.row_count} (--files lists them with their sizes and times)")


def print_parameters(console, attrs) -> None:
    """Print a store's parameters as a table of name, value and meaning (:func:`rmm_dask.report_text.parameter_rows`);
    on a narrow console the values wrap before the meanings do."""
    from .report_text import parameter_rows

    params = table("parameters")
    params.add_column("name", no_wrap=True)
    params.add_column("value", max_width=None if console.width >= 120 else max(12, console.width // 4))
    params.add_column("meaning")
    for row in parameter_rows(attrs):
        params.add_row(*(printable(cell) for cell in row))
    console.print(params)


def print_verdict(console, counts: dict | None) -> None:
    """Print rmm's verdict against the manufacturer's pixel mask (:func:`rmm_dask.summary.verdict_counts`'
    ``counts``) as a table of pixels with what each verdict means, or a line saying there is none."""
    from .report_text import NO_VERDICT, VERDICT_TITLE, verdict_rows

    if counts is None:
        _say(console)(NO_VERDICT)
        return
    verdict = table(VERDICT_TITLE)
    verdict.add_column("verdict", no_wrap=True)
    verdict.add_column("pixels", justify="right", no_wrap=True)
    verdict.add_column("meaning")
    for row in verdict_rows(counts):
        verdict.add_row(*row)
    console.print(verdict)


def _with_pixels(row: dict, key: str) -> str:
    """A count of pixel-planes, with its distinct pixels where the row has them: "15750 (2701 px)"."""
    return str(row[key]) + (f" ({row[key + '_distinct']} px)" if key + "_distinct" in row else "")


def diff_tables(result: dict, per_cell: bool) -> list:
    """``diff.diff_masks``'s counts as two narrow tables: per bit, and per module, gain (and cell), each count
    of pixel-planes with the distinct pixels it is in where known; then its notes (control characters escaped)."""
    from rich.text import Text

    bits = table("bits set and cleared")
    for col in ("bit", "set", "cleared"):
        bits.add_column(col, justify="left" if col == "bit" else "right", no_wrap=True)
    for name, row in result["bits"].items():
        bits.add_row(name, _with_pixels(row, "set"), _with_pixels(row, "cleared"))
    changes = table("newly bad / recovered")
    for col in ("", "newly bad", "recovered"):
        changes.add_column(col, justify="left" if not col else "right", no_wrap=True)
    for axis in ("module", "gain") + (("cell",) if per_cell else ()):
        for key, row in result[axis].items():
            changes.add_row(f"{axis} {key}", _with_pixels(row, "newly_bad"), _with_pixels(row, "recovered"))
    counted = Text("counts of pixel-planes (module, gain, cell, y, x); px: the distinct pixels (module, y, x) they are in")
    h = result.get("history")
    remembered = [] if not h else [Text(  # the layer of a mask that remembers, apart from the mask's bits
        f"history layer: {h['history_newly']} pixel-planes newly remembered ({h['history_newly_distinct']} px),"
        f" {h['history_cleared']} no longer ({h['history_cleared_distinct']} px); what each version masks (mask or"
        f" layer): {h['union']['newly_bad']} newly bad ({h['union']['newly_bad_distinct']} px),"
        f" {h['union']['recovered']} recovered ({h['union']['recovered_distinct']} px)")]
    return [bits, changes, counted, *remembered,
            *(Text(printable(f"note: {n}")) for n in result.get("notes") or [])]  # unverified


def status_table(rows: list[dict]) -> list:
    """The catalog's sets in 80 columns: a table per detector, one row per set (finished to the
    minute, seconds, flagged fraction, newly bad/recovered), then each set's runs and message
    on lines of their own."""
    import json

    from rich.text import Text

    out = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        rows_table = table(title=detector)
        for col, justify in (("id", "right"), ("version", "left"), ("status", "left"), ("tries", "right"),
                             ("finished (UTC)", "left"), ("s", "right"), ("flagged", "right"), ("new/rec", "right")):
            rows_table.add_column(col, justify=justify, no_wrap=True)
        notes = []
        for r in (r for r in rows if r["detector"] == detector):
            fraction = "" if r["bad_fraction"] is None else f"{r['bad_fraction']:.1e}"
            changes = "" if r["newly_bad"] is None else f"{compact(r['newly_bad'])}/{compact(r['recovered'] or 0)}"
            rows_table.add_row(
                str(r["id"]), f"v{r['version']:04d}", r["status"], str(r["attempts"]), (r["finished"] or "")[:16].replace("T", " "),
                "" if r["seconds"] is None else compact(round(r["seconds"])), fraction, changes,
            )
            runs = json.loads(r["runs"])
            where = Path(next(iter(runs.values()), "")).parent
            names = ", ".join(f"{role} {Path(p).name}" for role, p in runs.items())
            notes.append(Text(f"{r['id']}: {names} in {where}" + (f"; {r['message']}" if r["message"] else "")))
        out += [rows_table, *notes]
    if rows:
        out.append(Text("flagged: fraction of pixel-planes; new/rec: pixel-planes newly bad / recovered against the previous current"))
    return out


def print_status(console, settings) -> None:
    """The nightly catalog's sets (:func:`status_table`) and where each ``current`` points."""
    from rich.text import Text

    from .nightly import status_rows

    rows, pointers = status_rows(settings)
    def say(text: str) -> None:
        console.print(folded(printable(text), console.width), soft_wrap=True)

    say(f"catalog {settings.state / 'catalog.sqlite'}: {len(rows)} set(s)")
    for renderable in status_table(rows):
        if isinstance(renderable, Text):  # a set's runs and message: folded with indented continuations
            say(renderable.plain)
        else:
            console.print(renderable)
    for name, version in pointers.items():
        say(f"{name}: current -> {'none' if version is None else f'v{version:04d}'}  ({settings.publish / name})")

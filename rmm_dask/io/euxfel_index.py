"""European XFEL RAW runs: what is in a run directory, from its metadata (no pixel data).

:func:`open_run_directory` opens the run's files through EXtra-data, :func:`find_sources`
names the module sources of the detector, :func:`module_frames` reads one module's index
and per-frame cell ids, :func:`select_trains` keeps the trains with the run's cell
sequence in every module, and :func:`train_rows` lays out where a module's kept frames
are in its files for the reader (:mod:`rmm_dask.io.euxfel`).

Before any of that is trusted, the run is proven complete and of one piece, from metadata
alone: :func:`check_identity` (every file of the directory is of its run and proposal: the
file name ``RAW-R<run>-<aggregator>-S<sequence>.h5`` and ``METADATA/runNumber``,
``proposalNumber``) and :func:`check_sequences` (each module's sequence files are
``S00000`` up without a gap, hold consecutive trains that no other of its files holds,
and no module's files end before the others' without their last sequences). A run that
fails is refused with an :class:`InputError` naming the file; trains missing from every
file are a note (:func:`train_gap_note`), as the DAQ may skip trains.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..detectors import Detector
from ..errors import InputError
from .common import open_hdf5

IMAGE_KEY = "image.data"
_XTDF_SOURCE = re.compile(r"^(?P<det>[^/]+)/DET/(?P<module>\d+)CH0:xtdf$")
_RUN_FILE = re.compile(r"^[A-Z]+-R(\d+)-")
_RUN_DIR = re.compile(r"^r(\d+)$")
#: the name the DAQ gives a file: RAW-R0002-AGIPD00-S00001.h5 (CORR-... for corrected data)
_SEQUENCE_FILE = re.compile(r"^(?P<prefix>[A-Z]+)-R(?P<run>\d+)-(?P<aggregator>[A-Za-z0-9]+)-S(?P<sequence>\d+)\.h5$")
#: a run directory in the facility's tree: .../p<proposal>/raw/r<run>
_PROPOSAL_DIR = re.compile(r"^p(\d+)$")


@dataclass(frozen=True)
class _Flavour:
    """How a kind of detector stores its frames in RAW files."""

    group: str  #: INDEX group of the frames
    datasets: tuple  #: read into the (analog, gain) planes: one (frame, 2, y, x) dataset, or one per plane
    cells: str  #: memory cell ids: per frame, or per train entry (train, cell)
    per_train: bool  #: one entry per train with all its cells along axis 1 (JUNGFRAU), else one per frame
    source_hint: str  #: what its module sources look like, for messages
    #: EXtra-data's number of the detector's first module (JUNGFRAU: JNGFR01 is 1); rmm counts from 0
    first_module: int = 0


XTDF = _Flavour("image", ("image/data",), "image/cellId", False, "<detector>/DET/<n>CH0:xtdf")
JUNGFRAU = _Flavour("data", ("data/adc", "data/gain"), "data/memoryCell", True, "<detector>/DET/JNGFR<n>:daqOutput", first_module=1)


def flavour_of(det: Detector) -> _Flavour:
    return JUNGFRAU if det.gain == "bits" else XTDF


class _ModuleSource:
    """Frames of one module source: per train with data, where they are and which cells they hold."""

    def __init__(self, number: int, source: str):
        self.number = number
        self.source = source
        self.files: list[str] = []
        self.trains: dict[int, tuple[int, int, int]] = {}  #: train id -> (file index, first frame, count)
        self.cells: dict[int, bytes] = {}  #: train id -> its cell ids (uint16 bytes)
        self.pulses: dict[int, bytes] = {}  #: train id -> its pulse ids (uint64 bytes)
        self.suspect: set[int] = set()  #: trains with frames but flagged suspect (INDEX/flag = 0)
        self.duplicate = 0
        self.sequences: list[int | None] = []  #: per file (as ``files``): its sequence number, None if unknown
        self.spans: list[tuple[int, int] | None] = []  #: per file: first and last train with frames, None if none

    def file_name(self, train: int | None = None) -> str:
        index = self.trains[train][0] if train is not None else 0
        return os.path.basename(self.files[index]) if self.files else self.source


def run_number(run_dir: str, files) -> int:
    for name in [os.path.basename(p) for p in files] + [os.path.basename(run_dir)]:
        match = _RUN_FILE.match(name) or _RUN_DIR.match(name)
        if match:
            return int(match[1])
    return -1


@dataclass(frozen=True)
class FileIdentity:
    """Which run, proposal and sequence a RAW file says it belongs to: by its name and by its METADATA."""

    path: str
    name_run: int | None  #: R<run> of the file name
    aggregator: str | None  #: AGIPD00, JNGFR01, DA01, ... of the file name
    name_sequence: int | None  #: S<sequence> of the file name
    run: int | None  #: METADATA/runNumber
    proposal: int | None  #: METADATA/proposalNumber
    sequence: int | None  #: METADATA/sequenceNumber

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def sequence_number(self) -> int | None:
        """The file's sequence: its name's, else its METADATA's."""
        return self.name_sequence if self.name_sequence is not None else self.sequence


def _metadata_number(meta: dict, key: str) -> int | None:
    """An integer METADATA entry (``runNumber``, ...), None when the file has none or it is not a number."""
    try:
        return int(meta[key])
    except (KeyError, TypeError, ValueError):
        return None


def file_identity(fa) -> FileIdentity:
    """What an open EXtra-data ``FileAccess`` says about its run: its name and its METADATA (metadata only)."""
    match = _SEQUENCE_FILE.match(os.path.basename(fa.filename))
    try:
        meta = fa.metadata()
    except (KeyError, OSError):  # format 0.5 files have no METADATA numbers; an unreadable group says nothing
        meta = {}
    return FileIdentity(
        path=fa.filename,
        name_run=int(match["run"]) if match else None,
        aggregator=match["aggregator"] if match else None,
        name_sequence=int(match["sequence"]) if match else None,
        run=_metadata_number(meta, "runNumber"),
        proposal=_metadata_number(meta, "proposalNumber"),
        sequence=_metadata_number(meta, "sequenceNumber"),
    )


def _expected(values: list[int], directory: int | None, what: str) -> tuple[int, str]:
    """The number the files should carry, and why: the directory's, else the one most files carry."""
    if directory is not None:
        return directory, what
    number, n = Counter(values).most_common(1)[0]
    return number, f"{n} of the run's {len(values)} files"


def check_identity(run_dir: str, identities: list[FileIdentity]) -> None:
    """Refuse a run directory holding a file of another run or proposal (a sequence file copied in).

    Every file's run number, by its name (``RAW-R0002-...``) and by ``METADATA/runNumber``,
    must be the directory's (``r0002``; a directory named otherwise: the number most files
    carry); every file's ``METADATA/proposalNumber`` the proposal of the directory
    (``.../p001234/raw/r0002``) or, elsewhere, of most files; a file named as sequence ``N``
    must say ``sequenceNumber`` ``N``. Numbers a file does not record are not compared.
    """
    base = os.path.basename(run_dir.rstrip(os.sep))
    match = _RUN_DIR.match(base)
    proposal_dir, raw = os.path.split(os.path.dirname(run_dir.rstrip(os.sep)))  # .../p001234, raw
    in_tree = _PROPOSAL_DIR.match(os.path.basename(proposal_dir)) if raw == "raw" else None
    runs = [r for i in identities for r in (i.name_run, i.run) if r is not None]
    if runs:
        run, why = _expected(runs, int(match[1]) if match else None, f"the directory {base}")
        for i in identities:
            for number, how in ((i.name_run, f"its name says R{i.name_run:04d}" if i.name_run is not None else ""),
                                (i.run, f"its METADATA/runNumber is {i.run}")):
                if number is not None and number != run:
                    raise InputError(i.path, f"is a file of run {number} ({how}), not of run {run} ({why}):"
                                             " a file of another run copied into the run directory?")
    proposals = [i.proposal for i in identities if i.proposal is not None]
    if proposals:
        in_tree_proposal = int(in_tree[1]) if in_tree else None
        proposal, why = _expected(proposals, in_tree_proposal, f"the directory {in_tree and in_tree[0]}")
        for i in identities:
            if i.proposal is not None and i.proposal != proposal:
                raise InputError(i.path, f"is a file of proposal {i.proposal} (its METADATA/proposalNumber), not of"
                                         f" proposal {proposal} ({why}): a file of another proposal's run copied in?")
    for i in identities:
        if i.name_sequence is not None and i.sequence is not None and i.name_sequence != i.sequence:
            raise InputError(i.path, f"is named as sequence {i.name_sequence} but its METADATA/sequenceNumber is"
                                     f" {i.sequence}: a sequence file copied under another name?")


def check_shared_trains(files) -> None:
    """Refuse two files holding the same train of one source (EXtra-data refuses the run too, naming
    only the source): names the later file by name, which is the one copied in, as a rule."""
    by_source: dict[str, list] = {}
    for fa in sorted(files, key=lambda fa: os.path.basename(fa.filename)):
        for source in (*fa.instrument_sources, *fa.control_sources):
            by_source.setdefault(source, []).append(fa)
    for source, holders in by_source.items():
        if len(holders) < 2:
            continue
        tids = np.concatenate([np.asarray(fa.train_ids, dtype=np.int64) for fa in holders])
        owner = np.concatenate([np.full(len(fa.train_ids), i) for i, fa in enumerate(holders)])
        order = np.lexsort((owner, tids))
        twice = np.flatnonzero((np.diff(tids[order]) == 0) & (np.diff(owner[order]) != 0))
        if twice.size:
            first, later = holders[owner[order][twice[0]]], holders[owner[order][twice[0] + 1]]
            shared = np.intersect1d(first.train_ids, later.train_ids)
            raise InputError(later.filename, f"holds {shared.size} trains of {source} ({shared[0]}..{shared[-1]})"
                                             f" that {os.path.basename(first.filename)} holds too:"
                                             " a sequence file copied in?")


def open_run_directory(run_dir: str):
    """The run's files as one EXtra-data run; a file that does not open is an InputError naming it.

    Read only: ``extra_data.RunDirectory`` would save its map of the files' trains and sources
    (``karabo_data_map.json``) into the run directory when it may write there (and a virtual
    overview file may be used in place of the files); here each file is opened with
    EXtra-data's ``FileAccess`` and the files make one ``DataCollection``, which writes
    nothing. The price: a map left by others is not read, so each file's index is read on
    opening (as the first RunDirectory of a run does).
    """
    from extra_data import DataCollection
    from extra_data.file_access import FileAccess

    names = sorted(f for f in os.listdir(run_dir) if f.endswith(".h5") and f.lower() != "overview.h5")
    if not names:
        runs = sorted(d for d in os.listdir(run_dir) if _RUN_DIR.match(d) and os.path.isdir(os.path.join(run_dir, d)))
        hint = f" (it holds run directories: {', '.join(runs[:4])}{', ...' if len(runs) > 4 else ''})" if runs else ""
        raise InputError(run_dir, f"no .h5 files: not a EuXFEL run directory{hint}")
    files = []
    for name in names:
        path = os.path.join(run_dir, name)
        open_hdf5(path).close()  # raises for missing, empty, non-HDF5, truncated or corrupt files
        try:
            files.append(FileAccess(path))
        except Exception as e:  # noqa: BLE001  (EXtra-data raises FileStructureError, KeyError, OSError, ...)
            raise InputError(path, f"not a EuXFEL data file ({e})") from None
    try:
        check_identity(run_dir, [file_identity(fa) for fa in files])
        check_shared_trains(files)
    except InputError:
        for fa in files:
            fa.close()
        raise
    try:
        return DataCollection(files, ctx_closes=True, is_single_run=True)
    except Exception as e:  # noqa: BLE001  (EXtra-data raises bare Exceptions)
        raise InputError(run_dir, f"cannot open as a EuXFEL run: {e}") from None


def find_sources(run, run_dir: str, det: Detector, detector_id: str | None, modules) -> tuple[str, dict[int, str]]:
    """(detector id, {module number: source name}) of the raw module sources to read."""
    flavour = flavour_of(det)
    found = _jungfrau_sources(run, run_dir, det, detector_id) if flavour is JUNGFRAU else _xtdf_sources(run)
    if not found:
        listed = ", ".join(sorted(run.instrument_sources)[:5]) or "none"
        raise InputError(run_dir, f"no {det.name} raw module sources ({flavour.source_hint}) in the run; sources: {listed}")
    if detector_id is None:
        if len(found) > 1:
            raise InputError(
                run_dir, f"several detectors in the run ({', '.join(sorted(found))}): choose one with detector_id"
            )
        detector_id = next(iter(found))
    elif detector_id not in found:
        raise InputError(run_dir, f"no detector {detector_id} in the run (found {', '.join(sorted(found))})")
    sources = found[detector_id]
    too_high = [m for m in sources if m >= det.n_modules]
    if too_high:
        raise InputError(run_dir, f"module numbers {too_high} out of range for {det.name} ({det.n_modules} modules)")
    if modules is not None:
        wanted = sorted({int(m) for m in np.atleast_1d(modules)})
        missing = [m for m in wanted if m not in sources]
        if missing:
            raise InputError(run_dir, f"no data source for module(s) {missing} (found modules {sorted(sources)})")
        sources = {m: sources[m] for m in wanted}
    return detector_id, dict(sorted(sources.items()))


def _xtdf_sources(run) -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    for source in sorted(run.instrument_sources):
        match = _XTDF_SOURCE.match(source)
        if match:
            found.setdefault(match["det"], {})[int(match["module"])] = source
    return found


def _jungfrau_sources(run, run_dir: str, det: Detector, detector_id: str | None) -> dict[str, dict[int, str]]:
    """JUNGFRAU sources through EXtra-data's component; its modules JNGFR01... become 0, 1, ..."""
    from extra_data.components import JUNGFRAU as ExtraJungfrau
    from extra_data.exceptions import SourceNameError

    try:
        jf = ExtraJungfrau(run, detector_id, raw=True)
    except SourceNameError:  # no JUNGFRAU (of that name) in the run
        return {}
    except ValueError as e:  # several detectors, or modules that do not fit together
        raise InputError(run_dir, f"cannot read the {det.name} sources of the run: {e}") from None
    return {jf.detector_name: {modno - JUNGFRAU.first_module: source for modno, source in jf.modno_to_source.items()}}


def module_frames(run, number: int, source: str, det: Detector) -> _ModuleSource:
    """Read one module's index and per-frame cell/pulse ids (metadata only) from every file of its source."""
    flavour = flavour_of(det)
    mod = _ModuleSource(number, source)
    files = sorted(run[source].files, key=lambda fa: (int(fa.train_ids[0]) if len(fa.train_ids) else 0, fa.filename))
    inst = f"INSTRUMENT/{source}"
    for fa in files:
        path = fa.filename
        try:
            h5 = fa.file
            n_data, n_cells_stored = _check_frames(h5, inst, flavour, det, path)
            cells = np.asarray(h5[f"{inst}/{flavour.cells}"][:])
            cells = cells.reshape(-1) if not flavour.per_train else cells.reshape(cells.shape[0], -1)
            pulses = None
            if not flavour.per_train and "pulseId" in h5[f"{inst}/image"]:
                pulses = np.asarray(h5[f"{inst}/image/pulseId"][:]).reshape(-1).astype(np.uint64)
            firsts, counts = fa.get_index(source, flavour.group)
        except KeyError as e:
            what = e.args[0] if e.args else "dataset"
            raise InputError(path, f"{source}: missing {what} (not raw detector data?)") from None
        except OSError as e:
            raise InputError(path, f"cannot read the metadata of {source}: {e}") from None
        firsts = np.asarray(firsts, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        tids = np.asarray(fa.train_ids, dtype=np.uint64)
        valid = np.asarray(fa.validity_flag, dtype=bool)
        if firsts.size != tids.size:
            raise InputError(path, f"INDEX/{source}/{flavour.group} has {firsts.size} entries for {tids.size} trains")
        end = firsts + counts
        if len(end) and (end.max() > min(n_data, cells.shape[0])):
            raise InputError(
                path,
                f"INDEX/{source}/{flavour.group} points to entry {end.max()} but {flavour.datasets[0]} has {n_data}"
                f" and {flavour.cells} {cells.shape[0]}",
            )
        if flavour.per_train and (counts > 1).any():
            raise InputError(path, f"INDEX/{source}/{flavour.group} has trains with {counts.max()} entries, expected one")
        index = len(mod.files)
        mod.files.append(path)
        mod.sequences.append(file_identity(fa).sequence_number())
        with_frames = tids[counts > 0]
        mod.spans.append((int(with_frames.min()), int(with_frames.max())) if with_frames.size else None)
        for t, first, count, ok in zip(tids.tolist(), firsts.tolist(), counts.tolist(), valid.tolist()):
            if count == 0:
                continue
            if not ok:
                mod.suspect.add(t)
                continue
            if t in mod.trains:
                mod.duplicate += 1
                continue
            mod.trains[t] = (index, first, count)
            train_cells = cells[first] if flavour.per_train else cells[first : first + count]
            mod.cells[t] = train_cells.astype(np.uint16).tobytes()
            if pulses is not None:
                mod.pulses[t] = pulses[first : first + count].tobytes()
    return mod


def _check_frames(h5, inst: str, flavour: _Flavour, det: Detector, path: str) -> tuple[int, int | None]:
    """Entries in the file and cells per entry (JUNGFRAU), after checking shapes and dtypes."""
    ny, nx = det.module_shape
    if not flavour.per_train:
        data = h5[f"{inst}/{flavour.datasets[0]}"]
        if tuple(data.shape[1:]) != (2, ny, nx) or data.dtype != np.uint16:
            raise InputError(
                path,
                f"{inst.split('/', 1)[1]} {IMAGE_KEY} holds {data.dtype} frames of {tuple(data.shape[1:])},"
                f" expected uint16 {(2, ny, nx)} (raw {det.name} data)",
            )
        return data.shape[0], None
    adc, gain = (h5[f"{inst}/{name}"] for name in flavour.datasets)
    if adc.ndim != 4 or tuple(adc.shape[2:]) != (ny, nx) or adc.dtype != np.uint16:
        raise InputError(path, f"{inst}/data/adc holds {adc.dtype} {adc.shape}, expected uint16 (train, cell, {ny}, {nx}) (raw {det.name} data)")
    if gain.shape != adc.shape or gain.dtype.kind != "u":
        raise InputError(path, f"{inst}/data/gain holds {gain.dtype} {gain.shape}, expected unsigned {adc.shape} like data/adc")
    return adc.shape[0], adc.shape[1]


def _sequence_list(numbers) -> str:
    """[0, 1, 2, 4] -> 'S00000-S00002, S00004'."""
    numbers, parts = sorted(numbers), []
    for n in numbers:
        if parts and parts[-1][1] == n - 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ", ".join(f"S{a:05d}" if a == b else f"S{a:05d}-S{b:05d}" for a, b in parts)


def _sequence_name(mod: _ModuleSource, sequence: int) -> str:
    """The file name sequence ``sequence`` of a module has (from the name of one of its files)."""
    for path in mod.files:
        match = _SEQUENCE_FILE.match(os.path.basename(path))
        if match:
            return f"{match['prefix']}-R{match['run']}-{match['aggregator']}-S{sequence:05d}.h5"
    return f"sequence {sequence} of {mod.source}"


def _aggregator(mod: _ModuleSource) -> str:
    """AGIPD00, JNGFR01, ... from the module's file names, else its source name."""
    match = next((m for m in (_SEQUENCE_FILE.match(os.path.basename(p)) for p in mod.files) if m), None)
    return match["aggregator"] if match else mod.source


def check_sequences(mods: list[_ModuleSource], run_dir: str) -> None:
    """Refuse a run whose module sequence files are not complete and of one piece (metadata only).

    Per module: the sequence numbers (of the file names, else ``METADATA/sequenceNumber``)
    run from 0 without a gap or a repeat, and each sequence holds later trains than the one
    before (a train in two of them is a file copied in; the reader would take one of them
    and drop the other). Across modules: a module with fewer sequence files than another
    must not end before it (its last sequences are missing); fewer files that hold the same
    trains are fine (files split otherwise). A module whose files' sequences cannot be told
    (neither name nor METADATA say) is not checked.
    """
    for mod in mods:
        if not mod.files or any(s is None for s in mod.sequences):
            continue
        by_sequence: dict[int, int] = {}
        for index, sequence in enumerate(mod.sequences):
            if sequence in by_sequence:
                other = os.path.basename(mod.files[by_sequence[sequence]])
                raise InputError(mod.files[index], f"is sequence S{sequence:05d} of {mod.source}, as {other} is:"
                                                   " a sequence file copied in twice?")
            by_sequence[sequence] = index
        missing = sorted(set(range(max(by_sequence) + 1)) - set(by_sequence))
        if missing:
            present = _sequence_list(by_sequence)
            raise InputError(run_dir, f"{_sequence_name(mod, missing[0])} missing: sequences {present}"
                                      f" of {_aggregator(mod)} present (a copy or transfer not finished?)")
        ordered = [by_sequence[s] for s in sorted(by_sequence) if mod.spans[by_sequence[s]] is not None]
        for a, b in zip(ordered, ordered[1:]):
            a1, (b0, b1) = mod.spans[a][1], mod.spans[b]
            if b0 <= a1:
                raise InputError(mod.files[b], f"holds trains {b0}..{b1}, but {os.path.basename(mod.files[a])}, an"
                                               f" earlier sequence of {mod.source}, holds trains up to {a1}: a sequence"
                                               " file of another acquisition copied in?")
    ends = {mod.number: max(span[1] for span in mod.spans if span is not None) for mod in mods if any(mod.spans)}
    for mod in mods:
        longer = [m for m in mods if len(m.files) > len(mod.files) and ends.get(m.number, 0) > ends.get(mod.number, 0)]
        if longer and mod.number in ends:
            other = max(longer, key=lambda m: ends[m.number])
            present = _sequence_list(s for s in mod.sequences if s is not None) or f"{len(mod.files)} files"
            more = _sequence_list(s for s in other.sequences if s is not None) or f"{len(other.files)} files"
            raise InputError(
                run_dir,
                f"{_sequence_name(mod, len(mod.files))} missing: {_aggregator(mod)} has sequences {present} with trains"
                f" up to {ends[mod.number]}, {_aggregator(other)} has {more} with trains up to {ends[other.number]}"
                " (a copy or transfer not finished?)",
            )


def train_gap_note(train_ids) -> str | None:
    """A note when train ids are missing from every file of the run between its first and last train, else None.

    The DAQ may skip trains: a gap is said, not refused (a missing sequence file is refused
    by :func:`check_sequences` before this)."""
    ids = np.unique(np.asarray(list(train_ids), dtype=np.int64))
    if ids.size < 2:
        return None
    steps = np.diff(ids)
    if (steps == 1).all():
        return None
    widest = int(np.argmax(steps))
    lost = int((steps - 1).sum())
    return (f"{lost} train ids between {ids[0]} and {ids[-1]} are in no file of the run (the longest gap:"
            f" {ids[widest] + 1}..{ids[widest + 1] - 1}); the DAQ did not record them")


def module_ranges(numbers: list[int]) -> str:
    """[2, 3, 4, 7] -> 'modules 2-4, 7'."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(n) if n == start else f"{start}-{n}")
            start = None
    return ("module " if len(numbers) == 1 else "modules ") + ", ".join(parts)


def _describe_cells(key: bytes) -> str:
    cells = np.frombuffer(key, dtype=np.uint16)
    if cells.size == 0:
        return "no frames"
    if cells.size > 1 and (np.diff(cells.astype(np.int64)) == 1).all():
        listing = f"{cells[0]}..{cells[-1]}"
    elif cells.size <= 4:
        listing = ", ".join(map(str, cells))
    else:
        listing = ", ".join(map(str, cells[:3])) + f", ..., {cells[-1]}"
    return f"{cells.size} frames, cells {listing}"


def select_trains(mods: list[_ModuleSource], run_dir: str) -> tuple[np.ndarray, bytes, list[str]]:
    """Trains with data in every module and the run's cell sequence in each: (train ids, sequence, notes)."""
    notes = []
    for mod in mods:
        if mod.duplicate:
            notes.append(f"ignored {mod.duplicate} trains stored twice in module {mod.number} (kept the first)")
    for mod in mods:
        if not mod.trains:
            raise InputError(mod.files[0] if mod.files else run_dir, f"no frames of {mod.source} in any train")
    every = np.array(sorted(set().union(*(m.trains for m in mods))), dtype=np.uint64)
    n_all = every.size
    sequences = Counter(key for mod in mods for key in mod.cells.values())
    reference = sequences.most_common(1)[0][0]
    ref_cells = np.frombuffer(reference, dtype=np.uint16)
    if np.unique(ref_cells).size != ref_cells.size:
        mod = next(m for m in mods if reference in m.cells.values())
        raise InputError(
            mod.files[0], f"memory cell ids repeat within a train ({_describe_cells(reference)}); cannot group by cell"
        )

    keep = np.ones(n_all, dtype=bool)
    for mod in mods:
        present = np.fromiter((int(t) in mod.trains for t in every), dtype=bool, count=n_all)
        same = np.fromiter((mod.cells.get(int(t)) == reference for t in every), dtype=bool, count=n_all)
        suspect = ~present & np.fromiter((int(t) in mod.suspect for t in every), dtype=bool, count=n_all)
        missing = int(np.count_nonzero(~present & ~suspect))
        other = present & ~same
        if missing:
            notes.append(f"dropped {missing} of {n_all} trains missing in module {mod.number}")
        if suspect.any():
            notes.append(
                f"dropped {int(suspect.sum())} of {n_all} trains flagged suspect (INDEX/flag = 0)"
                f" in module {mod.number}"
            )
        if other.any():
            t = int(every[np.argmax(other)])
            notes.append(
                f"dropped {int(other.sum())} of {n_all} trains of module {mod.number} with a cell sequence other"
                f" than the run's ({_describe_cells(reference)}), e.g. train {t} in {mod.file_name(t)}:"
                f" {_describe_cells(mod.cells[t])}"
            )
        keep &= same
    kept = every[keep]
    if kept.size == 0:
        parts = []
        for mod in mods:
            first_train = min(mod.trains)
            parts.append(
                f"module {mod.number} ({mod.file_name(first_train)}): {len(mod.trains)} trains"
                f" {min(mod.trains)}..{max(mod.trains)}, {_describe_cells(mod.cells[first_train])}"
            )
        raise InputError(
            mods[0].files[0] if len(mods) == 1 else run_dir,
            "no train has the same cell sequence in every module: " + "; ".join(parts),
        )
    return kept, reference, notes


def train_rows(mod: _ModuleSource, kept: np.ndarray, entries_per_train: int) -> np.ndarray:
    """int64 (row, 4) of :class:`rmm_dask.io.euxfel._RawBlock` segments for the kept trains of one module."""
    rows = []
    for out, t in enumerate(kept.tolist()):
        index, first, _ = mod.trains[t]
        if rows and rows[-1][0] == index and rows[-1][1] + rows[-1][2] * entries_per_train == first:
            rows[-1][2] += 1
        else:
            rows.append([index, first, 1, out])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)



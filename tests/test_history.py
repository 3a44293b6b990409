"""Issue 23 items 1 and 2: the pixel history of a nightly detector (history.zarr) and `rmm history`.

Histories are appended from real mask stores written as nightly versions (planted codes, the
store layout and checks of rmm), and from real `rmm nightly` passes on a synthetic tree."""

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from rmm_dask import history as kernels
from rmm_dask import integrity, publish
from rmm_dask.cli import main
from rmm_dask.nightly import history
from tests.cli_errors import one_line_error

EDGE, NO_DATA, OFFSET, NOISE = 64, 128, 1, 2
A, B, C, D = (0, 0, 0, 10, 10), (0, 1, 1, 20, 20), (0, 2, 0, 30, 30), (0, 0, 1, 40, 40)  #: planted pixel-planes


# ------------------------------------------------------------------------------------------ nights as versions


def write_version(root: Path, number: int, codes: np.ndarray, darks: int, template: Path, *, status="published",
                  flat: str | None = None) -> Path:
    """A nightly version ``root/vNNNN`` of the dark runs ``darks`` whose mask store holds ``codes``, written as rmm
    writes a mask store (checksummed chunks, manifest, the template store's attributes)."""
    attrs = dict(zarr.open_group(template, mode="r").attrs)
    version = root / f"v{number:04d}"
    version.mkdir(parents=True)
    group = zarr.open_group(version / "mask.zarr", mode="w-", zarr_format=3)
    mask = group.create_array("mask", shape=codes.shape, chunks=(1, codes.shape[1], 1, *codes.shape[3:]),
                              dtype=np.uint8, fill_value=0, dimension_names=["module", "gain", "cell", "y", "x"],
                              **integrity.array_options())
    mask[...] = codes
    group.attrs.update({**attrs, "arrays": integrity.manifest(group), "start_time": f"v{number:04d}"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(version / "mask.zarr")
    runs = {f"dark-{stage}": f"/raw/r{darks:04d}-{stage}" for stage in ("high", "medium", "low")}
    if flat is not None:
        runs["flat"] = flat
    summary = {"runs": runs, "status": status, "inputs": {}, "started": f"2026-12-{number:02d}T01:00:00+00:00"}
    (version / "summary.json").write_text(json.dumps(summary))
    return version


def planted_nights(shape: tuple, n: int = 6, seed: int = 3) -> list[np.ndarray]:
    """``n`` nights of codes: a few random bits on 0.5% of the planes, ASIC edges at x = 0, NO_DATA now and then,
    and the planted planes A (bad on even nights), B (bad from night 3), C (bad on nights 0-2, then healed),
    D (bad on nights 1 and 3, no data on night 2)."""
    rng = np.random.default_rng(seed)
    out = []
    for night in range(n):
        codes = np.where(rng.random(shape) < 0.005, rng.integers(1, 256, shape), 0).astype(np.uint8)
        codes[..., 0] |= EDGE
        codes[A], codes[B], codes[C], codes[D] = 0, 0, 0, 0
        codes[A] = OFFSET if night % 2 == 0 else EDGE
        codes[B] = NOISE if night >= 3 else 0
        codes[C] = OFFSET | NOISE if night <= 2 else 0
        codes[D] = {1: OFFSET, 2: NO_DATA, 3: NOISE}.get(night, 0)
        out.append(codes)
    return out


def truth(nights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The counters of the history computed directly from all nights at once (not night by night)."""
    c = np.stack(nights)
    seen = (c & NO_DATA) == 0
    bad = seen & ((c & ~np.uint8(EDGE | NO_DATA)) != 0)
    n = len(nights)
    ever = bad.any(axis=0)
    verdict = np.where(seen, bad.astype(np.int8), -1)  # -1: not seen
    changes = np.zeros(c.shape[1:], dtype=np.uint16)
    for index in zip(*np.nonzero((verdict == 1).any(axis=0))):  # only planes ever bad can change
        seq = [v for v in verdict[(slice(None), *index)] if v >= 0]
        changes[index] = sum(a != b for a, b in zip(seq, seq[1:]))
    weights = (np.uint64(1) << np.arange(n - 1, -1, -1, dtype=np.uint64))[:, None, None, None, None, None]
    return {
        "seen": seen.sum(0), "bad": bad.sum(0),
        "bad_bits": np.stack([((c >> b) & 1).sum(0) for b in range(8)]),
        "first_bad": np.where(ever, bad.argmax(0), -1),
        "last_bad": np.where(ever, n - 1 - bad[::-1].argmax(0), -1),
        "changes": changes,
        "recent": (bad.astype(np.uint64) * weights).sum(0, dtype=np.uint64),
        "recent_seen": (seen.astype(np.uint64) * weights).sum(0, dtype=np.uint64),
    }


def arrays(path: Path, base: str = "") -> dict[str, np.ndarray]:
    group = history.open_history(path)
    return {name: group[base + name][...] for name in history.ARRAYS}


@pytest.fixture
def tree(store, tmp_path):
    """A detector directory with six published nights of planted codes (history not yet written)."""
    root = tmp_path / "masks" / "AGIPD"
    shape = tuple(zarr.open_group(store, mode="r")["mask"].shape)
    nights = planted_nights(shape)
    for i, codes in enumerate(nights):
        write_version(root, i + 1, codes, darks=i + 1, template=store)
    return root, nights


def log():
    lines = []
    return lines, lines.append


# ------------------------------------------------------------------------------------------ the kernel


def test_kernel_counts_one_block_exactly():
    rng = np.random.default_rng(0)
    nights = [rng.choice(np.array([0, 1, 2, 64, 65, 128, 129], np.uint8), (2, 3, 2, 4, 5)) for _ in range(70)]
    h = kernels.empty(nights[0].shape)
    for i, codes in enumerate(nights):
        got = kernels.add_night(h, codes, i)
    expect = truth(nights)
    for name in ("seen", "bad", "bad_bits", "first_bad", "last_bad", "changes"):
        np.testing.assert_array_equal(h[name], expect[name], err_msg=name)
    seen, bad = kernels.verdicts(nights[-1])
    assert got["flagged"].tolist() == bad.reshape(2, -1).sum(1).tolist()  # per module
    last = truth(nights[-64:])["recent"]  # 70 nights: the bitset keeps the last 64
    np.testing.assert_array_equal(h["recent"], last)
    np.testing.assert_array_equal(h["recent_seen"], truth(nights[-64:])["recent_seen"])
    for n in (1, 7, 64):
        np.testing.assert_array_equal(kernels.bad_in_last(h["recent"], n), truth(nights[-n:])["bad"])
        fraction, seen, bad = kernels.frequency(h["recent"], h["recent_seen"], n)
        expect_n = truth(nights[-n:])
        np.testing.assert_array_equal(seen, expect_n["seen"])
        np.testing.assert_array_equal(bad, expect_n["bad"])
        assert seen.dtype == bad.dtype == np.uint16 and fraction.dtype == np.float32
        assert np.isnan(fraction[seen == 0]).all() and (n > 1 or (seen == 0).any())  # never seen: no fraction
        np.testing.assert_allclose(fraction[seen > 0], (bad / np.maximum(seen, 1))[seen > 0], rtol=1e-6)
    with pytest.raises(ValueError, match="last 64 nights"):
        kernels.last_bits(65)


# ------------------------------------------------------------------------------------------ the store


def test_appended_night_by_night_the_counts_are_the_truth_and_equal_a_rebuild(tree, tmp_path):
    root, nights = tree
    said, say = log()
    partial = tmp_path / "three"  # the first three nights only, then the others appear one by one
    for v in sorted(root.glob("v*"))[3:]:
        shutil.move(v, partial / v.name) if partial.exists() else (partial.mkdir(), shutil.move(v, partial / v.name))
    history.update(root, say)
    assert said == [f"AGIPD history: rebuilt from 3 published version(s), as it was missing ({said[0].split('(')[-1]}"]
    for v in sorted(partial.iterdir()):
        shutil.move(v, root / v.name)
        assert history.update(root, say)["kind"] == "append"
        assert said[-1].startswith(f"AGIPD history: {v.name} appended ({int(v.name[1:])} night(s), ")
    assert history.update(root, say) is None and len(said) == 4  # up to date: nothing done, nothing said

    path = root / "history.zarr"
    got, expect = arrays(path), truth(nights)
    for name, value in expect.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert [got[k][A] for k in ("seen", "bad", "first_bad", "last_bad", "changes")] == [6, 3, 0, 4, 5]
    assert [got[k][B] for k in ("seen", "bad", "first_bad", "last_bad", "changes")] == [6, 3, 3, 5, 1]
    assert [got[k][C] for k in ("seen", "bad", "first_bad", "last_bad", "changes")] == [6, 3, 0, 2, 1]
    assert [got[k][D] for k in ("seen", "bad", "first_bad", "last_bad", "changes")] == [5, 2, 1, 3, 2]
    undo = arrays(path, "undo/")
    for name, value in truth(nights[:-1]).items():
        np.testing.assert_array_equal(undo[name], value, err_msg=f"undo/{name}")
    attrs = history.open_history(path).attrs
    assert [n["version"] for n in attrs["nights"]] == [f"v{i:04d}" for i in range(1, 7)]
    seen, bad = kernels.verdicts(nights[4])
    before = np.zeros(seen.shape, np.int8)  # the verdict of the last night seen before night 4: 0 none, 1 good, 2 bad
    for codes in nights[:4]:
        s, b = kernels.verdicts(codes)
        before = np.where(s, 1 + b, before)
    counts = attrs["counts"][4]
    assert counts["flagged"] == [int(bad.sum())] and counts["seen"] == [int(seen.sum())]
    assert counts["bits"]["NOISE"] == [int(((nights[4] & NOISE) != 0).sum())]
    assert counts["newly_bad"] == [int((bad & (before == 1)).sum())]
    assert counts["healed"] == [int((seen & ~bad & (before == 2)).sum())] and counts["healed"][0] > 0

    again = tmp_path / "again" / "AGIPD"
    shutil.copytree(root, again)
    shutil.rmtree(again / "history.zarr")
    history.update(again, say, rebuild=True)
    assert said[-1].startswith("AGIPD history: rebuilt from 6 published version(s), as asked for (--rebuild)")
    for base in ("", "undo/"):
        rebuilt = arrays(again / "history.zarr", base)
        for name, value in arrays(path, base).items():
            assert rebuilt[name].dtype == value.dtype and np.array_equal(rebuilt[name], value), base + name
    assert history.open_history(again / "history.zarr").attrs["counts"] == attrs["counts"]


def test_a_replaced_newest_night_is_redone_from_the_counters_before_it(tree, store, tmp_path):
    root, nights = tree
    said, say = log()
    history.update(root, say)
    late = nights[-1].copy()
    late[0, 0, 0, 100, 100] = OFFSET  # the late flat's version of night 6's darks: one pixel more
    write_version(root, 7, late, darks=6, template=store, flat="/raw/r0099")
    # no older night is read: their mask chunks are gone in this copy (their metadata, which names them, stays)
    alone = tmp_path / "alone" / "AGIPD"
    shutil.copytree(root, alone)
    for v in ("v0001", "v0002", "v0003", "v0004", "v0005"):
        for chunk in (alone / v / "mask.zarr" / "mask").glob("c.*"):
            chunk.unlink()
    assert history.update(alone, say)["kind"] == "undo"
    assert said[-1].startswith("AGIPD history: night 6 is now v0007, not v0006: redone from the counters before it")
    got = arrays(alone / "history.zarr")
    for name, value in truth([*nights[:-1], late]).items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    # a held newest night: the history goes back to five nights (rebuilt: rare)
    summary = json.loads((root / "v0007" / "summary.json").read_text())
    history.update(root, say)
    (root / "v0007" / "summary.json").write_text(json.dumps(summary | {"status": "held"}))
    assert history.update(root, say)["kind"] == "undo" and "night 6 is now v0006, not v0007" in said[-1]
    (root / "v0006" / "summary.json").write_text(json.dumps(summary | {"status": "held", "runs": json.loads(
        (root / "v0006" / "summary.json").read_text())["runs"]}))
    assert history.update(root, say)["kind"] == "rebuild"
    assert "its nights are not the published versions'" in said[-1]
    attrs = history.open_history(root / "history.zarr").attrs
    assert [n["version"] for n in attrs["nights"]] == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    # released again: appended (it is the newest set)
    (root / "v0007" / "summary.json").write_text(json.dumps(summary))
    assert history.update(root, say)["kind"] == "append" and said[-1].startswith("AGIPD history: v0007 appended")


def _killed_at(step: str, root: Path) -> int:
    """Run the history's update in a forked child that dies (os._exit, no clean-up) at publish step ``step``."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            publish._HOOK = lambda s: os._exit(9) if s == step else None
            history.update(root, lambda line: None)
        except BaseException:
            code = 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_kill_at_every_publish_step_leaves_the_old_or_the_new_history(tree, tmp_path):
    root, nights = tree
    last = root / "v0006"
    aside = tmp_path / "v0006"
    shutil.move(last, aside)
    history.update(root, lambda line: None)
    five = arrays(root / "history.zarr")
    shutil.move(aside, last)
    expect = truth(nights)
    for step in publish.STEPS:
        work = tmp_path / step
        shutil.copytree(root, work)
        code = _killed_at(step, work)
        assert code in (0, 9), (step, code)
        got = arrays(work / "history.zarr")  # verified: never half a history
        n = len(history.open_history(work / "history.zarr").attrs["nights"])
        assert n in (5, 6) and (code == 9 or n == 6), (step, n)
        assert np.array_equal(got["seen"], five["seen"] if n == 5 else expect["seen"]), step
        history.update(work, lambda line: None)  # the next pass: appends what is missing, tidies the leftovers
        assert np.array_equal(arrays(work / "history.zarr")["recent"], expect["recent"]), step
        assert [p.name for p in work.iterdir() if p.name.startswith(".")] == [], step


# ------------------------------------------------------------------------------------------ failures


def test_a_history_of_an_older_rmm_is_refused_and_the_next_pass_rebuilds_it(tree, capsys):
    """Format 1 (no ``recent_seen``): refused in one line by readers, rebuilt by the next pass, read again."""
    root, nights = tree
    history.update(root, lambda line: None)
    path = root / "history.zarr"
    meta = json.loads((path / "zarr.json").read_text())  # what an older rmm wrote: format 1, no recent_seen
    meta["attributes"]["format"] = "rmm-dask pixel history 1"
    for name in ("recent_seen", "undo/recent_seen"):
        del meta["attributes"]["arrays"][name]
        meta.get("consolidated_metadata", {}).get("metadata", {}).pop(name, None)
    for part in (path, path / "undo"):
        part.chmod(0o755)
    (path / "zarr.json").chmod(0o644)
    (path / "zarr.json").write_text(json.dumps(meta))
    for name in ("recent_seen", "undo/recent_seen"):
        shutil.rmtree(path / name)
    assert main(["history", str(root)]) == 2
    one_line_error(capsys, f"{path}: a history of an older rmm (format 'rmm-dask pixel history 1', this rmm reads "
                           f"'{history.FORMAT}'): the next nightly pass rebuilds it", f"rmm history {root} --rebuild")
    assert history.FORMAT == "rmm-dask pixel history 2"
    said, say = log()
    assert history.update(root, say)["kind"] == "rebuild"
    assert "rebuilt from 6 published version(s), as it was of an older rmm (format 'rmm-dask pixel history 1')" in \
        said[0]
    np.testing.assert_array_equal(arrays(path)["recent_seen"], truth(nights)["recent_seen"])
    assert main(["history", str(root)]) == 0


def test_a_link_at_history_zarr_and_a_full_disk_leave_the_history_as_it_was(tree, tmp_path, monkeypatch, capsys):
    root, _ = tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "history.zarr").symlink_to(elsewhere)
    assert main(["history", str(root), "--rebuild"]) == 2
    one_line_error(capsys, f"rmm history: {root / 'history.zarr'}: is a symbolic link",
                   "not read or written through it")
    assert os.listdir(elsewhere) == [] and (root / "history.zarr").is_symlink()
    assert main(["history", str(root)]) == 2
    one_line_error(capsys, "is a symbolic link")

    (root / "history.zarr").unlink()
    history.update(root, lambda line: None)
    before = {p: p.read_bytes() for p in (root / "history.zarr").rglob("*") if p.is_file()}

    def full(step):
        if step == "written":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(publish, "_HOOK", full)
    assert main(["history", str(root), "--rebuild", "--json", str(tmp_path / "h.json")]) == 2
    one_line_error(capsys, f"{root / 'history.zarr'}: cannot write the pixel history: no space left on device",
                   "nothing was published")
    monkeypatch.setattr(publish, "_HOOK", None)
    assert {p: p.read_bytes() for p in (root / "history.zarr").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [] and not (tmp_path / "h.json").exists()


def test_rmm_history_tables_json_and_its_refusals(tree, tmp_path, capsys, monkeypatch):
    root, nights = tree
    monkeypatch.setenv("COLUMNS", "80")
    empty = tmp_path / "masks" / "LPD"
    empty.mkdir()
    assert main(["history", str(empty)]) == 2
    one_line_error(capsys, f"{empty / 'history.zarr'}: no pixel history and no published version", "nothing to show")
    assert main(["history", str(root)]) == 2
    one_line_error(capsys, "no pixel history yet (6 published version(s)): the next nightly pass builds it",
                   f"rmm history {root} --rebuild")
    assert main(["history", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "nowhere: no such directory")

    assert main(["history", str(root), "--rebuild", "--last", "4", "--json", str(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    text = " ".join(out.split())
    assert "AGIPD history: rebuilt from 6 published version(s)" in text
    assert "6 night(s), the last 4 counted; 65536 pixels" in text
    result = json.loads((tmp_path / "h.json").read_text())
    assert not (tmp_path / "h.json").stat().st_mode & 0o222
    c = np.stack(nights[-4:])
    seen = (c & NO_DATA) == 0
    per_pixel = (seen & ((c & ~np.uint8(EDGE | NO_DATA)) != 0)).any(axis=(2, 3)).sum(0)  # nights bad per (module, y, x)
    assert [r["pixels"] for r in result["bad_in_k_of_last"]] == np.bincount(per_pixel.ravel(), minlength=5).tolist()
    for row in result["bins"]:
        assert f"{row['k'][0]} {row['pixels']}" in text
    assert [r["version"] for r in result["per_night"]] == ["v0003", "v0004", "v0005", "v0006"]
    top = result["most_changed"][0]
    assert (top["module"], top["gain"], top["cell"], top["y"], top["x"], top["changes"]) == (0, "high", 0, 10, 10, 5)
    assert f"0 high 0 10 10 5 {top['bad']}/{top['seen']}" in text

    chunk = root / "history.zarr" / "recent" / "c.0.0.0.0.0"  # damaged: one byte flipped
    data = chunk.read_bytes()
    chunk.chmod(0o644)
    chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert main(["history", str(root)]) == 2
    one_line_error(capsys, "damaged history: chunk recent/c.0.0.0.0.0 does not match its checksum",
                   "the next nightly pass rebuilds it from the published versions", "--rebuild")
    said, say = log()
    history.update(root, say)
    assert "rebuilt from 6 published version(s), as it was damaged: chunk recent/c.0.0.0.0.0 does not match" in said[0]
    assert main(["history", str(root), "--last", "65"]) == 2
    one_line_error(capsys, "--last: 65: give 1 to 64 nights")


# ------------------------------------------------------------------------------------------ the nightly service


def test_the_nightly_pass_keeps_the_history(tmp_path, capsys):
    """Real passes: two nights appended, a late flat replacing night 2, that version held, a damaged history rebuilt."""
    from tests.test_nightly_ops import T0, nightly, taken, write_config, write_runs

    tree = tmp_path / "facility" / "p700000"
    config = write_config(tmp_path, **{"flat-window": "2h"})
    root = tmp_path / "masks" / "AGIPD"

    def nights():
        return [n["version"] for n in history.open_history(root / "history.zarr").attrs["nights"]]

    def passed(*needles):
        assert nightly(config, "--once") == 0
        out = " ".join(capsys.readouterr().out.split())
        for needle in needles:
            assert needle in out, out

    write_runs(tree, {"dark-high": 2, "dark-medium": 3, "dark-low": 4})
    for number in (2, 3, 4):
        taken(tree, number, T0)
    passed("AGIPD history: rebuilt from 1 published version(s), as it was missing")
    write_runs(tree, {"dark-high": 5, "dark-medium": 6, "dark-low": 7}, acquisition=1)
    for number in (5, 6, 7):
        taken(tree, number, T0 + 86400)
    passed("AGIPD history: v0002 appended (2 night(s)")
    assert nights() == ["v0001", "v0002"]
    write_runs(tree, {"flat": 8})  # a late flat of night 2's darks: v0003 replaces v0002, and its night
    taken(tree, 8, T0 + 86400 + 1800)
    passed("AGIPD history: night 2 is now v0003, not v0002: redone from the counters before it (2 night(s)")
    assert nights() == ["v0001", "v0003"]
    rebuilt = tmp_path / "copy" / "AGIPD"
    shutil.copytree(root, rebuilt)
    history.update(rebuilt, lambda line: None, rebuild=True)
    for base in ("", "undo/"):
        for name, value in arrays(root / "history.zarr", base).items():
            assert np.array_equal(arrays(rebuilt / "history.zarr", base)[name], value), base + name

    assert nightly(config, "--hold", "AGIPD/v0003", "--reason", "the flat was of another detector") == 0
    passed("AGIPD history: night 2 is now v0002, not v0003")
    assert nights() == ["v0001", "v0002"]
    chunk = root / "history.zarr" / "seen" / "c.0.0.0.0.0"
    data = chunk.read_bytes()
    chunk.chmod(0o644)
    chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    passed("AGIPD history: rebuilt from 2 published version(s), as it was damaged: chunk seen/c.0.0.0.0.0 does not"
           " match its checksum", "pass complete: 0 set(s) processed, 0 failed")
    assert nights() == ["v0001", "v0002"] and not [p for p in root.iterdir() if p.name.startswith(".")]

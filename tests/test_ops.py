"""Operations: nothing executable from places others can write (the numba cache), inputs are
never written, the demo cleans up, and what operators read fits a terminal."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rmm_dask.numba_cache import kernels_digest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534

#: imports rmm-dask, compiles (or loads) one cached kernel, and says where its cache went
KERNEL = """
import json, os, numba, numpy as np
import rmm_dask
from rmm_dask.robust import _finite_span
assert _finite_span(np.array([-np.inf, 1.0, 2.0, np.nan])) == (1, 3)
where = os.environ["NUMBA_CACHE_DIR"]
index = [os.path.join(d, f) for d, _, fs in os.walk(where) for f in fs if f.endswith(".nbi")]
print(json.dumps({"env": where, "numba": numba.config.CACHE_DIR, "index": index}))
"""


def run_kernel(tmp_path: Path, **env) -> tuple[dict, str]:
    """KERNEL in a fresh interpreter with HOME and TMPDIR under tmp_path; (its report, its stderr)."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    base.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run([sys.executable, "-c", KERNEL], env=base, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["env"] == report["numba"]  # numba uses what the environment says
    assert report["index"] and all(p.startswith(report["env"] + os.sep) for p in report["index"])  # and it cached there
    return report, proc.stderr


def cache_of(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".cache" / "rmm-dask" / "numba"


def assert_went_elsewhere(tmp_path: Path, report: dict, stderr: str, refused: Path, why: str) -> None:
    """The refused directory was not used, one warning line says why, the process-only cache is gone."""
    lines = [line for line in stderr.splitlines() if line.startswith("rmm-dask:")]
    assert len(lines) == 1 and str(refused) in lines[0] and why in lines[0], stderr
    assert Path(report["env"]).parent == tmp_path / "tmp" and Path(report["env"]).name.startswith("rmm-dask-numba-")
    assert not Path(report["env"]).exists()  # removed when the process exited
    assert not any(p.name.endswith((".nbi", ".nbc")) for p in refused.resolve().rglob("*"))


def test_numba_cache_is_private_per_user(tmp_path):
    report, stderr = run_kernel(tmp_path)
    cache = cache_of(tmp_path)
    assert report["env"] == str(cache / kernels_digest()) and "rmm-dask:" not in stderr
    for d in (cache / kernels_digest(), cache, cache.parent):
        assert (d.stat().st_mode & 0o777) == 0o700 and d.stat().st_uid == os.getuid()
    again, _ = run_kernel(tmp_path)  # the next process finds and trusts its own directory
    assert again["env"] == report["env"] and again["index"] == report["index"]


def test_numba_cache_is_per_version_of_the_kernels(tmp_path):
    """numba checks only the file of the function it loads, not of the kernels it calls:
    a cache is kept per digest of every kernel module, so an edited callee recompiles."""
    import rmm_dask

    digest = kernels_digest()
    copy = tmp_path / "src"
    shutil.copytree(Path(rmm_dask.__file__).parent, copy / "rmm_dask", ignore=shutil.ignore_patterns("__pycache__"))
    kernels = copy / "rmm_dask" / "robust_plane.py"  # called by features' F6 from another file
    kernels.write_text(kernels.read_text() + "\n# edited\n")
    code = "import rmm_dask.numba_cache as c; print(c.kernels_digest())"
    edited = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(copy)}, cwd=copy, capture_output=True, text=True, check=True)
    assert edited.stdout.strip() != digest and len(digest) == 16


def test_numba_cache_follows_xdg_cache_home(tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    report, _ = run_kernel(tmp_path, XDG_CACHE_HOME=str(xdg))
    assert report["env"] == str(xdg / "rmm-dask" / "numba" / kernels_digest())


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_numba_cache_created_by_another_user_is_refused(tmp_path):
    cache = cache_of(tmp_path)
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, NOBODY, NOBODY)  # what another local user does first
    report, stderr = run_kernel(tmp_path)
    assert_went_elsewhere(tmp_path, report, stderr, cache, f"owned by uid {NOBODY}")


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_numba_cache_below_another_users_directory_is_refused(tmp_path):
    cache = cache_of(tmp_path)
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache.parent, NOBODY, NOBODY)  # they could swap the cache directory at any time
    report, stderr = run_kernel(tmp_path)
    assert_went_elsewhere(tmp_path, report, stderr, cache, f"owned by uid {NOBODY}")


def test_numba_cache_symlink_is_refused(tmp_path):
    cache = cache_of(tmp_path)
    cache.parent.mkdir(parents=True, mode=0o700)
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    cache.symlink_to(planted)
    report, stderr = run_kernel(tmp_path)
    assert_went_elsewhere(tmp_path, report, stderr, cache, "symbolic link")
    assert list(planted.iterdir()) == []


def test_numba_cache_writable_by_group_is_refused(tmp_path):
    cache = cache_of(tmp_path)
    cache.mkdir(parents=True)
    cache.chmod(0o770)
    report, stderr = run_kernel(tmp_path)
    assert_went_elsewhere(tmp_path, report, stderr, cache, "writable by group (mode 0770)")


def test_numba_cache_dir_given_is_trusted(tmp_path):
    given = tmp_path / "given"
    report, stderr = run_kernel(tmp_path, NUMBA_CACHE_DIR=str(given))
    assert report["env"] == str(given) and "rmm-dask:" not in stderr and not cache_of(tmp_path).exists()


# ------------------------------------------------------------------ inputs are read, never written


def tree_state(root: Path) -> dict:
    """Every entry under ``root`` (and root itself): type, mode, size and mtime."""
    entries = [root, *sorted(root.rglob("*"))]
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns) for p in entries}


@pytest.mark.parametrize("alias", ["agipd", "jungfrau"])
def test_euxfel_runs_are_opened_read_only(tmp_path, alias):
    """EXtra-data's RunDirectory saves karabo_data_map.json into a run directory it may write;
    opening and masking a run (and refusing a broken one) leaves the directories as they were."""
    from rmm_dask.detectors import get_detector
    from rmm_dask.errors import InputError
    from rmm_dask.io import open_run
    from rmm_dask.pipeline import build_mask
    from rmm_dask.synth import SynthConfig, synthesize
    from rmm_dask.synth.on_disk import write_synthetic

    det = get_detector(alias)
    runs = write_synthetic(synthesize(SynthConfig(modules=2, cells=1, frames=12, flat_frames=12, detector=det)), tmp_path, truth=None)
    raw = tmp_path / "raw"
    assert os.access(raw, os.W_OK)  # EXtra-data would write here
    before = tree_state(raw)
    darks = {g: open_run(runs[f"dark-{g}"], det) for g in det.gain_stages}
    mask = build_mask(darks, open_run(runs["flat"], det), detector=det).compute(scheduler="sync")
    assert mask["mask"].any() and (mask["mask"] == 0).mean() > 0.5  # a real result was computed
    assert tree_state(raw) == before

    # a rejected run: one module file truncated (refused after the others were opened)
    broken = Path(runs["flat"])
    victim = max(broken.glob("*.h5"))
    victim.write_bytes(victim.read_bytes()[:2000])
    before = tree_state(raw)
    with pytest.raises(InputError, match=victim.name):
        open_run(broken, det)
    assert tree_state(raw) == before and not list(raw.rglob("karabo_data_map.json"))


@pytest.mark.slow
def test_demo_announces_and_removes_its_temporary_directory(tmp_path, monkeypatch, capsys):
    import tempfile

    from rmm_dask.cli import build_parser, main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo", "--modules", "1", "--cells", "1", "--frames", "40", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("writing to ")]
    work = Path(line.split()[2])
    assert work.parent == tmp_path and work.name.startswith("rmm-demo-") and "removed at the end" in line
    assert "clean pixels flagged" in out and f"removed {work}" in out
    # nothing left: runs, store, exports and the LocalCluster's scratch space all gone
    assert list(tmp_path.iterdir()) == []
    args = build_parser().parse_args(["demo", "--keep"])
    assert args.keep and args.out is None


# ------------------------------------------------------------------ what operators read


def render(renderables, width: int = 80) -> list[str]:
    """What a terminal of ``width`` columns shows of the renderables (rich), line by line."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    for r in renderables:
        console.print(r)
    return console.file.getvalue().splitlines()


def assert_fits(lines: list[str], width: int = 80) -> None:
    assert lines and max(len(line) for line in lines) <= width
    assert not [line for line in lines if "…" in line], "a cell was cut"


def big_counts(modules=16, cells=352, gains=("high", "medium", "low")) -> dict:
    """count_bits' layout for a full AGIPD-1M with the largest counts each row can hold."""
    from rmm_dask.codes import BadPixel

    names = [b.name for b in BadPixel] + ["any", "flagged"]
    per_module = 512 * 128 * len(gains) * cells

    def row(n):
        return {name: n - i for i, name in enumerate(names)}

    return {
        "pixels": per_module * modules,
        "total": row(per_module * modules),
        "module": {m: row(per_module) for m in range(modules)},
        "gain": {g: row(per_module * modules // len(gains)) for g in gains},
        "cell": {c: row(per_module * modules // cells) for c in range(cells)},
        "layers": {},
    }


def test_count_tables_fit_80_columns():
    from rmm_dask.tables import SHORT, compact, counts_tables

    counts = big_counts()
    lines = render(counts_tables(counts, per_cell=True))
    assert_fits(lines)
    total = counts["total"]["OFFSET"]
    assert any(line.split()[:3] == ["OFFSET", "OFFS", str(total)] for line in lines)  # exact totals, with the short name
    header = next(line for line in lines if line.split()[:1] == ["OFFS"])
    assert header.split() == [SHORT[n] for n in SHORT]
    rows = [line.split() for line in lines if line.split()[:1] in (["module"], ["gain"], ["cell"])]
    assert len(rows) == 16 + 3 + 352
    assert rows[0][:3] == ["module", "0", compact(counts["module"][0]["OFFSET"])]
    for n, shown in [(99_999, "99999"), (100_000, "100k"), (123_456, "123k"), (1_234_567, "1.2M"), (69_206_016, "69M"), (1_107_296_256, "1.1G")]:
        assert compact(n) == shown and len(shown) <= 5


def test_status_and_diff_tables_fit_80_columns():
    from rmm_dask.tables import diff_tables, status_table

    message = "12.50% of pixel-planes flagged, outside the bounds [0.00%, 10.00%]; " * 2
    rows = [
        {"id": i, "detector": "SPB_AGIPD1M", "version": i, "status": "interrupted", "attempts": 3,
         "finished": "2026-12-01T01:31:07.123+00:00", "seconds": 21599.6, "bad_fraction": 0.0123456,
         "newly_bad": 1_234_567, "recovered": 98_765, "message": message,
         "runs": json.dumps({f"dark-{g}": f"/gpfs/exfel/exp/SPB/202601/p900000/raw/r{i:04d}" for g in ("high", "medium", "low")})}
        for i in range(1, 4)
    ]
    lines = render(status_table(rows))
    assert_fits(lines)
    assert lines[0].strip() == "SPB_AGIPD1M"  # the detector as the table's title
    assert any(line.split()[:5] == ["1", "v0001", "interrupted", "3", "2026-12-01"] for line in lines)
    assert "".join(lines).replace(" ", "").count("outsidethebounds") == 6  # the messages, wrapped, never cut

    counts = {"newly_bad": 1_000_000_000, "recovered": 999_999_999}
    result = {"bits": {"GAIN_SEPARATION": {"set": 1_000_000_000, "cleared": 999_999_999}},
              "module": {m: counts for m in range(16)}, "gain": {"medium": counts}, "cell": {c: counts for c in range(352)}}
    lines = render(diff_tables(result, per_cell=True))
    assert_fits(lines)
    assert any(line.split() == ["GAIN_SEPARATION", "1000000000", "999999999"] for line in lines)


def subparsers() -> dict:
    import argparse

    from rmm_dask.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_command_and_option_has_help():
    import argparse

    for name, parser in subparsers().items():
        assert parser.description and len(parser.description) > 60, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.option_strings or action.dest)
    text = subparsers()["mask"].format_help()
    assert "Robust Mask Maker" in text and "--lambda L" in text and "exit 2" in text


def readme_synopsis() -> dict[str, str]:
    """The README's command synopsis: command -> its lines (from `rmm <command>` to the next command)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```")[1]
    synopsis, name = {}, None
    for line in block.splitlines():
        if line.startswith("rmm "):
            name = line.split()[1]
        if name:
            synopsis[name] = synopsis.get(name, "") + " " + line
    return synopsis


def test_readme_lists_every_option_of_every_command():
    import re

    synopsis = readme_synopsis()
    commands = subparsers()
    assert set(synopsis) == set(commands)
    for name, parser in commands.items():
        text, without = synopsis[name], set()
        if "the options of rmm mask" in text:  # rmm submit: "(the options of rmm mask, without --a and --b)"
            without = set(re.findall(r"--[a-z][a-z0-9-]*", text.split("without", 1)[1].split(")", 1)[0]))
            text += synopsis["mask"]
        words = set(re.findall(r"--[a-z][a-z0-9-]*", text)) - without
        options = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        assert not options - words, f"rmm {name}: README lacks {sorted(options - words)}"
        assert not words - options, f"rmm {name}: README names {sorted(words - options)}, unknown to the parser"
        assert not without & options, f"rmm {name}: README says it has no {sorted(without & options)}"

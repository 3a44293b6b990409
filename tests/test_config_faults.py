"""Bad configurations and descriptions of issue 20: one line, exit 2, never a traceback or a MemoryError.

YAML alias bombs and oversized files in every YAML rmm reads (``--config``, ``--jobqueue``,
``--detector FILE.yaml``, the nightly configuration), detector descriptions beyond any
detector (in a file and in a store's attributes), the keys of configs/rmm.yaml checked as
their options are, output under ``LC_ALL=C`` from non-ASCII paths, and paths with control
characters that must not split or forge a line. Each test asserts the exit code, the one
line, and that nothing was published.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import pytest

from rmm_dask import detectors
from rmm_dask.cli import main
from rmm_dask.tables import CONTINUATION

from .cli_errors import one_line_error
from .conftest import mask_args, raw

ROOT = Path(__file__).resolve().parents[1]


def bomb(levels: int = 9, indent: str = "") -> str:
    """'Billion laughs': 9 nested aliases of 9 lists each, a few hundred bytes that stand for 9^9 values."""
    lines = [f"{indent}l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


BOMBS = {
    "--config": "rmm-dask:\n  f1:\n" + bomb(indent="    ") + "  window: *l9\n",
    "--jobqueue": "jobqueue:\n  slurm:\n" + bomb(indent="    ") + "    job-extra-directives: *l9\n",
    "--detector": "name: BOMB\nmodules: 1\nasic-shape: [32, 32]\n" + bomb() + "module-shape: *l9\n",
}


def only(directory: Path, *names) -> None:
    """Nothing in ``directory`` but ``names``: no store, no partial, no export was left."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


@pytest.mark.parametrize("option", sorted(BOMBS))
def test_alias_bomb_is_refused_at_once(runs, tmp_path, capsys, option):
    """Before: a MemoryError after 35-40 s (the tree was walked into an error message)."""
    path = tmp_path / "c.yaml"
    path.write_text(BOMBS[option])
    t0 = time.monotonic()
    assert main(mask_args(runs, tmp_path / "m.zarr", option, str(path))) == 2
    assert time.monotonic() - t0 < 5
    one_line_error(capsys, "c.yaml", "YAML anchors and aliases (&l0 at line", "are not accepted in a")
    only(tmp_path, "c.yaml")


def test_alias_bomb_in_the_nightly_configuration(tmp_path, capsys):
    path = tmp_path / "nightly.yaml"
    path.write_text("nightly:\n  state: state\n  publish: masks\n  detectors:\n    - name: A\n      detector: AGIPD1M\n"
                    "      trees: [t]\nrmm-dask:\n  f1:\n" + bomb(indent="    ") + "  window: *l9\n")
    t0 = time.monotonic()
    assert main(["nightly", "--config", str(path), "--once", "--dry-run"]) == 2
    assert time.monotonic() - t0 < 5
    one_line_error(capsys, "nightly.yaml", "YAML anchors and aliases", "configuration file")
    only(tmp_path, "nightly.yaml")


def test_an_alias_says_how_to_write_a_pattern(runs, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("rmm-dask:\n  method: *rmm\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(path))) == 2
    one_line_error(capsys, "c.yaml", "YAML aliases (*rmm at line 2, column 11)", "quote a value that starts with '*'")


@pytest.mark.parametrize("content, needle", [
    (b"# padding\n" * 500_000, "larger than 4 MiB: too large for a configuration file"),
    (b"[" * 100 + b"]" * 100, "nested more than 32 levels deep"),
    (b"rmm-dask: {lambda: 8}\n---\nrmm-dask: {}\n",
     "not YAML: expected a single document in the stream; but found another document (line 2, column 1)"),
    (b"rmm-dask:\n  method: \xff\xfe\n", "not UTF-8 (or UTF-16) text: invalid leading UTF-8 octet at byte 20"),
])
def test_files_that_are_no_configuration(runs, tmp_path, capsys, content, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(path))) == 2
    one_line_error(capsys, "c.yaml", needle)
    only(tmp_path, "c.yaml")


def test_an_endless_file_is_not_read_whole(runs, tmp_path, capsys):
    t0 = time.monotonic()
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", "/dev/zero")) == 2
    assert time.monotonic() - t0 < 5
    one_line_error(capsys, "/dev/zero", "larger than 4 MiB")
    only(tmp_path)


def agipd_with(change: str, value: str) -> str:
    """The AGIPD-1M description with the line of key ``change`` replaced (or the line added)."""
    lines = (Path(detectors.__file__).with_name("agipd1m.yaml")).read_text().splitlines()
    out = [f"{change}: {value}" if line.startswith(f"{change}:") else line for line in lines]
    return "\n".join(out if out != lines else [*lines, f"{change}: {value}"]) + "\n"


@pytest.mark.parametrize("key, value, needle", [
    ("cells", "1000000000", "cells 1000000000 is more than any detector has (at most 4096)"),
    ("modules", "1000000000", "modules 1000000000 is more than any detector has (at most 1024)"),
    ("module-shape", "[5120000, 1280000]", "module-shape [5120000, 1280000] is larger than any detector's"),
    ("module-shape", "[8192, 8193]", "holds 67117056 pixels, more than any detector's module (at most 67108864)"),
    ("module-shape", "[4096, 8192]", "16 modules of [4096, 8192] pixels make 536870912 pixels, more than any"),
    ("module-gap", "[1, 1000000]", "module-gap [1, 1000000] is larger than any detector's"),
])
def test_detector_description_beyond_any_detector(runs, tmp_path, capsys, key, value, needle):
    """Before: 10^9 modules a MemoryError after 14 s in the reader; 10^9 cells a store published."""
    path = tmp_path / "det.yaml"
    path.write_text(agipd_with(key, value))
    assert main(mask_args(runs, tmp_path / "m.zarr", "--detector", str(path))) == 2
    one_line_error(capsys, "--detector", "det.yaml", needle)
    only(tmp_path, "det.yaml")


def edited_store(store: Path, where: Path, **description) -> Path:
    """A copy of ``store`` whose detector_description attribute has ``description``'s values."""
    copy = where / "edited.zarr"
    shutil.copytree(store, copy)
    for p, dirs, files in os.walk(copy):
        for name in [*dirs, *files, "."]:
            os.chmod(os.path.join(p, name), os.stat(os.path.join(p, name)).st_mode | stat.S_IWUSR)
    meta = copy / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["detector_description"].update(description)
    meta.write_text(json.dumps(doc))
    return copy


@pytest.mark.parametrize("description, needle", [
    ({"n_modules": 10**9}, "modules 1000000000 is more than any detector has"),
    ({"module_shape": [256, 128]}, "16 modules of [256, 128] pixels, but the mask array is (module, gain, cell, y, x) "
                                   "[1, 3, 2, 512, 128]"),
    ({"n_cells": "many"}, "cells must be an integer, not 'many'"),
    ({"colour": "red"}, "unknown fields ['colour']"),
])
def test_store_with_an_edited_description(store, tmp_path, capsys, description, needle):
    """Before: show and export allocated (10^9, 512, 128) maps (238 TiB: a traceback), or met a reshape error."""
    edited = edited_store(store, tmp_path, **description)
    for argv in (["show", str(edited), "--png", str(tmp_path / "png")],
                 ["export", str(edited), "--to", "nexus", "--out", str(tmp_path / "x.h5")],
                 ["diff", str(store), str(edited)]):
        assert main(argv) == 2
        one_line_error(capsys, "edited.zarr: its detector_description attribute is not usable", needle)
    only(tmp_path, "edited.zarr")


@pytest.mark.parametrize("section, needle", [
    ("chunking:\n    cells-per-chunk: 0",
     "chunking.cells-per-chunk must be an integer of at least 1, not 0 (as --cells-per-chunk)"),
    ("chunking:\n    cells-per-chunk: true", "chunking.cells-per-chunk must be an integer of at least 1, not true"),
    ("lambda: .nan", "lambda must be a finite number above 0, not nan (as --lambda)"),
    ("f1:\n    pixels: 0", "f1.pixels must be an integer of at least 1, not 0"),
    ("f1: 3", "f1 must be a mapping of its keys, not 3"),
    ("min-frames: 1", "min-frames must be an integer of at least 2, not 1"),
    ("features:\n    noise: 'no'", "features.noise must be true or false, not 'no'"),
    ("cluster:\n    n-workers: 0", "cluster.n-workers must be an integer of at least 1, not 0 (as --workers)"),
    ("cluster:\n    memory-limit: lots", "cluster.memory-limit must be auto, null, a fraction"),
    ("cluster:\n    local-threads-below: -1", "cluster.local-threads-below must be a size such as 8GB"),
    ("cluster:\n    dashboard: maybe", "cluster.dashboard must be one of 'auto', true, false, not 'maybe'"),
    ("cluster:\n    dashboard-address: localhost", "cluster.dashboard-address must be host:port"),
    ("cluster:\n    slurm:\n      worker-start-timeout: 0",
     "cluster.slurm.worker-start-timeout must be a finite number above 0"),
    ("cluster:\n    slurm:\n      minimum-workers: 5\n      maximum-workers: 2", "minimum-workers (5) must not exceed"),
    ("submit:\n    walltime: 4:00:00",
     "submit.walltime must be a quoted Slurm time such as \"04:00:00\", not the number 14400"),
    ("submit:\n    memory: 0", "submit.memory must be a size such as 8GB"),
])
def test_config_keys_are_checked_as_their_options(runs, tmp_path, capsys, section, needle):
    """Before: cells-per-chunk 0 a ValueError traceback; the others tracebacks later or silently wrong values."""
    path = tmp_path / "c.yaml"
    path.write_text(f"rmm-dask:\n  {section}\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(path))) == 2
    one_line_error(capsys, "c.yaml: invalid parameters under 'rmm-dask:': ", needle)
    only(tmp_path, "c.yaml")


def test_nested_unknown_key_and_jobqueue_types(runs, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("rmm-dask:\n  f1:\n    lamda: 3\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(path))) == 2
    one_line_error(capsys, "c.yaml", "unknown parameters ['f1.lamda'] under 'rmm-dask:'")
    path.write_text("jobqueue:\n  slurm:\n    job-extra-directives: --constraint=cpu\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--jobqueue", str(path))) == 2
    one_line_error(capsys, "c.yaml", "invalid settings under 'jobqueue: slurm:': ",
                   "job-extra-directives must be a list of texts, one line each, not '--constraint=cpu'")
    only(tmp_path, "c.yaml")


def test_submit_walltime_is_refused_before_any_script(runs, tmp_path, capsys):
    """An unquoted 4:00:00 is YAML 1.1's number 14400: sbatch would read 14400 minutes (10 days)."""
    path = tmp_path / "c.yaml"
    path.write_text("rmm-dask:\n  submit:\n    walltime: 4:00:00\n")
    args = ["submit", *mask_args(runs, tmp_path / "m.zarr", "--config", str(path))[1:]]
    assert main(args) == 2
    one_line_error(capsys, "c.yaml", "submit.walltime must be a quoted Slurm time")
    only(tmp_path, "c.yaml")


def test_values_set_outside_any_file_are_checked_too(runs, tmp_path, capsys):
    """DASK_RMM_DASK__CHUNKING__CELLS_PER_CHUNK=0 (as dask.config holds it) is named as such; an option replaces it."""
    with dask.config.set({"rmm-dask.chunking.cells_per_chunk": 0}):
        assert main(mask_args(runs, tmp_path / "m.zarr")) == 2
    one_line_error(capsys, "dask.config 'rmm-dask': chunking.cells-per-chunk must be an integer of at least 1",
                   "DASK_RMM_DASK__")
    only(tmp_path)


def test_show_under_lc_all_c_from_non_ascii_paths(runs, tmp_path, capsys):
    """Before: `rmm show` ended with a UnicodeEncodeError (exit 1) half-way through its output."""
    probe = tmp_path / "Probe_Ü_α"
    shutil.copytree(runs / "raw", probe / "raw")
    out = probe / "m.zarr"
    assert main(mask_args(probe, out)) == 0
    capsys.readouterr()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LANGUAGE")}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "rmm_dask", "show", str(out)], env=env, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stderr == b""
    # the paths recorded in the store as escapes the locale can show; the one given on the command
    # line (bytes the locale cannot decode) written back as it was given
    escaped = str(probe).replace("Ü", "\\xdc").replace("α", "\\u03b1")
    assert f"  dark-high: {escaped}/raw/r0001 (24 frames per cell; 1 file, ".encode() in done.stdout
    assert done.stdout.startswith(os.fsencode(out) + b": AGIPD1M mask")
    assert b"masked pixel-planes in " in done.stdout and b"\nany " in done.stdout  # the whole output, tables too
    only(probe, "raw", "m.zarr")


def test_paths_with_control_characters_never_split_a_line(runs, tmp_path, capsys):
    """A missing run named with a newline: the one error line stays one; a run directory with a
    newline and a store under a directory named with rich markup ('[/b]'): every line escaped, none forged."""
    forged = tmp_path / "gone\nrmm mask: forged line"
    assert main(["mask", "--dark-high", str(forged), "--out", str(tmp_path / "m.zarr")]) == 2
    err = one_line_error(capsys, "gone\\nrmm mask: forged line")
    assert err.startswith("rmm mask: ")
    run = tmp_path / "r\n0001"
    shutil.copytree(raw(runs, 1), run)
    (tmp_path / "x[").mkdir()
    out = tmp_path / "x[" / "b]y.zarr"
    args = mask_args(runs, out)
    args[args.index("--dark-high") + 1] = str(run)
    assert main(args) == 0
    lines = capsys.readouterr().out.replace("\n" + CONTINUATION, " ").splitlines()  # long lines fold, indented
    note = "1 of AGIPD1M's 16 modules in the run; no data source for modules 1-15"
    assert f"high run {tmp_path}/r\\n0001: {note}" in lines
    assert not any(line.startswith("0001") for line in lines)
    assert any(line.startswith(f"mask store: {out}") for line in lines)  # '[/b]' printed as it is
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out.replace("\n" + CONTINUATION, " ").splitlines()
    assert any(line.startswith(f"  dark-high: {tmp_path}/r\\n0001 (24 frames per cell; 1 file, ") for line in shown)
    only(tmp_path / "x[", "b]y.zarr")


def test_a_long_line_folds_with_indented_continuations_so_a_path_cannot_pass_for_a_line():
    from rmm_dask.tables import folded

    path = "/data/p700000 rmm mask: forged line/" + "x" * 100 + "/r0001"
    text = folded(f"high run {path}: a note", 80)
    lines = text.split("\n")
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("high run ") and all(line.startswith(CONTINUATION) for line in lines[1:])
    assert folded("short", 80) == "short" and folded("x" * 200, None) == "x" * 200

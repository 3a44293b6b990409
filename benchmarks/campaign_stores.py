"""Fault campaign cases of issue 20: stores verified when read: a missing or damaged chunk, metadata that lies;
a CrystFEL export both files or neither.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

import json
import os

CHUNK = "mask/c.0.0.1.0.0"  #: a chunk of the shared store's mask (module 0, cell index 1)


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import fault_campaign as fc

    def damaged_copy(c):
        """A writable copy of the shared store, and the snapshot to tell that no reader changed it."""
        store = fc.copy_store(c)
        fc.chmod_writable(store)
        for p in store.rglob("*"):
            if p.is_file():
                os.chmod(p, 0o644)
        return store

    def every_reader_refuses(c, store, *needles):
        """show (--png, --html), diff (--json), export (crystfel, nexus): exit 2, one line naming the
        store and the damage, the store as it was, nothing written beside it."""
        before = fc.snapshot(store)
        c.rmm("show", store, "--png", c.dir / "png", "--html", c.dir / "r.html", expect=2,
              needles=(str(store), *needles))
        c.rmm("diff", c.shared.store, store, "--json", c.dir / "d.json", expect=2, needles=(str(store), *needles))
        c.rmm("export", store, "--to", "crystfel", "--out", c.dir / "x.h5", expect=2, needles=(str(store), *needles))
        c.rmm("export", store, "--to", "nexus", "--out", c.dir / "x.nxs", expect=2, needles=(str(store), *needles))
        c.same(before, store, "the damaged store")
        c.only(c.dir, ["TMP", store.name])

    def lie(c, key, value):
        """The mask's metadata changed in its zarr.json and in the root's consolidated copy (what readers see)."""
        store = damaged_copy(c)
        own, root = store / "mask" / "zarr.json", store / "zarr.json"
        meta = json.loads(own.read_text())
        meta[key] = value
        own.write_text(json.dumps(meta))
        meta = json.loads(root.read_text())
        meta["consolidated_metadata"]["metadata"]["mask"][key] = value
        root.write_text(json.dumps(meta))
        return store

    @case("stores-20", "a mask chunk deleted from a store: show, diff and export refuse it, naming the chunk")
    def case_store_chunk_deleted(c):
        store = damaged_copy(c)
        (store / CHUNK).unlink()
        every_reader_refuses(c, store, f"damaged store: chunk {CHUNK} is missing")

    @case("stores-20", "a mask chunk overwritten with garbage: refused by its checksum, no zstd traceback")
    def case_store_chunk_garbage(c):
        store = damaged_copy(c)
        (store / CHUNK).write_bytes(os.urandom(3000))
        every_reader_refuses(c, store, f"damaged store: chunk {CHUNK} does not match its checksum")

    @case("stores-20", "a store whose zarr.json lies about the mask's shape")
    def case_store_metadata_lies_shape(c):
        store = lie(c, "shape", [1, 3, 2, 512, 64])
        every_reader_refuses(c, store, "mask/zarr.json says shape (1, 3, 2, 512, 64), but the store was written with")

    @case("stores-20", "a store whose zarr.json lies about the mask's dtype")
    def case_store_metadata_lies_dtype(c):
        store = lie(c, "data_type", "uint16")
        every_reader_refuses(c, store, "mask/zarr.json says dtype uint16, but the store was written with uint8")

    @case("stores-20", "export --to crystfel onto a filesystem out of inodes: the .h5 and the .geom, or neither")
    def case_export_crystfel_no_inodes(c):
        where = c.tmpfs("16m", inodes=2)  # one inode left: room for one temporary, not two
        if not where:
            return
        c.rmm("export", c.shared.store, "--to", "crystfel", "--out", where / "mask.h5", expect=2,
              needles=("no space left", "neither mask.h5 nor mask.geom was published"))
        c.expect(os.listdir(where) == [], f"left on the fs out of inodes: {os.listdir(where)}")
        enough = c.tmpfs("16m", inodes=3)  # two inodes: both files
        if enough:
            c.rmm("export", c.shared.store, "--to", "crystfel", "--out", enough / "mask.h5", expect=0)
            c.expect(sorted(os.listdir(enough)) == ["mask.geom", "mask.h5"], f"published: {sorted(os.listdir(enough))}")
            c.expect(fc.is_h5(enough / "mask.h5"), "mask.h5 is not a readable HDF5 file")

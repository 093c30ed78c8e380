"""`alexsuite index`: bring an index directory up to date with a folder of images.

Only new or changed files are embedded (size + mtime, then the content hash decides);
--prune removes rows whose files are gone. Work is committed every `commit_seconds`, so an
interrupted run resumes where its last commit left off. Under torchrun each process embeds
its slice of every batch and process 0, the only writer, gathers and commits them.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.distributed as dist

from ..data.decode import IMAGE_SUFFIXES
from ..data.folders import listed_images, scan_images
from ..distributed import DistContext
from ..embedding import BATCH_SIZE, DEFAULT_LAYER, embed_batches, feature_dim, files_for
from ..errors import AlexsuiteError, ConfigError, DataError
from ..fileio import file_sha256
from ..settings import default_of, finite, help_of, require, setting
from . import index as faiss_index
from . import rerank
from .index import IndexSpec
from .store import (
    DEFAULT_INDEX,
    RAW_FILE,
    IndexStore,
    check_index_folder,
    check_model,
    model_record,
    staging_dir,
    swap_in,
    write_errors,
    writer_lock,
)

TRAIN_CAP = 200_000  # vectors to train an IVF/PQ/PCA index on (FAISS samples <= 256 per centroid)
TRAIN_BYTES = 2 * 2**30  # ... held in memory at most (4096-d fc7: 131,072 vectors)


_KEEP = " [default: what the index was built with; a new index: {}]"


@dataclass
class IndexOptions:
    """How `alexsuite index` updates an index. The index settings left at None keep what the
    index was built with; a new index takes IndexSpec's defaults and fc7."""

    index: str = setting(DEFAULT_INDEX, "A name (kept under indexes/) or a path containing a / to an index directory.")
    model: str | None = setting(
        None,
        "Run directory or checkpoint from `alexsuite train`, or torchvision AlexNet "
        "weights. Default: the model that built the index, else the newest runs/train/ run.",
    )
    layer: str | None = setting(
        None,
        "Which activations describe an image: fc7, fc6 or pool5 of the centre crop, or conv5-gem / conv5-rmac "
        "(conv5 of the whole image, pooled: better for photos and near-copies)." + _KEEP.format(DEFAULT_LAYER),
        "AlexNet §6.1",
    )
    factory: str | None = setting(None, help_of(IndexSpec, "factory") + _KEEP.format(default_of(IndexSpec, "factory")))
    metric: str | None = setting(None, help_of(IndexSpec, "metric") + _KEEP.format(default_of(IndexSpec, "metric")))
    pca: int | None = setting(None, help_of(IndexSpec, "pca"))
    whiten: bool | None = setting(
        None, help_of(IndexSpec, "whiten") + (" [default: whiten]" if default_of(IndexSpec, "whiten") else "")
    )
    dba: str | None = setting(
        None,
        "Database-side augmentation, e.g. n=5,alpha=3: each stored vector becomes the weighted mean of "
        "itself and its n nearest indexed neighbours (weights cosine^alpha), re-normalised for cosine; "
        "queries are not changed. The embedded vectors are kept in raw.faiss (a full-precision copy), so "
        "an update recomputes only the neighbourhoods it changes. none: off." + _KEEP.format("none"),
        "Radenović 2018",
    )
    batch_size: int = setting(BATCH_SIZE, "Images per forward pass.")
    workers: int = setting(2, "Decoding processes.")
    prune: bool = setting(False, "Remove indexed images under IMAGES whose files are gone.")
    rebuild: bool = setting(False, "Delete the index and build it again (needed to change its settings).")
    strict: bool = setting(False, "Stop at the first unreadable image instead of skipping it.")
    wait: float = setting(0, "Seconds to wait for another writer of this index.")
    commit_seconds: float = setting(60, "Seconds between commits; an interrupted run loses at most this much work.")
    device: str = setting("auto", "auto, cpu or cuda[:N] (also FAISS GPU training).")


@dataclass
class IndexReport:
    index_dir: str
    scanned: int = 0
    added: int = 0
    updated: int = 0  # changed files embedded again
    unchanged: int = 0
    touched: int = 0  # mtime changed, same content: not embedded again
    removed: int = 0
    missing: int = 0  # indexed files that are gone (kept unless --prune)
    failed: int = 0  # unreadable images, skipped
    non_images: int = 0
    linked: int = 0  # reached through a link, and indexed already under their own path
    augmented: int = 0  # images already indexed whose --dba vector an addition or removal changed
    total: int = 0  # images in the index afterwards
    seconds: float = 0.0
    images_per_s: float = 0.0
    failed_examples: list = field(default_factory=list)


def label_of(path: Path, root: Path) -> str | None:
    """The class a folder names: the first folder below the indexed root (root/cat/x.jpg -> cat)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


@dataclass
class Plan:
    root: Path  # the folder being indexed
    layer: str  # the index's layer
    embed: list[Path]  # files to embed, in order
    replace: dict[str, int]  # path -> old id, for changed files
    remove: list[int]  # ids of pruned rows
    touch: list[tuple]  # (size, mtime_ns, id) of files whose content did not change
    report: IndexReport
    stat: dict = field(default_factory=dict)  # path -> (size, mtime_ns) when planned
    listed: bool = False  # files from a list: each labelled by its own folder, and nothing is "gone"


def _indexed_elsewhere(store: IndexStore, path: Path) -> bool:
    """A file reached through a link whose real path is a row already: one file, one row."""
    real = os.path.realpath(path)
    return real != str(path) and store.row_by_path(Path(real)) is not None


def plan_update(
    store: IndexStore,
    root: Path,
    files: list[Path],
    prune: bool,
    report: IndexReport,
    lost: frozenset = frozenset(),
    listed: bool = False,
) -> Plan:
    """What to embed, replace, remove and touch so the index matches `files` under `root`.
    `lost`: ids of rows whose vector the index does not hold (an older index.faiss put back):
    their files are embedded again."""
    known = store.rows_under(root)
    embed, replace, touch, stats = [], {}, [], {}
    for p in files:
        key = str(p)
        row = known.get(key)
        if row is None and _indexed_elsewhere(store, p):
            report.linked += 1
            continue
        try:
            st = p.stat()
            changed = row is not None and (row.size, row.mtime_ns) != (st.st_size, st.st_mtime_ns)
            same_content = changed and file_sha256(p) == row.sha256
        except OSError as e:  # a dangling link, a file without read permission
            report.failed += 1
            report.failed_examples += [f"{p}: {e.strerror}"][: 3 - len(report.failed_examples)]
            continue
        if row is None:
            embed.append(p)
        elif row.id in lost:
            embed.append(p)
            replace[key] = row.id
        elif not changed:
            report.unchanged += 1
        elif same_content:
            touch.append((st.st_size, st.st_mtime_ns, row.id))
            report.touched += 1
        else:
            embed.append(p)
            replace[key] = row.id
        stats[key] = (st.st_size, st.st_mtime_ns)
    present = {str(p) for p in files}
    gone = [] if listed else [row.id for path, row in known.items() if path not in present]
    if prune:
        report.removed = len(gone)
    else:
        report.missing = len(gone)
    layer = store.manifest["layer"]
    return Plan(root, layer, embed, replace, gone if prune else [], touch, report, stats, listed)


def update_index(
    store_dir: Path,
    loaded,
    images: Path,
    opts: IndexOptions,
    device,
    progress=None,
    ctx: DistContext = DistContext(),
    warn=lambda message: None,
    files: list[Path] | None = None,
) -> IndexReport:
    """Embed what is new under `images` into the index at `store_dir` (created if absent).
    `files`: exactly these image files under `images` (a list given by the user) instead of
    every image found there. `progress(total)` returns a callable taking a number of images
    done, with .close()."""
    root = Path(images).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{images}: no such folder")
    require(
        finite(opts.wait, 0) and finite(opts.commit_seconds, 0), "--wait and --commit-every take seconds, 0 or more"
    )
    start = time.time()
    report = IndexReport(str(store_dir))
    if not ctx.is_main:
        shared = _broadcast(ctx, None)
        if isinstance(shared, str):
            raise AlexsuiteError(f"process 0 stopped: {shared}")
        plan = Plan(root, shared["layer"], [Path(p) for p in shared["files"]], {}, [], [], report)
        _run(plan, None, loaded, opts, device, None, ctx, start)
        return report
    sent = []  # [True] once the other processes have their plan
    try:
        check_index_folder(store_dir, opts.rebuild, str(root))
        with write_errors(store_dir, report), writer_lock(store_dir, opts.wait):
            if opts.rebuild:  # built beside the old index and swapped in when done: a kill leaves the old one
                staging = staging_dir(store_dir)
                shutil.rmtree(staging, ignore_errors=True)
                with writer_lock(staging):
                    _update(staging, loaded, root, opts, report, device, progress, ctx, start, warn, sent, files)
                swap_in(staging, store_dir)
            else:
                _update(store_dir, loaded, root, opts, report, device, progress, ctx, start, warn, sent, files)
    except Exception as e:
        if not sent:  # the other processes are waiting for a plan: tell them why none comes
            _broadcast(ctx, str(e) or type(e).__name__)
        raise
    return report


def _update(store_dir: Path, loaded, root: Path, opts, report, device, progress, ctx, start, warn, sent, files) -> None:
    """Plan, share the plan with the other processes, embed and commit (caller holds the lock)."""
    plan, store = _prepare(store_dir, loaded, root, opts, report, warn, files)
    try:
        _broadcast(ctx, {"layer": plan.layer, "files": [str(p) for p in plan.embed]})
        sent.append(True)
        _run(plan, store, loaded, opts, device, progress, ctx, start, warn)
    finally:
        store.close()


def _broadcast(ctx: DistContext, payload):
    if not ctx.enabled:
        return payload
    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _prepare(store_dir: Path, loaded, root: Path, opts: IndexOptions, report: IndexReport, warn, files=None):
    store = IndexStore.open_write(store_dir) if IndexStore.exists(store_dir) else None
    if store is not None and store.index is None and not store.count():
        store.close()  # nothing was ever committed (e.g. training failed): new settings may apply
        store = None
    if store is not None:
        store.check_vectors_present(str(root))
        check_model(store.manifest, loaded)
        _check_same_settings(store, opts)
        dropped = store.drop_orphans()
        if dropped:
            store.save_index()
            warn(f"removed {dropped} vector(s) left by an interrupted run")
    else:
        store = _create(store_dir, loaded, opts)
    listed = files is not None
    scan = listed_images(files) if listed else scan_images(root)
    files, report.non_images = scan.images, len(scan.others)
    if scan.unreadable and opts.prune:
        raise DataError(
            f"cannot read {scan.unreadable[0]} (and {len(scan.unreadable) - 1} more); "
            "not pruning what could not be seen: fix it, or run without --prune"
        )
    for line in scan.problems():
        warn(line)
    if not files and not store.count():
        raise DataError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    report.scanned = len(files)
    plan = plan_update(store, root, files, opts.prune, report, _lost_vectors(store, root, warn), listed)
    if not (store.index if store.index is not None else faiss_index.create(store.spec)).is_trained:
        # A training sample should look like the whole folder, not its first subfolders.
        order = np.random.default_rng(0).permutation(len(plan.embed))
        plan.embed = [plan.embed[i] for i in order]
    return plan, store


def _create(store_dir: Path, loaded, opts: IndexOptions) -> IndexStore:
    """A new index's manifest, after its settings are checked (before any work is done)."""
    layer, factory = opts.layer or DEFAULT_LAYER, opts.factory or default_of(IndexSpec, "factory")
    spec = IndexSpec(
        feature_dim(loaded.model, loaded.preprocess, layer),
        factory,
        opts.metric or default_of(IndexSpec, "metric"),
        opts.pca,
        default_of(IndexSpec, "whiten") if opts.whiten is None else opts.whiten,
        faiss_index.default_search_params(factory),
    )
    dba = rerank.parse_dba(opts.dba)
    (store_dir / RAW_FILE).unlink(missing_ok=True)  # left by a first commit that never finished
    empty = faiss_index.create(spec)  # fails on a bad factory
    if dba and not faiss_index.remove(empty, [0]):
        raise ConfigError(
            f"--dba with --factory {factory}: this index cannot replace a stored vector, as an update's "
            "augmentation must; use Flat, IVF or PQ factories, or leave out --dba"
        )
    return IndexStore.create(store_dir, model_record(loaded), layer, loaded.preprocess.to_dict(), spec, dba)


def _augmented(store: IndexStore) -> rerank.Augmented:
    """The raw vectors and radii a --dba index's writer keeps up to date."""
    raw = store.read_raw()
    raw = raw if raw is not None else rerank.raw_index(store.spec.dim, store.spec.metric)
    return rerank.Augmented(raw, store.radii(), store.dba, store.row_ids())


def _lost_vectors(store: IndexStore, root: Path, warn) -> frozenset:
    """Ids of rows without a vector in index.faiss. Those under `root` are embedded again by
    this run; others are named, with the command that mends them."""
    if store.index is None or not store.count():
        return frozenset()
    held = set(faiss_index.stored_ids(store.index).tolist())
    if store.dba:  # a DBA vector is made from the raw one: without it the image is embedded again
        raw = store.read_raw()
        held &= set(faiss_index.stored_ids(raw).tolist()) if raw is not None else set()
    lost = frozenset(r for (r,) in store.db.execute("SELECT id FROM images") if r not in held)
    elsewhere = len(lost) - len([r for r in store.rows_under(root).values() if r.id in lost])
    if elsewhere:
        warn(
            f"{elsewhere} indexed image(s) outside {root} have no vector in {store.root}/index.faiss (an older "
            f"copy?): index their folders again, or rebuild with --rebuild"
        )
    return lost


def _check_same_settings(store: IndexStore, opts: IndexOptions) -> None:
    """Adding to an index keeps its layer and spec: options left out mean 'as built'; one that
    asks for something else is an error, not a surprise."""
    asked = {
        "layer": opts.layer,
        "factory": opts.factory,
        "metric": opts.metric,
        "pca": opts.pca,
        "whiten": opts.whiten,
        "dba": None if opts.dba is None else str(rerank.parse_dba(opts.dba) or "none"),
    }
    have = {
        "layer": store.manifest["layer"],
        "factory": store.spec.factory,
        "metric": store.spec.metric,
        "pca": store.spec.pca,
        "whiten": store.spec.whiten,
        "dba": str(store.dba or "none"),
    }
    diff = [f"--{k} {have[k]} (asked {asked[k]})" for k in asked if asked[k] is not None and asked[k] != have[k]]
    if diff:
        raise ConfigError(
            f"{store.root} was built with {', '.join(diff)}; keep those settings, "
            "add --rebuild to start over, or use another --index"
        )


def _run(
    plan: Plan,
    store: IndexStore | None,
    loaded,
    opts: IndexOptions,
    device,
    progress,
    ctx: DistContext,
    start: float,
    warn=lambda message: None,
) -> None:
    report = plan.report
    writer = _Writer(store, plan, device, warn) if store is not None else None
    bar = progress(len(plan.embed)) if progress and plan.embed else None
    dataset = files_for(plan.embed, loaded.preprocess, plan.layer)
    last_commit = time.monotonic()
    try:
        for batch in embed_batches(
            loaded.model,
            dataset,
            loaded.preprocess,
            plan.layer,
            device,
            opts.batch_size,
            opts.workers,
            opts.strict,
            ctx.rank,
            ctx.world,
            source=str(loaded.source),
        ):
            parts = [(batch.positions.numpy(), batch.vectors, [str(e) for e in batch.failures])]
            if ctx.enabled:
                gathered = [None] * ctx.world
                dist.all_gather_object(gathered, parts[0])
                parts = gathered
            if writer is None:
                continue
            for positions, vectors, failures in parts:
                report.failed += len(failures)
                report.failed_examples += failures[: 3 - len(report.failed_examples)]
                writer.stage(positions, vectors)
                if bar:
                    bar(len(positions) + len(failures))
            if time.monotonic() - last_commit >= opts.commit_seconds and writer.ready():
                writer.commit()
                last_commit = time.monotonic()
        if writer is not None:
            writer.commit()
            report.total = store.count()
    finally:
        if bar:
            bar.close()
    report.seconds = time.time() - start
    embedded = report.added + report.updated
    report.images_per_s = embedded / report.seconds if report.seconds else 0.0


class _Writer:
    """Stages embedded vectors and commits them: index file first, then SQLite (see store.py)."""

    def __init__(self, store: IndexStore, plan: Plan, device, warn):
        self.store, self.plan, self.device, self.warn = store, plan, device, warn
        self.index = store.index if store.index is not None else faiss_index.create(store.spec)
        self.next_id = store.next_id()
        self.vectors: list[np.ndarray] = []
        self.files: list[Path] = []
        self.pending_removals = list(plan.remove)
        self.pending_touch = list(plan.touch)
        self.train_size = min(TRAIN_CAP, TRAIN_BYTES // (4 * store.spec.dim))
        self.dba = _augmented(store) if store.dba else None

    def stage(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        if len(positions):
            self.vectors.append(vectors)
            self.files += [self.plan.embed[i] for i in positions]

    def ready(self) -> bool:
        """An untrained index must first see a full training sample (or everything)."""
        return self.index.is_trained or sum(len(v) for v in self.vectors) >= self.train_size

    def commit(self) -> None:
        """Three steps, each leaving a usable index if the process dies after it:
        1. add the new vectors and replace index.faiss (new vectors have no rows yet: invisible);
        2. one SQLite transaction: new rows, deleted rows, touched rows, the id counter;
        3. remove the deleted rows' vectors and replace index.faiss again (until then they
           are vectors without rows, skipped by searches and dropped by the next writer)."""
        store, report = self.store, self.plan.report
        if not (self.files or self.pending_removals or self.pending_touch or (self.dba and self.dba.stale)):
            return
        rows, keep = [], []
        for i, p in enumerate(self.files):
            row = self._row(p)
            if row is not None:
                rows.append(row)
                keep.append(i)
        vectors = np.concatenate(self.vectors)[keep] if keep else None
        ids = np.arange(self.next_id, self.next_id + len(rows), dtype=np.int64)
        replaced = [self.plan.replace[r[0]] for r in rows if r[0] in self.plan.replace]
        deleted = replaced + self.pending_removals
        if vectors is not None and not self.index.is_trained:
            for advice in faiss_index.train(self.index, vectors[: self.train_size], store.spec, self.device):
                self.warn(advice)
        radii = self._add(vectors, ids, deleted)  # step 1
        with store.db:  # step 2
            if radii is not None:
                store.set_radii(*radii, deleted)
            store.db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in deleted])
            store.db.executemany(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)", [(int(i), *r) for i, r in zip(ids, rows)]
            )
            store.db.executemany("UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?", self.pending_touch)
            store.set_next_id(self.next_id + len(rows))
        if deleted and faiss_index.remove(self.index, deleted) and self.index.is_trained:
            store.index = self.index
            store.save_index()  # step 3
        report.updated += len(replaced)
        report.added += len(rows) - len(replaced)
        self.next_id += len(rows)
        self.vectors, self.files, self.pending_removals, self.pending_touch = [], [], [], []

    def _add(self, vectors, ids: np.ndarray, deleted: list) -> tuple | None:
        """Step 1: the new vectors into index.faiss, saved. Under --dba they go in augmented, with
        the stored ones whose neighbourhood this commit changes replaced, raw.faiss saved first;
        returns (ids, radii) of the augmented vectors for SQLite."""
        store = self.store
        if self.dba is None:
            if vectors is not None:
                faiss_index.add(self.index, vectors, ids, store.spec)
                store.index = self.index
                store.save_index()
            return None
        if not self.index.is_trained:
            return None  # nothing was ever added
        raw = faiss_index.prepare(vectors, store.spec) if vectors is not None else np.empty((0, store.spec.dim))
        todo, augmented, radii = self.dba.update(raw, ids, deleted)
        changed = np.setdiff1d(todo, ids)
        faiss_index.remove(self.index, changed)
        if len(todo):
            faiss_index.add(self.index, augmented, todo, store.spec)
        store.save_raw(self.dba.raw)
        store.index = self.index
        store.save_index()
        self.plan.report.augmented += len(changed)
        return todo, radii

    def _label(self, p: Path) -> str | None:
        return (p.parent.name or None) if self.plan.listed else label_of(p, self.plan.root)

    def _row(self, p: Path) -> tuple | None:
        """The SQLite row for an embedded file, or None if it changed or vanished since it was
        planned (its vector may be stale; the next run embeds it again)."""
        try:
            st = p.stat()
            if (st.st_size, st.st_mtime_ns) != self.plan.stat[str(p)]:
                raise OSError("changed while it was being indexed; the next run indexes it")
            return (str(p), st.st_size, st.st_mtime_ns, file_sha256(p), self._label(p), time.time())
        except OSError as e:
            self.plan.report.failed += 1
            examples = self.plan.report.failed_examples
            examples += [f"{p}: {e.strerror or e}"][: 3 - len(examples)]
            return None

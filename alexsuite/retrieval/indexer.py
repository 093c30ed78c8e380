"""`alexsuite index`: bring an index directory up to date with a folder of images.

Only new or changed files are embedded (size + mtime, then the content hash decides);
--prune removes rows whose files are gone. Work is committed every `commit_seconds`, so an
interrupted run resumes where its last commit left off. Under torchrun each process embeds
its slice of every batch and process 0, the only writer, gathers and commits them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch.distributed as dist

from ..data.decode import IMAGE_SUFFIXES
from ..data.folders import listed_images, scan_images
from ..distributed import DistContext
from ..embedding import BATCH_SIZE, DEFAULT_LAYER, embed_batches, feature_dim, files_for
from ..errors import AlexsuiteError, ConfigError, DataError
from ..fileio import file_sha256
from ..settings import default_of, finite, help_of, require, setting
from . import backend, ondisk, rerank
from . import index as faiss_index
from .backend import Store, is_milvus
from .index import IndexSpec
from .store import DEFAULT_INDEX, RAW_FILE, IndexStore, check_index_folder, check_model, model_record

TRAIN_CAP = 200_000  # vectors to train an IVF/PQ/PCA index on (FAISS samples <= 256 per centroid)
TRAIN_BYTES = 2 * 2**30  # ... held in memory at most (4096-d fc7: 131,072 vectors)


_KEEP = " [default: what the index was built with; a new index: {}]"


@dataclass
class IndexOptions:
    """How `alexsuite index` updates an index. The index settings left at None keep what the
    index was built with; a new index takes IndexSpec's defaults and fc7."""

    index: str = setting(
        DEFAULT_INDEX,
        "A name (kept under indexes/), a path containing a / to an index directory, or a Milvus collection: "
        "milvus://HOST:PORT/COLLECTION (a server or cluster; token from $MILVUS_TOKEN) or "
        "milvus-lite:PATH.db/COLLECTION (embedded, no server).",
    )
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
    on_disk: bool | None = setting(
        None,
        help_of(IndexSpec, "on_disk")
        + " Under torchrun each process writes a shard of the lists, merged by process 0."
        + _KEEP.format("in memory"),
        "FAISS wiki, Indexes that do not fit in RAM",
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
    shard_from: int | None = None  # torchrun + --on-disk: positions from here go to per-process shards
    spec: IndexSpec | None = None  # the index's, for the shards
    shard_dir: Path | None = None  # where the shards are written (the index folder)


def _indexed_elsewhere(store: Store, path: Path) -> bool:
    """A file reached through a link whose real path is a row already: one file, one row."""
    real = os.path.realpath(path)
    return real != str(path) and store.row_by_path(Path(real)) is not None


def plan_update(
    store: Store,
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
    store_dir: Path | str,
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
        plan.shard_from, plan.shard_dir = shared["shard_from"], shared["shard_dir"] and Path(shared["shard_dir"])
        plan.spec = IndexSpec.from_dict(shared["spec"]) if shared["spec"] else None
        _run(plan, None, loaded, opts, device, None, ctx, start)
        return report
    sent = []  # [True] once the other processes have their plan
    try:
        if not is_milvus(store_dir):
            check_index_folder(store_dir, opts.rebuild, str(root))
        with backend.write_errors(store_dir, report), backend.writer_lock(store_dir, opts.wait):
            if opts.rebuild:  # built beside the old index and swapped in when done: a kill leaves the old one
                staging = backend.staging(store_dir)
                with backend.writer_lock(staging):
                    _update(staging, loaded, root, opts, report, device, progress, ctx, start, warn, sent, files)
                backend.swap_in(staging, store_dir)
            else:
                _update(store_dir, loaded, root, opts, report, device, progress, ctx, start, warn, sent, files)
    except Exception as e:
        if not sent:  # the other processes are waiting for a plan: tell them why none comes
            _broadcast(ctx, str(e) or type(e).__name__)
        raise
    return report


def _update(store_dir, loaded, root: Path, opts, report, device, progress, ctx, start, warn, sent, files) -> None:
    """Plan, share the plan with the other processes, embed and commit (caller holds the lock)."""
    plan, store = _prepare(store_dir, loaded, root, opts, report, warn, files)
    try:
        if ctx.enabled and isinstance(store, IndexStore) and store.spec.on_disk:
            trained = store.index is not None and store.index.is_trained
            plan.shard_from = 0 if trained else min(len(plan.embed), _train_size(store.spec))
            plan.spec, plan.shard_dir = store.spec, store.root
        shared = {"layer": plan.layer, "files": [str(p) for p in plan.embed], "shard_from": plan.shard_from}
        shared |= {"spec": plan.spec and plan.spec.to_dict(), "shard_dir": plan.shard_dir and str(plan.shard_dir)}
        _broadcast(ctx, shared)
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


def _prepare(store_dir: Path | str, loaded, root: Path, opts: IndexOptions, report: IndexReport, warn, files=None):
    store = backend.open_write(store_dir) if backend.exists(store_dir) else None
    if store is not None and _never_committed(store):
        store.close()  # e.g. training failed: new settings may apply
        store = None
    if store is not None:
        store.check_vectors_present(str(root))
        check_model(store.manifest, loaded)
        _check_same_settings(store, opts)
        _drop_orphans(store, warn)
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
    if isinstance(store, IndexStore) and not (store.index or faiss_index.create(store.spec)).is_trained:
        # A training sample should look like the whole folder, not its first subfolders.
        order = np.random.default_rng(0).permutation(len(plan.embed))
        plan.embed = [plan.embed[i] for i in order]
    return plan, store


def _never_committed(store: Store) -> bool:
    """Created, but nothing committed. An index whose rows were all pruned was committed: it keeps
    its settings and its ids."""
    if is_milvus(store.root):
        return not store.count() and not store.next_id()
    return store.index is None and not store.count()


def _drop_orphans(store: Store, warn) -> None:
    """FAISS: vectors whose rows never committed (a Milvus entity holds both, so has none)."""
    if isinstance(store, IndexStore) and store.drop_orphans():
        store.save_index()
        warn("removed vector(s) left by an interrupted run")


def _create(store_dir: Path | str, loaded, opts: IndexOptions) -> Store:
    """A new index's manifest, after its settings are checked (before any work is done)."""
    layer, factory = opts.layer or DEFAULT_LAYER, opts.factory or default_of(IndexSpec, "factory")
    spec = IndexSpec(
        feature_dim(loaded.model, loaded.preprocess, layer),
        factory,
        opts.metric or default_of(IndexSpec, "metric"),
        opts.pca,
        default_of(IndexSpec, "whiten") if opts.whiten is None else opts.whiten,
        faiss_index.default_search_params(factory),
        bool(opts.on_disk),
    )
    dba = rerank.parse_dba(opts.dba)
    if dba and spec.on_disk:
        raise ConfigError("--dba rewrites stored vectors in place, which --on-disk lists never are: choose one")
    if is_milvus(store_dir):
        return backend.create(store_dir, model_record(loaded), layer, loaded.preprocess.to_dict(), spec, dba)
    (store_dir / RAW_FILE).unlink(missing_ok=True)  # left by a first commit that never finished
    empty = faiss_index.create(spec)  # fails on a bad factory
    if dba and not faiss_index.remove(empty, [0]):
        raise ConfigError(
            f"--dba with --factory {factory}: this index cannot replace a stored vector, as an update's "
            "augmentation must; use Flat, IVF or PQ factories, or leave out --dba"
        )
    return backend.create(store_dir, model_record(loaded), layer, loaded.preprocess.to_dict(), spec, dba)


def _augmented(store: IndexStore) -> rerank.Augmented:
    """The raw vectors and radii a --dba index's writer keeps up to date."""
    raw = store.read_raw()
    raw = raw if raw is not None else rerank.raw_index(store.spec.dim, store.spec.metric)
    return rerank.Augmented(raw, store.radii(), store.dba, store.row_ids())


def _lost_vectors(store: Store, root: Path, warn) -> frozenset:
    """Ids of rows without a vector in index.faiss. Those under `root` are embedded again by
    this run; others are named, with the command that mends them."""
    if not isinstance(store, IndexStore) or store.index is None or not store.count():
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


def _check_same_settings(store: Store, opts: IndexOptions) -> None:
    """Adding to an index keeps its layer and spec: options left out mean 'as built'; one that
    asks for something else is an error, not a surprise."""
    asked = {
        "layer": opts.layer,
        "factory": opts.factory,
        "metric": opts.metric,
        "pca": opts.pca,
        "whiten": opts.whiten,
        "on_disk": opts.on_disk,
        "dba": None if opts.dba is None else str(rerank.parse_dba(opts.dba) or "none"),
    }
    have = {
        "layer": store.manifest["layer"],
        "factory": store.spec.factory,
        "metric": store.spec.metric,
        "pca": store.spec.pca,
        "whiten": store.spec.whiten,
        "on_disk": store.spec.on_disk,
        "dba": str(store.dba or "none"),
    }
    diff = [
        f"--{k.replace('_', '-')} {have[k]} (asked {asked[k]})"
        for k in asked
        if asked[k] is not None and asked[k] != have[k]
    ]
    if diff:
        raise ConfigError(
            f"{store.root} was built with {', '.join(diff)}; keep those settings, "
            "add --rebuild to start over, or use another --index"
        )


def _run(
    plan: Plan,
    store: Store | None,
    loaded,
    opts: IndexOptions,
    device,
    progress,
    ctx: DistContext,
    start: float,
    warn=lambda message: None,
) -> None:
    """Embed the plan's files and commit them. Under torchrun with --on-disk, the files after the
    training sample go to per-process shards that process 0 merges (no process gathers them all)."""
    report = plan.report
    writer = (
        None
        if store is None
        else (_Writer if isinstance(store, IndexStore) else _MilvusWriter)(store, plan, device, warn)
    )
    bar = progress(len(plan.embed)) if progress and plan.embed else None
    head = plan.shard_from if plan.shard_from is not None else len(plan.embed)
    try:
        _embed_gathered(plan, range(head), writer, loaded, opts, device, ctx, bar)
        if head < len(plan.embed):
            _embed_sharded(plan, range(head, len(plan.embed)), writer, loaded, opts, device, ctx, bar)
        if writer is not None:
            report.total = store.count()
    finally:
        if bar:
            bar.close()
    report.seconds = time.time() - start
    embedded = report.added + report.updated
    report.images_per_s = embedded / report.seconds if report.seconds else 0.0


def _batches(plan: Plan, which: range, loaded, opts: IndexOptions, device, ctx: DistContext):
    """(positions in plan.embed, vectors, failures) of this process's slice of `which`."""
    dataset = files_for([plan.embed[i] for i in which], loaded.preprocess, plan.layer)
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
        yield batch.positions.numpy() + which.start, batch.vectors, [str(e) for e in batch.failures]


def _gather(ctx: DistContext, part) -> list:
    if not ctx.enabled:
        return [part]
    gathered = [None] * ctx.world
    dist.all_gather_object(gathered, part)
    return gathered


def _count(report: IndexReport, failures: list, done: int, bar) -> None:
    report.failed += len(failures)
    report.failed_examples += failures[: 3 - len(report.failed_examples)]
    if bar:
        bar(done + len(failures))


def _embed_gathered(plan: Plan, which: range, writer, loaded, opts, device, ctx: DistContext, bar) -> None:
    """Every vector sent to process 0, which commits every `commit_seconds` and at the end."""
    last_commit = time.monotonic()
    for part in _batches(plan, which, loaded, opts, device, ctx):
        parts = _gather(ctx, part)
        if writer is None:
            continue
        for positions, vectors, failures in parts:
            writer.stage(positions, vectors)
            _count(plan.report, failures, len(positions), bar)
        if time.monotonic() - last_commit >= opts.commit_seconds and writer.ready():
            writer.commit()
            last_commit = time.monotonic()
    if writer is not None:
        writer.commit()


def _embed_sharded(plan: Plan, which: range, writer, loaded, opts, device, ctx: DistContext, bar) -> None:
    """Each process adds its vectors to its own shard of the trained index (ids: a base that
    process 0 reserved, plus the position); only positions and failures travel. Shards are
    written beside the index and merged by process 0 into a new list file, then the rows commit."""
    start = _broadcast(ctx, writer.shard_start(which) if writer is not None else None)
    if isinstance(start, str):
        raise DataError(start)
    base, trained = start
    shard = faiss.deserialize_index(trained)
    done = []
    for positions, vectors, failures in _batches(plan, which, loaded, opts, device, ctx):
        if len(positions):
            shard.add_with_ids(faiss_index.prepare(vectors, plan.spec), base + positions - which.start)
        for got, lost in _gather(ctx, (positions, failures)):
            done.append(got)
            _count(plan.report, lost, len(got), bar)
    shard_file = plan.shard_dir / f".shard-{ctx.rank}.faiss"
    ondisk.write_shard(shard, shard_file)
    ctx.barrier()
    if writer is not None:
        files = [plan.shard_dir / f".shard-{r}.faiss" for r in range(ctx.world)]
        writer.commit_shards(files, np.sort(np.concatenate(done)) if done else np.empty(0, np.int64), base, which)
    ctx.barrier()  # no process leaves before the merge: torchrun ends the group when the first one does


def _train_size(spec: IndexSpec) -> int:
    return min(TRAIN_CAP, TRAIN_BYTES // (4 * spec.dim))


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
        self.train_size = _train_size(store.spec)
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
        rows, keep = self._staged_rows()
        vectors = np.concatenate(self.vectors)[keep] if keep else None
        ids = np.arange(self.next_id, self.next_id + len(rows), dtype=np.int64)
        replaced = [self.plan.replace[r[0]] for r in rows if r[0] in self.plan.replace]
        deleted = replaced + self.pending_removals
        if vectors is not None and not self.index.is_trained:
            for advice in faiss_index.train(self.index, vectors[: self.train_size], store.spec, self.device):
                self.warn(advice)
        radii = self._add(vectors, ids, deleted)  # step 1
        self._commit_rows(ids, rows, deleted, self.next_id + len(rows), radii)  # step 2
        if deleted and store.remove_vectors(self.index, deleted) and self.index.is_trained:
            store.index = self.index
            store.save_index()  # step 3
        report.updated += len(replaced)
        report.added += len(rows) - len(replaced)
        self.next_id += len(rows)
        self.vectors, self.files, self.pending_removals, self.pending_touch = [], [], [], []

    def _commit_rows(self, ids, rows: list, deleted: list, next_id: int, radii: tuple | None = None) -> None:
        """One SQLite transaction: the deleted rows out, the new rows in under `ids`, the touched
        rows' size and mtime, the id counter, and under --dba the radii (ids, radii)."""
        db = self.store.db
        with db:
            if radii is not None:
                self.store.set_radii(*radii, deleted)
            db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in deleted])
            db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)", [(int(i), *r) for i, r in zip(ids, rows)])
            db.executemany("UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?", self.pending_touch)
            self.store.set_next_id(next_id)

    def _add(self, vectors, ids: np.ndarray, deleted: list) -> tuple | None:
        """Step 1: the new vectors into index.faiss, saved. Under --dba they go in augmented, with
        the stored ones whose neighbourhood this commit changes replaced, raw.faiss saved first;
        returns (ids, radii) of the augmented vectors for SQLite."""
        store = self.store
        if self.dba is None:
            if vectors is not None:
                store.add_vectors(self.index, vectors, ids)
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

    def shard_start(self, which: range) -> tuple | str:
        """(first id of the shards' files, the trained index without vectors, serialised), or
        why there is none."""
        if not self.index.is_trained:
            return "no image of the training sample could be read, so the index could not be trained"
        base, self.next_id = self.next_id, self.next_id + len(which)
        return base, faiss.serialize_index(ondisk.empty_copy(self.index))

    def commit_shards(self, files: list[Path], positions: np.ndarray, base: int, which: range) -> None:
        """The shards merged into a new list file with what the index holds (less replaced and
        unreadable files' vectors), index.faiss replaced, then the rows committed."""
        store, report = self.store, self.plan.report
        rows, ids, dropped = [], [], []
        for position in positions:
            row, vector_id = self._row(self.plan.embed[position]), base + int(position) - which.start
            if row is None:
                dropped.append(vector_id)  # changed or gone since it was embedded: its vector goes too
            else:
                rows.append(row)
                ids.append(vector_id)
        replaced = [self.plan.replace[r[0]] for r in rows if r[0] in self.plan.replace]
        deleted = replaced + self.pending_removals
        ondisk.rewrite(self.index, store.root, [ondisk.read_shard(f) for f in files], deleted + dropped)
        store.index = self.index
        store.save_index()
        for f in files:
            f.unlink(missing_ok=True)
        self._commit_rows(ids, rows, deleted, self.next_id)
        report.updated += len(replaced)
        report.added += len(rows) - len(replaced)
        self.pending_removals, self.pending_touch = [], []

    def _staged_rows(self) -> tuple[list, list]:
        """The rows of the staged files still as planned, and their places among the staged vectors."""
        rows, keep = [], []
        for i, p in enumerate(self.files):
            row = self._row(p)
            if row is not None:
                rows.append(row)
                keep.append(i)
        return rows, keep

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


class _MilvusWriter(_Writer):
    """Stages embedded vectors and upserts each image as one entity (vector and row together),
    keyed by id: a changed file keeps its id, a new one gets an id reserved (and persisted) before
    use. Every step can be repeated, so a kill at any moment leaves neither a duplicate nor a
    missing row once the next run has re-embedded what did not land."""

    def __init__(self, store: Store, plan: Plan, device, warn):
        self.store, self.plan, self.device, self.warn = store, plan, device, warn
        self.vectors, self.files = [], []
        self.pending_removals, self.pending_touch = list(plan.remove), list(plan.touch)

    def ready(self) -> bool:
        return True  # Milvus builds its index itself, from what has been inserted

    def commit(self) -> None:
        store, report = self.store, self.plan.report
        rows, keep = self._staged_rows()
        fresh = [r for r in rows if r[0] not in self.plan.replace]
        first = store.reserve_ids(len(fresh)) if fresh else 0
        new_ids = iter(range(first, first + len(fresh)))
        ids = [self.plan.replace[r[0]] if r[0] in self.plan.replace else next(new_ids) for r in rows]
        if rows:
            store.upsert(np.array(ids, np.int64), np.concatenate(self.vectors)[keep], rows)
        if self.pending_removals:
            store.remove(self.pending_removals)
        if self.pending_touch:
            store.touch(self.pending_touch)
        store.flush()
        report.updated += len(rows) - len(fresh)
        report.added += len(fresh)
        self.vectors, self.files, self.pending_removals, self.pending_touch = [], [], [], []

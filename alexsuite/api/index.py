"""`alexsuite.Index`: a FAISS index with its SQLite rows, searched by images or ids and grown
with the same incremental, atomic update as `alexsuite index`."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from ..data.inputs import ImageInput, as_inputs, expand_paths
from ..devices import resolve_device
from ..distributed import DistContext
from ..errors import ConfigError, DataError
from ..models.checkpoint import default_model, load_model
from ..retrieval import backend
from ..retrieval.backend import Store
from ..retrieval.dedup import FLAT_UP_TO, DedupSettings, Group, find_duplicates
from ..retrieval.indexer import IndexOptions, IndexReport, update_index
from ..retrieval.rerank import parse_rerank
from ..retrieval.search import QueryResult, Searcher, SearchSettings, expand_queries
from ..retrieval.store import DEFAULT_INDEX
from ._common import raise_first, settings_with


class Index:
    """An index directory (a name kept under indexes/, or a path with a /) or a Milvus collection
    (milvus://HOST:PORT/COLLECTION, milvus-lite:PATH.db/COLLECTION). Opened read-only for
    searching; `add` takes the writer's lock for the time of the update only.

    >>> index = Index("runs/demo/index")                          # doctest: +SKIP
    >>> index.search("query.jpg", k=5)[0].results[0].path        # doctest: +SKIP
    """

    def __init__(self, name: str | os.PathLike = DEFAULT_INDEX, model=None, device: str = "auto"):
        self.root = backend.locate(name)
        self.device = resolve_device(device)
        self._model, self._loaded, self._store, self._searcher_open = model, None, None, None

    def __repr__(self) -> str:
        return f"Index({str(self.root)!r})"

    def __len__(self) -> int:
        return self._open().count()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self._store, self._searcher_open = None, None

    @property
    def manifest(self) -> dict:
        return self._open().manifest

    def search(
        self, images=(), settings: SearchSettings | None = None, *, ids=(), skip_unreadable: bool = False, **overrides
    ) -> list[SearchResult]:
        """The k nearest indexed images to each query image (see Model.predict for what images
        may be) and to each indexed image named by id; an indexed file is left out of its own
        results. settings: SearchSettings (k, params, workers, rerank, e.g. rerank="aqe:n=5,alpha=3");
        its index/model/device are this Index's own."""
        opts = settings_with(SearchSettings, settings, overrides)
        rerank = parse_rerank(opts.rerank)  # a bad string fails before any image is read
        store = self._open()
        inputs = as_inputs(images)
        inputs += [ImageInput(str(p), path=p) for p in expand_queries([], store, ids)]
        if not inputs:
            raise DataError("give at least one query image, or an id")
        searcher = self._searcher()
        searcher.set_params(opts.params)  # the index is shared: this call's parameters (or its own) every time
        results = searcher.search_inputs(inputs, opts.k, workers=opts.workers, rerank=rerank)
        if not skip_unreadable:
            raise_first(r.failure for r in results)
        return results

    def add(self, paths, settings: IndexOptions | None = None, *, progress=None, warn=None, **overrides):
        """Embed what is new in these folders (recursively) and files into the index, creating it
        if needed: one IndexReport per folder, and one for the loose files together. Unchanged
        files are not embedded again; an interrupted update loses nothing committed."""
        opts = settings_with(IndexOptions, settings, {"index": str(self.root), **overrides})
        paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        for p in paths:
            if not os.path.lexists(p):
                raise DataError(f"{p}: no such file or folder")
        folders, files = [p for p in paths if p.is_dir()], [p for p in paths if not p.is_dir()]
        self.close()  # the update replaces the files this reader has open
        loaded = self.loaded_model(opts.model)
        return add_to_index(self.root, loaded, folders, files, opts, self.device, progress, warn)

    def duplicates(self, settings: DedupSettings | None = None, **overrides) -> list[Group]:
        """Groups of near-duplicate indexed images (settings: DedupSettings, e.g. threshold=0.05):
        exact copies by content hash, near ones by cosine distance; largest group first."""
        return find_duplicates(self._open(), settings_with(DedupSettings, settings, overrides))

    def loaded_model(self, override=None):
        """The model the index was made with (loaded once), or `override`."""
        if override:
            return load_model(override, self.device)
        if self._loaded is None:
            self._loaded = load_model(index_model(self.root, self._model), self.device)
        return self._loaded

    def _open(self) -> Store:
        if self._store is None:
            self._store = backend.open_read(self.root)
        return self._store

    def _searcher(self) -> Searcher:
        if self._searcher_open is None:
            self._searcher_open = Searcher(self._open(), self.loaded_model(), self.device)
        return self._searcher_open


SearchResult = QueryResult


def add_to_index(
    root: Path,
    loaded,
    folders,
    files,
    opts: IndexOptions,
    device,
    progress=None,
    warn=None,
    ctx: DistContext = DistContext(),
) -> list[IndexReport]:
    """`alexsuite index FOLDER... --files-from LIST` and Index.add: each folder updated as its own
    root (its first subfolder names a row's label), the listed files together under their
    common folder."""
    files = [Path(f).expanduser() for f in files]
    if files and opts.prune:
        raise ConfigError("--prune works on folders (it removes what is gone from one); not with a list of files")
    if not folders and not files:
        raise DataError("nothing to index: give folders of images, or files")
    warn = warn or (lambda message: None)
    reports = []
    for folder in folders:
        reports.append(update_index(root, loaded, Path(folder), opts, device, progress, ctx, warn))
        opts = replace(opts, rebuild=False)  # --rebuild starts the index afresh once, then the others add to it
    if files:
        common = Path(os.path.commonpath([os.path.realpath(f.parent) for f in files]))
        reports.append(update_index(root, loaded, common, opts, device, progress, ctx, warn, files=files))
    return reports


def duplicates_in(
    paths, settings: DedupSettings | None = None, *, progress=None, warn=None, **overrides
) -> list[Group]:
    """Near-duplicate groups among image folders and files (see Index.duplicates): embedded into
    a temporary index (settings.layer; HNSW32 above FLAT_UP_TO images, so no all-pairs search),
    grouped, and the index deleted. With settings.index, that index's images instead."""
    opts = settings_with(DedupSettings, settings, overrides).check()
    if opts.index:
        with Index(opts.index, opts.model, opts.device) as index:
            return index.duplicates(opts)
    images = expand_paths([paths] if isinstance(paths, (str, os.PathLike)) else paths, warn=warn)
    if not images:
        raise DataError("give folders or files of images to look for duplicates in")
    factory = "Flat" if len(images) <= FLAT_UP_TO else "HNSW32"
    with (
        tempfile.TemporaryDirectory(prefix="alexsuite-dedup-") as tmp,
        Index(Path(tmp) / "index", opts.model, opts.device) as index,
    ):
        index.add(
            images,
            layer=opts.layer,
            metric="cosine",
            factory=factory,
            workers=opts.workers,
            progress=progress,
            warn=warn,
        )
        return index.duplicates(opts)


def index_model(root: Path | str, model: str | None = None) -> str:
    """`model`, else the model that built this index (a --rebuild too: the same vectors made
    again), else the newest training run."""
    if model:
        return model
    damaged = isinstance(root, Path) and any((root / n).exists() for n in ("meta.sqlite", "index.faiss"))
    if damaged and not backend.exists(root):
        raise ConfigError(
            f"--index {root}: its manifest is gone, and with it the model's name: rebuild it with "
            "--rebuild, and pass --model"
        )
    if backend.exists(root):
        return backend.manifest_of(root)["model"]["source"]
    return str(default_model())

"""A new catalogue version of the retrieval servable, without retraining (``tfrec index``).

:func:`index_catalogue` reopens a retrieval run, reads a catalogue file (an item
id column and the content columns the run's item tower uses: title, genres),
embeds every catalogue item with the trained item tower and writes the next
version ``<base>/<model_name>/<version>/`` of the retrieval servable:

* a known item (in the run's item vocabulary) gets its learned id row plus the
  content of the catalogue file;
* a new item gets the out-of-vocabulary id row plus its content, so a
  cold-start item is placed by its content alone;
* items absent from the file are not candidates: they are never returned.

The query tower is the run's, unchanged: the history is still looked up in the
training vocabulary, so a history holding items removed from the catalogue is
encoded as before, and ids the query tower never saw (new items) are ignored by
the query like any unknown id. History items are excluded from the results by
id, new ones included. Signatures, ``k`` checks and the index kind (brute force
or IVF, whose partitions are trained again on the new vectors) are those of an
ordinary export; ``assets.extra/tfrec_config.json`` records the catalogue under
``"catalogue"`` (source file, item count, items added/removed/kept against the
run's catalogue) and ``candidate_vocab.txt`` lists the ids the version returns.

A run without content features cannot place new items (they would all share the
out-of-vocabulary vector and be ranked arbitrarily), so a catalogue with new ids
is refused for it; removing items needs no content and is accepted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfrec.data.download import DatasetNotFoundError
from tfrec.data.interactions import DataError
from tfrec.data.item_features import ItemFeatureTables
from tfrec.data.parquet_reader import read_parquet_columns
from tfrec.data.parsing import Field, check_unique_ids, read_with_header, split_genres
from tfrec.data.vocab import NUM_RESERVED, OOV_INDEX, IdVocabulary
from tfrec.export.candidates import Candidates, content_tables, embed_items
from tfrec.export.ivf_partition import default_num_partitions
from tfrec.export.retrieval import export_retrieval
from tfrec.export.schema import read_export_config
from tfrec.export.versions import latest_version_dir
from tfrec.training.experiment import (
    RunLayout,
    export_extra_files,
    load_experiment,
    read_kind,
    read_run_config,
)
from tfrec.training.retrieval_config import RetrievalExperimentConfig

logger = logging.getLogger(__name__)

_PARQUET = (".parquet", ".pq")


@dataclasses.dataclass(frozen=True)
class CatalogueColumns:
    """Where the catalogue file keeps each field (None: the run's data config, else the default).

    Attributes:
        item_col: Item id column (default: a ``csv`` run's ``item_col``, else ``item_id``).
        title_col: Title column (default: the run's ``title_col``, else ``title``).
        genres_col: Genres column, ``genres_sep``-joined text or Parquet lists
            (default: the run's ``genres_col``, else ``genres``).
        genres_sep: Separator inside the genres column (default: the run's, else ``|``).
        sep: Field separator of a text file (default: tab for ``.tsv``, else comma).
    """

    item_col: str | None = None
    title_col: str | None = None
    genres_col: str | None = None
    genres_sep: str | None = None
    sep: str | None = None

    def resolved(self, data: Any) -> CatalogueColumns:
        """These columns with the defaults filled in from a run's ``DataConfig``."""
        csv = getattr(data, "dataset", None) == "csv"
        return CatalogueColumns(
            item_col=self.item_col or (data.item_col if csv else "item_id"),
            title_col=self.title_col or getattr(data, "title_col", None) or "title",
            genres_col=self.genres_col or getattr(data, "genres_col", None) or "genres",
            genres_sep=self.genres_sep or getattr(data, "genres_sep", None) or "|",
            sep=self.sep,
        )


def read_catalogue(
    path: str | os.PathLike[str], columns: CatalogueColumns, explicit: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Reads a catalogue file (CSV/TSV with a header, or Parquet) with the loaders' checks.

    Args:
        path: The file; ``.parquet``/``.pq`` is read as Parquet.
        columns: Resolved columns (:meth:`CatalogueColumns.resolved`).
        explicit: Content columns the caller named, which must exist.

    Returns:
        Columns ``item_id`` (str), ``title`` (str, None when the file has no title
        column) and ``genres`` (lists of str, None without a genres column).

    Raises:
        DatasetNotFoundError: The file does not exist.
        DataError: A missing id or named column, an empty id, a duplicate id (the
            message names the file, the line or row and the column) or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: file not found (the catalogue, --items)")
    keep = (columns.title_col, columns.genres_col)
    fields = [Field(columns.item_col, "id", "item id")]
    sep = columns.sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    if path.suffix.lower() in _PARQUET:
        table = read_parquet_columns(path, fields, keep=keep)
    else:
        table = read_with_header(path, fields, sep=sep, keep=keep)
    for column in explicit:
        if column not in table.columns:
            raise DataError(f"{path}: missing column '{column}'; the file has {list(table)}")
    items = pd.DataFrame({"item_id": table[columns.item_col].astype(str).to_numpy()})
    check_unique_ids(path, items["item_id"], sep, quoted=True, header=True)
    title, genres = columns.title_col, columns.genres_col
    items["title"] = (
        table[title].fillna("").astype(str).str.strip().to_numpy() if title in table else None
    )
    items["genres"] = _genre_lists(table[genres], columns.genres_sep) if genres in table else None
    items.attrs["columns"] = {"title": title, "genres": genres}  # for the messages
    return items


def _genre_lists(values: pd.Series, sep: str) -> list[list[str]] | list[None]:
    """One list of genres per row: ``sep``-joined text, or Parquet list cells."""
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        lists = [v if isinstance(v, (list, tuple, np.ndarray)) else [] for v in values]
        return [[str(g) for g in v if str(g)] for v in lists]
    return split_genres(values.fillna(""), sep)


def catalogue_counts(run_items: IdVocabulary, ids: pd.Series) -> dict[str, int]:
    """Items of the catalogue ``ids``: total, and added/removed/kept against ``run_items``."""
    new = set(ids)
    kept = sum(token in new for token in run_items.tokens)
    return {
        "items": len(new),
        "added": len(new) - kept,
        "removed": len(run_items.tokens) - kept,
        "kept": kept,
    }


def _check_content(items: pd.DataFrame, features: ItemFeatureTables | None, path: Path) -> None:
    """Raises unless the file has the content columns the run's item tower reads.

    Raises:
        DataError: The run uses titles (genres) and the file has no title (genres) column.
    """
    names = items.attrs.get("columns", {})
    for column, table in (("title", None if features is None else features.titles),
                          ("genres", None if features is None else features.genres)):  # fmt: skip
        if table is not None and items[column].isna().all():
            raise DataError(
                f"{path}: no {column} column '{names.get(column, column)}' (--{column}-col "
                f"names another); the run's item tower embeds items with their {column}"
            )


def _refuse_unplaceable(new_ids: list[str], path: Path, uses_content: bool) -> None:
    """New items need content features: without them they would share one vector.

    Raises:
        ValueError: ``new_ids`` is not empty and the run has no content features.
    """
    if new_ids and not uses_content:
        raise ValueError(
            f"{path}: {len(new_ids)} item id(s) the run never saw (e.g. {new_ids[:3]}), but "
            "the run's item tower has no content features (no titles or genres), so every new "
            "item would get the same out-of-vocabulary vector and be ranked arbitrarily; "
            "retrain with item features, or leave the new ids out (removing items needs none)"
        )


def embed_catalogue(experiment: Any, items: pd.DataFrame, path: Path) -> Candidates:
    """The catalogue's candidates: ids and vectors from a reopened retrieval experiment.

    Raises:
        DataError: The file lacks a content column the run uses.
        ValueError: New ids in a run without content features, or an id ``[UNK]``.
    """
    model, item_vocab = experiment.model, experiment.item_vocab
    model.candidate_embeddings()  # builds the tower (and restores its weights)
    tower = model.item_tower
    features = experiment.item_features if tower.uses_content_features else None
    _check_content(items, features, path)
    id_rows = item_vocab.lookup(items["item_id"].to_numpy())  # [N]; OOV_INDEX for new ids
    new = id_rows == OOV_INDEX
    _refuse_unplaceable(items["item_id"][new].tolist(), path, tower.uses_content_features)
    try:
        vocab = IdVocabulary(items["item_id"].tolist(), name="candidate")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    genres, titles = content_tables(items, features, path)
    vectors = embed_items(tower, np.concatenate([[0, OOV_INDEX], id_rows]), genres, titles)
    placed = np.zeros(len(items), bool)  # some genre or title word the run knows
    if genres is not None:
        placed |= genres[NUM_RESERVED:].any(axis=1)
    if titles is not None:
        placed |= (titles[NUM_RESERVED:] > OOV_INDEX).any(axis=1)
    blind = items["item_id"][new & ~placed].tolist()
    if blind:
        logger.warning(
            "%s: %d new item(s) have no genre or title word the run knows (e.g. %s): they "
            "share one vector and cannot be told apart", path, len(blind), blind[:3],
        )  # fmt: skip
    counts = catalogue_counts(item_vocab, items["item_id"])
    return Candidates(vocab, vectors, {"source": str(path.resolve()), **counts})


def previous_index(*model_dirs: Path) -> dict[str, Any] | None:
    """The ``"index"`` of the latest servable version in the first of ``model_dirs`` having one."""
    for model_dir in model_dirs:
        latest = latest_version_dir(model_dir)
        if latest is not None:
            info = read_export_config(latest).get("index")
            return dict(info) if isinstance(info, Mapping) else None
    return None


def index_options(
    previous: Mapping[str, Any] | None,
    index: str | None,
    num_partitions: int | None,
    nprobe: int | None,
    num_items: int,
) -> dict[str, Any]:
    """The index of the new version: the caller's choices, else those of the version it follows.

    The previous version's kind is kept. For IVF, the partitions it asked for are
    kept when they were not the default for its item count (else the default for
    the new count), and its ``nprobe`` when it was not tuned (else tuned again).

    Args:
        previous: The previous version's ``"index"`` entry (None: brute force).
        index: ``"brute"``/``"ivf"``, or None for the previous kind.
        num_partitions: IVF partitions, or None (see above).
        nprobe: IVF default ``nprobe``, or None (see above).
        num_items: Items of the new catalogue.

    Returns:
        ``index``, ``num_partitions`` and ``nprobe`` for :func:`export_retrieval`.
    """
    previous = dict(previous or {"type": "brute"})
    kind = index or str(previous.get("type", "brute"))
    if index is None and kind == "ivf" and previous.get("type") == "ivf":
        requested, old_items = previous.get("requested_partitions"), previous.get("num_items")
        chosen = isinstance(requested, int) and isinstance(old_items, int) and old_items > 0
        chosen = chosen and requested != default_num_partitions(old_items)
        if num_partitions is None and chosen and requested <= num_items:
            num_partitions = requested
        if nprobe is None and "nprobe_tuning" not in previous and num_partitions is not None:
            nprobe = previous.get("nprobe")
    return {"index": kind, "num_partitions": num_partitions, "nprobe": nprobe}


def _warmup(experiment: Any, model_name: str, num_items: int, num_requests: int = 4) -> bytes:
    """TF Serving warmup requests: a few test users, ``k`` at most the catalogue size."""
    from tfrec.export.warmup import build_warmup_records  # noqa: PLC0415

    queries = experiment.queries("test")
    vocab = experiment.item_vocab
    requests = []
    for row in range(min(num_requests, len(queries))):
        tokens = [vocab.token(int(i)) for i in queries.history[row] if i > OOV_INDEX]
        requests.append(
            {
                "user_id": np.array([queries.user_ids[row]], dtype=object),
                "history": np.array([tokens or [""]], dtype=object),
                "k": np.array([min(10, num_items)], dtype=np.int32),
            }
        )
    return build_warmup_records(model_name, requests)


def index_catalogue(
    run_dir: str | os.PathLike[str],
    items_path: str | os.PathLike[str],
    base_dir: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    version: int | None = None,
    index: str | None = None,
    num_partitions: int | None = None,
    nprobe: int | None = None,
    columns: CatalogueColumns | None = None,
    data_dir: str | None = None,
) -> Path:
    """Writes the next retrieval version over a new catalogue, the run's towers unchanged.

    Args:
        run_dir: A retrieval run (``tfrec train``'s output directory).
        items_path: The catalogue (CSV/TSV/Parquet: item id + the run's content columns).
        base_dir: TF Serving base directory; the version goes to ``<base>/<model_name>/``.
        model_name: Default: the run's ``model_name``.
        version: Default: the next free version.
        index: ``"brute"`` or ``"ivf"`` (default: the kind of the latest version in
            ``<base>/<model_name>/``, else of the run's own export, else brute).
        num_partitions: IVF partitions (default: see :func:`index_options`).
        nprobe: IVF ``nprobe`` of ``serving_default`` (default: see :func:`index_options`).
        columns: The catalogue's columns (default: the run's data config's).
        data_dir: Overrides the run's data directory (the run's data is reloaded).

    Returns:
        The version directory written.

    Raises:
        FileNotFoundError: No run, or no catalogue file.
        DataError: A malformed catalogue (file, line or row, column).
        ValueError: Not a retrieval run, new items a run without content cannot
            place, or bad index options.
    """
    layout = RunLayout(Path(run_dir))
    kind = read_kind(layout.config)
    if kind != "retrieval":
        sub = layout.sub_run("retrieval").root
        hint = f"; pass its retrieval run {sub}" if (sub / "config.json").is_file() else ""
        raise ValueError(f"{layout.root}: a {kind} run; expected a retrieval run{hint}")
    _, config = read_run_config(layout.root, RetrievalExperimentConfig, data_dir)
    columns = columns or CatalogueColumns()
    explicit = tuple(c for c in (columns.title_col, columns.genres_col) if c)
    items = read_catalogue(items_path, columns.resolved(config.data), explicit)
    name = model_name or config.model_name
    previous = previous_index(Path(base_dir) / name, layout.export / name)
    options = index_options(previous, index, num_partitions, nprobe, len(items))
    experiment = load_experiment(layout.root, data_dir=data_dir)
    candidates = embed_catalogue(experiment, items, Path(items_path))
    titled = None if items["title"].isna().all() else items  # item_titles.json
    path = export_retrieval(
        experiment.model,
        experiment.user_vocab,
        experiment.item_vocab,
        base_dir,
        model_name=name,
        version=version,
        assets_extra={"tf_serving_warmup_requests": _warmup(experiment, name, len(items))},
        extra_files=export_extra_files(experiment.metrics, titled),
        experiment_config=experiment.config.to_dict(),
        candidates=candidates,
        **options,
    )
    info = candidates.info
    logger.info(
        "catalogue %s: %d items (%d added, %d removed, %d kept against the run's)",
        items_path, info["items"], info["added"], info["removed"], info["kept"],
    )  # fmt: skip
    return path

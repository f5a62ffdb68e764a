"""``tfrec prepare --runner RUNNER``: the preparation as an Apache Beam pipeline.

The same output directory as the embedded engines (:mod:`tfrec.data.preparation`,
:mod:`tfrec.data.streaming_prepare`): vocabularies, ``interactions/*.parquet``,
sharded TFRecords with ``spec.json``, ``prepare_config.json`` and
``summary.json``, with exactly the same vocabularies and examples, because
every step calls the one transform of :mod:`tfrec.data.prepare_transform`
(see :mod:`tfrec.data.beam_transforms` for the pipeline's steps).

The pipeline writes into a staging directory next to the output; the
launcher then names the TFRecord shards (``spec.json``), merges the sorted
interaction buckets into one Parquet file per part, writes the summary and
renames the staging directory (on object stores file by file, ``summary.json``
last). Apache Beam is optional (``pip install 'tfrec[beam]'``); running on
Flink, Spark and Dataflow: ``docs/scale.md``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import operator
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from tfrec.data.download import DatasetNotFoundError
from tfrec.data.interactions import DataError
from tfrec.data.preparation import (
    PrepareConfig,
    PrepareResult,
    empty_part_notes,
    make_temp_dir,
    publish_dir,
)
from tfrec.data.prepare_inputs import SCHEMA, InputColumns, read_items_table, resolve_inputs
from tfrec.data.prepare_transform import (
    PART_NAMES,
    CleanStats,
    SplitStats,
    TransformSpec,
    leave_one_out_notes,
    temporal_notes,
)
from tfrec.data.prepare_vocab import VocabReport
from tfrec.data.streaming_prepare import check_streaming_config, csv_result
from tfrec.data.tfdata import FORMAT_VERSION, SPEC_FILE


def _quiet(record: logging.LogRecord) -> bool:
    """Drops Beam's import-time warning about the optional GCP client libraries."""
    return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_quiet)
try:
    import apache_beam as beam
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
    from apache_beam.pvalue import AsSingleton

    from tfrec.data import beam_transforms as bt
    from tfrec.data.beam_transforms import join
except ImportError as _err:
    raise ImportError(
        f"tfrec prepare --runner needs Apache Beam ({_err}); pip install 'tfrec[beam]'"
    ) from _err
finally:
    logging.getLogger().removeFilter(_quiet)

logger = logging.getLogger(__name__)

_ERRORS = {
    "tfrec.data.interactions.DataError": DataError,
    "tfrec.data.download.DatasetNotFoundError": DatasetNotFoundError,
    "ValueError": ValueError,
}
_WORKER_ERROR = re.compile(
    r"^(" + "|".join(map(re.escape, _ERRORS)) + r"): (.*?)(?: \[while running '[^\n]*'\])?$",
    re.MULTILINE,
)


def _temporal_cuts(kept: Any, rows: Any, config: PrepareConfig) -> Any:
    """The singleton ``[test_cut, test_below, valid_cut, valid_below]`` (exact)."""
    p, data = kept.pipeline, config.data
    span = (
        kept
        | "time range" >> beam.Map(lambda u: (int(u[2].min()), int(u[2].max())))
        | "merge ranges" >> beam.CombineGlobally(bt.time_range)
    )
    one = p | "cut seed" >> beam.Create([None])
    fractions = (data.test_fraction, data.valid_fraction)
    state = one | "cut start" >> beam.Map(
        bt.cut_start, AsSingleton(rows), AsSingleton(span), fractions
    )
    for k in range(bt.ROUNDS):
        hists = (
            kept
            | f"histogram {k}" >> beam.FlatMap(bt.histogram, AsSingleton(state))
            | f"sum histograms {k}" >> beam.CombineGlobally(bt.SumHistograms())
        )
        state = one | f"refine {k}" >> beam.Map(bt.refine, AsSingleton(state), AsSingleton(hists))
    return one | "cuts" >> beam.Map(
        bt.final_cuts,
        AsSingleton(state),
        AsSingleton(rows),
        AsSingleton(span),
    )


def _read_and_clean(p: beam.Pipeline, config: PrepareConfig, files: list[str], catalogue: Any):
    """Users with their cleaned rows (see :class:`~tfrec.data.beam_transforms.CleanUser`)."""
    data = config.data
    columns = InputColumns(data.user_col, data.item_col, data.time_col, data.rating_col)
    return (
        p
        | "files" >> beam.Create(list(enumerate(files)))
        | "spread files" >> beam.Reshuffle()
        | "read" >> beam.ParDo(bt.ReadFile(columns, config.batch_rows, len(files) > 1))
        | "group by user" >> beam.GroupByKey()
        | "clean"
        >> beam.ParDo(bt.CleanUser(bool(data.time_col), data.min_rating), AsSingleton(catalogue))
    )


def _vocabularies(kept: Any, cat: Any, config: PrepareConfig) -> tuple[Any, Any]:
    """Singletons: the sorted kept user ids and the item vocabulary (``item_vocabulary``)."""
    user_ids = (
        kept
        | "user ids" >> beam.Map(lambda u: u[0])
        | "all users" >> beam.combiners.ToList()
        | "sort users" >> beam.Map(sorted)
    )
    vocab = (
        kept
        | "item firsts" >> beam.FlatMap(bt.item_firsts)
        | "merge items" >> beam.CombinePerKey(bt.merge_firsts)
        | "all items" >> beam.combiners.ToList()
        | "item vocabulary"
        >> beam.Map(bt.item_vocabulary, AsSingleton(cat), config.min_item_count, config.max_items)
    )
    return user_ids, vocab


def _outputs(made: Any, staging: str, parts: list[str]) -> dict[str, Any]:
    """Writes the shards and row buckets; the per-part results for ``meta.json``."""
    return {
        "shards": made.records
        | "group shards" >> beam.GroupByKey()
        | "write shards" >> beam.Map(bt.write_shard, staging)
        | "all shards" >> beam.combiners.ToList(),
        "buckets": made.rows
        | "group buckets" >> beam.GroupByKey()
        | "write buckets" >> beam.FlatMap(bt.write_bucket, staging, parts)
        | "all buckets" >> beam.combiners.ToList(),
        "split": made.split
        | "sum split" >> beam.CombineGlobally(functools.partial(bt.sum_tuples, size=7)),
        "features": made.features | "feature specs" >> beam.combiners.ToDict(),
        "cold": made.seen
        | "seen in parts" >> beam.CombinePerKey(lambda m: functools.reduce(operator.or_, m, 0))
        | "all seen" >> beam.combiners.ToList()
        | "cold items" >> beam.Map(bt.cold_items),
    }


def build_pipeline(
    p: beam.Pipeline,
    config: PrepareConfig,
    files: list[str],
    catalogue: list[str] | None,
    staging: str,
) -> None:
    """Adds the preparation to ``p``; it writes into ``staging`` (see the module doc)."""
    data = config.data
    cat = p | "catalogue" >> beam.Create([catalogue])
    users = _read_and_clean(p, config, files, cat)
    kept = users | "kept users" >> beam.Filter(lambda u: len(u[1]) > 0)
    results = {
        "counts": users
        | "user counts" >> beam.Map(lambda u: u[4])
        | "sum counts" >> beam.CombineGlobally(functools.partial(bt.sum_tuples, size=4)),
        "rows": kept
        | "kept rows" >> beam.Map(lambda u: len(u[1]))
        | "sum rows" >> beam.CombineGlobally(sum),
    }
    user_ids, vocab = _vocabularies(kept, cat, config)
    temporal = data.split == "temporal"
    cuts = _temporal_cuts(kept, results["rows"], config) if temporal else None
    spec = TransformSpec.from_config(config)
    made = (
        kept
        | "batch users" >> beam.BatchElements(min_batch_size=1, max_batch_size=bt.USERS_PER_BATCH)
        | "examples"
        >> beam.ParDo(
            bt.MakeExamples(spec, config.num_shards, config.num_shards),
            AsSingleton(user_ids),
            AsSingleton(vocab),
            None if cuts is None else AsSingleton(cuts),
        ).with_outputs("split", "features", "rows", "seen", main="records")
    )
    results |= _outputs(made, staging, list(spec.parts()))
    results["report"] = vocab | "report" >> beam.Map(lambda v: v["report"])
    results["users"] = user_ids | "user count" >> beam.Map(len)
    if cuts is not None:
        results["cuts"] = cuts
    one = p | "seed" >> beam.Create([None])
    vocabs = (AsSingleton(user_ids), AsSingleton(vocab))
    _ = one | "vocabularies" >> beam.Map(bt.write_vocabularies, *vocabs, staging)
    extra = {name: AsSingleton(pc) for name, pc in results.items()}
    _ = one | "meta" >> beam.Map(bt.write_meta, staging, **extra)


def _input_files(config: PrepareConfig) -> list[str]:
    """The input files, sorted: local paths as the embedded engine resolves them, else a match."""
    data = config.data
    if bt.is_local(data.path):
        return [str(p) for p in resolve_inputs(data.path, data.data_dir)]
    found = FileSystems.match([data.path])[0].metadata_list
    if not found:
        raise DatasetNotFoundError(f"{data.path}: no file matches this pattern")
    return sorted(m.path for m in found)


def _load_items(config: PrepareConfig) -> pd.DataFrame | None:
    data = config.data
    if not data.items_path:
        return None
    path = data.items_path
    if data.data_dir and not Path(path).is_absolute() and not Path(path).exists():
        candidate = Path(data.data_dir) / path
        path = str(candidate) if candidate.exists() else path
    with bt.local_copy(path) as local:
        return read_items_table(
            local, data.item_col, data.title_col, data.genres_col, data.genres_sep
        )


def _worker_error(err: Exception) -> Exception | None:
    """The project error a worker raised, rebuilt from the runner's message (or None)."""
    found = _WORKER_ERROR.findall(str(err))
    if not found:
        return None
    kind, message = found[-1]
    return _ERRORS[kind](message)


def _runner(name: str, options: PipelineOptions) -> Any:
    """The runner; the DirectRunner's multi-process/thread modes on the FnApiRunner itself.

    (Beam's DirectRunner prefers Prism, a binary it downloads, over the mode asked for.)
    """
    if name != "DirectRunner" or options.view_as(DirectOptions).direct_running_mode == "in_memory":
        return name
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: PLC0415

    return FnApiRunner()


def _run(config: PrepareConfig, runner: str, beam_args: list[str], staging: str) -> list[str]:
    files = _input_files(config)
    items = _load_items(config)
    catalogue = None if items is None else items["item_id"].tolist()
    logger.info("prepare: %d input file(s), e.g. %s; runner %s", len(files), files[0], runner)
    options = PipelineOptions(beam_args)
    try:
        with beam.Pipeline(runner=_runner(runner, options), options=options) as p:
            build_pipeline(p, config, files, catalogue, staging)
    except Exception as err:
        rebuilt = _worker_error(err)
        if rebuilt is None:
            raise
        raise rebuilt from err
    if items is not None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "items.parquet"
            items[["item_id", "title", "genres"]].to_parquet(local, index=False)
            bt.upload(local, join(staging, "items.parquet"))
    return files


def _read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read().decode("utf-8")


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode("utf-8"))


def _publish_shards(staging: str, part: str, meta: dict[str, Any]) -> int:
    """Names a part's shards ``part-XXXXX-of-YYYYY.tfrecord``, writes ``spec.json``."""
    mine = sorted((k, n) for p, k, n in meta["shards"] if p == part)
    entries = []
    for rank, (k, n) in enumerate(mine):
        name = f"part-{rank:05d}-of-{len(mine):05d}.tfrecord"
        shard = join(staging, part, f".shard-{k:05d}.tfrecord")
        FileSystems.rename([shard], [join(staging, part, name)])
        entries.append({"file": name, "num_examples": n})
    total = sum(e["num_examples"] for e in entries)
    if total:
        spec = {
            "format_version": FORMAT_VERSION,
            "num_examples": total,
            "features": meta["features"][part],
            "shards": entries,
        }
        _write_text(join(staging, part, SPEC_FILE), json.dumps(spec, indent=2) + "\n")
        logger.info("wrote %d examples in %d shard(s) to %s", total, len(entries), part)
    return total


def _merge_rows(staging: str, part: str, meta: dict[str, Any]) -> None:
    """One ``interactions/<part>.parquet`` from the user-ordered buckets."""
    paths = [path for _, path in sorted((b, f) for p, b, f in meta["buckets"] if p == part)]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / f"{part}.parquet"
        with pq.ParquetWriter(local, SCHEMA) as writer:
            for path in paths:
                with bt.local_copy(path) as source:
                    for batch in pq.ParquetFile(source).iter_batches():
                        writer.write_batch(batch)
        bt.upload(local, join(staging, "interactions", f"{part}.parquet"))


def _check_counts(config: PrepareConfig, meta: dict[str, Any], files: list[str]) -> None:
    """The embedded engine's errors for empty input and a temporal cut without train rows."""
    data = config.data
    if meta["counts"][0] == 0:
        raise DataError(f"no data rows in {len(files)} input file(s): {files[0]} ...")
    if meta["rows"] == 0:
        raise DataError(f"{data.path}: no interactions left after cleaning (min_rating?)")
    if data.split == "temporal":
        test_cut, test_below, valid_cut, valid_below = meta["cuts"]
        if min(test_below, valid_below) == 0:
            raise ValueError(
                f"temporal_split: the cut at timestamp {min(valid_cut, test_cut)} leaves no "
                f"training rows in {Path(data.path).stem}; lower test_fraction/valid_fraction"
            )


def _finish(config: PrepareConfig, staging: str, files: list[str]) -> PrepareResult:
    """Completes the staging directory from ``_work/meta.json``; returns the summary."""
    data = config.data
    meta = json.loads(_read_text(join(staging, "_work", "meta.json")))
    _check_counts(config, meta, files)
    rows, duplicates, below, absent = meta["counts"]
    split = meta["split"]
    stats = SplitStats(rows=split[:3], short_users=split[3], cold_users=split[4:])
    parts = PART_NAMES if data.valid_fraction > 0 else ("train", "test")
    notes = CleanStats(rows, duplicates, below).notes(data.min_rating, absent)
    if data.split == "temporal":
        cuts = (meta["cuts"][0], meta["cuts"][2])
        notes += temporal_notes(stats, cuts, data.valid_fraction > 0, meta["cold"])
    else:
        notes += leave_one_out_notes(stats, data.valid_fraction > 0)
    report = VocabReport(**meta["report"])
    capped = bool(config.min_item_count or config.max_items)
    notes += [report.note()] if capped else []
    examples = {part: _publish_shards(staging, part, meta) for part in parts}
    for part in examples:
        _merge_rows(staging, part, meta)
    notes += empty_part_notes(examples)
    for note in notes:
        logger.info("prepare: %s", note)
    return csv_result(
        config,
        rows={part: stats.rows[PART_NAMES.index(part)] for part in parts},
        examples=examples,
        user_vocab_size=meta["users"] + 2,
        item_vocab_size=report.kept + 2,
        notes=notes,
        engine="beam",
        oov_item_ids=report.oov_ids if capped else 0,
        oov_interactions=report.oov_interactions if capped else 0,
    )


@contextlib.contextmanager
def _staging(out: str) -> Iterator[str]:
    """A staging directory next to ``out``, removed if the body fails."""
    if bt.is_local(out):
        staging = str(make_temp_dir(Path(out)))
    else:
        staging = f"{out.rstrip('/')}.staging-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(Exception):  # cleaning up: a missing path is fine
        FileSystems.delete([path if bt.is_local(path) else path.rstrip("/") + "/"])


def _exists(path: str) -> bool:
    if bt.is_local(path):
        return Path(path).exists()
    return bool(FileSystems.match([join(path, "*")])[0].metadata_list)


def _publish(staging: str, out: str) -> None:
    """Renames ``staging`` to ``out``: one rename locally, file by file remotely."""
    if bt.is_local(out):
        publish_dir(Path(staging), Path(out))
        return
    if _exists(out):
        _remove(out)
    sources = sorted(m.path for m in FileSystems.match([join(staging, "**")])[0].metadata_list)
    sources.sort(key=lambda s: s.endswith("summary.json"))  # summary.json last: complete
    targets = [out.rstrip("/") + s[len(staging.rstrip("/")) :] for s in sources]
    FileSystems.rename(sources, targets)
    _remove(staging)


def prepare_beam(
    config: PrepareConfig, runner: str = "DirectRunner", beam_args: Sequence[str] = ()
) -> PrepareResult:
    """``tfrec prepare`` as an Apache Beam pipeline; the same output as the embedded engines.

    Args:
        config: The settings of ``--engine duckdb`` (``engine``, ``memory_limit`` unused).
        runner: A Beam runner (:data:`tfrec.names.Runner`).
        beam_args: Beam pipeline options, e.g. ``--direct_num_workers=2``, ``--project P``.

    Returns:
        The :class:`~tfrec.data.preparation.PrepareResult` (``engine="beam"``).

    Raises:
        ValueError: Unsupported settings, an existing output without ``overwrite``.
        DatasetNotFoundError, DataError: No input file; a bad column or value (located).
    """
    check_streaming_config(config)
    out = str(config.output_dir)
    if not out:
        raise ValueError("PrepareConfig.output_dir is required")
    if _exists(out) and not config.overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it")
    with _staging(out) as staging:
        files = _run(config, runner, list(beam_args), staging)
        result = _finish(config, staging, files)
        _remove(join(staging, "_work"))
        _write_text(join(staging, "prepare_config.json"), config.to_json() + "\n")
        _write_text(join(staging, "summary.json"), result.to_json() + "\n")
        _publish(staging, out)
    logger.info("prepare: wrote %s (%s)", out, result.examples)
    return result

"""``tfrec prepare --runner RUNNER``: the preparation as an Apache Beam pipeline.

The same output directory as the embedded engines (:mod:`tfrec.data.preparation`,
:mod:`tfrec.data.streaming_prepare`): vocabularies, ``interactions/*.parquet``,
sharded TFRecords with ``spec.json``, ``prepare_config.json`` and
``summary.json``, with exactly the same vocabularies and examples, because
every step calls the one transform of :mod:`tfrec.data.prepare_transform`
(the pipeline is :mod:`tfrec.data.beam_pipeline`, its steps
:mod:`tfrec.data.beam_transforms`).

The pipeline writes into a staging directory next to the output; the
launcher then names the TFRecord shards (``spec.json``), merges the sorted
interaction buckets into one Parquet file per part, writes the summary and
renames the staging directory (on object stores file by file, ``summary.json``
last). Apache Beam is optional (``pip install 'tfrec[beam]'``); running on
Flink, Spark and Dataflow: ``docs/scale.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
from tfrec.data.prepare_inputs import SCHEMA, read_items_table, resolve_inputs
from tfrec.data.prepare_transform import (
    PART_NAMES,
    CleanStats,
    SplitStats,
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

    from tfrec.data import beam_transforms as bt
    from tfrec.data.beam_pipeline import build_pipeline
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

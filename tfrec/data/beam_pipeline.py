"""The graph of ``tfrec prepare --runner``: the steps of :mod:`tfrec.data.beam_transforms`, wired.

:func:`build_pipeline` adds the whole preparation to a Beam pipeline: read and
clean whole users, the vocabularies, the temporal cuts (``split="temporal"``),
the examples of each batch of users, and the writes into the staging directory
(shards, interaction buckets, vocabularies and ``_work/meta.json``, which
:mod:`tfrec.data.beam_prepare` completes). Imported by
:mod:`tfrec.data.beam_prepare` only (it needs Apache Beam).
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from tfrec.data import beam_transforms as bt
from tfrec.data.preparation import PrepareConfig
from tfrec.data.prepare_inputs import InputColumns
from tfrec.data.prepare_transform import TransformSpec


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

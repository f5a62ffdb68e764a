"""tf.data input pipelines: from in-memory arrays, and from sharded TFRecords.

Both :func:`make_dataset` and :func:`tfrecord_dataset` yield the same structure:
a dict of feature name -> batched tensor ``[B, *shape]`` with the dtype of the
original numpy array (e.g. ``user`` int32 ``[B]``, ``history`` int32 ``[B, L]``).

TFRecord layout written by :func:`write_tfrecords` (for data larger than memory,
or produced once by ``tfrec prepare``)::

    <dir>/part-00000-of-00008.tfrecord ... part-00007-of-00008.tfrecord
    <dir>/spec.json   {"features": {name: {"dtype", "shape"}}, "num_examples",
                       "shards": [{"file", "num_examples"}], "format_version"}

Each record is a ``tf.train.Example`` with one fixed-length ``int64_list``
(integer/bool features) or ``float_list`` (float features) per feature,
flattened row-major. ``spec.json`` is written last, so a directory holding it
is complete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf  # tfrec/__init__ (imported first, as our package) set the Keras-2 guard

from tfrec.config import atomic_write_text

logger = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
FORMAT_VERSION = 1
_INT_KINDS = "biu"


def _check_features(features: Mapping[str, np.ndarray]) -> int:
    """Validates a feature dict; returns the number of examples."""
    if not features:
        raise ValueError("features: expected at least one feature array, got an empty dict")
    sizes = {}
    for name, value in features.items():
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"features[{name!r}]: expected an array [N, ...], got a scalar")
        sizes[name] = array.shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"features: first dimensions differ: {sizes}; expected one N for all")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("features: no examples (first dimension is 0)")
    return n


def make_dataset(  # noqa: PLR0917  (documented positional signature)
    features: Mapping[str, np.ndarray],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` over in-memory feature arrays.

    Order: slices -> cache -> shuffle (full buffer, reshuffled each epoch, seeded)
    -> repeat -> batch -> prefetch(AUTOTUNE). With equal seeds the batch order is
    identical across runs.

    Args:
        features: Name -> array ``[N, ...]`` (all with the same ``N``).
        batch_size: Examples per batch (>= 1).
        shuffle: Shuffle examples (each epoch differently, deterministically).
        seed: Shuffle seed.
        cache: Cache the sliced examples in memory.
        drop_remainder: Drop the last incomplete batch (static batch dimension).
        repeat: Repeat forever.

    Returns:
        A dataset of dicts ``name -> [B, ...]`` with the arrays' dtypes.

    Raises:
        ValueError: Empty or misaligned features, or ``batch_size < 1``.
    """
    n = _check_features(features)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices({k: np.asarray(v) for k, v in features.items()})
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _record_kind(name: str, array: np.ndarray) -> str:
    if array.dtype.kind in _INT_KINDS and array.dtype != np.uint64:
        return "int64"
    if array.dtype in (np.float16, np.float32):
        return "float"
    raise ValueError(
        f"features[{name!r}]: dtype {array.dtype} cannot be stored exactly in a "
        f"tf.train.Example; expected bool, int8..int64, uint8..uint32, float16 or float32"
    )


def write_tfrecords(
    features: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    num_shards: int = 8,
) -> dict:
    """Writes features as sharded ``tf.train.Example`` TFRecords plus ``spec.json``.

    Rows are split into ``min(num_shards, N)`` contiguous shards. Each shard is
    written under a temporary name and renamed when complete; ``spec.json`` is
    written last.

    Args:
        features: Name -> array ``[N, ...]`` (bool/int/float16/float32).
        out_dir: Target directory (created; must not already hold a ``spec.json``).
        num_shards: Desired number of shard files (>= 1).

    Returns:
        The spec written to ``spec.json``.

    Raises:
        ValueError: Bad features/dtypes, ``num_shards < 1`` or an existing spec.
    """
    n = _check_features(features)
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    out = Path(out_dir)
    if (out / SPEC_FILE).exists():
        raise ValueError(
            f"{out} already holds a TFRecord set ({SPEC_FILE}); use an empty directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(value) for name, value in features.items()}
    kinds = {name: _record_kind(name, array) for name, array in arrays.items()}
    flat = {
        name: array.reshape(n, -1).astype(np.int64 if kinds[name] == "int64" else np.float32)
        for name, array in arrays.items()
    }
    count = min(num_shards, n)
    bounds = np.linspace(0, n, count + 1).astype(np.int64)
    shards = []
    for index in range(count):
        file_name = f"part-{index:05d}-of-{count:05d}.tfrecord"
        tmp = out / f".{file_name}.tmp"
        lo, hi = int(bounds[index]), int(bounds[index + 1])
        rows = {name: values[lo:hi].tolist() for name, values in flat.items()}
        try:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for i in range(hi - lo):
                    feature = {
                        name: tf.train.Feature(int64_list=tf.train.Int64List(value=rows[name][i]))
                        if kinds[name] == "int64"
                        else tf.train.Feature(float_list=tf.train.FloatList(value=rows[name][i]))
                        for name in flat
                    }
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())
            os.replace(tmp, out / file_name)
        finally:
            tmp.unlink(missing_ok=True)
        shards.append({"file": file_name, "num_examples": hi - lo})
    spec = {
        "format_version": FORMAT_VERSION,
        "num_examples": n,
        "features": {
            name: {"dtype": str(array.dtype), "shape": list(array.shape[1:])}
            for name, array in arrays.items()
        },
        "shards": shards,
    }
    atomic_write_text(out / SPEC_FILE, json.dumps(spec, indent=2) + "\n")
    logger.info("wrote %d examples in %d shard(s) to %s", n, count, out)
    return spec


def read_spec(directory: str | os.PathLike[str]) -> dict:
    """Reads and checks ``spec.json`` of a TFRecord directory.

    Raises:
        FileNotFoundError: No ``spec.json`` or a listed shard is missing.
        ValueError: The spec is not valid JSON or lacks fields.
    """
    directory = Path(directory)
    path = directory / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; expected a directory written by write_tfrecords / tfrec prepare"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
    for key in ("features", "shards", "num_examples"):
        if key not in spec:
            raise ValueError(
                f"{path}: missing key {key!r}; expected a spec written by write_tfrecords"
            )
    missing = [
        shard["file"] for shard in spec["shards"] if not (directory / shard["file"]).is_file()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise FileNotFoundError(
            f"{path}: {len(missing)} of {len(spec['shards'])} listed shards are missing from "
            f"{directory}: {shown}; copy the whole directory or run `tfrec prepare` again"
        )
    return spec


def tfrecord_dataset(  # noqa: PLR0917  (mirrors make_dataset)
    directory: str | os.PathLike[str],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    cache: bool = False,
    drop_remainder: bool = False,
    repeat: bool = False,
    shuffle_buffer: int = 10_000,
    cycle_length: int = 4,
) -> tf.data.Dataset:
    """A batched dataset over a TFRecord directory written by :func:`write_tfrecords`.

    With ``shuffle`` the shard order is shuffled, ``cycle_length`` shards are
    interleaved and records pass a ``shuffle_buffer``-sized shuffle (all
    seeded and deterministic). Without it, records come in written order.
    Records are parsed per batch and cast back to the dtypes in ``spec.json``.

    Args:
        directory: Folder with ``spec.json`` and the shards.
        batch_size: Examples per batch (>= 1).
        shuffle: Shuffle shards and records.
        seed: Shuffle seed.
        cache: Cache the serialized records in memory after the first epoch.
        drop_remainder: Drop the last incomplete batch.
        repeat: Repeat forever.
        shuffle_buffer: Record shuffle buffer size.
        cycle_length: Shards read concurrently when shuffling.

    Returns:
        Dicts ``name -> [B, *shape]`` with the original dtypes, like :func:`make_dataset`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    directory = Path(directory)
    spec = read_spec(directory)
    files = [str(directory / shard["file"]) for shard in spec["shards"]]
    parse_spec = {}
    dtypes = {}
    for name, info in spec["features"].items():
        dtype = tf.as_dtype(np.dtype(info["dtype"]))
        stored = tf.float32 if dtype.is_floating else tf.int64
        parse_spec[name] = tf.io.FixedLenFeature(info["shape"], stored)
        dtypes[name] = dtype

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, parse_spec)
        return {name: tf.cast(parsed[name], dtypes[name]) for name in parse_spec}

    if shuffle:
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=max(1, min(cycle_length, len(files))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        ds = tf.data.TFRecordDataset(files)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

"""Writing :mod:`tfrec.data.synth` logs as Parquet, row group by row group (``tfrec synth``).

Two files, each written to a temporary file and renamed when complete:

* the log: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64), one row
  group per few user blocks (each user's rows inside one row group), the config
  as schema metadata (key ``tfrec.synth``);
* the item file: ``item_id``, ``title`` (four space-separated tokens: two of the
  item's category vocabulary ``c<c>w<j>``, two shared ``w<v>`` with Zipf
  frequencies) and ``genres`` (the category, ``cat<c>``): what
  ``load_dataset("csv", ..., items_path=..., title_col="title",
  genres_col="genres")`` reads.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tfrec.config import process_umask
from tfrec.data.synth import (
    USER_BLOCK,
    Block,
    Catalogue,
    SynthConfig,
    build_catalogue,
    generate_block,
    seeded_rng,
    user_lengths,
)
from tfrec.logs import Progress

logger = logging.getLogger(__name__)

ITEM_CHUNK = 1 << 18  # items per row group of the item file
CATEGORY_WORDS = 8  # title tokens per category
SHARED_WORDS = 1000  # shared title vocabulary
SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64())])
ITEMS_SCHEMA = pa.schema(
    [("item_id", pa.string()), ("title", pa.string()), ("genres", pa.string())]
)


def default_items_path(output: str | os.PathLike[str]) -> Path:
    """``log.parquet`` -> ``log.items.parquet`` (the item file beside the log)."""
    output = Path(output)
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.name
    return output.with_name(f"{stem}.items.parquet")


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def items_table(config: SynthConfig, catalogue: Catalogue, chunk: int) -> pa.Table:
    """Rows ``[chunk * ITEM_CHUNK, ...)`` of the item file: ``item_id``, ``title``, ``genres``."""
    rng = seeded_rng(config.seed, 3, chunk)
    index = np.arange(chunk * ITEM_CHUNK, min((chunk + 1) * ITEM_CHUNK, config.num_items))
    category = catalogue.category[index]
    cat_text = pc.cast(pa.array(category), pa.string())
    shared_cdf = np.cumsum(1.0 / np.arange(1, SHARED_WORDS + 1))
    tokens = [
        pc.binary_join_element_wise("c", cat_text, "w", pc.cast(pa.array(own), pa.string()), "")
        for own in rng.integers(0, CATEGORY_WORDS, (2, len(index)))
    ]
    for _ in range(2):
        word = np.searchsorted(shared_cdf, rng.random(len(index)) * shared_cdf[-1], side="right")
        tokens.append(_prefixed("w", np.minimum(word, SHARED_WORDS - 1)))
    return pa.table(
        {
            "item_id": _prefixed("i", index),
            "title": pc.binary_join_element_wise(*tokens, " "),
            "genres": _prefixed("cat", category),
        },
        schema=ITEMS_SCHEMA,
    )


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_synthetic` wrote (printed by ``tfrec synth``).

    Attributes:
        output, items_output: The interaction and item files.
        num_users, num_items, num_interactions, row_groups: Sizes written.
        cold_items: Catalogue items without interactions.
        top1pct_share: Share of interactions on the most frequent 1% of items.
        successor_fraction: Share of consecutive pairs following the planted successor.
        repeated_interactions: Rows repeating a user's earlier item (0 without repeats).
        longest_user: Most events of one user.
        seconds, rows_per_second: Wall time and throughput.
    """

    output: str
    items_output: str
    num_users: int
    num_items: int
    num_interactions: int
    row_groups: int
    cold_items: int
    top1pct_share: float
    successor_fraction: float
    repeated_interactions: int
    longest_user: int
    seconds: float
    rows_per_second: float

    def to_dict(self) -> dict[str, object]:
        """The summary as a JSON-compatible dict."""
        return dataclasses.asdict(self)


def _temp_path(path: Path) -> Path:
    """A new empty temporary file beside ``path``, with a plain ``open``'s mode (not 0600)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~process_umask())
    return Path(name)


def _check_outputs(output: Path, items_output: Path, overwrite: bool) -> None:
    if output.resolve() == items_output.resolve():
        raise ValueError(
            f"items output {items_output} is the interactions output; expected another"
        )
    for path in (output, items_output):
        if path.exists() and not overwrite:
            message = "exists; pass overwrite=True (--overwrite) to replace it"
            raise FileExistsError(errno.EEXIST, message, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)


def _flush(writer: pq.ParquetWriter, item_ids: pa.Array, buffer: list[Block]) -> np.ndarray:
    """Writes buffered blocks as one row group; returns their item indices."""
    first = buffer[0].first_user
    lengths = np.concatenate([b.lengths for b in buffer])
    items = np.concatenate([b.items for b in buffer])
    users = _prefixed("u", np.arange(first, first + len(lengths)))
    table = pa.table(
        {
            "user_id": pc.take(users, pa.array(np.repeat(np.arange(len(lengths)), lengths))),
            "item_id": pc.take(item_ids, pa.array(items)),
            "timestamp": pa.array(np.concatenate([b.timestamps for b in buffer])),
        },
        schema=writer.schema,
    )
    writer.write_table(table, row_group_size=table.num_rows)
    return items


def _write_log(
    config: SynthConfig, catalogue: Catalogue, path: Path, row_group_rows: int
) -> dict[str, int | float]:
    """Streams the interactions to ``path``; returns the counters for the summary."""
    counts = np.zeros(config.num_items, dtype=np.int64)
    lengths = user_lengths(config)
    item_ids = _prefixed("i", np.arange(config.num_items))
    schema = SCHEMA.with_metadata({"tfrec.synth": config.to_json()})
    progress = Progress(
        "synth", total=config.num_interactions, unit="rows", every_seconds=5.0, log=logger
    )
    stats = {"row_groups": 0, "successor_pairs": 0, "repeats": 0, "done": 0}
    buffer: list[Block] = []
    buffered = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for index in range(-(-config.num_users // USER_BLOCK)):
            block = generate_block(config, catalogue, lengths, index)
            buffer.append(block)
            buffered += len(block.items)
            stats["successor_pairs"] += block.successor_pairs
            stats["repeats"] += block.repeats
            if buffered >= row_group_rows or block.first_user + USER_BLOCK >= config.num_users:
                seen, times = np.unique(_flush(writer, item_ids, buffer), return_counts=True)
                counts[seen] += times  # O(rows log rows): no O(items) work per row group
                stats["row_groups"] += 1
                stats["done"] += buffered
                buffer, buffered = [], 0
                progress.update(stats["done"])
    progress.close()
    top = np.sort(counts)[::-1][: -(-config.num_items // 100)]
    stats.update(
        cold_items=int((counts == 0).sum()),
        top1pct_share=float(top.sum() / config.num_interactions),
        longest_user=int(lengths.max()),
    )
    return stats


def write_synthetic(
    config: SynthConfig,
    output: str | os.PathLike[str],
    items_output: str | os.PathLike[str] | None = None,
    *,
    row_group_rows: int = 1_000_000,
    overwrite: bool = False,
) -> SynthSummary:
    """Writes the interaction log and the item file of ``config`` as Parquet.

    The log has ``user_id`` (str), ``item_id`` (str) and ``timestamp`` (int64)
    and the config as schema metadata (``tfrec.synth``); the item file has
    ``item_id``, ``title`` (space-separated tokens) and ``genres`` (the
    category), the columns ``load_dataset("csv", ..., items_path=...,
    title_col="title", genres_col="genres")`` reads. Both are written to
    temporary files and renamed when complete. Progress is logged every 5 s.

    Args:
        config: What to generate.
        output: The interaction file.
        items_output: The item file (default :func:`default_items_path`).
        row_group_rows: Rows per row group (whole user blocks: a group may be
            up to one block larger). Does not change the rows.
        overwrite: Replace existing files.

    Returns:
        The summary (sizes, realised statistics, time).

    Raises:
        ValueError: ``row_group_rows < 1`` or both outputs are the same file.
        FileExistsError: An output exists and ``overwrite`` is false.
    """
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows={row_group_rows}; expected >= 1")
    output = Path(output)
    items_output = Path(items_output) if items_output else default_items_path(output)
    _check_outputs(output, items_output, overwrite)
    start = time.monotonic()
    catalogue = build_catalogue(config)
    temps = [_temp_path(items_output), _temp_path(output)]
    try:
        with pq.ParquetWriter(temps[0], ITEMS_SCHEMA, compression="zstd") as writer:
            for chunk in range(-(-config.num_items // ITEM_CHUNK)):
                writer.write_table(items_table(config, catalogue, chunk))
        stats = _write_log(config, catalogue, temps[1], row_group_rows)
        os.replace(temps[0], items_output)
        os.replace(temps[1], output)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    seconds = time.monotonic() - start
    pairs = config.num_interactions - config.num_users
    return SynthSummary(
        output=str(output),
        items_output=str(items_output),
        num_users=config.num_users,
        num_items=config.num_items,
        num_interactions=config.num_interactions,
        row_groups=stats["row_groups"],
        cold_items=stats["cold_items"],
        top1pct_share=round(stats["top1pct_share"], 4),
        successor_fraction=round(stats["successor_pairs"] / max(pairs, 1), 4),
        repeated_interactions=stats["repeats"],
        longest_user=stats["longest_user"],
        seconds=round(seconds, 3),
        rows_per_second=round(config.num_interactions / max(seconds, 1e-9), 1),
    )

"""Argument groups and parsers shared by several subcommands (data, evaluation, overrides).

The only module the subcommands share: no subcommand imports another's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from tfrec.config import choices
from tfrec.names import DatasetName, IndexKind, SplitName

logger = logging.getLogger(__name__)

EVAL_MASK_HELP = (
    "how each user's history is treated in evaluation. history: removed from the ranking "
    "like the exported model does, a held-out item that repeats a history item is a miss "
    "(keys test/...); none: history items stay rankable, for repeat-consumption data such as "
    "music or groceries (keys test_unmasked/...); both: the two reports. Every test user is "
    "in the denominator; metrics.json counts masked_target_users"
)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    doc: str | None,
    defaults_in_help: bool = True,
) -> argparse.ArgumentParser:
    r"""Adds the subcommand ``name``, its help and description taken from ``doc``.

    Args:
        subparsers: The ``tfrec`` subparsers.
        name: The subcommand.
        doc: The command module's docstring: its first line
            (``\`\`tfrec NAME\`\`: help.``) is the one-line help, its second
            paragraph the ``--help`` description (later paragraphs are notes for
            developers).
        defaults_in_help: Append each option's default to its help.

    Returns:
        The subcommand's parser.
    """
    paragraphs = (doc or "").strip().split("\n\n")
    help_text = paragraphs[0].strip().removeprefix(f"``tfrec {name}``:").strip().rstrip(".")
    description = " ".join(paragraphs[1].split()) if len(paragraphs) > 1 else help_text
    kwargs: dict[str, Any] = {"help": help_text, "description": description}
    if defaults_in_help:
        kwargs["formatter_class"] = argparse.ArgumentDefaultsHelpFormatter
    return subparsers.add_parser(name, **kwargs)


def add_export_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--export-dir``, ``--version`` and ``--data-dir`` (export and index)."""
    parser.add_argument(
        "--export-dir", required=True, help="TF Serving base directory (model_base_path's parent)"
    )
    parser.add_argument("--version", type=int, help="version number (default: latest + 1)")
    parser.add_argument("--data-dir", help="override the data directory saved in config.json")


def add_index_arguments(
    parser: argparse.ArgumentParser, title: str, default: str | None, helps: dict[str, str]
) -> None:
    """Adds the candidate-index group: ``--index``, ``--partitions`` and ``--nprobe``.

    Args:
        parser: The subcommand's parser.
        title: The group's title.
        default: ``--index`` when not given (None: the command decides).
        helps: The help of each option by its name without dashes (``index``,
            ``partitions``, ``nprobe``): what the defaults are differs per command.
    """
    group = parser.add_argument_group(title)
    group.add_argument("--index", choices=choices(IndexKind), default=default, help=helps["index"])
    group.add_argument("--partitions", type=int, help=helps["partitions"])
    group.add_argument("--nprobe", type=int, help=helps["nprobe"])


def index_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the export API for :func:`add_index_arguments`' flags."""
    return {"index": args.index, "num_partitions": args.partitions, "nprobe": args.nprobe}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--dataset``, ``--data-dir``, ``--download`` and the csv options."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        choices=choices(DatasetName),
        help=(
            "ml-100k / ml-latest-small (MovieLens, GroupLens licence), beauty / sports / "
            "lastfm (Amazon Beauty, Amazon Sports and Outdoors, Last.fm: S3-Rec releases, "
            "with item attributes), beauty-bert4rec, csv (your own file, see --path), s3rec "
            "(your own file in the S3-Rec format: --path, --attributes-path), synthetic "
            "(generated, no files needed)"
        ),
    )
    group.add_argument(
        "--data-dir",
        help="folder holding the dataset files (default: $TFREC_DATA_DIR, else ~/.cache/tfrec)",
    )
    group.add_argument(
        "--download",
        action="store_true",
        help="download MovieLens from GroupLens when missing (sha256-checked)",
    )
    group.add_argument(
        "--split",
        choices=choices(SplitName),
        help="split protocol (default: the dataset's preset)",
    )
    group.add_argument("--min-rating", type=float, help="keep interactions with rating >= this")
    group.add_argument("--seed", type=int, help="seed of the split and of training")
    csv = parser.add_argument_group("your own files (--dataset csv, --dataset s3rec)")
    csv.add_argument(
        "--path",
        help="interactions file: .csv, .tsv or .parquet (csv); 'user item1 item2 ...' (s3rec)",
    )
    csv.add_argument(
        "--attributes-path",
        "--attributes",
        dest="attributes_path",
        help="s3rec: optional *_item2attributes.json (item id -> attribute ids, item features)",
    )
    csv.add_argument("--items-path", help="optional item features file (item id, title, genres)")
    csv.add_argument("--user-col", help="user id column (default user_id)")
    csv.add_argument("--item-col", help="item id column (default item_id)")
    csv.add_argument("--time-col", help="timestamp column (optional)")
    csv.add_argument("--rating-col", help="rating column (optional)")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """DataConfig fields given on the command line (None = not given)."""
    names = {
        "data_dir": args.data_dir,
        "split": args.split,
        "min_rating": args.min_rating,
        "seed": args.seed,
        "path": args.path,
        "items_path": args.items_path,
        "attributes_path": args.attributes_path,
        "user_col": args.user_col,
        "item_col": args.item_col,
        "time_col": args.time_col,
        "rating_col": args.rating_col,
    }
    out = {k: v for k, v in names.items() if v is not None}
    if args.download:
        out["download"] = True
    return out


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Returns a copy of a dataclass config with ``overrides`` applied (validated).

    A key is a field of ``config`` (``dropout``), a dotted path into its
    sub-configs (``training.epochs``), or the flat name of a sub-config field
    when exactly one sub-config has it (``epochs`` -> ``training.epochs``,
    ``learning_rate`` -> ``optimizer.learning_rate``); the old flat spellings the
    config class still reads (``optimizer=adamw``) work too.

    Raises:
        ValueError: An unknown or ambiguous key, or a bad value (the message
            names the field and what was expected).
    """
    data = config.to_dict()
    for key, value in overrides.items():
        *parents, leaf = _field_path(config, key, whole=isinstance(value, dict))
        target = data
        for name in parents:
            target = target[name]
        current = target.get(leaf)
        merge = isinstance(current, dict) and isinstance(value, dict)
        target[leaf] = {**current, **value} if merge else value
    return type(config).from_dict(data)


def _init_fields(config: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(config) if f.init]


def _field_path(config: Any, key: str, whole: bool = False) -> list[str]:
    """The path of ``key`` (see :func:`apply_overrides`) in ``config``'s fields.

    ``whole``: the value is a dict, so a sub-config's own name means the sub-config.
    """
    owner = type(config).__name__
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    subs = {name: value for name, value in fields.items() if dataclasses.is_dataclass(value)}
    if "." in key:
        head, rest = key.split(".", 1)
        if head not in subs:
            raise ValueError(f"{owner}: {key!r}: {head!r} is not a sub-config; expected one of "
                             f"{sorted(subs)}")  # fmt: skip
        return [head, *_field_path(subs[head], rest, whole)]
    if key in fields and (key not in subs or whole):
        return [key]
    probe = {key: "<value>"}
    moved = config.upgrade_dict(dict(probe)) if hasattr(config, "upgrade_dict") else probe
    if moved != probe:  # an old flat spelling, e.g. optimizer -> optimizer.name
        ((section, inner),) = moved.items()
        return [section, next(iter(inner))]
    owners = [name for name, sub in subs.items() if key in _init_fields(sub)]
    if len(owners) == 1:
        return [owners[0], key]
    if owners:
        raise ValueError(
            f"{owner}: {key!r} is ambiguous; use one of {[f'{o}.{key}' for o in owners]}"
        )
    known = sorted(
        [name for name in fields if name not in subs]
        + [f"{name}.{field}" for name, sub in subs.items() for field in _init_fields(sub)]
    )
    raise ValueError(f"{owner}: unknown field {key!r}; expected one of {known}")


def parse_set_options(pairs: list[str] | None) -> dict[str, Any]:
    """Parses ``--set key=value`` pairs (values as JSON, else as strings)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected key=value, e.g. --set dropout=0.3")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def resolve_export_dir(path: str | Path) -> Path:
    """Finds the SavedModel to load under ``path``.

    Accepts a version dir (holding ``saved_model.pb``), a model dir (its latest
    servable version, :func:`tfrec.export.versions.latest_version_dir`), a TF
    Serving base dir holding one model dir, or a ``tfrec train`` output dir
    (``export/<name>/<version>/``).

    Raises:
        FileNotFoundError: No SavedModel found.
        ValueError: Several models found (the message lists them).
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path

    from tfrec.export.versions import latest_version_dir as latest  # noqa: PLC0415

    if path.is_dir() and (found := latest(path)) is not None:
        return found
    for base in (path, path / "export"):
        if not base.is_dir():
            continue
        models = {m.name: v for m in sorted(base.iterdir()) if m.is_dir() and (v := latest(m))}
        if len(models) == 1:
            return next(iter(models.values()))
        if len(models) > 1:
            raise ValueError(
                f"{base} holds several models {sorted(models)}; pass one of them, "
                f"e.g. {base / sorted(models)[0]}"
            )
    raise FileNotFoundError(
        f"no SavedModel under {path}: expected <dir>/saved_model.pb, <dir>/<version>/, "
        "<base>/<name>/<version>/ or a `tfrec train` output dir with export/<name>/<version>/"
    )


def parse_weights(text: str, option: str = "--fusion-weights") -> list[float]:
    """``--fusion-weights``: ``"0,1,3"`` -> ``[0.0, 1.0, 3.0]``; ``"none"`` -> ``[]``.

    ``option`` names the flag in the error messages.

    Raises:
        ValueError: An entry is not a number >= 0.
    """
    if text.strip().lower() == "none":
        return []
    weights = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(
                f"{option}: {part.strip()!r} is not a number; expected e.g. 0,1,3"
            ) from None
        if not value >= 0.0:
            raise ValueError(f"{option}: {value} is negative; expected weights >= 0")
        weights.append(value)
    return weights

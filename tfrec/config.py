"""Typed, JSON-serialisable dataclass configs.

Every config in tfrec is a frozen-free ``@dataclass`` that inherits
:class:`JsonConfig`. A trained model directory always holds ``config.json``
written by :meth:`JsonConfig.save`, and :meth:`JsonConfig.load` restores the
exact dataclass (nested configs included) with type checks, so a config never
travels as an untyped dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


def process_umask() -> int:
    """The process umask, read without changing it when /proc allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: set and restore
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and an atomic rename.

    The file gets the mode a plain ``open`` would give (``0o666 & ~umask``), not
    the private 0600 of :func:`tempfile.mkstemp`, so a server or job running as
    another user can read it.

    Args:
        path: Destination file. Its parent directory is created if missing.
        text: The full contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: JSON scalar checks: type -> (accepts(value), what was expected, converter).
_SCALARS: dict[type, tuple[Any, str, Any]] = {
    float: (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "a number",
        float,
    ),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", int),
    bool: (lambda v: isinstance(v, bool), "true/false", bool),
    str: (lambda v: isinstance(v, str), "a string", str),
}


def _coerce_union(value: Any, args: tuple[Any, ...], hint: Any, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except (TypeError, ValueError) as err:
            errors.append(str(err))
    raise ValueError(f"{where}: {value!r} matches none of {hint}: {'; '.join(errors)}")


def _coerce_container(value: Any, origin: Any, args: tuple[Any, ...], where: str) -> Any:
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
    inner = args[0] if args else Any
    items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks/converts one JSON value against a type hint (``where`` names the field)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, hint, where)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple, dict):
        return _coerce_container(value, origin, args, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object for {hint.__name__}, got {value!r}")
        return hint.from_dict(value, _where=where)  # type: ignore[attr-defined]
    if hint in _SCALARS:
        accepts, expected, convert = _SCALARS[hint]
        if not accepts(value):
            raise ValueError(f"{where}: expected {expected}, got {value!r}")
        return convert(value)
    return value


@dataclasses.dataclass
class JsonConfig:
    """Mixin for dataclass configs: dict/JSON round trip with type checks."""

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-compatible dict (nested configs become dicts)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Returns the config as pretty, key-sorted JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], _where: str | None = None) -> T:
        """Builds the config from a dict, validating names and types.

        Args:
            data: Mapping of field name to value, as produced by :meth:`to_dict`.

        Returns:
            An instance of ``cls``.

        Raises:
            ValueError: An unknown field, or a value of the wrong type (the
                message names the field path and the expected type).
        """
        where = _where or cls.__name__
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"{where}: unknown field(s) {unknown}; expected some of {sorted(fields)}"
            )
        kwargs = {
            name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()
        }
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        """Parses JSON produced by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the config as JSON to ``path`` atomically."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | os.PathLike[str]) -> T:
        """Reads a config written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: The file is not valid JSON or does not match ``cls``.
        """
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object for {cls.__name__}")
        return cls.from_dict(data, _where=f"{path}")

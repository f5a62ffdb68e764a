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
import functools
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


def choices(alias: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` alias (of every ``Literal`` in a union such as ``X | None``).

    The one source of every runtime choice list: a config field typed with the
    alias is checked by :class:`JsonConfig`, and argparse ``choices=`` use this.

    Raises:
        TypeError: ``alias`` holds no ``Literal``.
    """
    origin = typing.get_origin(alias)
    if origin is typing.Literal:
        return typing.get_args(alias)
    if origin in (typing.Union, types.UnionType):
        values = [
            v for arg in typing.get_args(alias) if arg is not type(None) for v in choices(arg)
        ]
        return tuple(values)
    raise TypeError(f"choices: expected a Literal alias, got {alias!r}")


def check_choice(owner: str, value: Any, alias: Any) -> None:
    """Checks that ``value`` is one of ``choices(alias)``.

    Raises:
        ValueError: ``<owner>=<value>; expected one of [...]`` (``owner`` names the
            field, e.g. ``"RetrievalConfig.loss"``).
    """
    allowed = choices(alias)
    if value not in allowed:
        raise ValueError(f"{owner}={value!r}; expected one of {list(allowed)}")


def _is_literal_hint(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(typing.get_origin(arg) is typing.Literal for arg in typing.get_args(hint))
    return False


def _is_config_hint(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


@functools.cache
def _typed_fields(cls: type, kind: str) -> tuple[tuple[str, Any], ...]:
    """(field name, hint) of the init fields of dataclass ``cls`` whose hint is of ``kind``.

    ``kind``: ``"literal"`` (a ``Literal``, or a union holding one) or
    ``"config"`` (a dataclass config class).
    """
    accept = _is_literal_hint if kind == "literal" else _is_config_hint
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.name, hints[f.name])
        for f in dataclasses.fields(cls)
        if f.init and accept(hints.get(f.name))
    )


def check_config_fields(config: Any) -> None:
    """Checks that every sub-config field holds an instance of its config class.

    Raises:
        ValueError: ``<Class>.<field>: expected a <SubConfig>, got <value>`` (e.g. a
            string passed where the sub-config is expected).
    """
    for name, cls in _typed_fields(type(config), "config"):
        value = getattr(config, name)
        if not isinstance(value, cls):
            raise ValueError(
                f"{type(config).__name__}.{name}: expected a {cls.__name__}, got {value!r}; "
                f"e.g. {name}={cls.__name__}(...) (or a dict in a JSON config)"
            )


def check_literal_fields(config: Any) -> None:
    """Checks every ``Literal``-typed field of a dataclass instance (``None`` where allowed).

    Raises:
        ValueError: ``<Class>.<field>=<value>; expected one of [...]``.
    """
    for name, hint in _typed_fields(type(config), "literal"):
        value = getattr(config, name)
        if value is None and type(None) in typing.get_args(hint):
            continue
        check_choice(f"{type(config).__name__}.{name}", value, hint)


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
        try:
            return hint.from_dict(value, _where=where)  # type: ignore[attr-defined]
        except ValueError as err:  # a check in the sub-config's __post_init__: say where
            if str(err).startswith(where):
                raise
            raise ValueError(f"{where}: {err}") from err
    if hint in _SCALARS:
        accepts, expected, convert = _SCALARS[hint]
        if not accepts(value):
            raise ValueError(f"{where}: expected {expected}, got {value!r}")
        return convert(value)
    return value


def _over_default(cls: type, name: str, value: Any) -> Any:
    """A partial dict for a nested config field, completed from the field's default.

    ``{"training": {"epochs": 3}}`` keeps the other training settings of the
    owning class's default (e.g. the ranker's batch of 512), not those of the
    sub-config class.
    """
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, dict) or field.default_factory is dataclasses.MISSING:
        return value
    default = field.default_factory()
    if not isinstance(default, JsonConfig):
        return value
    return {**default.to_dict(), **value}


@dataclasses.dataclass
class JsonConfig:
    """Mixin for dataclass configs: dict/JSON round trip with type checks.

    Every ``Literal``-typed field is checked when an instance is built (before a
    subclass's own ``__post_init__`` runs), so no config repeats its choice lists.
    """

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_config_fields(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "_checks_literals", False):
            return

        @functools.wraps(own)
        def post_init(self: Any, *args: Any) -> None:
            check_literal_fields(self)
            check_config_fields(self)
            own(self, *args)

        post_init._checks_literals = True  # type: ignore[attr-defined]
        cls.__post_init__ = post_init  # type: ignore[method-assign]

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
        data = cls.upgrade_dict(data)
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"{where}: unknown field(s) {unknown}; expected some of {sorted(fields)}"
            )
        kwargs = {
            name: _coerce(_over_default(cls, name, value), hints[name], f"{where}.{name}")
            for name, value in data.items()
        }
        return cls(**kwargs)

    @classmethod
    def upgrade_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrites a dict saved by an older tfrec into this class's current layout.

        The default keeps ``data`` as is; a config whose fields moved overrides it
        (e.g. the model configs nest their old flat optimizer/training fields).
        """
        return data

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

"""JsonConfig: typed JSON round trips and errors that name the field."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from typing import Literal

import pytest

from tfrec.config import JsonConfig, atomic_write_text, choices


@dataclasses.dataclass
class Inner(JsonConfig):
    dim: int = 4
    rate: float = 0.5


@dataclasses.dataclass
class Outer(JsonConfig):
    name: str = "m"
    inner: Inner = dataclasses.field(default_factory=Inner)
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 10])
    mode: Literal["a", "b"] = "a"
    path: str | None = None
    flag: bool = False


def test_round_trip_through_json_restores_nested_dataclasses(tmp_path):
    config = Outer(name="x", inner=Inner(dim=8, rate=1), ks=[5], mode="b", path="/p", flag=True)
    config.save(tmp_path / "c.json")
    restored = Outer.load(tmp_path / "c.json")
    assert restored == config
    assert isinstance(restored.inner, Inner)
    assert isinstance(restored.inner.rate, float)  # int 1 in JSON becomes float 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inner": {"dim": "8"}}, r"Outer.inner.dim: expected an integer, got '8'"),
        ({"inner": {"dim": True}}, r"Outer.inner.dim: expected an integer, got True"),
        ({"mode": "c"}, r"Outer.mode: expected one of \['a', 'b'\], got 'c'"),
        ({"ks": [1, "x"]}, r"Outer.ks\[1\]: expected an integer"),
        ({"ks": 3}, r"Outer.ks: expected a list"),
        ({"flag": "yes"}, r"Outer.flag: expected true/false"),
        ({"path": 3}, r"Outer.path: 3 matches none of"),
        ({"nmae": "x"}, r"Outer: unknown field\(s\) \['nmae'\]"),
    ],
)
def test_bad_values_name_the_field_and_the_expectation(data, message):
    with pytest.raises(ValueError, match=message):
        Outer.from_dict(data)


def test_load_reports_invalid_json_with_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  oops\n}')
    with pytest.raises(ValueError, match=r"bad.json: line 3: not valid JSON"):
        Outer.load(path)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_text(path, json.dumps({"v": 1}))

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_text(path, Boom())  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left


def test_atomic_write_text_gives_umask_modes_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    # 0o666 & ~0o022 = 0o644 (world-readable); 0o666 & ~0o027 = 0o640
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640


Color = Literal["red", "green"]


@dataclasses.dataclass
class Checked(JsonConfig):
    color: Color = "red"
    maybe: Color | None = None
    checked_by_post_init: int = 0

    def __post_init__(self) -> None:
        # runs after the Literal check: a bad color never reaches it
        if self.color not in ("red", "green"):
            self.checked_by_post_init = -1


def test_literal_fields_are_checked_at_construction_before_post_init():
    with pytest.raises(
        ValueError, match=r"Checked.color='blue'; expected one of \['red', 'green'\]"
    ):
        Checked(color="blue")
    with pytest.raises(ValueError, match=r"Checked.maybe='blue'; expected one of"):
        Checked(maybe="blue")
    assert Checked(maybe=None).maybe is None  # None allowed where the hint allows it
    with pytest.raises(ValueError, match=r"Outer.mode='c'"):  # inherited __post_init__
        Outer(mode="c")


def test_choices_reads_literal_aliases_and_unions():
    assert choices(Color) == ("red", "green")
    assert choices(Color | None) == ("red", "green")
    with pytest.raises(TypeError, match="expected a Literal alias"):
        choices(int)

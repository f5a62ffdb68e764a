import pytest

from tfrec.export.layout import (
    check_model_name,
    next_version,
    staged_version,
    write_assets_extra,
)
from tfrec.export.versions import latest_version_dir, parse_version, version_dirs


def test_next_version_ignores_non_integer_entries(tmp_path):
    model_dir = tmp_path / "m"
    assert next_version(model_dir) == 1  # missing directory
    for name in ("1", "3", ".tmp-7-abc", "latest", "10x"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "12").write_text("a file, not a version")
    assert list(version_dirs(model_dir)) == [1, 3]
    assert next_version(model_dir) == 4


def test_one_version_rule_canonical_int64_names_and_servable_dirs(tmp_path):
    # canonical non-negative int64 decimals only: 2**63 - 1 = 9223372036854775807
    assert [parse_version(n) for n in ("0", "7", "12", "9223372036854775807")] == [
        0,
        7,
        12,
        2**63 - 1,
    ]
    for name in ("007", "+1", "-1", "1e3", " 1", "9223372036854775808", ".tmp-3-h-1-x", ""):
        assert parse_version(name) is None, name
    for name in ("2", "10", "007", ".tmp-11-h-1-x"):
        (tmp_path / name).mkdir()
    (tmp_path / "10" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "11").mkdir()  # still being copied: a version, but not servable
    assert list(version_dirs(tmp_path)) == [2, 10, 11]
    assert version_dirs(tmp_path, servable=True) == {2: tmp_path / "2", 10: tmp_path / "10"}
    assert latest_version_dir(tmp_path) == tmp_path / "10"
    assert latest_version_dir(tmp_path / "missing") is None
    assert next_version(tmp_path) == 12


def test_staged_version_renames_on_success(tmp_path):
    with staged_version(tmp_path, "m") as staged:
        assert not staged.path.name.isdigit()  # TF Serving never sees the temp dir
        assert staged.path.parent == tmp_path / "m"
        (staged.path / "saved_model.pb").write_bytes(b"x")
        assert not staged.final_path.exists()
    assert staged.version == 1
    assert (tmp_path / "m" / "1" / "saved_model.pb").read_bytes() == b"x"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]


def test_staged_version_cleans_up_on_failure(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), staged_version(tmp_path, "m", 5) as staged:
        (staged.path / "half").write_text("x")
        raise RuntimeError("boom")
    assert list((tmp_path / "m").iterdir()) == []


def test_never_overwrites_a_version(tmp_path):
    (tmp_path / "m" / "2").mkdir(parents=True)
    with (
        pytest.raises(FileExistsError, match=r"m/2 already exists"),
        staged_version(tmp_path, "m", 2),
    ):
        pass
    # Created by someone else while we were writing: still refused, temp removed.
    with (
        pytest.raises(FileExistsError, match=r"m/3 already exists"),
        staged_version(tmp_path, "m", 3) as staged,
    ):
        staged.final_path.mkdir()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["2", "3"]


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "a b"])
def test_bad_model_names(name):
    with pytest.raises(ValueError, match="model_name="):
        check_model_name(name)


@pytest.mark.parametrize("version", [0, -1, True, "2"])
def test_bad_versions(tmp_path, version):
    with pytest.raises(ValueError, match="version="), staged_version(tmp_path, "m", version):
        pass


def test_write_assets_extra(tmp_path):
    directory = write_assets_extra(tmp_path, {"a.json": b"{}", "warm": b"\x00\x01"})
    assert (directory / "warm").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match=r"'\.\./x'"):
        write_assets_extra(tmp_path, {"../x": b""})
    with pytest.raises(ValueError, match="expected bytes"):
        write_assets_extra(tmp_path, {"x": "text"})

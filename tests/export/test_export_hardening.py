"""Export hardening (issue 9): file modes, full disks, staging directories of killed exports."""

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tensorflow as tf
from testing_utils import fit_one_step, tiny_batch, tiny_vocabs

from tfrec.cli.main import describe_error
from tfrec.config import atomic_write_text
from tfrec.export.layout import ExportError, host_tag, staged_version
from tfrec.export.retrieval import export_retrieval
from tfrec.export.versions import version_dirs
from tfrec.export.warmup import build_warmup_records
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.serving import versions as serving_versions

HOUR = 3600.0


@pytest.fixture(scope="module")
def trained():
    users, items = tiny_vocabs()
    config = RetrievalConfig(embedding_dim=4, max_history=4, encoder="mean")
    model = TwoTowerModel(config, users.size, items.size)
    fit_one_step(model, tiny_batch(4))
    return model, users, items


@pytest.fixture
def umask():
    """Sets the process umask for one test (``umask(value)``) and restores it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    modes = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        modes[str(path.relative_to(root))] = path.lstat().st_mode & 0o777
    return modes


# ----------------------------------------------------------------------------- modes (defect 9)


@pytest.mark.parametrize(
    ("mask", "modes"),
    [(0o022, (0o755, 0o644)), (0o027, (0o750, 0o640))],
    ids=["umask022", "umask027"],
)
def test_every_exported_entry_gets_the_umask_modes(trained, tmp_path, umask, mask, modes):
    # mkdtemp makes 0o700 and the vocabulary's atomic write 0o600; a plain mkdir/open
    # would give 0o777 & ~mask / 0o666 & ~mask, which every entry must have.
    dir_mode, file_mode = modes
    umask(mask)
    path = export_retrieval(*trained, tmp_path, extra_files={"metrics.json": "{}"})
    found = _modes(path)
    assert {"assets.extra/user_vocab.txt", "variables", "saved_model.pb"} <= set(found)
    assert found == {name: dir_mode if (path / name).is_dir() else file_mode for name in found}


def test_staged_version_fixes_private_modes_before_the_rename(tmp_path, umask):
    umask(0o022)
    with staged_version(tmp_path, "m") as staged:
        assert staged.path.stat().st_mode & 0o777 == 0o700  # mkdtemp: private while staging
        atomic_write_text(staged.path / "sub" / "vocab.txt", "a\n")  # mkstemp: 0o600
        os.symlink("sub/vocab.txt", staged.path / "link")
    modes = _modes(staged.final_path)
    assert modes == {".": 0o755, "sub": 0o755, "sub/vocab.txt": 0o644, "link": 0o777}


# ------------------------------------------------------------------------ full disk (defect 10)


def _save_then_fill_the_disk(module, path, signatures=None):
    (Path(path) / "saved_model.pb").write_bytes(b"half")  # something to clean up
    # How TensorFlow reports ENOSPC (checked against /dev/full and a full tmpfs).
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{path}/saved_model.pb.tmp0; No space left on device"
    )


def test_full_disk_in_saved_model_save_is_a_one_line_export_error(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(tf.saved_model, "save", _save_then_fill_the_disk)
    with pytest.raises(ExportError) as caught:
        export_retrieval(*trained, tmp_path)
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    target = tmp_path / "retrieval" / "1"
    assert str(error).startswith(f"cannot export to {target}: no space left on device (")
    assert error.filename == str(target)
    assert isinstance(error.__cause__, tf.errors.ResourceExhaustedError)
    assert list((tmp_path / "retrieval").iterdir()) == []  # staging directory removed
    code, line = describe_error(error)  # the CLI's policy: runtime error, one line
    assert code == 1 and line == str(error) and "\n" not in line


def test_full_disk_in_a_python_write_is_an_export_error(trained, tmp_path, monkeypatch):
    def no_space(version_dir, files):
        raise OSError(errno.ENOSPC, "No space left on device", str(version_dir))

    monkeypatch.setattr("tfrec.export.retrieval.write_assets_extra", no_space)
    with pytest.raises(ExportError, match=r"retrieval/7: no space left on device"):
        export_retrieval(*trained, tmp_path, version=7)
    assert list((tmp_path / "retrieval").iterdir()) == []


def test_other_failures_are_not_translated(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), staged_version(tmp_path, "m"):
        raise RuntimeError("boom")
    # Out of memory is also RESOURCE_EXHAUSTED: an ExportError, but not "no space left".
    with (
        pytest.raises(ExportError, match=r"m/1: resources exhausted") as caught,
        staged_version(tmp_path, "m"),
    ):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert caught.value.errno is None
    assert list((tmp_path / "m").iterdir()) == []


def test_full_disk_while_building_warmup_records(monkeypatch):
    def full_writer(path):
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}; No space left on device")

    monkeypatch.setattr(tf.io, "TFRecordWriter", full_writer)
    request = {"user_id": ["u1"], "history": [["i1"]], "k": [3]}
    with pytest.raises(ExportError, match=r"tf_serving_warmup_requests: no space left on device"):
        build_warmup_records("m", [request])


# ---------------------------------------------------------------- stale staging dirs (defect 10)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def _make(model_dir: Path, name: str, age: float = 0.0, fresh_file: bool = False) -> Path:
    path = model_dir / name
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"x")
    if age:
        old = time.time() - age
        for entry in [path / "variables", path / "saved_model.pb", path]:
            os.utime(entry, (old, old))
    if fresh_file:
        (path / "variables" / "just-written").write_bytes(b"x")  # newest mtime is now
    return path


def test_next_export_removes_only_abandoned_staging_directories(tmp_path):
    model_dir = tmp_path / "m"
    host, dead, alive = host_tag(), _dead_pid(), os.getpid()
    removed = {
        _make(model_dir, f".tmp-2-{host}-{dead}-abc"),  # this host, writer dead
        _make(model_dir, f".tmp-3-otherhost-{dead}-abc", age=2 * HOUR),  # unknown writer, old
        _make(model_dir, ".tmp-4-k2j4hs_q", age=2 * HOUR),  # older naming, old
    }
    kept = {
        _make(model_dir, f".tmp-5-{host}-{alive}-abc", age=2 * HOUR),  # writer alive here
        _make(model_dir, f".tmp-6-otherhost-{dead}-abc"),  # other host: pid means nothing
        _make(model_dir, ".tmp-7-p0q9x8_z"),  # older naming, fresh
        _make(model_dir, ".tmp-8-a1b2c3d4", age=2 * HOUR, fresh_file=True),  # still written
        _make(model_dir, ".cache", age=2 * HOUR),  # not a staging directory
        _make(model_dir, "9", age=2 * HOUR),  # a version
    }
    with staged_version(tmp_path, "m") as staged:
        (staged.path / "saved_model.pb").write_bytes(b"x")
    assert staged.final_path == model_dir / "10"
    assert set(model_dir.iterdir()) == kept | {staged.final_path}
    assert not any(path.exists() for path in removed)


def test_a_concurrent_export_in_progress_is_kept(tmp_path):
    with staged_version(tmp_path, "m", 1) as first:
        (first.path / "saved_model.pb").write_bytes(b"1")
        with staged_version(tmp_path, "m", 2) as second:  # cleans up before staging
            assert first.path.is_dir()
            (second.path / "saved_model.pb").write_bytes(b"2")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from tfrec.export.layout import staged_version

    with staged_version(sys.argv[1], "m", 3) as staged:
        (staged.path / "saved_model.pb").write_bytes(b"half")
        print(staged.path, flush=True)
        time.sleep(120)
    """
)


def test_staging_directory_of_a_killed_export_is_removed_by_the_next_one(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        staging = Path(writer.stdout.readline().strip())
        assert staging.parent == tmp_path / "m" and staging.name.startswith(".tmp-3-")
        with staged_version(tmp_path, "m", 1):  # the writer still runs: its directory stays
            assert staging.is_dir()
    finally:
        writer.kill()  # SIGKILL: no cleanup code runs
        writer.wait(timeout=60)
        writer.stdout.close()
    assert staging.is_dir()
    assert list(version_dirs(tmp_path / "m")) == [1]  # the half-written version is no version
    assert serving_versions.list_versions(tmp_path / "m") == {}  # no saved_model.pb in 1
    with staged_version(tmp_path, "m") as staged:
        (staged.path / "saved_model.pb").write_bytes(b"x")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]


def test_the_server_scanner_ignores_staging_directories(tmp_path):
    _make(tmp_path, f".tmp-4-{host_tag()}-{os.getpid()}-abc")  # holds a saved_model.pb
    _make(tmp_path, "2")
    assert serving_versions.list_versions(tmp_path) == {2: tmp_path / "2"}
    assert list(version_dirs(tmp_path)) == [2]

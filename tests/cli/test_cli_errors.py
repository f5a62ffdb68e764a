"""``tfrec``'s error policy: one line, exit 2 (usage) or 1 (runtime), no traceback.

``tfrec recommend`` is driven in-process against a tiny real export (8 catalogue
items ``i0..i7``) and against tfrec's local gRPC server serving it.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest
import tensorflow as tf
from testing_utils import fit_one_step, tiny_batch, tiny_vocabs

from tfrec.cli import recommend
from tfrec.cli.main import CommandError, describe_error, main
from tfrec.data.download import ChecksumError, DatasetNotFoundError
from tfrec.data.interactions import DataError
from tfrec.export.retrieval import export_retrieval
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.server import ModelServer, ServerOptions

CATALOGUE = 8  # tiny_vocabs: items i0..i7


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """``<base>/retrieval/1``: a one-step-trained retrieval export over i0..i7."""
    users, items = tiny_vocabs()
    config = RetrievalConfig(embedding_dim=4, max_history=4, num_heads=2, use_user_embedding=True)
    model = TwoTowerModel(config, users.size, items.size)
    fit_one_step(model, tiny_batch(4))
    return export_retrieval(model, users, items, tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def server(export):
    """tfrec's local server on a free loopback port, serving ``export`` as model ``retrieval``."""
    models = [ModelEntry("retrieval", str(export.parent))]
    running = ModelServer(models, ServerOptions(host="127.0.0.1", port=0)).start()
    yield f"127.0.0.1:{running.port}"
    running.stop(grace=1.0)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Runs ``tfrec argv`` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def reject_non_json(constant: str) -> None:
    """json.loads hook: Python's json accepts NaN/Infinity, strict JSON does not."""
    raise AssertionError(f"not valid JSON: {constant}")


def assert_one_line_error(err: str, command: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tfrec {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize(
    ("k", "needle"),
    [
        ("9", "the export recommends from 8 items; expected 1 <= k <= 8"),
        ("0", "-k/--top-k 0: expected an integer in 1..2147483647"),
        ("-3", "-k/--top-k -3: expected an integer in 1..2147483647"),
        (str(2**31), f"-k/--top-k {2**31}: expected an integer in 1..2147483647"),
    ],
)
def test_recommend_bad_k_on_an_export_is_a_usage_error(export, capsys, k, needle):
    code, out, err = run_cli(capsys, "recommend", "--export", str(export), "--user", "u1", "-k", k)
    assert code == 2 and out == ""
    assert_one_line_error(err, "recommend", needle)


def test_recommend_lists_only_real_items_when_history_leaves_fewer_than_k(export, capsys):
    history = "i0,i1,i2"  # 8 - 3 = 5 items remain, k asks for 8
    code, out, err = run_cli(
        capsys, "recommend", "--export", str(export), "--history", history, "-k", "8", "--json"
    )
    assert code == 0, err
    (row,) = json.loads(out, parse_constant=reject_non_json)
    ids = [item["item_id"] for item in row["items"]]
    assert sorted(ids) == ["i3", "i4", "i5", "i6", "i7"]
    assert [item["rank"] for item in row["items"]] == [1, 2, 3, 4, 5]
    code, out, _ = run_cli(
        capsys, "recommend", "--export", str(export), "--history", history, "-k", "8"
    )
    lines = out.strip().splitlines()
    assert code == 0 and "only 5 items left after excluding the history" in lines[0]
    assert sorted(line.split()[1] for line in lines[1:]) == ["i3", "i4", "i5", "i6", "i7"]


def test_recommend_with_the_whole_catalogue_in_the_history_prints_no_items(export, capsys):
    history = ",".join(f"i{i}" for i in range(CATALOGUE))
    code, out, _ = run_cli(
        capsys, "recommend", "--export", str(export), "--history", history, "-k", "3", "--json"
    )
    assert code == 0
    assert json.loads(out, parse_constant=reject_non_json)[0]["items"] == []


def test_recommend_on_a_directory_without_a_model_is_a_runtime_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "recommend", "--export", str(tmp_path), "--user", "u1")
    assert code == 1
    assert_one_line_error(err, "recommend", f"no SavedModel under {tmp_path}")


def test_recommend_on_a_corrupt_saved_model_is_a_runtime_error(tmp_path, capsys):
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x96\x01 not a protobuf \xff")
    code, _, err = run_cli(capsys, "recommend", "--export", str(tmp_path), "--user", "u1")
    assert code == 1
    assert_one_line_error(err, "recommend", f"--export {tmp_path}: cannot load the SavedModel")


def test_recommend_bad_titles_file_names_the_file(export, tmp_path, capsys):
    titles = tmp_path / "titles.json"
    titles.write_text('{"i1": "One",\n oops}')
    argv = [
        "recommend",
        "--export",
        str(export),
        "--user",
        "u1",
        "-k",
        "3",
        "--titles",
        str(titles),
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "recommend", f"--titles {titles}: line 2: not valid JSON")
    titles.write_text('["i1", "One"]')
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "recommend", "got a JSON list; expected an object")


def test_recommend_server_k_above_the_catalogue_is_a_usage_error(server, capsys):
    code, out, err = run_cli(capsys, "recommend", "--server", server, "--user", "u1", "-k", "9")
    assert code == 2 and out == ""
    assert_one_line_error(err, "recommend", "the server rejected the request", "k must be <= 8")


def test_recommend_server_answers_and_drops_unfillable_slots(server, capsys):
    history = ",".join(f"i{i}" for i in range(1, CATALOGUE))  # only i0 remains
    code, out, err = run_cli(
        capsys, "recommend", "--server", server, "--history", history, "-k", "4", "--json"
    )
    assert code == 0, err
    assert [item["item_id"] for item in json.loads(out)[0]["items"]] == ["i0"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--model-name", "nope"], "model 'nope'"),
        (["--version", "7"], "version 7"),
    ],
)
def test_recommend_server_unknown_model_or_version_is_a_runtime_error(
    server, capsys, extra, needle
):
    argv = ["recommend", "--server", server, "--user", "u1", "-k", "3", *extra]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert_one_line_error(err, "recommend", needle, "NOT_FOUND")


def test_recommend_unreachable_server_is_a_runtime_error(capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["recommend", "--server", f"127.0.0.1:{port}", "--user", "u1", "--timeout", "2"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    # the client's retry warnings are log lines; the error itself is one line
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith(f"tfrec recommend: error: --server 127.0.0.1:{port}")
    assert "server unavailable" in errors[0]


def test_unexpected_errors_hint_at_verbose_which_prints_the_traceback(monkeypatch, capsys):
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(recommend, "run", broken)  # a bug inside a subcommand
    code, _, err = run_cli(capsys, "recommend", "--user", "u1", "--server", "x:1")
    assert code == 1
    assert_one_line_error(
        err, "recommend", "unexpected KeyError: 'boom' (run with -v for the traceback)"
    )
    code, _, err = run_cli(capsys, "-v", "recommend", "--user", "u1", "--server", "x:1")
    assert code == 1
    assert "Traceback (most recent call last)" in err and 'raise KeyError("boom")' in err
    assert err.strip().splitlines()[-1].startswith("tfrec recommend: error: unexpected KeyError")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ValueError("bad --flag"), 2),
        (DataError("f.csv: line 3: bad"), 1),  # a ValueError subclass, but about data
        (ChecksumError("zip: sha256 differs"), 1),
        (DatasetNotFoundError("u.data not found"), 1),
        (PermissionError(13, "Permission denied", "/x/y"), 1),
        (FileExistsError("version 1 exists"), 1),
        (CommandError("server down"), 1),
        (RuntimeError("bug"), 1),
    ],
)
def test_exit_code_per_error_type(error, code):
    assert describe_error(error)[0] == code


def test_tensorflow_errors_are_runtime_errors_reduced_to_their_message():
    error = tf.errors.InvalidArgumentError(
        None,
        None,
        "Graph execution error:\n\nDetected at node a/Assert defined at (most recent call "
        "last):\n<stack traces unavailable>\nassertion failed: [k must be >= 1] [x] [0]\n"
        "\t [[{{node a/Assert}}]] [Op:__inference_serve_1]",
    )
    assert describe_error(error) == (1, "k must be >= 1")
    assert describe_error(PermissionError(13, "Permission denied", "/x/y"))[1] == (
        "[Errno 13] Permission denied: '/x/y'"
    )


def test_recommend_on_a_model_with_another_signature_is_a_runtime_error(tmp_path, capsys):
    class Ranker(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="candidates")])
        def serve(self, candidates):
            return {"scores": tf.strings.length(candidates)}

    module = Ranker()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    code, _, err = run_cli(capsys, "recommend", "--export", str(tmp_path), "--user", "u1")
    assert code == 1
    assert_one_line_error(err, "recommend", "serving_default does not take user_id, history and k")


def test_train_rejects_one_column_for_user_and_item(tmp_path, capsys):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id\na,b\n")
    argv = ["train", "--dataset", "csv", "--path", str(path), "--output-dir", str(tmp_path / "o")]
    code, _, err = run_cli(capsys, *argv, "--user-col", "user_id", "--item-col", "user_id")
    assert code == 2
    assert_one_line_error(err, "train", "(--user-col, --item-col) name the same column")
    assert not (tmp_path / "o").exists()  # rejected before anything was written


def test_a_malformed_data_file_is_a_runtime_error(tmp_path, capsys):
    path = tmp_path / "events.csv"
    path.write_text("u,i,t\na,b,100000000000000000000\n")
    argv = ["prepare", "--dataset", "csv", "--path", str(path), "--output-dir", str(tmp_path / "o")]
    code, _, err = run_cli(capsys, *argv, "--user-col", "u", "--item-col", "i", "--time-col", "t")
    assert code == 1
    # logging's INFO lines go to stderr too; exactly one error line, no traceback
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(errors) == 1
    assert errors[0].startswith(f"tfrec prepare: error: {path}: line 2, column 3 (timestamp")


@pytest.mark.parametrize(
    "error",
    [MemoryError("cannot allocate"), tf.errors.ResourceExhaustedError(None, None, "OOM [1,2]")],
)
def test_out_of_memory_names_the_cap_to_change(monkeypatch, capsys, tmp_path, error):
    import tfrec.cli.train as train_command

    def fail(args):
        raise error

    monkeypatch.setattr(train_command, "run", fail)
    assert main(["train", "--dataset", "synthetic", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfrec train: error: out of memory: ")
    assert err.endswith("lower --batch-size, --max-history or --eval-users, or cap the catalogue "
                         "(tfrec prepare --max-items / --min-item-count)")  # fmt: skip

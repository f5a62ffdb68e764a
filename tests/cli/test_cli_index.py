"""``tfrec index``: a new catalogue version, served by tfrec's local server after the old one.

The run is a tiny synthetic one (80 items ``i0..i79``, item ``i`` of genre
``["jazz", "rock", "drama", "comedy"][i % 4]``, title ``"Item <i> <genre>"``).
The new catalogue drops every jazz and rock item (40) and adds two new items.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest
from process_utils import wait_for

from tfrec.cli.main import main

GENRES = ("jazz", "rock", "drama", "comedy")
KEPT = [f"i{i}" for i in range(80) if i % 4 >= 2]
REMOVED = {f"i{i}" for i in range(80) if i % 4 < 2}
NEW = [("fresh-jazz", "jazz", "jazz"), ("fresh-rock", "rock", "rock")]


def train_run(out: Path) -> Path:
    """A one-epoch synthetic retrieval run (the one place with training flags)."""
    args = ["train", "--dataset", "synthetic", "--output-dir", str(out), "--no-export"]
    flags = ["--epochs", "1", "--batch-size", "8", "--encoder", "mean", "--set", "embedding_dim=4"]
    assert main([*args, *flags]) == 0
    return out


def write_items(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("item_id", "title", "genres"), *rows])
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("run"))


@pytest.fixture
def catalogue(tmp_path) -> Path:
    rows = [(i, f"Item {i[1:]} {GENRES[int(i[1:]) % 4]}", GENRES[int(i[1:]) % 4]) for i in KEPT]
    return write_items(tmp_path / "items.csv", rows + NEW)


def test_old_version_answers_until_the_new_catalogue_is_loaded(
    run_dir, catalogue, tmp_path, capsys
):
    from tfrec.serving.client import RecommenderClient
    from tfrec.serving.model_config import ModelEntry
    from tfrec.serving.server import ModelServer, ServerOptions

    base = tmp_path / "serving"
    assert main(["export", "--model-dir", str(run_dir), "--export-dir", str(base)]) == 0
    capsys.readouterr()
    options = ServerOptions(port=0, host="127.0.0.1", file_system_poll_wait_seconds=0.1)
    entry = ModelEntry(name="retrieval", base_path=str(base / "retrieval"))
    server = ModelServer(models=[entry], options=options).start()
    seen: list[set[str]] = []  # the items of each answer, in order
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:  # a client asking all along, for every item but i2
        with RecommenderClient(f"127.0.0.1:{server.port}", "retrieval", max_retries=0) as client:
            while not stop.is_set():
                try:
                    recs = client.recommend(user_ids=[""], histories=[["i2"]], k=41)
                    seen.append(set(recs.item_ids[0].tolist()))
                except Exception as err:  # recorded, asserted below
                    errors.append(err)

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        wait_for(lambda: len(seen) >= 3)
        args = ["index", "--model-dir", str(run_dir), "--items", str(catalogue)]
        assert main([*args, "--export-dir", str(base)]) == 0
        assert capsys.readouterr().out.strip() == str(base / "retrieval" / "2")
        wait_for(lambda: server.manager.resolve("retrieval").version == 2)
        count = len(seen)
        wait_for(lambda: len(seen) >= count + 3)
    finally:
        stop.set()
        asking.join(timeout=30)
        server.stop(grace=1.0)
    assert not errors
    # version 1 answers with 41 of the 80 run items; version 2 with 41 of KEPT + NEW (43 - i2)
    old = [not (items & {"fresh-jazz", "fresh-rock"}) and bool(items & REMOVED) for items in seen]
    new = [items == set(KEPT) - {"i2"} | {"fresh-jazz", "fresh-rock"} for items in seen]
    assert all(o != n for o, n in zip(old, new, strict=True))  # every answer is one or the other
    switch = new.index(True)
    assert switch >= 3 and all(old[:switch]) and all(new[switch:])  # old, then only new


def test_index_options_and_the_catalogue_record(run_dir, catalogue, tmp_path, capsys):
    base = tmp_path / "serving"
    args = ["index", "--model-dir", str(run_dir), "--items", str(catalogue)]
    ivf = ["--index", "ivf", "--partitions", "3", "--nprobe", "2"]
    assert main([*args, "--export-dir", str(base), *ivf, "--model-name", "shop"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == base / "shop" / "1"
    config = json.loads((path / "assets.extra" / "tfrec_config.json").read_text())
    assert config["index"]["type"] == "ivf" and config["index"]["nprobe"] == 2
    assert config["index"]["requested_partitions"] == 3 and config["index"]["num_items"] == 42
    assert config["catalogue"] == {
        "source": str(catalogue.resolve()), "items": 42, "added": 2, "removed": 40, "kept": 40,
    }  # fmt: skip
    assert "with_nprobe" in config["signatures"]


ERRORS = {  # extra arguments, catalogue rows (None: the good one), exit code, message
    "missing file": (["--items", "missing.csv"], None, 1, "missing.csv: file not found"),
    "duplicate id": ([], [("i2", "a", "drama"), ("i2", "b", "drama")], 1,
                     "line 3: item id 'i2' already appeared at line 2"),
    "nprobe, brute": (["--nprobe", "2"], None, 2, "apply to index='ivf' only"),
    "no such column": (["--title-col", "name"], None, 1, "missing column 'name'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_with_the_policy_exit_code(run_dir, catalogue, tmp_path, capsys, case):
    extra, rows, code, message = ERRORS[case]
    items = catalogue if rows is None else write_items(tmp_path / "bad.csv", rows)
    if "--items" in extra:
        extra = ["--items", str(tmp_path / extra[1])]
    else:
        extra = ["--items", str(items), *extra]
    args = ["index", "--model-dir", str(run_dir), "--export-dir", str(tmp_path / "s"), *extra]
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfrec index: error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_unknown_index_kind_is_a_usage_error(run_dir, catalogue, tmp_path):
    args = ["index", "--model-dir", str(run_dir), "--items", str(catalogue)]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--export-dir", str(tmp_path), "--index", "hnsw"])
    assert exited.value.code == 2

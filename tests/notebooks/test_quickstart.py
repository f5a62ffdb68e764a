"""notebooks/quickstart.ipynb: the committed copy carries outputs, and it runs top to bottom.

The notebook reads its settings from environment variables (``TFREC_NB_EPOCHS``,
``TFREC_DATA_DIR``, ``TFREC_NB_WORKDIR``, ``TFREC_NB_USERS``), which the executed
kernel inherits from this process. The kernel is this interpreter
(``sys.executable``) through a kernelspec written into a temporary ``JUPYTER_PATH``,
so no kernelspec has to be installed beforehand.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
KERNEL_NAME = "tfrec-nbtest"
RANK_LINE = re.compile(r"^\s+(\d+)\. (.+?)\s+(-?\d+\.\d{3})(  ✓)?$")
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs this interpreter's ipykernel, found through JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfrec notebook test",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL_NAME


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def text_of(cell: nbformat.NotebookNode) -> str:
    """stdout/stderr plus the text/plain of results of one executed cell."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def has_png(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def ranked_blocks(text: str) -> list[list[tuple[int, str, float, bool]]]:
    """Groups consecutive ``  N. title  score [✓]`` lines into one list per user."""
    blocks: list[list[tuple[int, str, float, bool]]] = []
    previous_was_rank = False
    for line in text.splitlines():
        match = RANK_LINE.match(line)
        if match:
            if not previous_was_rank:
                blocks.append([])
            rank, title, score, hit = match.groups()
            blocks[-1].append((int(rank), title.strip(), float(score), hit is not None))
        previous_was_rank = bool(match)
    return blocks


def ml100k_titles(shared_datasets: Path) -> set[str]:
    """Titles of u.item (``id|title|release|...``, latin-1)."""
    lines = (shared_datasets / "ml-100k" / "u.item").read_text(encoding="latin-1").splitlines()
    return {line.split("|")[1].strip() for line in lines if line.strip()}


def execute(nb: nbformat.NotebookNode, kernel_name: str, cwd: Path) -> None:
    NotebookClient(
        nb, kernel_name=kernel_name, timeout=600, resources={"metadata": {"path": str(cwd)}}
    ).execute()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_committed_notebook_carries_its_outputs():
    assert NOTEBOOK.stat().st_size < 1_000_000, "keep the committed notebook under 1 MB"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Executed once, top to bottom, without errors: counts are exactly 1..N in order.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert cell.outputs, f"cell {cell.metadata.get('tags')} has no outputs"
        assert all(out.output_type != "error" for out in cell.outputs)
    assert "dataset: ml-100k" in text_of(tagged(nb, "data"))
    assert re.search(r"test/ndcg@10 = 0\.\d{4}", text_of(tagged(nb, "metrics")))
    assert has_png(tagged(nb, "plot-training"))
    assert has_png(tagged(nb, "plot-metrics"))
    assert len(ranked_blocks(text_of(tagged(nb, "recommendations")))[0]) == 10
    assert "server stopped" in text_of(tagged(nb, "shutdown"))


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom_on_movielens(
    kernel: str, shared_datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TFREC_NB_EPOCHS", "2")
    monkeypatch.setenv("TFREC_NB_USERS", "2")
    monkeypatch.setenv("TFREC_DATA_DIR", str(shared_datasets))
    monkeypatch.setenv("TFREC_NB_WORKDIR", str(tmp_path / "work"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    execute(nb, kernel, tmp_path)  # raises CellExecutionError on the first failing cell

    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert all(out.output_type != "error" for out in cell.outputs)
    assert "tfrec is already installed" in text_of(tagged(nb, "install"))

    data = text_of(tagged(nb, "data"))
    assert "dataset: ml-100k" in data
    assert "100,000 interactions, 943 users, 1,682 items" in data
    assert "trained 2 epochs" in text_of(tagged(nb, "train"))
    assert has_png(tagged(nb, "plot-training"))
    assert has_png(tagged(nb, "plot-metrics"))

    metrics = text_of(tagged(nb, "metrics"))
    ndcg = float(re.search(r"test/ndcg@10 = (\d+\.\d+)", metrics).group(1))
    hr = float(re.search(r"test/hr@10 = (\d+\.\d+)", metrics).group(1))
    # Per user NDCG@10 <= HR@10 (both 0 without a hit, NDCG <= 1 = HR with one), so on average too.
    assert 0.0 < ndcg <= hr <= 1.0
    table_ks = [int(line.split()[0]) for line in metrics.splitlines() if re.match(r"^\d+\s", line)]
    assert table_ks == [1, 5, 10, 20, 50, 100]

    export = text_of(tagged(nb, "export"))
    version_dir = tmp_path / "work" / "export" / "retrieval" / "1"
    assert f"exported: {version_dir}" in export
    assert (version_dir / "saved_model.pb").is_file()
    for name, dtype in [("history", "string"), ("k", "int32"), ("user_id", "string")]:
        assert re.search(rf"input\s+{name}\s+{dtype}", export)
    for name, dtype in [("item_ids", "string"), ("scores", "float32")]:
        assert re.search(rf"output\s+{name}\s+{dtype}", export)

    assert "status: [(1, 'AVAILABLE')]" in text_of(tagged(nb, "serve"))

    titles = ml100k_titles(shared_datasets)
    blocks = ranked_blocks(text_of(tagged(nb, "recommendations")))
    assert len(blocks) == 2  # TFREC_NB_USERS=2
    for block in blocks:
        assert [rank for rank, _, _, _ in block] == list(range(1, 11))
        assert all(title in titles for _, title, _, _ in block)
        scores = [score for _, _, score, _ in block]
        assert scores == sorted(scores, reverse=True)

    (new_user,) = ranked_blocks(text_of(tagged(nb, "new-user")))
    history = {"Star Wars (1977)", "Empire Strikes Back, The (1980)", "Return of the Jedi (1983)"}
    recommended = [title for _, title, _, _ in new_user]
    assert len(recommended) == 10 and set(recommended) <= titles
    assert not history & set(recommended)  # the served model excludes the history

    shutdown = text_of(tagged(nb, "shutdown"))
    assert "server stopped" in shutdown
    assert "no longer answers: UNAVAILABLE" in shutdown


@pytest.mark.slow
def test_quickstart_falls_back_to_synthetic_without_data_or_network(
    kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    empty = tmp_path / "no-data"
    empty.mkdir()
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    proxy = f"http://127.0.0.1:{closed_port()}"  # every download fails at once, offline
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, proxy)
    monkeypatch.setenv("TFREC_DATA_DIR", str(empty))
    monkeypatch.setenv("TFREC_NB_WORKDIR", str(tmp_path / "work"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    data_index = nb.cells.index(tagged(nb, "data"))
    nb.cells = nb.cells[: data_index + 1]  # install, parameters, imports, data
    execute(nb, kernel, tmp_path)

    data = text_of(tagged(nb, "data"))
    assert "Downloading it from GroupLens" in data
    assert "Falling back to the SYNTHETIC dataset" in data
    assert "dataset: synthetic" in data
    assert list(empty.iterdir()) == []  # the failed download left nothing behind

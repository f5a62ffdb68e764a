"""The tfrec-client distribution: version, sources, dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import tfrec_client

from tfrec._version import __version__ as tfrec_version

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_version_follows_tfrec() -> None:
    assert tfrec_client.__version__ == tfrec_version
    assert importlib.metadata.version("tfrec-client") == tfrec_version


def test_installed_package_is_this_checkout() -> None:
    installed = Path(tfrec_client.__file__).resolve().parent
    sources = sorted((CLIENT / "tfrec_client").glob("*.py"))
    assert len(sources) >= 6
    stale = [p.name for p in sources if (installed / p.name).read_bytes() != p.read_bytes()]
    assert stale == [], f"installed tfrec_client differs in {stale}: run `pip install ./client`"
    assert (installed / "_wire.binpb").stat().st_size > 1000  # compiled by the build


def test_client_imports_only_grpc_protobuf_numpy() -> None:
    allowed = {"grpc", "google", "numpy", "tfrec_client"}
    found = set()
    for path in (CLIENT / "tfrec_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    third_party = {name for name in found if name not in _stdlib()}
    assert third_party <= allowed, third_party - allowed
    requires = importlib.metadata.requires("tfrec-client")
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in requires) == [
        "grpcio",
        "numpy",
        "protobuf",
    ]


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}

"""Build hook of tfrec-client: compiles ``protos/`` into ``tfrec_client/_wire.binpb``.

Metadata lives in pyproject.toml; this file only adds the proto compilation to
``build_py``. ``grpc_tools.protoc`` (the build dependency ``grpcio-tools``)
writes one ``FileDescriptorSet`` with every file and its imports, which
``tfrec_client._wire`` loads into a private descriptor pool at import time.
No generated Python, so the protobuf runtime needs no matching gencode version.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE / "protos"
ENTRY_PROTO = "tfrec_client/serving_apis.proto"  # imports the other files
OUTPUT = "_wire.binpb"


def compile_protos(output: Path) -> None:
    """Writes the descriptor set of ``ENTRY_PROTO`` and its imports to ``output``.

    Raises:
        RuntimeError: protoc rejected the .proto files.
    """
    import grpc_tools  # noqa: PLC0415  (build-time only)
    from grpc_tools import protoc  # noqa: PLC0415

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    output.parent.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            "--include_imports",
            f"--descriptor_set_out={output}",
            ENTRY_PROTO,
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc exited with {status} compiling {PROTO_ROOT / ENTRY_PROTO}")


class BuildPyWithProtos(build_py):
    """``build_py`` that also writes the compiled protos next to the package."""

    def run(self) -> None:
        """Copies the package, then compiles the protos into it."""
        super().run()
        compile_protos(self._output())

    def _output(self) -> Path:
        # editable installs import from the source tree, wheels from build_lib
        root = HERE if self.editable_mode else Path(self.build_lib)
        return root / "tfrec_client" / OUTPUT

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """Adds the descriptor set to the files this command produces."""
        return [*super().get_outputs(include_bytecode), str(self._output())]


setup(cmdclass={"build_py": BuildPyWithProtos})

"""Generates drover's protobuf code from the repository's proto/ directory
when the package is built, so the wire types always match the node's."""

import os
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "src" / "drover" / "_gen"


def generate() -> None:
    from grpc_tools import protoc  # build-time dependency (pyproject.toml)

    proto = PROTO_ROOT / "drover" / "v1" / "drover.proto"
    if not proto.exists():
        if (OUT / "drover" / "v1" / "drover_pb2.py").exists():
            return  # an sdist built earlier carries the generated code
        raise SystemExit(f"{proto} not found: build from a drover checkout")
    OUT.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            str(proto),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed on {proto} ({code})")
    for d in [OUT, OUT / "drover", OUT / "drover" / "v1"]:
        (d / "__init__.py").touch()


class BuildPy(build_py):
    def run(self) -> None:
        generate()
        super().run()


if os.environ.get("DROVER_SKIP_PROTO") != "1":
    generate()

def protobuf_floor() -> str:
    """The protobuf runtime the generated code needs: at least the version
    of the generator that wrote it (the build's own protobuf)."""
    import google.protobuf

    return google.protobuf.__version__


setup(
    cmdclass={"build_py": BuildPy},
    install_requires=["grpcio>=1.60,<2", f"protobuf>={protobuf_floor()}"],
)

"""Build the `molbridge-client` wheel: stage the generated stubs (made fresh from protos/, with .pyi),
molbridge_client and cli next to this directory's pyproject.toml, then `pip wheel` the staged tree.

    python clients/python/build_wheel.py [--out dist]     (`make wheel` runs this with the dev venv)

The stubs are generated rather than copied from gen/, so the wheel never ships stale code; the dev venv
has the generators (grpcio-tools, mypy-protobuf)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROTOS = REPO / "protos"
# cli/trace.py reads the span files of a dev checkout through services.runtime: not for partners.
LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc", "trace.py")


# The bus's event messages are internal to the mesh: partners never see them.
INTERNAL_PROTOS = ("molbridge/events/",)


def generate_stubs(into: Path) -> None:
    protos = sorted(
        name
        for name in (str(p.relative_to(PROTOS)) for p in (PROTOS / "molbridge").rglob("*.proto"))
        if not name.startswith(INTERNAL_PROTOS)
    )
    bin_dir = Path(sys.executable).parent
    generated = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTOS), "-I", str(PROTOS / "vendor"),
            f"--python_out={into}", f"--grpc_python_out={into}",
            f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}", f"--mypy_out={into}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}", f"--mypy_grpc_out={into}",
            *protos,
        ],
        cwd=PROTOS,
        capture_output=True,  # protoc-gen-mypy's "Writing …" lines: shown only on failure
        text=True,
    )
    if generated.returncode:
        sys.exit(f"protoc failed:\n{generated.stdout}{generated.stderr}")
    # Regular packages with a PEP 561 marker, so partners' type checkers read the .pyi files.
    package = into / "molbridge"
    for directory in [package, *(d for d in package.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").touch()
    (package / "py.typed").touch()


def stage(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(HERE / name, staging / name)
    for package in ("molbridge_client", "cli"):
        shutil.copytree(REPO / package, staging / package, ignore=LEFT_OUT)
    generate_stubs(staging)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the wheel goes (default dist/)")
    args = parser.parse_args()
    staging = REPO / "build" / "client-wheel"
    stage(staging)
    args.out.mkdir(parents=True, exist_ok=True)
    # No build isolation: setuptools comes from the dev venv, so building needs no download.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(args.out),
         str(staging)],
        check=True,
    )
    shutil.rmtree(staging / "build", ignore_errors=True)
    wheels = sorted(args.out.glob("molbridge_client-*.whl"), key=lambda p: p.stat().st_mtime)
    print(wheels[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

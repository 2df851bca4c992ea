"""Regenerate the Python stubs in services/switchyard/v1 from proto/.

    python proto/generate.py          # rewrite the stubs
    python proto/generate.py --check  # exit 1 if the committed stubs are stale
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = ROOT / "services" / "switchyard" / "v1"


def _generate(out_root: Path) -> Path:
    """Run protoc into out_root; return the generated package directory."""
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "switchyard" / "v1").glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_root / "switchyard" / "v1"
    doc = '"""Generated protobuf and gRPC stubs. Do not edit; run proto/generate.py."""\n'
    (package / "__init__.py").write_text(doc)
    return package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs differ from the protos")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = _generate(Path(tmp))
        names = sorted(p.name for p in fresh.iterdir() if p.is_file())
        if args.check:
            current = sorted(p.name for p in OUT_PACKAGE.glob("*") if p.is_file()) if OUT_PACKAGE.exists() else []
            _, mismatch, errors = filecmp.cmpfiles(fresh, OUT_PACKAGE, names, shallow=False)
            if mismatch or errors or current != names:
                stale = sorted(set(mismatch + errors) | (set(current) ^ set(names)))
                print(f"stale stubs in {OUT_PACKAGE.relative_to(ROOT)}: {stale}")
                print("run: python proto/generate.py")
                return 1
            print("stubs are up to date")
            return 0
        if OUT_PACKAGE.exists():
            shutil.rmtree(OUT_PACKAGE)
        shutil.copytree(fresh, OUT_PACKAGE)
        print(f"wrote {len(names)} files to {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

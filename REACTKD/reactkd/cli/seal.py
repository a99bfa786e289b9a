"""`reactkd seal`: give a model package's metadata a new checksum after a reviewed edit."""

from __future__ import annotations

import argparse

from reactkd.package.model_package import seal_package


def run_seal(args: argparse.Namespace) -> None:
    metadata = seal_package(args.model)
    print(f"sealed {args.model} (metadata_sha256 {metadata['metadata_sha256'][:12]}...; classes "
          f"{', '.join(map(str, metadata['class_names']))})")

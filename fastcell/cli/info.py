"""``fastcell info``: versions and compiled features for bug reports."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from fastcell._info import sys_info

    print(json.dumps(sys_info(as_dict=True), indent=2) if args.json else sys_info())
    return 0

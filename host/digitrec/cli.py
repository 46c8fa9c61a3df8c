"""The `digitrec` command: one verb per pipeline stage.

Each stage module exposes ``register(subparsers)``; stage modules keep heavy imports
(TensorFlow) inside functions so that ``digitrec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from digitrec import __version__

# In pipeline order; a stage never imports a later one.
STAGE_MODULES = ["data", "synth", "train", "export", "bench", "device", "compare", "predict"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec",
        description="Train, quantize, export and benchmark tiny meter-digit CNNs for the ESP32.",
    )
    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in STAGE_MODULES:
        if importlib.util.find_spec(f"digitrec.{name}") is None:
            continue
        importlib.import_module(f"digitrec.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:  # a missing dataset, model or report: name it, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

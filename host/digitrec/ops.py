"""The firmware's op list, read from its single source ``firmware/core/dr_ops.def``.

The firmware registers exactly these TFLite builtin ops in its
``MicroMutableOpResolver``; the exporter calls :func:`check_ops` so that a model the
firmware could not run is refused at export time, not on the board.

``dr_ops.def`` holds X-macro lines ``DR_OP(<resolver method>, <builtin op name>)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

OPS_DEF = Path(__file__).resolve().parents[2] / "firmware" / "core" / "dr_ops.def"

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_ENTRY = re.compile(r"^\s*DR_OP\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*$")


def read_ops_def(path: Path = OPS_DEF) -> tuple[tuple[str, str], ...]:
    """Parse ``dr_ops.def`` into ``(resolver_method, builtin_name)`` pairs, in file order."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise FileNotFoundError(f"firmware op list not found: {path}") from exc
    entries = []
    for lineno, line in enumerate(_COMMENTS.sub("", text).splitlines(), 1):
        if not line.strip():
            continue
        m = _ENTRY.match(line)
        if not m:
            raise ValueError(f"{path}:{lineno}: not a DR_OP(method, OP_NAME) line: {line.strip()!r}")
        entries.append((m.group(1), m.group(2)))
    names = [name for _, name in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: duplicate ops {', '.join(dupes)}")
    return tuple(entries)


FIRMWARE_OPS: tuple[str, ...] = tuple(name for _, name in read_ops_def())


def check_ops(op_names: Iterable[str], model_path: str | Path) -> None:
    """Raise ``ValueError`` naming every op of the model the firmware does not register."""
    unsupported = sorted(set(op_names) - set(FIRMWARE_OPS))
    if unsupported:
        raise ValueError(
            f"{model_path}: uses op(s) {', '.join(unsupported)} that the firmware does not register "
            f"(supported, from {OPS_DEF.relative_to(OPS_DEF.parents[2])}: {', '.join(FIRMWARE_OPS)})"
        )

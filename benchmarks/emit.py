"""How every benchmark script hands its result on: one JSON line on stdout (what
`gpu_check.sh` logs and scripts parse) and, given `--json PATH`, the same line in that file.

    emit(result, args.json)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], path: Path | None) -> None:
    line = json.dumps(result)
    print(line)
    if path is not None:
        path.write_text(line + "\n")

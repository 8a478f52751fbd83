"""Regenerate src/visionzoo/model_table.json: params and MACs of every registered model at its
paper's input size, the numbers `visionzoo list` prints without building 70 models.

    python scripts/model_table.py

`visionzoo verify` (and the test suite through it) measures every model again and fails a model
whose entry here is missing or stale, so the table cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from visionzoo.profile import TABLE_PATH, profile
    from visionzoo.registry import list_models, model_info

    table = {}
    for name in list_models():
        size = model_info(name).input_size
        prof = profile(name, size)
        table[name] = {"input_size": list(size), "params": prof.params, "macs": prof.macs}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items()]  # a line a model
    TABLE_PATH.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {TABLE_PATH.relative_to(ROOT)} ({len(table)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

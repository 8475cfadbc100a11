"""A signature-building worker process: names on stdin, one JSON line ``[name, signature | null, error | null]`` out.

Separate processes started with ``python -m`` (not multiprocessing): a user's script that calls ``identify`` at
module level, without an ``if __name__ == "__main__"`` guard, must not be re-imported by spawned children.
"""

from __future__ import annotations

import json
import sys
import warnings


def main() -> int:
    import torch

    torch.set_num_threads(1)  # one core per worker; the parent runs as many workers as it has cores
    warnings.filterwarnings("ignore")
    from pthkit.architectures.index import compute_one

    for line in sys.stdin:
        name = line.strip()
        if name:
            sys.stdout.write(json.dumps(compute_one(name), separators=(",", ":")) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DDP helpers of fine-tuning (pthkit.tasks._distributed) with 2 real gloo processes on localhost: a resume gives every
rank its own random state back (it used to give every rank rank 0's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_RANK = textwrap.dedent("""
    import json, random, sys
    import numpy as np, torch
    from pthkit.tasks import _distributed as distributed
    from pthkit.tasks.finetune import _restore_rank_rng, _rng_state, _seed_all

    out = sys.argv[1]
    info = distributed.setup("cpu")
    _seed_all(100 + info.rank)                    # each rank its own stream, as finetune seeds them
    torch.rand(5); np.random.rand(5); random.random()   # consume some (dropout masks …)
    per_rank = distributed.gather_object(_rng_state(), info)   # what checkpoint() stores
    if info.is_main:
        torch.save({"rng": per_rank[0], "rng_per_rank": per_rank, "world_size": info.world_size}, out + "/ckpt.pt")
    expected = [torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random()]
    distributed.barrier(info)
    _seed_all(999)                                # a fresh process on resume
    state = torch.load(out + "/ckpt.pt", weights_only=True)
    _restore_rank_rng(state, info)
    got = [torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random()]
    with open(f"{out}/rank{info.rank}.json", "w") as fh:
        json.dump({"expected": expected, "got": got}, fh)
    distributed.cleanup(info)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_resume_restores_each_ranks_own_random_state(tmp_path: Path):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK, str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=100)
        assert p.returncode == 0, out[-2000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in results:
        assert r["got"] == r["expected"]  # every generator (torch, numpy, python) continues where this rank stopped
    assert results[0]["got"] != results[1]["got"]  # and rank 1 did not get rank 0's stream

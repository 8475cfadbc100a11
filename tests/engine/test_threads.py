"""pthkit.engine.threads: the CLI's thread policy, decided once, from the load other processes put on the machine."""

from __future__ import annotations

import torch

from pthkit.engine import threads as T


def test_policy_gives_the_model_the_free_cores(monkeypatch):
    monkeypatch.setattr(T, "cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(T, "other_load", lambda sample_s=0.1: 1.1)
        d = T.cli_thread_policy()
        assert d.threads == 1 and torch.get_num_threads() == 1 and "1 of 2 cores free" in d.reason
        torch.set_num_threads(2)
        monkeypatch.setattr(T, "other_load", lambda sample_s=0.1: 0.05)
        assert T.cli_thread_policy().threads == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(T, "other_load", lambda sample_s=0.1: None)
        assert T.cli_thread_policy().threads == 2
        assert T.cli_thread_policy(3, apply=False).threads == 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_other_load_is_a_number_of_cores():
    load = T.other_load(0.05)
    assert load is None or 0.0 <= load <= (T.cores() + 1)


def test_auto_workers_and_threads():
    assert T.auto_workers(3) == 0
    assert 1 <= T.auto_workers(1000) <= 8
    assert 1 <= T.auto_decode_threads() <= 8

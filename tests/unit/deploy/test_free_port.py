"""free_port: never inside the kernel's ephemeral range, never the same port twice in a row of requests."""

from __future__ import annotations

import random

from deploy.local import probes


def test_a_port_handed_out_is_not_handed_out_again(monkeypatch) -> None:
    # A tiny range makes a repeat certain without the memory: 5 picks from 5 ports.
    # Whether those real ports are free on this machine is not what is tested.
    monkeypatch.setattr(probes, "_FREE_RANGE", (41000, 41004))
    monkeypatch.setattr(probes, "_bindable", lambda port: True)
    monkeypatch.setattr(probes, "_recent", probes.deque())
    monkeypatch.setattr(probes, "_recent_set", set())
    random.seed(7)
    ports = [probes.free_port() for _ in range(5)]
    assert sorted(ports) == [41000, 41001, 41002, 41003, 41004]


def test_a_port_that_cannot_be_bound_is_skipped(monkeypatch) -> None:
    monkeypatch.setattr(probes, "_FREE_RANGE", (41000, 41001))
    monkeypatch.setattr(probes, "_recent", probes.deque())
    monkeypatch.setattr(probes, "_recent_set", set())
    monkeypatch.setattr(probes, "_bindable", lambda port: port != 41000)
    assert probes.free_port() == 41001


def test_ports_stay_outside_the_ephemeral_range() -> None:
    low, high = probes._EPHEMERAL
    assert all(not low <= probes.free_port() <= high for _ in range(50))

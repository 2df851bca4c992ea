"""The Server-Timing header from each process's figures: the transports are
what is left between nested intervals, parts missing from the request's path
(a cache hit never reaches a provider worker) are left out, and a negative
remainder (clock granularity) shows as 0."""

from __future__ import annotations

from edge.server_timing import timing_headers
from switchyard.v1 import chat_pb2 as pb


def test_every_hop_of_a_full_path() -> None:
    timing = pb.Timing(edge_us=400, edge_total_us=10_000, router_us=300, router_total_us=8_600, provider_us=200,
                       upstream_us=5_000, provider_total_us=5_500)
    headers = timing_headers(timing)
    assert headers["server-timing"] == ("edge;dur=0.400, edge-router;dur=1.000, router;dur=0.300, "
                                        "router-provider;dur=2.800, provider;dur=0.500, upstream;dur=5.000, "
                                        "total;dur=10.000")
    assert headers["x-switchyard-overhead-ms"] == "5.000"


def test_a_cache_hit_has_no_provider_hops() -> None:
    headers = timing_headers(pb.Timing(edge_us=400, edge_total_us=1_500, router_us=600, router_total_us=600))
    assert headers["server-timing"] == "edge;dur=0.400, edge-router;dur=0.500, router;dur=0.600, total;dur=1.500"
    assert headers["x-switchyard-overhead-ms"] == "1.500"  # all of it is Switchyard's


def test_a_worker_that_did_not_time_its_upstream_and_a_negative_remainder() -> None:
    timing = pb.Timing(edge_us=400, edge_total_us=3_000, router_us=300, router_total_us=2_700, provider_total_us=2_600)
    assert timing_headers(timing)["server-timing"] == ("edge;dur=0.400, edge-router;dur=0.000, router;dur=0.300, "
                                                       "router-provider;dur=0.000, provider;dur=2.600, "
                                                       "total;dur=3.000")

"""Where a request's time to first output went, for the client: the
``Server-Timing`` response header (W3C Server Timing, shown by browsers'
developer tools and readable by any HTTP client) and
``x-switchyard-overhead-ms``, the time Switchyard added before the first
output (everything but the upstream's own time to first output).

Each process measures its own share (``pb.Timing`` on the started event);
the time between processes (Envoy sidecars, gRPC, both ways) is what is
left of the outer process's figure once the inner one is taken out. The
front Envoy's pass happens before the edge sees the request and is not
included.

- ``edge``: request received -> sent to the router (body read, parse, checks)
- ``edge-router``: edge -> router -> edge transport (sidecar, gRPC)
- ``router``: admission, plan, cache lookup, earlier failed attempts
- ``router-provider``: router -> provider worker -> router transport
- ``provider``: the provider worker's own work (translation, key slot)
- ``upstream``: upstream request sent -> its first output decoded
- ``total``: request received by the edge -> first output at the edge
"""

from __future__ import annotations

from switchyard.v1 import chat_pb2 as pb


def timing_headers(timing: pb.Timing) -> dict[str, str]:
    """``Server-Timing`` and ``x-switchyard-overhead-ms`` from the figures of
    every process (durations in milliseconds, microsecond precision)."""
    parts = [("edge", timing.edge_us)]
    if timing.router_total_us:
        parts.append(("edge-router", timing.edge_total_us - timing.edge_us - timing.router_total_us))
        parts.append(("router", timing.router_us))
        if timing.provider_total_us:
            parts.append(("router-provider", timing.router_total_us - timing.router_us - timing.provider_total_us))
            parts.append(("provider", timing.provider_total_us - timing.upstream_us))
            if timing.upstream_us:
                parts.append(("upstream", timing.upstream_us))
    parts.append(("total", timing.edge_total_us))
    return {"server-timing": ", ".join(f"{name};dur={max(us, 0) / 1000:.3f}" for name, us in parts),
            "x-switchyard-overhead-ms": f"{max(timing.edge_total_us - timing.upstream_us, 0) / 1000:.3f}"}

"""The local mesh launcher behind `make run` and the test fixtures.

The launcher talks gRPC (health probes) and starts the services with
``fork`` + ``exec`` (``preexec_fn`` sets their parent-death signal). With
gRPC's fork support on (grpcio's default), the forked child restarts gRPC's
epoll poller thread, which finds the epoll descriptor closed by
``close_fds`` and aborts the child before it can exec ("epoll_wait error:
Bad file descriptor"): about 1 spawn in 6 while the parent's gRPC is busy.
The launcher never uses gRPC in a child, so fork support is turned off here,
before anything imports grpc (this package is imported first by run.py, the
benchmarks and the tests' conftest). See grpc/grpc#43157.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

"""Molbridge's services."""

import os

# grpcio turns on gRPC's fork handlers by default: in a process that has used gRPC they run at every fork()
# and, while other threads are inside gRPC, can hang the fork (seen: the stack's supervisor stuck spawning a
# child during a benchmark) or abort the child before it execs. Our processes fork (subprocesses,
# multiprocessing's forkserver) and never use gRPC in a forked child, so they are off. gRPC reads the
# variable when it is first imported: hence here, before any of our modules imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

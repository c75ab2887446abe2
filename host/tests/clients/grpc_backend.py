"""A gRPC backend for integration tests: health says SERVING, `/test.Echo/Who` answers its port.

Usage: .deps/py/bin/python grpc_backend.py PORT [--tag TAG]

Listens on 127.0.0.1:PORT (0 picks a free port), prints `READY <port>` on stdout once listening,
and runs until killed. `/test.Echo/Who` is a raw-bytes unary method (no protobuf) whose reply is
the tag, by default the port in ASCII, so a test can tell which backend answered.
"""

import argparse
import signal
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--tag", help="reply of /test.Echo/Who (default: the port)")
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        print(f"ERROR cannot bind 127.0.0.1:{args.port}", flush=True)
        return 1
    reply = (args.tag if args.tag is not None else str(port)).encode()

    def who(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return reply

    # No serializers: the handler sees and returns raw bytes.
    echo = grpc.method_handlers_generic_handler(
        "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    server.add_generic_rpc_handlers((echo,))

    server.start()
    print(f"READY {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())

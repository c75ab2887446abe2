"""A gRPC C-core (grpcio) xDS client for integration tests: RPCs over `xds:///TARGET`.

Usage:
  .deps/py/bin/python grpc_xds_client.py --xds 127.0.0.1:PORT --node-id ID --target NAME
      [--cluster C] [--zone Z] [--metadata K=V ...] [--rpcs N] [--timeout S] [--watch S]
      [--health] [--trace]

The script builds the bootstrap itself (env GRPC_XDS_BOOTSTRAP_CONFIG) and prints one JSON line
per RPC result on stdout:
  {"ok":true,"who":"50051","t":0.41}          default: raw-bytes /test.Echo/Who (grpc_backend.py)
  {"ok":true,"status":"SERVING","t":0.41}     --health: grpc.health.v1.Health/Check, service ""
  {"ok":false,"code":"UNAVAILABLE","error":"...","t":...}
`t` is seconds since the script started.

One-shot (default): retries until one RPC succeeds or --timeout passes (then prints the last
error and exits 1), then makes the remaining --rpcs - 1 RPCs; exits 0 only if all succeeded.
--watch S: one RPC every 200 ms for S seconds, every result printed, exits 0. For tests that
change config mid-way and look at which backend answered when.
"""

import argparse
import json
import os
import sys
import time

START = time.monotonic()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--xds", required=True, help="xDS server address, host:port")
    p.add_argument("--node-id", required=True)
    p.add_argument("--target", required=True, help="channel target is xds:///TARGET")
    p.add_argument("--cluster", default="test", help="node.cluster")
    p.add_argument("--zone", default="a", help="node.locality.zone (region is 'local')")
    p.add_argument("--metadata", action="append", default=[], metavar="K=V",
                   help="node.metadata entry (string values), repeatable")
    p.add_argument("--rpcs", type=int, default=1, help="successful RPCs wanted (one-shot)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for success")
    p.add_argument("--watch", type=float, help="seconds of one RPC per 200 ms")
    p.add_argument("--health", action="store_true", help="health Check instead of Who")
    p.add_argument("--trace", action="store_true", help="C-core xDS traces on stderr")
    return p.parse_args()


def bootstrap(args: argparse.Namespace) -> str:
    metadata = dict(kv.split("=", 1) for kv in args.metadata)
    return json.dumps({
        "xds_servers": [{
            "server_uri": args.xds,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": args.node_id,
            "cluster": args.cluster,
            "locality": {"region": "local", "zone": args.zone},
            "metadata": metadata,
        },
    })


def emit(result: dict) -> None:
    result["t"] = round(time.monotonic() - START, 3)
    print(json.dumps(result), flush=True)


def main() -> int:
    args = parse_args()
    # C-core reads these when it creates the xDS client: set them before grpc is imported.
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = bootstrap(args)
    if args.trace:
        os.environ["GRPC_VERBOSITY"] = "debug"
        os.environ["GRPC_TRACE"] = "xds_client,xds_resolver,cds_lb,xds_cluster_impl_lb"

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(f"xds:///{args.target}")
    if args.health:
        stub = health_pb2_grpc.HealthStub(channel)

        def call(deadline: float) -> dict:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
            return {"ok": True, "status": health_pb2.HealthCheckResponse.ServingStatus.Name(
                reply.status)}
    else:
        who = channel.unary_unary("/test.Echo/Who", request_serializer=None,
                                  response_deserializer=None)

        def call(deadline: float) -> dict:
            return {"ok": True, "who": who(b"", timeout=deadline).decode()}

    def attempt(deadline: float) -> dict:
        try:
            return call(deadline)
        except grpc.RpcError as e:
            return {"ok": False, "code": e.code().name, "error": e.details() or str(e)}

    if args.watch is not None:
        end = START + args.watch
        while time.monotonic() < end:
            began = time.monotonic()
            emit(attempt(1.0))
            time.sleep(max(0.0, 0.2 - (time.monotonic() - began)))
        channel.close()
        return 0

    end = START + args.timeout
    attempts = 0
    while True:
        attempts += 1
        remaining = end - time.monotonic()
        result = attempt(max(0.1, min(2.0, remaining)))
        if result["ok"]:
            emit(result)
            break
        if time.monotonic() + 0.2 >= end:
            result["attempts"] = attempts
            emit(result)
            channel.close()
            return 1
        time.sleep(0.2)

    failed = 0
    for _ in range(args.rpcs - 1):
        result = attempt(2.0)
        failed += not result["ok"]
        emit(result)
    channel.close()
    return 0 if failed == 0 else 2


if __name__ == "__main__":
    sys.exit(main())

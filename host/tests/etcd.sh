#!/usr/bin/env bash
# Installs what the etcd input source needs, when missing: a real etcd for the tests to start
# (Debian's etcd-server; etcd-client brings etcdctl for poking at it by hand) and protoc, which
# the etcd-client crate's build script needs to generate etcd's gRPC API (prost-build no longer
# ships one). Idempotent: does nothing when all three binaries are on PATH.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler libprotobuf-dev)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# No service is started: the tests run their own etcd on free ports with a temporary data dir.
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package's service (where an init system exists) is not ours: stop it so it holds no ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi
etcd --version | sed -n 1p
protoc --version

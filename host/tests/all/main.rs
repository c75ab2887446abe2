//! Integration tests: the real server on loopback, driven by scripted and real xDS clients.
//! One binary (as wasmtime does) to link the large dependency tree once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod admin;
mod admin_security;
mod architecture;
mod cli;
mod config_reload;
mod connections;
mod csds_access;
mod dev;
mod embedder;
mod golden;
mod hostile;
mod inputs_conflicts;
mod inputs_etcd;
mod inputs_kubernetes;
mod lifecycle;
mod pipeline_inputs;
mod plugins_bad;
mod plugins_runtime;
mod protocol_delta;
mod protocol_limits;
mod protocol_sotw;
mod real_envoy;
mod real_grpc;
mod real_nack;
mod real_plugins;
mod real_reload;
mod real_transports;
mod scaffold;
mod scripted;
mod sharing;
mod support;
mod tls_limits;
mod watch_events;
mod xds_port_services;

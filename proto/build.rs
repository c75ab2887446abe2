//! Generates the Envoy v3 API types from the descriptor set in `descriptors/`.
//!
//! The descriptor set is the one the `envoy-types` crate ships (see `descriptors/README.md`);
//! generating from it needs no `protoc` and yields types that build for wasm32.

use std::{env, fs, io, path::PathBuf};

use prost::Message;

const DESCRIPTORS: &str = "descriptors/envoy-api.fds";

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={DESCRIPTORS}");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let bytes = fs::read(manifest_dir.join(DESCRIPTORS))?;
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{DESCRIPTORS}: {e}")))?;

    let mut config = prost_build::Config::new();
    config
        .compile_well_known_types()
        // `Any.value` as `Bytes`: a pushed resource is then shared by reference across every
        // response that carries it instead of being copied per stream.
        .bytes([".google.protobuf.Any.value"])
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        // Envoy's proto comments are not Rust docs (they would become failing doctests and
        // broken intra-doc links); the upstream API reference documents every field.
        .disable_comments(["."])
        .include_file("envoy_api.rs");

    if env::var_os("CARGO_FEATURE_GRPC").is_some() {
        grpc(fds, config)
    } else {
        config.compile_fds(fds)
    }
}

#[cfg(feature = "grpc")]
fn grpc(fds: prost_types::FileDescriptorSet, config: prost_build::Config) -> io::Result<()> {
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        .compile_well_known_types(true)
        // prost's codec with small per-stream buffers: see `src/codec.rs`.
        .codec_path("crate::codec::XdsCodec")
        .compile_fds_with_config(fds, config)
}

#[cfg(not(feature = "grpc"))]
fn grpc(_: prost_types::FileDescriptorSet, _: prost_build::Config) -> io::Result<()> {
    unreachable!("CARGO_FEATURE_GRPC is set only with the grpc feature")
}

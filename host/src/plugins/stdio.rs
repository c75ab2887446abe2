//! A plugin's stdout and stderr, routed to its log: `println!` becomes an info line and
//! `eprintln!` a warning, tagged with the plugin and the node like `nebucloud_xds_guest::log`.
//!
//! Rust's std on `wasm32-wasip2` writes through `wasi:cli/stdout` / `wasi:cli/stderr` and the
//! `output-stream` resource of `wasi:io/streams` (`check-write`, `write`, `blocking-flush`,
//! with a `pollable` from `subscribe` to wait on). Those are defined here, at whatever 0.2.x
//! version the component imports; the rest of WASI stays a trap (no stdin, files, clocks or
//! environment). Every function is typed, so a plugin's bytes are copied once, never lifted
//! into one dynamic value per byte.

use wasmtime::component::{ComponentType, Lift, LinkerInstance, Lower, Resource, ResourceType};
use wasmtime::StoreContextMut;

use super::bindings::nebucloud::xds::host::Host as _;
use super::bindings::nebucloud::xds::types::Level;
use super::call::CallState;

/// The host's side of an `output-stream`: its rep says which (1 stdout, 2 stderr).
pub(crate) struct StdStream;

/// The host's side of a `pollable` from `output-stream.subscribe`: always ready, since a write
/// never has to wait.
pub(crate) struct Ready;

/// The host's side of `wasi:io/error.error`: never created (writes do not fail).
pub(crate) struct IoError;

/// `wasi:io/streams.stream-error`.
#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    #[allow(dead_code)]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    #[allow(dead_code)]
    Closed,
}

const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// How many bytes `check-write` allows at once: one log line's worth.
const WRITE_BUDGET: u64 = 4096;

/// Whether the import is one this module defines.
pub(crate) fn provides(import: &str) -> bool {
    [
        "wasi:cli/stdout@0.2.",
        "wasi:cli/stderr@0.2.",
        "wasi:io/streams@0.2.",
        "wasi:io/poll@0.2.",
        "wasi:io/error@0.2.",
    ]
    .iter()
    .any(|p| import.starts_with(p))
}

type Stream = Resource<StdStream>;
type Written = Result<(), StreamError>;

/// Defines `import` (one [`provides`] accepts) in `inst`.
pub(crate) fn define(
    inst: &mut LinkerInstance<'_, CallState>,
    import: &str,
) -> wasmtime::Result<()> {
    // The resources as each importing instance names them: `wasi:cli/stdout` re-exports the
    // `output-stream` of `wasi:io/streams`, which re-exports the `pollable` of `wasi:io/poll`
    // and the `error` of `wasi:io/error`; each must be the same type wherever it appears.
    inst.resource(
        "output-stream",
        ResourceType::host::<StdStream>(),
        |_, _| Ok(()),
    )?;
    inst.resource("pollable", ResourceType::host::<Ready>(), |_, _| Ok(()))?;
    inst.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
    if import.starts_with("wasi:cli/stdout@") {
        inst.func_wrap("get-stdout", |_, (): ()| Ok((Stream::new_own(STDOUT),)))?;
    } else if import.starts_with("wasi:cli/stderr@") {
        inst.func_wrap("get-stderr", |_, (): ()| Ok((Stream::new_own(STDERR),)))?;
    } else if import.starts_with("wasi:io/poll@") {
        inst.func_wrap("[method]pollable.ready", |_, (_,): (Resource<Ready>,)| {
            Ok((true,))
        })?;
        inst.func_wrap("[method]pollable.block", |_, (_,): (Resource<Ready>,)| {
            Ok(())
        })?;
        inst.func_wrap("poll", |_, (all,): (Vec<Resource<Ready>>,)| {
            let ready: Vec<u32> = (0..u32::try_from(all.len()).unwrap_or(u32::MAX)).collect();
            Ok((ready,))
        })?;
    } else if import.starts_with("wasi:io/streams@") {
        inst.func_wrap("[method]output-stream.subscribe", |_, (_,): (Stream,)| {
            Ok((Resource::<Ready>::new_own(0),))
        })?;
        inst.func_wrap("[method]output-stream.check-write", |_, (_,): (Stream,)| {
            Ok((Ok::<u64, StreamError>(WRITE_BUDGET),))
        })?;
        for method in [
            "[method]output-stream.write",
            "[method]output-stream.blocking-write-and-flush",
        ] {
            inst.func_wrap(method, |store, (stream, bytes): (Stream, Vec<u8>)| {
                write(store, &stream, &bytes);
                Ok((Written::Ok(()),))
            })?;
        }
        for method in [
            "[method]output-stream.flush",
            "[method]output-stream.blocking-flush",
        ] {
            inst.func_wrap(method, |_, (_,): (Stream,)| Ok((Written::Ok(()),)))?;
        }
    }
    Ok(())
}

/// Each line written becomes a log line of the plugin (the log's own caps apply: lines per
/// call and bytes per line).
fn write(mut store: StoreContextMut<'_, CallState>, stream: &Stream, bytes: &[u8]) {
    let level = if stream.rep() == STDERR {
        Level::Warn
    } else {
        Level::Info
    };
    let text = String::from_utf8_lossy(bytes);
    let state = store.data_mut();
    for line in text.lines().filter(|l| !l.is_empty()) {
        state.log(level, line.to_owned());
    }
}

//! A plugin's stdout and stderr, routed to its log: each line written to stdout becomes an
//! info line and each line to stderr a warning, tagged with the plugin and the node like
//! `nebucloud_xds_guest::log` (see [`CallState::stdio_write`]).
//!
//! Rust's std on `wasm32-wasip2` writes through `wasi:cli/stdout` / `wasi:cli/stderr` and the
//! `output-stream` resource of `wasi:io/streams` (`check-write`, `write`, `blocking-flush`,
//! with a `pollable` from `subscribe` to wait on). Those are defined here, at whatever 0.2.x
//! version the component imports; the rest of WASI stays a trap (no stdin, files, clocks or
//! environment). Every function is typed and a write may not exceed what `check-write`
//! allowed, so the host copies at most one log line's worth per call into its own memory; the
//! lines count against the call's log cap with those of the `log` import.

use wasmtime::component::{
    ComponentType, Lift, LinkerInstance, Lower, Resource, ResourceType, WasmList,
};
use wasmtime::StoreContextMut;

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

type Stream = Resource<StdStream>;
type Written = Result<(), StreamError>;

/// Gives the resources this module implements their host types in `inst`, which must be done
/// for every imported WASI interface: other interfaces re-export them (`wasi:cli/stdout` the
/// `output-stream` of `wasi:io/streams`, `wasi:filesystem/types` the streams and `error`,
/// `wasi:clocks/monotonic-clock` the `pollable` of `wasi:io/poll`), and a resource must be the
/// same type wherever it appears or the component does not link.
pub(crate) fn define_resources(inst: &mut LinkerInstance<'_, CallState>) -> wasmtime::Result<()> {
    inst.resource(
        "output-stream",
        ResourceType::host::<StdStream>(),
        |_, _| Ok(()),
    )?;
    inst.resource("pollable", ResourceType::host::<Ready>(), |_, _| Ok(()))?;
    inst.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))
}

/// Defines the functions of `import` in `inst`, after [`define_resources`]: those of
/// `wasi:cli/stdout|stderr` and `wasi:io/poll|streams` at 0.2.x; any other import gets none.
pub(crate) fn define(
    inst: &mut LinkerInstance<'_, CallState>,
    import: &str,
) -> wasmtime::Result<()> {
    if import.starts_with("wasi:cli/stdout@0.2.") {
        inst.func_wrap("get-stdout", |_, (): ()| Ok((Stream::new_own(STDOUT),)))?;
    } else if import.starts_with("wasi:cli/stderr@0.2.") {
        inst.func_wrap("get-stderr", |_, (): ()| Ok((Stream::new_own(STDERR),)))?;
    } else if import.starts_with("wasi:io/poll@0.2.") {
        inst.func_wrap("[method]pollable.ready", |_, (_,): (Resource<Ready>,)| {
            Ok((true,))
        })?;
        inst.func_wrap("[method]pollable.block", |_, (_,): (Resource<Ready>,)| {
            Ok(())
        })?;
        // Every pollable is ready: the first one says so (the list is never lifted).
        inst.func_wrap("poll", |_, (all,): (WasmList<Resource<Ready>>,)| {
            let ready: Vec<u32> = if all.len() == 0 { Vec::new() } else { vec![0] };
            Ok((ready,))
        })?;
    } else if import.starts_with("wasi:io/streams@0.2.") {
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
            inst.func_wrap(method, |store, (stream, bytes): (Stream, WasmList<u8>)| {
                write(store, &stream, &bytes)?;
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

/// Hands what was written to the call's log. More than `check-write` allowed traps, as WASI
/// says it must.
fn write(
    mut store: StoreContextMut<'_, CallState>,
    stream: &Stream,
    bytes: &WasmList<u8>,
) -> wasmtime::Result<()> {
    let len = bytes.len();
    if u64::try_from(len).unwrap_or(u64::MAX) > WRITE_BUDGET {
        wasmtime::bail!("wrote {len} bytes to an output stream that allowed {WRITE_BUDGET}");
    }
    let copy = bytes.as_le_slice(&store).to_vec();
    store.data_mut().stdio_write(stream.rep() == STDERR, &copy);
    Ok(())
}

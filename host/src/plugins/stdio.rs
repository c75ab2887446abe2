//! A plugin's stdout and stderr, routed to its log: `println!` becomes an info line and
//! `eprintln!` a warning, tagged with the plugin and the node like `nebucloud_xds_guest::log`.
//!
//! Rust's std on `wasm32-wasip2` writes through `wasi:cli/stdout` / `wasi:cli/stderr` and the
//! `output-stream` resource of `wasi:io/streams` (`check-write`, `write`, `blocking-flush`, or
//! `blocking-write-and-flush`). Only those are defined here, at whatever 0.2.x version the
//! component imports; the rest of WASI stays a trap (no stdin, files, clocks or environment).

use wasmtime::component::{LinkerInstance, Resource, ResourceType, Val};
use wasmtime::StoreContextMut;

use super::bindings::nebucloud::xds::host::Host as _;
use super::bindings::nebucloud::xds::types::Level;
use super::call::CallState;

/// The host's side of an `output-stream`: its rep says which (1 stdout, 2 stderr).
pub(crate) struct StdStream;

/// The host's side of a `pollable` from `output-stream.subscribe`: always ready, since a write
/// never has to wait.
pub(crate) struct Ready;

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
    ]
    .iter()
    .any(|p| import.starts_with(p))
}

/// Defines `import` (one [`provides`] accepts) in `inst`.
pub(crate) fn define(
    inst: &mut LinkerInstance<'_, CallState>,
    import: &str,
) -> wasmtime::Result<()> {
    // The resources as each importing instance names them: `wasi:cli/stdout` re-exports the
    // `output-stream` of `wasi:io/streams`, which re-exports the `pollable` of `wasi:io/poll`,
    // and each must be the same type wherever it appears.
    inst.resource(
        "output-stream",
        ResourceType::host::<StdStream>(),
        |_, _| Ok(()),
    )?;
    inst.resource("pollable", ResourceType::host::<Ready>(), |_, _| Ok(()))?;
    if import.starts_with("wasi:cli/stdout@") {
        inst.func_wrap("get-stdout", |_, (): ()| {
            Ok((Resource::<StdStream>::new_own(STDOUT),))
        })?;
    } else if import.starts_with("wasi:cli/stderr@") {
        inst.func_wrap("get-stderr", |_, (): ()| {
            Ok((Resource::<StdStream>::new_own(STDERR),))
        })?;
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
        inst.func_wrap(
            "[method]output-stream.subscribe",
            |_, (_,): (Resource<StdStream>,)| Ok((Resource::<Ready>::new_own(0),)),
        )?;
        inst.func_new(
            "[method]output-stream.check-write",
            |store, _, params, results| {
                release(store, params)?;
                set_ok(results, Some(Val::U64(WRITE_BUDGET)));
                Ok(())
            },
        )?;
        for method in [
            "[method]output-stream.write",
            "[method]output-stream.blocking-write-and-flush",
        ] {
            inst.func_new(method, |store, _, params, results| {
                write(store, params)?;
                set_ok(results, None);
                Ok(())
            })?;
        }
        for method in [
            "[method]output-stream.flush",
            "[method]output-stream.blocking-flush",
        ] {
            inst.func_new(method, |store, _, params, results| {
                release(store, params)?;
                set_ok(results, None);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Ends the call's borrow of the stream (`self`), which a dynamic host function must do.
fn release(store: StoreContextMut<'_, CallState>, params: &[Val]) -> wasmtime::Result<()> {
    match params.first() {
        Some(Val::Resource(stream)) => stream.resource_drop(store),
        _ => Ok(()),
    }
}

/// `Ok(value)` into the one result of a `result<T, stream-error>` function.
fn set_ok(results: &mut [Val], value: Option<Val>) {
    if let Some(slot) = results.first_mut() {
        *slot = Val::Result(Ok(value.map(Box::new)));
    }
}

/// `write(self, contents)`: each line becomes a log line of the plugin.
fn write(mut store: StoreContextMut<'_, CallState>, params: &[Val]) -> wasmtime::Result<()> {
    let (Some(Val::Resource(stream)), Some(Val::List(bytes))) = (params.first(), params.get(1))
    else {
        wasmtime::bail!("output-stream.write: unexpected arguments");
    };
    let rep = stream.try_into_resource::<StdStream>(&mut store)?.rep();
    let level = if rep == STDERR {
        Level::Warn
    } else {
        Level::Info
    };
    let bytes: Vec<u8> = bytes
        .iter()
        .filter_map(|v| match v {
            Val::U8(b) => Some(*b),
            _ => None,
        })
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    let state = store.data_mut();
    for line in text.lines().filter(|l| !l.is_empty()) {
        state.log(level, line.to_owned());
    }
    Ok(())
}

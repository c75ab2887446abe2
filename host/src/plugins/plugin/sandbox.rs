//! What a plugin may import: the contract and the WASI interfaces Rust's std links, with
//! deterministic randomness; the rest is refused at load, and what traps is explained.

use wasmtime::component::Linker;

use super::PluginLoadError;
use crate::plugins::call::CallState;

/// Explains the traps a plugin gets for using what the sandbox does not offer.
pub(super) fn with_sandbox_hint(message: String) -> String {
    let hint = if message.contains("wasi:clocks/") {
        "plugins have no clocks: a plugin's output may depend only on its node, resources, config and inputs"
    } else if message.contains("wasi:filesystem/") {
        "plugins have no files: read input documents with ctx.get / ctx.list"
    } else if message.contains("wasi:cli/environment") {
        "plugins have no environment: use the plugin's config"
    } else {
        return message;
    };
    format!("{message} ({hint})")
}

/// Allows the contract (at a compatible version) and the WASI interfaces Rust's std links;
/// refuses the rest, and names it.
pub(super) fn check_import(import: &str) -> Result<(), PluginLoadError> {
    if let Some(rest) = import.strip_prefix("nebucloud:xds/") {
        let compatible = rest
            .split_once('@')
            .is_some_and(|(_, v)| v.starts_with("0.2.") || v.starts_with("0.1."));
        return if compatible {
            Ok(())
        } else {
            Err(PluginLoadError::ContractVersion {
                found: import.to_owned(),
            })
        };
    }
    const STD_WASI: &[&str] = &[
        "wasi:cli/environment@",
        "wasi:cli/exit@",
        "wasi:cli/stdin@",
        "wasi:cli/stdout@",
        "wasi:cli/stderr@",
        "wasi:cli/terminal-",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:filesystem/",
        "wasi:random/",
    ];
    if STD_WASI.iter().any(|p| import.starts_with(p)) {
        Ok(())
    } else {
        Err(PluginLoadError::ForeignImport(import.to_owned()))
    }
}

/// Deterministic randomness: std seeds `HashMap` from it; a plugin's output must not depend
/// on it, and with constants it cannot.
pub(super) fn define_random(linker: &mut Linker<CallState>, import: &str) -> wasmtime::Result<()> {
    let mut inst = linker.instance(import)?;
    let bytes = |len: u64| -> Vec<u8> {
        (0..len.min(1 << 20))
            .map(|i| (i as u8).wrapping_mul(167).wrapping_add(13))
            .collect()
    };
    match import.split('@').next().unwrap_or_default() {
        "wasi:random/random" => {
            inst.func_wrap("get-random-bytes", move |_, (len,): (u64,)| {
                Ok((bytes(len),))
            })?;
            inst.func_wrap("get-random-u64", |_, (): ()| {
                Ok((0x9e37_79b9_7f4a_7c15_u64,))
            })?;
        }
        "wasi:random/insecure" => {
            inst.func_wrap("get-insecure-random-bytes", move |_, (len,): (u64,)| {
                Ok((bytes(len),))
            })?;
            inst.func_wrap("get-insecure-random-u64", |_, (): ()| {
                Ok((0x2545_f491_4f6c_dd1d_u64,))
            })?;
        }
        "wasi:random/insecure-seed" => {
            inst.func_wrap("insecure-seed", |_, (): ()| {
                Ok(((0x243f_6a88_85a3_08d3_u64, 0x1319_8a2e_0370_7344_u64),))
            })?;
        }
        _ => {}
    }
    Ok(())
}

//! What a failed call's error means, told from wasmtime's error and the store's state: a
//! budget, the deadline (and the host call it caught), a stack overflow, a panic.

use wasmtime::{Store, Trap, WasmBacktrace};

use super::report::{Deadline, PluginFault};
use super::sandbox::with_sandbox_hint;
use crate::plugins::call::CallState;
use crate::plugins::limits::PluginLimits;

/// How wasmtime says that lifting a value would copy more than the store's hostcall fuel.
const LIFT_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";
/// How wasmtime starts the context it adds to a fault it traced to a linear memory.
const MEMORY_FAULT: &str = "memory fault at wasm address 0x";
/// How near 4 GiB an out-of-bounds address reads as a stack pointer that went below 0 (plus
/// an offset): more than any one frame.
const NEAR_WRAP: u64 = 16 << 20;

/// The fault a call that ended in `e` gets.
pub(super) fn classify(
    limits: &PluginLimits,
    store: &Store<CallState>,
    e: &wasmtime::Error,
) -> PluginFault {
    let state = store.data();
    if let Some(fault) = &state.refused {
        return fault.clone();
    }
    if let Some(asked) = state.memory.exceeded {
        return PluginFault::MemoryLimit {
            limit: state.memory.limit,
            asked,
        };
    }
    let trap = e.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return PluginFault::Timeout(Deadline {
            limit: limits.deadline(),
            host_call: state.host_calls.at_deadline(),
        });
    }
    let cause = e.root_cause().to_string();
    if cause.contains(LIFT_FUEL_EXHAUSTED) {
        let lift_limit = limits.lift_bytes();
        // Lifting the output happens after the guest returned: no wasm frame is on the
        // error. Arguments of a host call are lifted while the guest runs.
        if e.downcast_ref::<WasmBacktrace>().is_none() {
            return PluginFault::OutputTooLargeToCopy {
                lift_limit,
                limit: limits.max_output_bytes,
            };
        }
        return PluginFault::Trap(format!(
            "a host call's arguments are larger than the {lift_limit} bytes the host copies out of a plugin at once"
        ));
    }
    match trap {
        Some(Trap::StackOverflow) => {
            return PluginFault::Trap(
                "stack overflow: wasm's call stack is exhausted; look for unbounded or too deep recursion".into(),
            )
        }
        Some(Trap::MemoryOutOfBounds) => return PluginFault::Trap(out_of_bounds(e)),
        _ => {}
    }
    // A guest panic reaches us as `unreachable` after its hook logged the message; any
    // other trap is described by wasmtime.
    match state.panic_message() {
        Some(panic) => PluginFault::Trap(panic),
        None => PluginFault::Trap(with_sandbox_hint(cause)),
    }
}

/// Says where an out-of-bounds access went, when wasmtime knows. Rust puts a plugin's stack at
/// the start of its memory, growing down: the frame that overflows it moves the stack pointer
/// below 0, which wraps to just below 4 GiB, and its first access faults there (or just past
/// 4 GiB, with the access's offset). A plugin built otherwise may overflow into its own data
/// instead, which no trap reveals.
fn out_of_bounds(e: &wasmtime::Error) -> String {
    let Some((address, memory)) = e.chain().find_map(|c| memory_fault(&c.to_string())) else {
        return "out of bounds memory access (a stack overflow if the plugin recursed deeply: \
                its stack is in the same memory)"
            .into();
    };
    if address.abs_diff(1 << 32) <= NEAR_WRAP {
        format!(
            "stack overflow: out of bounds memory access at wasm address {address:#x}, next to \
             4 GiB, where a stack pointer that went below 0 wraps to (a Rust plugin's stack is at \
             the start of its memory and grows down); look for unbounded or too deep recursion"
        )
    } else {
        format!(
            "out of bounds memory access at wasm address {address:#x}, past the end of the \
             plugin's {memory} bytes of memory"
        )
    }
}

/// The address and memory size of wasmtime's `memory fault at wasm address 0x… in linear
/// memory of size 0x…`.
fn memory_fault(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix(MEMORY_FAULT)?;
    let (address, rest) = rest.split_once(' ')?;
    let size = rest.strip_prefix("in linear memory of size 0x")?;
    Some((
        u64::from_str_radix(address, 16).ok()?,
        u64::from_str_radix(size.trim_end(), 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An out-of-bounds trap as wasmtime reports it: the trap, under the memory fault.
    fn oob(address: u64) -> wasmtime::Error {
        wasmtime::Error::new(Trap::MemoryOutOfBounds).context(format!(
            "memory fault at wasm address {address:#x} in linear memory of size 0x110000"
        ))
    }

    #[test]
    fn an_access_next_to_4_gib_is_a_stack_overflow_and_others_say_where_they_went() {
        assert_eq!(
            memory_fault(
                "memory fault at wasm address 0xfffffc10 in linear memory of size 0x110000"
            ),
            Some((0xffff_fc10, 0x11_0000))
        );
        assert_eq!(memory_fault("out of bounds memory access"), None);
        for address in [0xffff_fc10, 0x1_0000_0100] {
            let overflow = out_of_bounds(&oob(address));
            assert!(
                overflow.starts_with(&format!("stack overflow: out of bounds memory access at wasm address {address:#x}, next to 4 GiB")),
                "{overflow}"
            );
        }
        assert_eq!(
            out_of_bounds(&oob(0x20_0000)),
            "out of bounds memory access at wasm address 0x200000, past the end of the plugin's 1114112 bytes of memory"
        );
        let unknown = out_of_bounds(&wasmtime::Error::new(Trap::MemoryOutOfBounds));
        assert!(unknown.contains("a stack overflow if"), "{unknown}");
    }
}

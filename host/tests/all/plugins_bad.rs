//! The corpus of bad plugins (real components built by `host/tests/bad-plugins/build.sh`):
//! each misbehaviour gets its precise fault, and the runtime keeps serving afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nebucloud_xds::inputs::{Reads, StaticInputs};
use nebucloud_xds::plugins::{
    NodeReads, Plugin, PluginChain, PluginEngine, PluginFault, PluginLimits, PluginLoadError,
};
use nebucloud_xds::Resource;
use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::type_url;

use crate::plugins_runtime::{engine, services};
use crate::support::plugin_wasm;

/// What the `panic` build of `misbehave` panics with.
const PANIC_MESSAGE: &str = "misbehave: deliberate panic in run";

fn load(engine: &PluginEngine, name: &str, limits: PluginLimits) -> Arc<Plugin> {
    let wasm = std::fs::read(plugin_wasm(name)).unwrap();
    Arc::new(
        Plugin::load(engine, name, &wasm, &serde_json::json!({}), limits)
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn load_err(engine: &PluginEngine, wasm: &[u8]) -> PluginLoadError {
    let err = Plugin::load(
        engine,
        "refused",
        wasm,
        &serde_json::json!({}),
        PluginLimits::default(),
    )
    .expect_err("the plugin must be refused");
    eprintln!("refused: {err}");
    err
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        user_agent_name: "envoy".into(),
        ..Node::default()
    }
}

/// Runs `plugin` alone in a chain for `node_id`, which must fail; checks that the error names
/// the plugin and the node, and returns the fault.
fn fault(plugin: &Arc<Plugin>, node_id: &str) -> PluginFault {
    let chain = PluginChain::new(vec![Arc::clone(plugin)]);
    let err = chain
        .run(node(node_id), Arc::new(StaticInputs::new()))
        .expect_err("the plugin must fail");
    assert_eq!(
        (err.plugin.as_str(), err.node.as_str()),
        (plugin.name(), node_id)
    );
    assert_eq!(
        err.to_string(),
        format!("plugin {} on node {node_id}: {}", plugin.name(), err.fault)
    );
    eprintln!("{err}");
    err.fault
}

/// A good call on `good` (the pass-through build of `misbehave`): it gives back its input.
fn assert_serves(good: &Plugin) {
    let input = vec![Resource::from_message(
        "web",
        &Cluster {
            name: "web".into(),
            ..Cluster::default()
        },
    )];
    let (out, _) = good
        .call(node("good-1"), &input, Arc::new(StaticInputs::new()))
        .unwrap();
    assert_eq!(out, input);
}

/// `bad` fails the same way twice (were a trapped instance re-entered, the second call would
/// fail differently: wasmtime refuses to enter it), and a good plugin on the same engine
/// serves after each failure.
fn assert_fails_twice_and_engine_serves(
    bad: &Arc<Plugin>,
    good: &Plugin,
    check: impl Fn(&PluginFault),
) {
    for node_id in ["node-1", "node-2"] {
        check(&fault(bad, node_id));
        assert_serves(good);
    }
}

#[test]
fn panic_is_a_trap_with_message_and_location_and_the_next_call_gets_a_fresh_instance() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-panic", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::Trap(m) = fault else {
            panic!("expected a trap, got {fault:?}")
        };
        assert!(
            m.contains(PANIC_MESSAGE) && m.contains("src/lib.rs:"),
            "{m}"
        );
        assert!(m.starts_with("panicked at "), "{m}");
    });
}

#[test]
fn a_trapped_instance_is_dropped_and_the_same_plugin_serves_the_next_node() {
    let engine = engine();
    let chain = PluginChain::new(vec![
        crate::plugins_runtime::load(&engine, "mesh", serde_json::json!({})),
        load(&engine, "bad-panic-on-canary", PluginLimits::default()),
    ]);
    let inputs = Arc::new(services());
    // The first run leaves a warm instance; the canary run takes it and traps it.
    let before = chain.run(node("envoy-1"), inputs.clone()).unwrap();
    assert_eq!(
        before.resources.of_type(type_url::CLUSTER).map(|c| c.len()),
        Some(2)
    );
    let err = chain
        .run(node("canary-fail-1"), inputs.clone())
        .unwrap_err();
    assert_eq!(err.plugin, "bad-panic-on-canary");
    let PluginFault::Trap(m) = &err.fault else {
        panic!("expected a trap, got {err}")
    };
    assert!(
        m.contains("deliberate panic on canary node canary-fail-1") && m.contains("src/lib.rs:"),
        "{m}"
    );
    // Re-entering the trapped instance would trap again; a fresh one serves the same result.
    let after = chain.run(node("envoy-1"), inputs).unwrap();
    assert_eq!(after.resources.version(), before.resources.version());
}

#[test]
fn endless_loop_is_stopped_at_its_deadline() {
    let engine = engine();
    let limits = PluginLimits {
        deadline_ms: 200,
        ..PluginLimits::default()
    };
    let (bad, good) = (
        load(&engine, "bad-endless-loop", limits),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    for node_id in ["node-1", "node-2"] {
        let started = Instant::now();
        // It calls no host function: nothing more to say than the deadline.
        assert_eq!(
            fault(&bad, node_id),
            PluginFault::Timeout(Duration::from_millis(200).into())
        );
        assert_eq!(
            fault(&bad, node_id).to_string(),
            "ran past its deadline of 200ms"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(3),
            "stopped after {elapsed:?}"
        );
        assert_serves(&good);
    }
}

/// A plugin polling `get` in a loop: the deadline is hit just after one of its calls returned,
/// and the fault names the call and how many times the plugin made it.
#[test]
fn a_deadline_hit_in_a_loop_of_gets_names_get_and_how_often_it_was_called() {
    let engine = engine();
    let limits = PluginLimits {
        deadline_ms: 200,
        ..PluginLimits::default()
    };
    let (bad, good) = (
        load(&engine, "bad-get-loop", limits),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::Timeout(deadline) = fault else {
            panic!("expected a timeout, got {fault:?}")
        };
        assert_eq!(deadline.limit, Duration::from_millis(200));
        let Some(("get", calls)) = deadline.host_call else {
            panic!("expected the deadline to name `get`: {fault}")
        };
        assert!(calls > 1000, "{fault}");
        let m = fault.to_string();
        assert!(
            m.starts_with("ran past its deadline of 200ms while calling `get` (called ")
                && m.ends_with(" times)"),
            "{m}"
        );
    });
}

/// Rust keeps a plugin's stack at the start of its linear memory: recursion with frames there
/// overflows it below address 0, which wasm reports as an out-of-bounds access near 4 GiB.
#[test]
fn unbounded_recursion_on_the_stack_in_memory_is_reported_as_a_stack_overflow() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-stack-overflow", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::Trap(m) = fault else {
            panic!("expected a trap, got {fault:?}")
        };
        assert!(
            m.starts_with("stack overflow: out of bounds memory access at wasm address 0x")
                && m.contains("look for unbounded or too deep recursion"),
            "{m}"
        );
    });
}

/// Recursion that keeps nothing in memory exhausts wasm's own call stack instead.
#[test]
fn unbounded_recursion_on_the_call_stack_is_reported_as_a_stack_overflow() {
    let engine = engine();
    let bad = load_with(
        &engine,
        "bad-stack-overflow",
        serde_json::json!({"frame_bytes": 0}),
        PluginLimits::default(),
    );
    let good = load(&engine, "bad-none", PluginLimits::default());
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        assert_eq!(
            *fault,
            PluginFault::Trap(
                "stack overflow: wasm's call stack is exhausted; look for unbounded or too deep recursion".into()
            )
        );
    });
}

#[test]
fn allocating_a_gibibyte_hits_the_memory_limit() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-alloc-1gib", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::MemoryLimit { limit, asked } = *fault else {
            panic!("expected the memory limit, got {fault:?}")
        };
        assert_eq!(limit, 64 << 20);
        assert!(asked > 1 << 30, "asked for {asked} bytes");
    });
}

#[test]
fn a_body_that_does_not_decode_is_invalid_output_naming_the_resource() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-garbage-body", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::InvalidOutput(m) = fault else {
            panic!("expected invalid output, got {fault:?}")
        };
        assert!(
            m.starts_with(&format!(
                "\"garbage\": body of {} does not decode: ",
                type_url::CLUSTER
            )),
            "{m}"
        );
    });
}

#[test]
fn an_unknown_type_url_is_invalid_output_naming_it() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-unknown-type", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        assert_eq!(
            *fault,
            PluginFault::InvalidOutput(
                "\"unknown\" has type URL \"type.googleapis.com/envoy.config.cluster.v3.NoSuchMessage\", which names no Envoy API message".into()
            )
        );
    });
}

#[test]
fn duplicate_names_are_invalid_output_naming_the_name() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-duplicate-names", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        assert_eq!(
            *fault,
            PluginFault::InvalidOutput(format!("duplicate {} named \"twin\"", type_url::CLUSTER))
        );
    });
}

#[test]
fn output_over_the_limit_is_refused_with_its_size() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-oversized-output", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::OutputTooLarge { bytes, limit } = *fault else {
            panic!("expected output too large, got {fault:?}")
        };
        assert_eq!(limit, 16 << 20);
        assert!(bytes > 17 << 20 && bytes < (17 << 20) + 64, "{bytes} bytes");
    });
}

#[test]
fn a_foreign_import_is_refused_at_load_naming_it() {
    let engine = engine();
    let err = load_err(
        &engine,
        &std::fs::read(plugin_wasm("bad-foreign-import")).unwrap(),
    );
    assert!(
        matches!(&err, PluginLoadError::ForeignImport(import) if import == "evil:net/http@0.1.0"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("imports `evil:net/http@0.1.0`, which the plugin contract does not offer"),
        "{err}"
    );
    assert_serves(&load(&engine, "bad-none", PluginLimits::default()));
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    // `(module (func (export "run") (result i32) i32.const 42))`: valid wasm, but no component.
    const CORE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // types: () -> i32
        0x03, 0x02, 0x01, 0x00, // functions: one of type 0
        0x07, 0x07, 0x01, 0x03, b'r', b'u', b'n', 0x00, 0x00, // export "run" = func 0
        0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b, // code: i32.const 42
    ];
    let engine = engine();
    let err = load_err(&engine, CORE);
    assert!(
        matches!(&err, PluginLoadError::NotAComponent { reason, .. } if reason == "this is a core wasm module"),
        "{err:?}"
    );
    assert_serves(&load(&engine, "bad-none", PluginLimits::default()));
}

#[test]
fn random_bytes_an_empty_file_and_a_truncated_component_are_refused_as_not_a_component() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let component = std::fs::read(plugin_wasm("bad-none")).unwrap();
    let engine = engine();
    let not_wasm = "not WebAssembly at all: the file does not start with `\\0asm`";
    for wasm in [&random[..], &[]] {
        let err = load_err(&engine, wasm);
        assert!(
            matches!(&err, PluginLoadError::NotAComponent { reason, .. } if reason == not_wasm),
            "{err:?}"
        );
    }
    let truncated = load_err(&engine, &component[..component.len() / 2]);
    let PluginLoadError::NotAComponent { reason: m, .. } = &truncated else {
        panic!("expected not a component, got {truncated:?}")
    };
    assert!(
        m.starts_with("failed to parse WebAssembly") && !m.contains('\n'),
        "{m}"
    );
    assert_serves(&load(&engine, "bad-none", PluginLimits::default()));
}

/// A plugin that uses `std::fs` links WASI's filesystem, whose types re-export the streams the
/// host gives stdout: it still loads, and the read traps with the sandbox's reason.
#[test]
fn reading_a_file_loads_and_traps_with_the_sandbox_reason() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-read-file", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::Trap(m) = fault else {
            panic!("expected a trap, got {fault:?}")
        };
        assert!(
            m.contains("wasi:filesystem/") && m.contains("plugins have no files"),
            "{m}"
        );
    });
}

fn load_with(
    engine: &PluginEngine,
    name: &str,
    config: serde_json::Value,
    limits: PluginLimits,
) -> Arc<Plugin> {
    let wasm = std::fs::read(plugin_wasm(name)).unwrap();
    Arc::new(
        Plugin::load(engine, name, &wasm, &config, limits)
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

/// Calls `plugin` once for `node-1`, which must fail; returns the fault and what the call read.
fn fault_and_reads(plugin: &Plugin) -> (PluginFault, Reads) {
    let mut reads = Reads::default();
    let fault = plugin
        .call_reading(
            &Arc::new(node("node-1").into()),
            &[],
            Arc::new(StaticInputs::new()),
            &mut reads,
            &mut NodeReads::default(),
        )
        .expect_err("the plugin must fail");
    (fault, reads)
}

#[test]
fn a_get_flood_of_mebibyte_keys_fails_at_its_first_key_naming_the_name_limit() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-get-flood", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        assert_eq!(
            *fault,
            PluginFault::HostCallLimit {
                call: "get",
                limit: "the name length limit",
                asked: 1 << 20,
                max: 4096,
            }
        );
    });
    assert_eq!(
        fault_and_reads(&bad).1,
        Reads::default(),
        "the refused key is not recorded"
    );
}

#[test]
fn a_get_flood_of_small_keys_stops_at_max_reads_with_that_many_recorded() {
    let engine = engine();
    let bad = load_with(
        &engine,
        "bad-get-flood",
        serde_json::json!({"key_bytes": 16}),
        PluginLimits::default(),
    );
    let (fault, reads) = fault_and_reads(&bad);
    assert_eq!(
        fault,
        PluginFault::HostCallLimit {
            call: "get",
            limit: "max_reads",
            asked: 10_001,
            max: 10_000,
        }
    );
    assert_eq!(reads.documents.len(), 10_000);
}

#[test]
fn a_get_flood_of_long_keys_stops_at_max_read_bytes_with_those_bytes_recorded() {
    let engine = engine();
    let limits = PluginLimits {
        max_read_bytes: 100_000,
        ..PluginLimits::default()
    };
    let bad = load_with(
        &engine,
        "bad-get-flood",
        serde_json::json!({"key_bytes": 4096}),
        limits,
    );
    let (fault, reads) = fault_and_reads(&bad);
    let PluginFault::HostCallLimit {
        call: "get",
        limit: "max_read_bytes",
        asked,
        max: 100_000,
    } = fault
    else {
        panic!("expected the read bytes limit, got {fault:?}")
    };
    // Each read is "Flood" and a 4096-byte name: the one that did not fit is not recorded.
    let recorded: usize = reads
        .documents
        .iter()
        .map(|k| k.kind.len() + k.name.len())
        .sum();
    assert_eq!((recorded, asked), (24 * 4101, 25 * 4101));
}

/// Lines the host logged, as the fmt subscriber writes them.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// Runs `f` with every event of this thread written here; returns its result and the lines.
    fn run<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (out, text.lines().map(str::to_owned).collect())
    }
}

#[test]
fn an_error_log_flood_is_capped_counted_and_the_real_panic_is_still_the_fault() {
    const FLOOD_PANIC_MESSAGE: &str = "misbehave: deliberate panic after an error-log flood";
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-error-log-flood", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    let (fault, lines) = Captured::run(|| fault(&bad, "node-1"));
    let PluginFault::Trap(m) = &fault else {
        panic!("expected a trap, got {fault:?}")
    };
    assert!(
        m.starts_with("panicked at ")
            && m.contains("src/lib.rs:")
            && m.ends_with(FLOOD_PANIC_MESSAGE),
        "{m}"
    );
    let plugin_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("nebucloud_xds::plugins::call:") && l.contains("node-1"))
        .collect();
    let flood = plugin_lines
        .iter()
        .filter(|l| {
            l.contains(": error line ") || l.contains(": stderr line ") || l.contains("fake.rs")
        })
        .count();
    assert_eq!(flood, 64, "the flood is capped at 64 lines");
    let panics: Vec<_> = plugin_lines
        .iter()
        .filter(|l| l.contains("panicked at "))
        .collect();
    assert_eq!(panics.len(), 1, "exactly the real panic line: {panics:?}");
    assert!(panics[0].contains(FLOOD_PANIC_MESSAGE));
    // 10,000 error lines and 100 stderr lines, less the 64 kept; the real panic is kept.
    let summary = "dropped 10036 log lines of this call past its cap of 64 lines and 65536 bytes";
    assert_eq!(
        plugin_lines.iter().filter(|l| l.contains(summary)).count(),
        1,
        "{plugin_lines:#?}"
    );
    assert_eq!(plugin_lines.len(), 64 + 2);
    assert_serves(&good);
}

#[test]
fn two_memories_share_the_memory_limit() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-two-memories", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        let PluginFault::MemoryLimit { limit, asked } = *fault else {
            panic!("expected the memory limit, got {fault:?}")
        };
        assert_eq!(limit, 64 << 20);
        // Each memory is at 41 MiB when the second grows: their total, not either, is refused.
        assert!(
            asked > 80 << 20 && asked < 82 << 20,
            "asked for {asked} bytes"
        );
    });
}

#[test]
fn an_output_over_the_copy_limit_is_refused_before_the_host_copies_it() {
    let engine = engine();
    let limits = PluginLimits {
        max_output_bytes: 4 << 20,
        ..PluginLimits::default()
    };
    let (bad, good) = (
        load(&engine, "bad-oversized-output", limits),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        assert_eq!(
            *fault,
            PluginFault::OutputTooLargeToCopy {
                lift_limit: 8 << 20,
                limit: 4 << 20,
            }
        );
    });
}

/// 64 records that all point at the same 1 MiB of a 2 MiB instance: the memory cap does not
/// bound what copying them out takes, the copy limit does.
#[test]
fn an_output_aliasing_one_body_is_refused_before_the_host_copies_it() {
    let engine = engine();
    let (bad, good) = (
        load(&engine, "bad-aliased-output", PluginLimits::default()),
        load(&engine, "bad-none", PluginLimits::default()),
    );
    assert_fails_twice_and_engine_serves(&bad, &good, |fault| {
        assert_eq!(
            *fault,
            PluginFault::OutputTooLargeToCopy {
                lift_limit: 32 << 20,
                limit: 16 << 20,
            }
        );
        assert!(fault
            .to_string()
            .starts_with("output refused before it was copied: it needs more than 33554432 bytes"));
    });
}

/// A host call's arguments are lifted under the same copy limit as the output: a 1 MiB name
/// against a limit of 1 MiB in all traps before the host copies it, and is not taken for an
/// oversized output.
#[test]
fn a_host_call_argument_over_the_copy_limit_traps_and_is_not_taken_for_the_output() {
    let engine = engine();
    let limits = PluginLimits {
        max_output_bytes: 1000,
        ..PluginLimits::default()
    };
    let bad = load(&engine, "bad-get-flood", limits);
    assert_eq!(limits.lift_bytes(), 1 << 20);
    assert_eq!(
        fault_and_reads(&bad).0,
        PluginFault::Trap(
            "a host call's arguments are larger than the 1048576 bytes the host copies out of a plugin at once".into()
        )
    );
}

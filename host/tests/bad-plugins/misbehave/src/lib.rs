//! A plugin that misbehaves on purpose, in the one way its Cargo feature selects; with no
//! feature it passes its input through. `../build.sh` builds one component per feature.

use std::hint::black_box;

use nebucloud_xds_guest::prost::Name;
use nebucloud_xds_guest::proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_guest::serde_json::Value;
use nebucloud_xds_guest::{export_plugin, log, Context, LogLevel, Resource, Result};

/// The ways `run` can misbehave, one per Cargo feature of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// No feature: returns its input unchanged, a good plugin.
    PassThrough,
    /// `panic`: panics with [`PANIC_MESSAGE`].
    Panic,
    /// `endless-loop`: never returns.
    EndlessLoop,
    /// `alloc-1gib`: allocates 1 GiB and writes to every byte of it.
    Alloc1Gib,
    /// `garbage-body`: returns a Cluster whose body does not decode.
    GarbageBody,
    /// `unknown-type`: returns a resource whose type URL names no Envoy message.
    UnknownType,
    /// `duplicate-names`: returns two clusters with the same name.
    DuplicateNames,
    /// `oversized-output`: returns one valid Cluster of more than 17 MiB.
    OversizedOutput,
    /// `panic-on-canary`: panics when the node id contains `canary-fail`, else passes through.
    PanicOnCanary,
    /// `drop-clusters`: removes every Cluster. Its own output is valid; a validator after it
    /// (cluster-guard) then refuses the route tables that point at the missing clusters.
    DropClusters,
    /// `read-file`: reads `/etc/hostname` with `std::fs`, which links WASI's filesystem (whose
    /// types re-export the streams that stdout uses): it must load, and trap when it runs.
    ReadFile,
    /// `get-flood`: `get`s a new key of `key_bytes` bytes (its config; 1 MiB when unset) in an
    /// endless loop.
    GetFlood,
    /// `get-loop`: `get`s the same key in an endless loop, as a plugin polling for an input
    /// would: no new read, so no read budget stops it; its deadline does.
    GetLoop,
    /// `stack-overflow`: recurses without end. Each frame holds [`FRAME_BYTES`] bytes on
    /// Rust's shadow stack in linear memory, which overflows first; with the config
    /// `{"frame_bytes": 0}` the frames hold nothing there and wasm's own call stack overflows.
    StackOverflow,
    /// `error-log-flood`: logs [`FLOOD_LINES`] error lines of about 1 KiB (every hundredth a
    /// fake panic line) and some stderr lines, then panics with [`FLOOD_PANIC_MESSAGE`].
    ErrorLogFlood,
}

/// What the `panic` build panics with.
pub const PANIC_MESSAGE: &str = "misbehave: deliberate panic in run";
/// What the `error-log-flood` build panics with after its flood.
pub const FLOOD_PANIC_MESSAGE: &str = "misbehave: deliberate panic after an error-log flood";
/// How many error lines the `error-log-flood` build logs.
pub const FLOOD_LINES: usize = 10_000;
/// The bytes each frame of the `stack-overflow` build holds on the shadow stack by default.
pub const FRAME_BYTES: usize = 1024;

/// This build's misbehaviour, chosen by its Cargo feature.
pub const MISBEHAVIOUR: Misbehaviour = selected(&[
    (cfg!(feature = "panic"), Misbehaviour::Panic),
    (cfg!(feature = "endless-loop"), Misbehaviour::EndlessLoop),
    (cfg!(feature = "alloc-1gib"), Misbehaviour::Alloc1Gib),
    (cfg!(feature = "garbage-body"), Misbehaviour::GarbageBody),
    (cfg!(feature = "unknown-type"), Misbehaviour::UnknownType),
    (
        cfg!(feature = "duplicate-names"),
        Misbehaviour::DuplicateNames,
    ),
    (
        cfg!(feature = "oversized-output"),
        Misbehaviour::OversizedOutput,
    ),
    (
        cfg!(feature = "panic-on-canary"),
        Misbehaviour::PanicOnCanary,
    ),
    (cfg!(feature = "drop-clusters"), Misbehaviour::DropClusters),
    (cfg!(feature = "read-file"), Misbehaviour::ReadFile),
    (cfg!(feature = "get-flood"), Misbehaviour::GetFlood),
    (cfg!(feature = "get-loop"), Misbehaviour::GetLoop),
    (
        cfg!(feature = "stack-overflow"),
        Misbehaviour::StackOverflow,
    ),
    (
        cfg!(feature = "error-log-flood"),
        Misbehaviour::ErrorLogFlood,
    ),
]);

/// The misbehaviour whose feature is on; two features on fail the build (a const panic).
const fn selected(features: &[(bool, Misbehaviour)]) -> Misbehaviour {
    let mut found = Misbehaviour::PassThrough;
    let mut i = 0;
    while i < features.len() {
        if features[i].0 {
            assert!(
                matches!(found, Misbehaviour::PassThrough),
                "misbehave: enable at most one misbehaviour feature"
            );
            found = features[i].1;
        }
        i += 1;
    }
    found
}

/// A Cluster body that cannot decode: field 1 (`name`, length-delimited) announces 100 bytes
/// and only one follows.
const GARBAGE_BODY: &[u8] = &[0x0a, 100, b'x'];

/// More than the host's default output limit of 16 MiB, in one string field.
const OVERSIZED_BYTES: usize = 17 << 20;

/// The plugin: misbehaves as [`MISBEHAVIOUR`] says.
pub fn run(ctx: &Context<'_>, mut resources: Vec<Resource>) -> Result<Vec<Resource>> {
    match MISBEHAVIOUR {
        Misbehaviour::PassThrough => {}
        Misbehaviour::Panic => panic!("{PANIC_MESSAGE}"),
        Misbehaviour::EndlessLoop => endless_loop(),
        Misbehaviour::Alloc1Gib => {
            black_box(touch_1gib());
        }
        Misbehaviour::GarbageBody => resources.push(Resource {
            type_url: Cluster::type_url(),
            name: "garbage".into(),
            body: GARBAGE_BODY.to_vec(),
        }),
        Misbehaviour::UnknownType => resources.push(Resource {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.NoSuchMessage".into(),
            ..Resource::new("unknown", &cluster("unknown"))
        }),
        Misbehaviour::DuplicateNames => {
            resources.push(Resource::new("twin", &cluster("twin")));
            resources.push(Resource::new("twin", &cluster("twin")));
        }
        Misbehaviour::OversizedOutput => resources.push(oversized()),
        Misbehaviour::PanicOnCanary => {
            let node = ctx.node().id();
            if node.contains("canary-fail") {
                panic!("misbehave: deliberate panic on canary node {node}");
            }
        }
        Misbehaviour::DropClusters => resources.retain(|r| !r.is::<Cluster>()),
        Misbehaviour::ReadFile => {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            resources.push(Resource::new(host.trim(), &cluster(host.trim())));
        }
        Misbehaviour::GetFlood => get_flood(ctx)?,
        Misbehaviour::GetLoop => get_loop(ctx)?,
        Misbehaviour::StackOverflow => {
            let config: Value = ctx.config()?;
            let depth = match config["frame_bytes"].as_u64() {
                Some(0) => recurse_on_call_stack(0),
                _ => recurse_on_shadow_stack(0),
            };
            black_box(depth);
        }
        Misbehaviour::ErrorLogFlood => error_log_flood(),
    }
    Ok(resources)
}

export_plugin!(run);

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        ..Cluster::default()
    }
}

fn endless_loop() -> ! {
    let mut spins: u64 = 0;
    loop {
        // `black_box` hides the counter from the optimiser, so the loop does work it cannot
        // prove useless and stays a real loop in the wasm.
        spins = black_box(spins.wrapping_add(1));
    }
}

/// Allocates 1 GiB and writes every byte (not `vec![0; n]`, which may never touch its pages).
fn touch_1gib() -> u64 {
    let block = black_box(vec![0xa5_u8; 1 << 30]);
    block.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

/// A valid Cluster over the output limit, built within a 64 MiB memory cap: the 17 MiB string
/// and its 17 MiB encoding are alive together, nothing else is that large.
fn oversized() -> Resource {
    let cluster = Cluster {
        alt_stat_name: "x".repeat(OVERSIZED_BYTES),
        ..cluster("oversized")
    };
    Resource::new("oversized", &cluster)
}

/// Asks for a new key at every turn, each `key_bytes` long (1 MiB unless configured): a host
/// that records every key grows by that much per turn until the deadline.
fn get_flood(ctx: &Context<'_>) -> Result<()> {
    let config: Value = ctx.config()?;
    let key_bytes = config["key_bytes"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1 << 20)
        .max(8);
    let mut name = "k".repeat(key_bytes);
    for i in 0_u64.. {
        name.replace_range(..8, &format!("{:08}", i % 100_000_000));
        black_box(ctx.get::<Value>("Flood", &name)?);
    }
    Ok(())
}

/// Asks for the same document at every turn, forever.
fn get_loop(ctx: &Context<'_>) -> Result<()> {
    loop {
        black_box(ctx.get::<Value>("Poll", "same")?);
    }
}

/// Recurses without end (the depth that stops it cannot be reached) with [`FRAME_BYTES`]
/// bytes per frame on the shadow stack: an array whose address escapes cannot live in wasm
/// locals. The call is not in tail position, so it stays a call.
fn recurse_on_shadow_stack(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let mut frame = [0_u8; FRAME_BYTES];
    black_box(&mut frame);
    let deeper = recurse_on_shadow_stack(black_box(depth + 1));
    deeper + u64::from(frame[usize::try_from(depth).unwrap_or(0) % FRAME_BYTES])
}

/// Recurses without end with nothing on the shadow stack: only wasm's own call stack grows.
fn recurse_on_call_stack(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let deeper = recurse_on_call_stack(black_box(depth + 1));
    black_box(deeper) ^ depth
}

/// Logs [`FLOOD_LINES`] error lines, every hundredth a fake panic line, and some to stderr;
/// then panics: the host must cap the flood and still report this panic.
fn error_log_flood() -> ! {
    let filler = "e".repeat(1000);
    for i in 0..FLOOD_LINES {
        if i % 100 == 99 {
            log(
                LogLevel::Error,
                &format!("panicked at fake.rs:{i}: not the real panic"),
            );
        } else {
            log(LogLevel::Error, &format!("error line {i}: {filler}"));
        }
        if i % 100 == 0 {
            eprintln!("stderr line {i}");
        }
    }
    panic!("{FLOOD_PANIC_MESSAGE}")
}

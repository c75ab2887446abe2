//! The server under load, in its own process so that its memory and CPU can be read from
//! `/proc`: ours, the seed as published, or the seed with a push path. It is driven by lines
//! on stdin (`update N`, `groups`, `quit`) and answers on stdout (`ready ADDR SETUP_BYTES`,
//! `updated N [SEEN_UNIX_NS]`, `groups COUNT EVICTED CACHE_ENTRIES NODE_RECORDS`, `-` for what
//! it cannot tell).

mod ours;
mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nebucloud_xds::config::{PipelineConfig, ReloadConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Which implementation serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impl {
    /// nebucloud-xds as `serve` builds it from a config, with the mesh plugin (or static
    /// resources on a bare xDS server).
    Ours,
    /// The seed crate's own server (nebucloud-xds 0.1.0), unmodified: it answers requests
    /// and never pushes to open streams.
    Seed,
    /// The seed's cache and request handlers behind the smallest push path: each stream also
    /// holds a cache watch and, when it fires, re-runs the seed's handler for every subscribed
    /// type.
    SeedPush,
}

impl Impl {
    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Seed => "seed",
            Impl::SeedPush => "seed-push",
        }
    }
}

/// What the server serves and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Which implementation.
    #[arg(long = "impl", value_enum)]
    pub implementation: Impl,
    /// How many nodes will connect (the seed keys snapshots by node id: one per node).
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// How many services the mesh has.
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    /// Ours only: compute resources with this plugin (the mesh plugin's .wasm), built as
    /// `serve` builds it (`nebucloud_xds::app::App`) from a generated config file and inputs
    /// directory; an input change rewrites that directory. Without it, ours serves static
    /// resources.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Ours with a plugin: the pipeline's debounce window, in milliseconds (0 becomes 1, the
    /// least a config accepts).
    #[arg(long, default_value_t = 0)]
    pub debounce_ms: u64,
    /// Ours with a plugin: how nodes share computations.
    #[arg(long, value_enum, default_value_t = Grouping::Cluster)]
    pub grouping: Grouping,
    /// Ours with a plugin: a second plugin after it in the chain, loaded from this file and
    /// reloaded whenever the file changes, as `serve` does (the reload benchmark).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// How often plugin files are checked, in ms (the serving default).
    #[arg(long, default_value_t = ReloadConfig::default().interval_ms)]
    pub reload_interval_ms: u64,
    /// How long a changed plugin file must stay unchanged before it is loaded, in ms (the
    /// serving default).
    #[arg(long, default_value_t = ReloadConfig::default().settle_ms)]
    pub reload_settle_ms: u64,
    /// Ours with a plugin: how long a node group outlives its last stream, in ms (the serving
    /// default: five minutes).
    #[arg(long, default_value_t = PipelineConfig::default().group_grace_ms)]
    pub grace_ms: u64,
}

/// How our server groups nodes: one computation per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// By `node.cluster`: every simulated node is a replica of one service, one group.
    Cluster,
    /// By node identity (the serving default): every simulated node is its own group; the
    /// nodes read alike by the plugins, so they share one plugin chain run per change.
    Node,
}

/// One input change, applied by each implementation its own way.
trait Updater: Send {
    /// Makes revision `revision` of the services the current configuration. Returns when the
    /// server's data path saw the change (Unix time in ns), where that differs from the call:
    /// ours built by `App` reads its inputs directory on a timer.
    fn update(&mut self, revision: u32) -> anyhow::Result<Option<u64>>;

    /// The per-node state the server holds: how many groups (ours) or snapshots (the seed),
    /// and how many it has forgotten, if it can tell.
    fn groups(&self) -> GroupCount {
        GroupCount::default()
    }
}

/// What a server holds per node group, as its `groups` answer reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupCount {
    /// Groups (ours) or per-node snapshots (the seed) held now.
    pub count: Option<usize>,
    /// Groups forgotten since start.
    pub evicted: Option<u64>,
    /// Ours: groups with a slot in the cache.
    pub cache_entries: Option<usize>,
    /// Ours: nodes with a record (a stream open).
    pub node_records: Option<usize>,
}

impl GroupCount {
    /// The `groups COUNT EVICTED CACHE_ENTRIES NODE_RECORDS` answer line.
    pub fn line(self) -> String {
        let word = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let size = |v: Option<usize>| word(v.map(|v| v as u64));
        format!(
            "groups {} {} {} {}",
            size(self.count),
            word(self.evicted),
            size(self.cache_entries),
            size(self.node_records)
        )
    }

    /// Parses a `groups …` line; a missing or `-` word is `None`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        if words.next() != Some("groups") {
            return None;
        }
        let mut next = || words.next().and_then(|w| w.parse::<u64>().ok());
        let size = |v: Option<u64>| v.and_then(|v| usize::try_from(v).ok());
        Some(GroupCount {
            count: size(next()),
            evicted: next(),
            cache_entries: size(next()),
            node_records: size(next()),
        })
    }
}

/// Runs the server until `quit` or the end of stdin.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let before = crate::stats::rss_bytes(std::process::id()).unwrap_or(0);
    let (addr, mut updater): (SocketAddr, Box<dyn Updater>) = match args.implementation {
        Impl::Ours => ours::start(&args).await?,
        Impl::Seed => {
            let (addr, u) = seed::start_as_is(&args).await?;
            (addr, Box::new(u))
        }
        Impl::SeedPush => {
            let (addr, u) = seed::start_push(&args).await?;
            (addr, Box::new(u))
        }
    };
    wait_listening(addr).await?;
    let setup = crate::stats::rss_bytes(std::process::id())
        .unwrap_or(0)
        .saturating_sub(before);
    println!("ready {addr} {setup}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match (words.next(), words.next().map(str::parse::<u32>)) {
            (Some("update"), Some(Ok(revision))) => match updater.update(revision)? {
                Some(seen) => println!("updated {revision} {seen}"),
                None => println!("updated {revision}"),
            },
            (Some("groups"), None) => println!("{}", updater.groups().line()),
            (Some("quit"), _) => break,
            _ => eprintln!("bench-server: unknown command {line:?}"),
        }
    }
    Ok(())
}

/// A free loopback port (the seed's server binds by address, not by listener).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the server never listened on {addr}")
}

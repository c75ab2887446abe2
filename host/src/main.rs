//! The `nebucloud-xds` command: serves xDS to Envoy and gRPC clients, with the configuration
//! of every node computed by a chain of WebAssembly plugins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nebucloud_xds::app::{load_chain, load_inputs, load_inputs_with, load_resource_dir, App};
use nebucloud_xds::config::Config;
use nebucloud_xds::plugins::{
    bench_plugin, BenchOptions, EngineOptions, Plugin, PluginEngine, PluginLimits,
};
use nebucloud_xds::schema::Schema;
use nebucloud_xds_proto::envoy::config::core::v3::Node;

/// An xDS control plane whose configuration logic is user code: WebAssembly plugins.
#[derive(Parser)]
#[command(name = "nebucloud-xds", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS (ADS and per-type, SotW and Delta) on one gRPC port.
    Serve(ServeArgs),
    /// Check a config file: keys, values, plugin files, inputs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with plugins without a server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List the nodes connected to a running server (reads its admin API).
    Nodes(AdminArgs),
    /// Print what a running server serves one node, decoded to JSON (reads its admin API).
    Dump {
        /// The node id.
        node: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check a resource directory and print what each group would be served.
    CheckResources {
        /// The directory: one sub-directory per node group.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The config file (TOML): plugins, inputs, listen address.
    #[arg(long, conflicts_with = "resources")]
    config: Option<PathBuf>,
    /// Without plugins: serve the resources in this directory, `DIR/<group>/*.{yaml,json}`,
    /// each resource in Envoy's JSON form with `@type`.
    #[arg(long)]
    resources: Option<PathBuf>,
    /// Address of the xDS gRPC port (overrides the config file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the admin HTTP API (overrides the config file).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
}

/// How to reach a running server's admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin address.
    #[arg(long, default_value = "127.0.0.1:18001")]
    admin: SocketAddr,
    /// A file holding the admin API's bearer token (the server's `[admin] token_file`);
    /// default: `$NEBUCLOUD_XDS_ADMIN_TOKEN_FILE`, else no token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// The environment variable that names the token file when `--token-file` is not given.
const TOKEN_FILE_ENV: &str = "NEBUCLOUD_XDS_ADMIN_TOKEN_FILE";

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the config, compile every plugin, read the inputs; print what was found.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Dry-run the config's plugin chain for one node: prints the resources as JSON, and per
    /// plugin the instructions, peak memory and output size against its limits.
    Run {
        /// The config file whose chain and inputs to use.
        #[arg(long)]
        config: PathBuf,
        /// The node, as YAML/JSON in Envoy's `Node` form (`id`, `cluster`, `metadata`, …).
        #[arg(long)]
        node: PathBuf,
        /// An inputs directory (default: the config's).
        #[arg(long)]
        inputs: Option<PathBuf>,
    },
    /// Measure a plugin: calls/s and p50/p99 on reused and fresh instances, instructions,
    /// memory and output per call, for one node and an inputs directory.
    Bench {
        /// The `.wasm` file.
        file: PathBuf,
        /// The plugin config, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// The node, as YAML/JSON in Envoy's `Node` form (default: an Envoy node `bench`).
        #[arg(long)]
        node: Option<PathBuf>,
        /// An inputs directory (YAML/JSON documents with `kind` and `name`).
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// How long to call a warm instance, in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Check a plugin file against the contract: a component, the contract's imports and
    /// exports, and an `init` that accepts the given config.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
        /// The plugin config, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Config(ConfigCommand::Check { file }) => runtime.block_on(config_check(&file)),
        Command::Plugin(PluginCommand::Run {
            config,
            node,
            inputs,
        }) => plugin_run(&config, &node, inputs.as_deref()),
        Command::Plugin(PluginCommand::Check { file, config }) => plugin_check(&file, &config),
        Command::Plugin(PluginCommand::Bench {
            file,
            config,
            node,
            inputs,
            seconds,
        }) => plugin_bench(&file, &config, node.as_deref(), inputs.as_deref(), seconds),
        Command::Nodes(admin) => runtime.block_on(async {
            let nodes: serde_json::Value =
                serde_json::from_str(&admin_get(&admin, "/debug/nodes").await?)?;
            for n in nodes.as_array().into_iter().flatten() {
                println!(
                    "{}  group={}  streams={}",
                    n["node_id"].as_str().unwrap_or("?"),
                    n["group"].as_str().unwrap_or("?"),
                    n["streams"]
                );
                for (t, st) in n["types"].as_object().into_iter().flatten() {
                    let short = t.rsplit('.').next().unwrap_or(t);
                    let nack = st["last_nack"]["message"]
                        .as_str()
                        .map(|m| format!("  last NACK: {m}"))
                        .unwrap_or_default();
                    println!(
                        "  {short:<24} sent={} acked={} state={}{nack}",
                        st["sent_version"], st["acked_version"], st["state"]
                    );
                }
            }
            Ok(())
        }),
        Command::Dump { node, admin } => runtime.block_on(async {
            let body = admin_get(&admin, &format!("/debug/nodes/{node}/config")).await?;
            let json: serde_json::Value = serde_json::from_str(&body)?;
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }),
        Command::CheckResources { dir } => {
            for (group, set) in load_resource_dir(&dir)? {
                println!(
                    "{group}: {} resources, version {}",
                    set.len(),
                    set.version()
                );
                for r in set.iter() {
                    println!("  {} {} ({})", r.type_url(), r.name(), r.version());
                }
            }
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let app = match (&args.config, &args.resources) {
        (Some(path), _) => App::build(Config::load(path)?).await?,
        (None, Some(dir)) => App::with_resources(Config::default_for_resources(), dir)?,
        (None, None) => {
            anyhow::bail!("give --config FILE (plugins) or --resources DIR (static resources)")
        }
    };
    // Open xDS streams outlive a graceful shutdown: after GOAWAY they get the drain time to
    // finish, then the process exits and clients reconnect elsewhere, keeping their config.
    app.metrics(metrics)
        .spawn(args.listen, args.admin_listen)
        .await?
        .run_until(shutdown_signal())
        .await?;
    Ok(())
}

async fn config_check(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let engine =
        PluginEngine::new(EngineOptions::default()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let chain = load_chain(&config, &engine)?;
    let (store, _) = load_inputs_with(config.inputs.dir.as_deref(), config.inputs.limits())?;
    println!("{}: ok", file.display());
    println!(
        "  xds: {} (group by {:?})",
        config.xds.listen, config.xds.group_by
    );
    for p in chain.plugins() {
        println!(
            "  plugin {} {} (deadline {} ms, memory {} bytes)",
            p.name(),
            p.hash(),
            p.limits().deadline_ms,
            p.limits().memory_bytes
        );
    }
    println!("  inputs: {} documents", store.len());
    Ok(())
}

fn plugin_bench(
    file: &Path,
    config: &str,
    node: Option<&Path>,
    inputs: Option<&Path>,
    seconds: f64,
) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let node = match node {
        Some(path) => read_node(path)?,
        None => Node {
            id: "bench".into(),
            user_agent_name: "envoy".into(),
            ..Node::default()
        },
    };
    let (store, _) = load_inputs(inputs)?;
    let options = BenchOptions {
        duration: Duration::from_secs_f64(seconds.clamp(0.1, 600.0)),
        ..BenchOptions::default()
    };
    let report = bench_plugin(&wasm, &config, &node, &[], store, &options)
        .with_context(|| file.display().to_string())?;
    println!("{report}");
    Ok(())
}

fn plugin_check(file: &Path, config: &str) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine =
        PluginEngine::new(EngineOptions::default()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let plugin = Plugin::load(&engine, name, &wasm, &config, PluginLimits::default())
        .with_context(|| file.display().to_string())?;
    println!("{}: ok, version {}", file.display(), plugin.hash());
    Ok(())
}

fn plugin_run(config_path: &Path, node_path: &Path, inputs: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let engine = PluginEngine::new(EngineOptions {
        fuel: true,
        ..EngineOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let chain = load_chain(&config, &engine)?;
    let (store, _) = load_inputs_with(
        inputs.or(config.inputs.dir.as_deref()),
        config.inputs.limits(),
    )?;
    let node = read_node(node_path)?;
    let schema = Schema::envoy()?;
    let out = chain.run(&node, store)?;
    let resources: Vec<serde_json::Value> = out
        .resources
        .iter()
        .map(|r| {
            serde_json::json!({
                "type_url": r.type_url(),
                "name": r.name(),
                "version": r.version(),
                "resource": schema.to_json(r.type_url(), r.body()).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    let plugins: Vec<serde_json::Value> = out
        .reports
        .iter()
        .zip(chain.plugins())
        .map(|((name, report), plugin)| {
            let limits = plugin.limits();
            serde_json::json!({
                "plugin": name,
                "instructions": report.instructions,
                "elapsed_us": report.elapsed.as_micros(),
                "peak_memory_bytes": report.peak_memory,
                "memory_limit_bytes": limits.memory_bytes,
                "output_bytes": report.output_bytes,
                "output_limit_bytes": limits.max_output_bytes,
                "reads": report.reads.kinds.iter().map(|k| format!("{k}/*")).chain(report.reads.documents.iter().map(|(k, n)| format!("{k}/{n}"))).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "node": node.id, "resources": resources, "plugins": plugins })
        )?
    );
    Ok(())
}

/// A node from YAML/JSON in Envoy's `Node` form.
fn read_node(path: &Path) -> anyhow::Result<Node> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_yaml::from_str(&text).with_context(|| path.display().to_string())?;
    let msg = Schema::envoy()?
        .from_json("type.googleapis.com/envoy.config.core.v3.Node", json)
        .with_context(|| path.display().to_string())?;
    Ok(prost::Message::decode(
        prost::Message::encode_to_vec(&msg).as_slice(),
    )?)
}

/// GETs a path from a running server's admin API, naming it in `Host` (the server refuses
/// other names) and with the bearer token if there is one; an error status becomes an error
/// with the server's message.
async fn admin_get(args: &AdminArgs, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let admin = args.admin;
    let token_file = args
        .token_file
        .clone()
        .or_else(|| std::env::var_os(TOKEN_FILE_ENV).map(PathBuf::from));
    let authorization = match token_file {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?;
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty() && !token.contains(char::is_whitespace),
                "the token file {} holds no token (one line, no spaces)",
                file.display()
            );
            format!("Authorization: Bearer {token}\r\n")
        }
        None => String::new(),
    };
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    // `SocketAddr` shows as `127.0.0.1:18001` or `[::1]:18001`: the form `Host` takes.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    anyhow::ensure!(status == "200", "{path}: HTTP {status}: {}", body.trim());
    Ok(body.to_owned())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    // A signal that cannot be watched must not look like one that arrived: it waits forever.
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot watch SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

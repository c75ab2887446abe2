//! The `nebucloud-xds` command: serves xDS to Envoy and gRPC clients, with the configuration
//! of every node computed by a chain of WebAssembly plugins.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Serve a config while developing its plugins: a changed plugin file or config file
    /// reloads at once (through the canary), and each change prints which nodes' resources
    /// changed, one line each.
    Dev {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Address of the xDS gRPC port (overrides the config file).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address of the admin HTTP API (overrides the config file).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
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
    /// Create a plugin crate that builds, tests and runs as is: `NAME/` with Cargo.toml,
    /// src/lib.rs (a typed config and native tests), node files for `plugin run`, and a
    /// config that runs it; prints the `[[plugins]]` entry to paste into a server's config.
    New {
        /// The plugin's name: its crate name and its name in the config.
        name: String,
        /// What the template does: adds resources, changes them, or rejects a bad set.
        #[arg(long, value_enum, default_value = "generator")]
        kind: cli::scaffold::Kind,
        /// Where the crate gets the guest SDK: default crates.io, at this binary's version.
        #[command(flatten)]
        sdk: cli::scaffold::SdkArgs,
    },
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
        /// Also run the chain again for a second, sampling each plugin's wasm stack, and write
        /// where its time goes, per function, to this file (one per plugin, named after it,
        /// when the chain has several): a Firefox profiler profile, opened at
        /// https://profiler.firefox.com.
        #[arg(long, value_name = "OUT.json")]
        profile: Option<PathBuf>,
    },
    /// Golden tests: run the config's chain for each node file in CASES and compare the
    /// resources with the expected ones stored beside it (`envoy.yaml` →
    /// `envoy.expected.json`); on a difference, print it by resource and field and fail.
    Test {
        /// The config file whose chain and inputs to use.
        #[arg(long)]
        config: PathBuf,
        /// An inputs directory (default: the config's).
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// Write the expected files from this run (creating missing ones) instead of
        /// comparing, and say which changed.
        #[arg(long)]
        update: bool,
        /// A directory of node files (`*.yaml`, `*.yml`, `*.json`; YAML/JSON in Envoy's
        /// `Node` form, as `plugin run --node` reads), or one node file.
        cases: PathBuf,
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", cli::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal: a pipe or a log collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(cli::serve::serve(
            args.config.as_deref(),
            args.resources.as_deref(),
            args.listen,
            args.admin_listen,
        )),
        Command::Dev {
            config,
            listen,
            admin_listen,
        } => runtime.block_on(cli::dev::dev(&config, listen, admin_listen)),
        Command::Config(ConfigCommand::Check { file }) => {
            runtime.block_on(cli::config::check(&file))
        }
        Command::Plugin(PluginCommand::New { name, kind, sdk }) => {
            cli::scaffold::new(&name, kind, &sdk)
        }
        Command::Plugin(PluginCommand::Run {
            config,
            node,
            inputs,
            profile,
        }) => cli::plugin::run(&config, &node, inputs.as_deref(), profile.as_deref()),
        Command::Plugin(PluginCommand::Test {
            config,
            inputs,
            update,
            cases,
        }) => cli::golden::test(&config, &cases, inputs.as_deref(), update),
        Command::Plugin(PluginCommand::Check { file, config }) => {
            cli::plugin::check(&file, &config)
        }
        Command::Plugin(PluginCommand::Bench {
            file,
            config,
            node,
            inputs,
            seconds,
        }) => cli::plugin::bench(&file, &config, node.as_deref(), inputs.as_deref(), seconds),
        Command::Nodes(admin) => {
            runtime.block_on(cli::admin::nodes(admin.admin, admin.token_file.as_deref()))
        }
        Command::Dump { node, admin } => runtime.block_on(cli::admin::dump(
            admin.admin,
            admin.token_file.as_deref(),
            &node,
        )),
        Command::CheckResources { dir } => cli::resources::check(&dir),
    }
}

//! The server under load, in its own process: `bench-server --impl ours|seed|seed-push`.
//! The load generator starts it and drives it through stdin (see `nx_bench::servers`).

#![forbid(unsafe_code)]

use clap::Parser;
use nx_bench::servers::{run, ServerArgs};

#[derive(Parser)]
#[command(
    about = "An xDS server for the load generator: ours, the seed, or the seed with a push path"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    nx_bench::stats::raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli.server))
}

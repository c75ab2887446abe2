//! The `nebucloud-xds` command: serves xDS.

fn main() -> anyhow::Result<()> {
    nebucloud_xds_cli()
}

fn nebucloud_xds_cli() -> anyhow::Result<()> {
    anyhow::bail!("the command line arrives with the next commit")
}

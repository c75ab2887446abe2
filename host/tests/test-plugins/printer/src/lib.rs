//! A test plugin that writes to stdout and stderr the way a plugin author debugging would, then
//! passes its input through. The host turns each line into a log line of the plugin.

use nebucloud_xds_guest::{export_plugin, Context, Resource, Result};

/// The plugin function.
pub fn print(ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>> {
    // The host tags each line with the node: reading its id here would make every node's
    // result its own.
    println!(
        "printer: {} resources for a {} node",
        resources.len(),
        ctx.node().cluster()
    );
    eprintln!("printer: a warning on stderr");
    // Rust's stderr is unbuffered: this reaches the host in several writes, one log line.
    let words = ["one", "line"];
    eprintln!("printer: {} {} {}", words[0], words[1], resources.len() + 3);
    print!("printer: no newline");
    Ok(resources)
}

export_plugin!(print);

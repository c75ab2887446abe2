//! `check-resources`: a resource directory loaded the way `serve --resources` loads it.

use std::path::Path;

use nebucloud_xds::app::load_resource_dir;

/// Loads `dir` and prints, per node group, the resources it would be served and their
/// versions; a file that does not load is the error.
pub(crate) fn check(dir: &Path) -> anyhow::Result<()> {
    for (group, set) in load_resource_dir(dir)? {
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

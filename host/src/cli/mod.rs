//! The subcommands of `nebucloud-xds`, one module each; `main.rs` parses the arguments and
//! calls them.

pub(crate) mod admin;
pub(crate) mod config;
pub(crate) mod dev;
pub(crate) mod dry_run;
pub(crate) mod golden;
pub(crate) mod plugin;
pub(crate) mod resources;
pub(crate) mod scaffold;
pub(crate) mod serve;

/// An error as the command line prints it: the message, then each cause the message does not
/// already say (our errors' messages often quote their cause), without a backtrace.
pub(crate) fn report(error: &anyhow::Error) -> String {
    let mut out = format!("Error: {error}");
    let mut said = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !said.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
            said.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("plugin p: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("plugin p: cannot start")]
    struct Terse(#[source] std::io::Error);

    #[test]
    fn a_cause_is_printed_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            report(&Quoting(io()).into()),
            "Error: plugin p: disk on fire"
        );
        assert_eq!(
            report(&Terse(io()).into()),
            "Error: plugin p: cannot start\n  caused by: disk on fire"
        );
    }
}

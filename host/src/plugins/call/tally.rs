//! The host calls one plugin call made: how many of each, which came last, and whether any came
//! in the last epoch ticks, so that a deadline hit in a loop of host calls can name the call.

/// A host import of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostCall {
    /// `log`.
    Log,
    /// `get`.
    Get,
    /// `list`.
    List,
    /// One of the `node` interface's calls.
    Node,
}

impl HostCall {
    /// Its name in the contract.
    pub(crate) fn name(self) -> &'static str {
        match self {
            HostCall::Log => "log",
            HostCall::Get => "get",
            HostCall::List => "list",
            HostCall::Node => "node",
        }
    }
}

/// The host calls of one plugin call, counted as they return.
///
/// Wasm checks its deadline at function entries and loop heads, never inside the host, so a
/// deadline is never hit *in* a host call: a plugin looping on `get` is stopped just after one
/// returns. What tells it from a plugin that computes between rare host calls is whether it
/// made any in the last two epoch ticks (two: a tick can come right after the previous one
/// when the thread was descheduled, leaving the last window nearly empty). Counted in the
/// plugin's progress, not by the clock, so a loaded machine does not blur it.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostCallTally {
    counts: [u64; 4],
    last: Option<HostCall>,
    /// The host calls made in all at each of the last two ticks, the older first.
    at_ticks: [u64; 2],
}

impl HostCallTally {
    /// Counts one more `call`.
    pub(crate) fn returned(&mut self, call: HostCall) {
        self.counts[call as usize] += 1;
        self.last = Some(call);
    }

    /// An epoch tick that did not end the call.
    pub(crate) fn tick(&mut self) {
        self.at_ticks = [self.at_ticks[1], self.total()];
    }

    /// The host call the plugin was making when its deadline was hit (the last it made, if it
    /// made any in the last two ticks), with how many times the call made it.
    pub(crate) fn at_deadline(&self) -> Option<(&'static str, u64)> {
        let call = self.last?;
        (self.total() > self.at_ticks[0]).then(|| (call.name(), self.counts[call as usize]))
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_names_the_last_call_if_the_last_two_ticks_saw_calls() {
        let mut tally = HostCallTally::default();
        assert_eq!(tally.at_deadline(), None);
        for _ in 0..3 {
            tally.returned(HostCall::Get);
        }
        tally.returned(HostCall::Log);
        tally.tick();
        tally.returned(HostCall::Get);
        assert_eq!(tally.at_deadline(), Some(("get", 4)));
        // One quiet tick: the calls of the one before still count.
        tally.tick();
        assert_eq!(tally.at_deadline(), Some(("get", 4)));
        // Two: the plugin is in its own code.
        tally.tick();
        assert_eq!(tally.at_deadline(), None);
        tally.returned(HostCall::List);
        assert_eq!(tally.at_deadline(), Some(("list", 1)));
    }
}

//! What a reload needs from whatever serves the chain (the pipeline): a trial of a candidate
//! chain before it serves, and a swap without one. The plugins decide *what* serves; the host
//! decides *when* a chain runs, a trial's runs included.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use super::chain::PluginChain;

/// What [`ChainHost::trial`] answers: a trial that passed, ready to commit, or why the
/// candidate was refused.
pub type TrialFuture<'a> = Pin<Box<dyn Future<Output = Result<ChainTrial, String>> + Send + 'a>>;

/// Serves a plugin chain to every node group, and lets the plugin slots change it.
pub trait ChainHost: Send + Sync + 'static {
    /// Runs `candidate` (the serving chain with a new version of `plugin`) beside the serving
    /// chain over every live group. It is refused — `Err` with a reason that names the group —
    /// only where it fails on a group the serving chain serves on the same inputs: a group
    /// that fails with both says nothing about the new version. Nothing changes until the
    /// answer is [committed](ChainTrial::commit).
    fn trial(&self, candidate: PluginChain, plugin: &str) -> TrialFuture<'_>;

    /// Makes `chain` serve at once, without a trial (a rollback to a version that served
    /// before), and recomputes every group with it.
    fn set_chain(&self, chain: PluginChain);
}

/// A candidate chain that passed its trial and does not serve yet. Committing it makes it the
/// serving chain and publishes what the trial computed (where no input changed since);
/// dropping it changes nothing.
#[must_use = "a trial changes nothing until it is committed"]
pub struct ChainTrial {
    commit: Box<dyn FnOnce() + Send>,
}

impl ChainTrial {
    /// A trial that `commit` puts into service.
    pub fn new(commit: impl FnOnce() + Send + 'static) -> Self {
        ChainTrial {
            commit: Box::new(commit),
        }
    }

    /// Makes the candidate the serving chain.
    pub fn commit(self) {
        (self.commit)();
    }
}

impl fmt::Debug for ChainTrial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainTrial").finish_non_exhaustive()
    }
}

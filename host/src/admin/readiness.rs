//! Readiness: the server is ready once every named check (plugins loaded, each input source
//! synced) has passed.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Named checks that must all pass before `/readyz` says ready.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: Mutex<BTreeMap<String, bool>>,
}

impl Readiness {
    /// No checks: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares or updates a check.
    pub fn set(&self, check: &str, ok: bool) {
        if let Ok(mut c) = self.checks.lock() {
            c.insert(check.to_owned(), ok);
        }
    }

    /// The checks that have not passed; empty when ready.
    pub fn pending(&self) -> Vec<String> {
        self.checks
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(_, ok)| !**ok)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passed() {
        let r = Readiness::new();
        assert!(r.pending().is_empty());
        r.set("inputs", false);
        r.set("plugins", true);
        assert_eq!(r.pending(), vec!["inputs".to_owned()]);
        r.set("inputs", true);
        assert!(r.pending().is_empty());
    }
}

//! How the groups of one batch are computed: in chunks, each on one blocking thread, each
//! group from a result the memo holds or by a run of the chain, and recorded as it ends.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::record::{record, Outcome};
use super::scheduler::Inner;
use crate::inputs::Reads;
use crate::plugins::{NodeReads, NodeView};

/// The most groups one blocking task computes in turn. A wave of 10,000 groups that share
/// one result is then about 160 hand-offs to a blocking thread, not 10,000: a hand-off per
/// group (spawning, waking and parking a thread for a memo lookup of a few microseconds) was
/// the largest part of the server's CPU per change in a profile of 10,000 nodes.
const MAX_CHUNK: usize = 64;

/// Splits `wave` into chunks, each computed in turn by one thread: four per thread when the
/// wave is that long (so that a chunk held up by a slow run leaves the others to the other
/// threads), none longer than [`MAX_CHUNK`].
pub(super) fn chunks(wave: Vec<String>, parallelism: usize) -> Vec<Vec<String>> {
    let size = wave
        .len()
        .div_ceil(parallelism.max(1) * 4)
        .clamp(1, MAX_CHUNK);
    let mut chunks = Vec::with_capacity(wave.len().div_ceil(size));
    let mut wave = wave.into_iter().peekable();
    while wave.peek().is_some() {
        chunks.push(wave.by_ref().take(size).collect());
    }
    chunks
}

/// Computes `groups` in turn on one blocking thread (off the async workers) and records each
/// as it ends: a group whose node agrees with a result the memo holds takes it (a result
/// computed earlier in the same chunk included), the others run the chain. A panic is the
/// group's own `Died` outcome; the rest of the chunk goes on.
pub(super) async fn chunk(inner: Arc<Inner>, groups: Vec<String>) {
    let work: Vec<(String, Arc<NodeView>, u64)> = groups
        .into_iter()
        .filter_map(|group| {
            let (node, epoch) = inner
                .groups
                .get(&group)
                .map(|r| (Arc::clone(&r.node), r.epoch))?;
            Some((group, node, epoch))
        })
        .collect();
    let names: Vec<(String, u64)> = work.iter().map(|(g, _, e)| (g.clone(), *e)).collect();
    let task = Arc::clone(&inner);
    let recorded = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&recorded);
    let done = tokio::task::spawn_blocking(move || {
        for (group, node, epoch) in work {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| compute_one(&task, &node)))
                .unwrap_or_else(|panic| Outcome::Died(panic_text(panic.as_ref())));
            record(&task, &group, Some(epoch), outcome);
            counted.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    // A runtime shutting down, or a panic while recording: the groups not recorded died.
    if let Err(join) = done {
        let skip = recorded.load(Ordering::Relaxed);
        for (group, epoch) in names.into_iter().skip(skip) {
            record(&inner, &group, Some(epoch), Outcome::Died(join.to_string()));
        }
    }
}

/// One group's outcome: a shared result when the memo holds one for its node, else a run of
/// the chain (held in the memo for other nodes when it may be shared).
fn compute_one(inner: &Inner, node: &Arc<NodeView>) -> Outcome {
    if let Some(computed) = inner.memo.lookup(node) {
        metrics::counter!("pipeline_shared_results_total").increment(1);
        return Outcome::Computed {
            computed,
            ran: false,
        };
    }
    let chain = inner.chain.load_full();
    let (mut reads, mut node_reads) = (Reads::default(), NodeReads::default());
    let result = chain.run_reading(node, Arc::clone(&inner.inputs), &mut reads, &mut node_reads);
    match Outcome::of_run(result, reads, node_reads) {
        Ok(computed) => {
            // Held for other nodes only if it comes from the chain that serves now, and only
            // if it is not a memory limit, which an instance's history can cause.
            let current = Arc::ptr_eq(&chain, &inner.chain.load_full());
            let computed = if current && computed.shareable() {
                inner.memo.insert(node, computed)
            } else {
                Arc::new(computed)
            };
            Outcome::Computed {
                computed,
                ran: true,
            }
        }
        Err(outcome) => outcome,
    }
}

/// What a panic said, if it said it as text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g{i}")).collect()
    }

    #[test]
    fn a_wave_is_cut_into_four_chunks_a_thread_and_none_longer_than_the_most() {
        let sizes = |n, p| -> Vec<usize> { chunks(wave(n), p).iter().map(Vec::len).collect() };
        assert_eq!(sizes(0, 2), Vec::<usize>::new());
        assert_eq!(sizes(1, 2), vec![1]);
        assert_eq!(sizes(3, 2), vec![1, 1, 1]);
        assert_eq!(sizes(20, 2), vec![3, 3, 3, 3, 3, 3, 2]);
        assert_eq!(sizes(4, 4), vec![1, 1, 1, 1]);
        assert_eq!(
            sizes(1000, 0),
            vec![64; 15].into_iter().chain([40]).collect::<Vec<_>>()
        );
        let all = chunks(wave(10_000), 2);
        assert_eq!(all.len(), 157);
        assert_eq!(all.concat(), wave(10_000), "every group once, in order");
    }

    #[test]
    fn a_panic_says_what_it_said() {
        assert_eq!(panic_text(&"boom"), "boom");
        assert_eq!(panic_text(&String::from("bang")), "bang");
        assert_eq!(panic_text(&7_u8), "panicked");
    }
}

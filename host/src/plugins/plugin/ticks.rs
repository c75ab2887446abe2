//! What each epoch tick of a call does: ends the call once its deadline has passed by the
//! clock, marks a window of its host calls, and, on a profiling engine, samples its stack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::profile::Sampler;
use crate::plugins::call::CallState;

/// Arms `store` for one call (or `init`) that may run for `deadline`.
///
/// The deadline is kept by the clock rather than by counting ticks: a tick is only seen at
/// the plugin's next function entry or loop head, and a thread descheduled for several
/// ticks sees them as one. A tick costs a call into the host, about 1,000 a second per
/// running call (10,000 on a profiling engine).
pub(super) fn arm(store: &mut Store<CallState>, deadline: Duration, sampler: Option<Arc<Sampler>>) {
    let end = Instant::now().checked_add(deadline);
    if let Some(sampler) = &sampler {
        sampler.begin();
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut store| {
        if let Some(sampler) = &sampler {
            sampler.sample(&store);
        }
        if end.is_some_and(|end| Instant::now() >= end) {
            return Ok(UpdateDeadline::Interrupt);
        }
        store.data_mut().host_calls.tick();
        Ok(UpdateDeadline::Continue(1))
    });
}

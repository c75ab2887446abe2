//! Where a plugin's calls spend their time: on a profiling engine, each call's wasm stack is
//! sampled at every epoch tick, and the samples are written in the Firefox profiler's format.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{AsContext, Engine, GuestProfiler};

/// The samples of one plugin version, until they are written.
pub(super) struct Sampler {
    samples: Mutex<Option<Samples>>,
}

struct Samples {
    profiler: GuestProfiler,
    count: u64,
    /// When the last sample was taken, or the call that is running began.
    last: Instant,
}

impl Sampler {
    /// A profile of the plugin `name`, whose code is `component`, sampled every `interval`.
    /// Only the component's own functions appear in it: host frames are left out.
    pub(super) fn new(
        engine: &Engine,
        name: &str,
        component: &Component,
        interval: Duration,
    ) -> wasmtime::Result<Self> {
        let profiler = GuestProfiler::new_component(engine, name, interval, component.clone(), [])?;
        Ok(Sampler {
            samples: Mutex::new(Some(Samples {
                profiler,
                count: 0,
                last: Instant::now(),
            })),
        })
    }

    /// Marks the start of a call: its first sample weighs the time since then.
    pub(super) fn begin(&self) {
        if let Some(samples) = self.samples.lock().ok().as_mut().and_then(|s| s.as_mut()) {
            samples.last = Instant::now();
        }
    }

    /// Records the guest's stack now, weighted by the time since the last sample.
    pub(super) fn sample(&self, store: impl AsContext) {
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        if let Some(s) = samples.as_mut() {
            let now = Instant::now();
            s.profiler
                .sample(store, now.saturating_duration_since(s.last));
            s.count += 1;
            s.last = now;
        }
    }

    /// Writes the profile (Firefox profiler's processed profile, JSON) to `out` and returns how
    /// many samples it holds. It is written once: later samples are dropped.
    pub(super) fn finish(&self, out: &mut dyn std::io::Write) -> wasmtime::Result<u64> {
        let samples = self
            .samples
            .lock()
            .map_err(|_| wasmtime::Error::msg("the profile's lock is poisoned"))?
            .take()
            .ok_or_else(|| wasmtime::Error::msg("this plugin's profile was already written"))?;
        samples.profiler.finish(out)?;
        Ok(samples.count)
    }
}

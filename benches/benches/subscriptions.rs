//! One request naming many resources, handled by a stream's protocol state with no network in
//! between, at 10,000, 25,000 and 50,000 names: a Delta reconnect (`initial_resource_versions`
//! and a subscribe of the same names), a SotW reconnect naming every resource, and a SotW
//! request that adds as many names that do not exist. The ratio of 50,000 names to 10,000 is
//! what matters: 5 for linear work, 25 for quadratic (the Delta reconnect took 5.6 s at 50,000
//! when its diff was quadratic).

use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion};
use nebucloud_xds::xds::bench::{ManyNames, PreparedRequest};
use nx_bench::criterion_ratios::{criterion_dir, human, report, Ratio};

const SIZES: [usize; 3] = [10_000, 25_000, 50_000];

type Prepare = fn(&ManyNames) -> PreparedRequest;

const CASES: [(&str, &str, Prepare); 3] = [
    (
        "Delta reconnect: subscribe + initial_resource_versions",
        "delta_reconnect",
        ManyNames::delta_reconnect,
    ),
    (
        "SotW reconnect: every name, at the version held",
        "sotw_reconnect",
        ManyNames::sotw_reconnect,
    ),
    (
        "SotW: as many names again, none of which exists",
        "sotw_add_absent",
        ManyNames::sotw_add_absent,
    ),
];

fn requests(c: &mut Criterion) {
    let many: Vec<(usize, ManyNames)> = SIZES.iter().map(|n| (*n, ManyNames::new(*n))).collect();
    for (_, group, prepare) in CASES {
        let mut g = c.benchmark_group(group);
        g.sample_size(10);
        for (n, many) in &many {
            g.bench_function(n.to_string(), |b| {
                b.iter_batched_ref(
                    || prepare(many),
                    |request| request.handle(),
                    BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    requests(&mut c);
    c.final_summary();
    let (small, large) = (SIZES[0].to_string(), SIZES[2].to_string());
    let rows: Vec<Ratio> = CASES
        .iter()
        .filter_map(|(name, group, _)| Ratio::of(name, group, (&large, &small), since))
        .collect();
    let mid: Vec<String> = CASES
        .iter()
        .filter_map(|(_, group, _)| {
            let ns = nx_bench::criterion_ratios::estimate_ns(group, "25000", since)?;
            Some(format!("{group} {}", human(ns)))
        })
        .collect();
    let notes = format!(
        "- One request each, on a fresh stream whose group holds the named endpoints; \
         building the request and the stream is not timed.\n\
         - 25,000 names: {}.\n\
         - Linear work gives a ratio of 5; the quadratic steps these replace gave 25 or more.",
        if mid.is_empty() {
            "not run".to_owned()
        } else {
            mid.join(", ")
        }
    );
    report(
        "One request of many names: 50,000 against 10,000",
        "subscriptions",
        ["50,000 names", "10,000 names", "ratio"],
        &rows,
        &notes,
    );
}

//! Cache operations, ours and the seed's side by side in one run: the five rows of the seed's
//! published table (set snapshot, get hit, get miss, create watch, 90/10 mixed), plus a set
//! whose content changes (ours skips a set with identical content; the seed cannot tell).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use nebucloud_xds::{Cache, Resource, ResourceSet};
use nebucloud_xds_proto::type_url;
use nx_bench::criterion_ratios::{criterion_dir, report, Ratio};
use nx_bench::fixtures::SeedResource;
use nx_bench::seed::cache::{Cache as _, ShardedCache, Snapshot};
use nx_bench::seed::core::{NodeHash, TypeUrl};

/// Three types, one small resource each: the seed's bench snapshot has three (empty) types,
/// and a set of ours cannot hold an empty type.
fn triples(tag: u64) -> [(&'static str, &'static str, Vec<u8>); 3] {
    let body = |b: u8| [&[b][..], &tag.to_le_bytes()].concat();
    [
        (type_url::CLUSTER, "c", body(1)),
        (type_url::ENDPOINT, "c", body(2)),
        (type_url::LISTENER, "l", body(3)),
    ]
}

fn ours_set(tag: u64) -> ResourceSet {
    ResourceSet::new(
        triples(tag)
            .into_iter()
            .map(|(t, n, b)| Resource::new(t, n, b)),
    )
    .unwrap_or_default()
}

fn seed_snap(tag: u64) -> Snapshot {
    triples(tag)
        .into_iter()
        .fold(
            Snapshot::builder().version(format!("v{tag}")),
            |b, (t, n, body)| b.resources(TypeUrl::new(t), vec![SeedResource::boxed(t, n, body)]),
        )
        .build()
}

fn cache_ops(c: &mut Criterion) {
    let node = "node-0";
    let hash = NodeHash::from_id(node);

    let mut g = c.benchmark_group("set_snapshot");
    let (ours, set) = (Cache::new(), Arc::new(ours_set(0)));
    g.bench_function("ours", |b| {
        b.iter(|| ours.set_shared(node, Arc::clone(&set)))
    });
    let (theirs, snap) = (ShardedCache::new(), seed_snap(0));
    g.bench_function("seed", |b| {
        b.iter(|| theirs.set_snapshot(hash, snap.clone()))
    });
    g.finish();

    let mut g = c.benchmark_group("set_changed");
    let sets = [Arc::new(ours_set(1)), Arc::new(ours_set(2))];
    let mut i = 0usize;
    g.bench_function("ours", |b| {
        b.iter(|| {
            i += 1;
            ours.set_shared(node, Arc::clone(&sets[i % 2]))
        })
    });
    let snaps = [seed_snap(1), seed_snap(2)];
    g.bench_function("seed", |b| {
        b.iter(|| {
            i += 1;
            theirs.set_snapshot(hash, snaps[i % 2].clone())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("get_hit");
    g.bench_function("ours", |b| b.iter(|| black_box(ours.get(black_box(node)))));
    g.bench_function("seed", |b| {
        b.iter(|| black_box(theirs.get_snapshot(black_box(hash))))
    });
    g.finish();

    let mut g = c.benchmark_group("get_miss");
    let (empty, empty_seed) = (Cache::new(), ShardedCache::new());
    g.bench_function("ours", |b| b.iter(|| black_box(empty.get(black_box(node)))));
    g.bench_function("seed", |b| {
        b.iter(|| black_box(empty_seed.get_snapshot(black_box(hash))))
    });
    g.finish();

    let mut g = c.benchmark_group("create_watch");
    g.bench_function("ours", |b| {
        b.iter(|| black_box(ours.watch(black_box(node))))
    });
    // As in the seed's own bench: a dropped `Watch` stays registered in its manager.
    let watches = ShardedCache::new();
    g.bench_function("seed", |b| {
        b.iter(|| black_box(watches.create_watch(black_box(hash))))
    });
    g.finish();

    // The seed's mixed workload: 100 nodes, every tenth operation a set of a new snapshot.
    let mut g = c.benchmark_group("mixed_90_10");
    let names: Vec<String> = (0..100).map(|i| format!("node-{i}")).collect();
    let hashes: Vec<NodeHash> = names.iter().map(|n| NodeHash::from_id(n)).collect();
    let mixed = Cache::new();
    names.iter().for_each(|n| {
        mixed.set(n, ours_set(0));
    });
    let mut counter = 0u64;
    g.bench_function("ours", |b| {
        b.iter(|| {
            counter += 1;
            let n = &names[(counter % 100) as usize];
            if counter.is_multiple_of(10) {
                black_box(mixed.set(n, ours_set(counter)));
            } else {
                black_box(mixed.get(n));
            }
        })
    });
    let mixed_seed = ShardedCache::new();
    hashes
        .iter()
        .for_each(|h| mixed_seed.set_snapshot(*h, seed_snap(0)));
    g.bench_function("seed", |b| {
        b.iter(|| {
            counter += 1;
            let h = hashes[(counter % 100) as usize];
            if counter.is_multiple_of(10) {
                mixed_seed.set_snapshot(h, seed_snap(counter));
            } else {
                black_box(mixed_seed.get_snapshot(h));
            }
        })
    });
    g.finish();
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    cache_ops(&mut c);
    c.final_summary();
    // The seed's table (MILESTONES.md, "Benchmark Results", 1 node), for reference.
    let rows: Vec<Ratio> = [
        ("set snapshot (same content)", "set_snapshot", Some(186.0)),
        ("set snapshot (content changes)", "set_changed", None),
        ("get (hit)", "get_hit", Some(11.7)),
        ("get (miss)", "get_miss", Some(8.9)),
        ("create watch", "create_watch", Some(70.0)),
        (
            "mixed 90% get / 10% set, 100 nodes",
            "mixed_90_10",
            Some(44.0),
        ),
    ]
    .into_iter()
    .filter_map(|(name, group, published)| {
        Ratio::of(name, group, ("ours", "seed"), since).map(|r| Ratio {
            published_ns: published,
            ..r
        })
    })
    .collect();
    // The target compares with the seed measured here: its published times are another machine's.
    let (under, over): (Vec<&Ratio>, Vec<&Ratio>) = rows.iter().partition(|r| r.ratio <= 1.05);
    let names = |v: &[&Ratio]| {
        v.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let notes = format!(
        "- Target: at or under the seed (same run, within 5%): met for {}; missed for {}.\n\
         - Ours keys groups by name (`&str`); the seed keys snapshots by a pre-hashed node id. \
         A set of ours with the content it already has publishes nothing; a set of ours that \
         changes builds the set's content hashes, which the mixed row pays on every tenth \
         operation.",
        if under.is_empty() {
            "none".to_owned()
        } else {
            names(&under)
        },
        if over.is_empty() {
            "none".to_owned()
        } else {
            names(&over)
        },
    );
    report(
        "Cache operations, ours against the seed (nebucloud-xds 0.1.0) in the same run",
        "cache",
        ["ours", "seed", "ours/seed"],
        &rows,
        &notes,
    );
}

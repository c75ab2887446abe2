//! One encoding per selection of a set, shared by every stream that sends it (`wire.rs`).

use std::sync::Arc;

use nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest;
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};

use super::super::context::{Scope, StreamContext, StreamLimits, StreamProtocol};
use super::super::sotw::SotwStream;
use super::super::test_support::{res, res_ttl};
use super::super::warming::tests::eds_cluster;
use super::super::wire::SotwResponse;
use crate::cache::ResourceSet;

fn set(version: &str) -> Arc<ResourceSet> {
    Arc::new(
        ResourceSet::new([
            eds_cluster("web", "", version),
            eds_cluster("db", "", "v1"),
            res_ttl(ENDPOINT, "web", "web-eps", 30),
            res(ENDPOINT, "db", "db-eps"),
        ])
        .unwrap(),
    )
}

fn stream(set: &Arc<ResourceSet>, ttl: bool) -> SotwStream {
    let mut ctx = StreamContext::detached(Scope::Aggregated, StreamLimits::default());
    (ctx.ttl, ctx.resource_in_sotw) = (ttl, ttl);
    SotwStream::new(ctx, Some(Arc::clone(set)))
}

fn ask(s: &mut SotwStream, type_url: &str, names: &[&str]) -> SotwResponse {
    let request = DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        ..DiscoveryRequest::default()
    };
    let mut out = s.on_request(request).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn same_body(a: &SotwResponse, b: &SotwResponse) -> bool {
    a.body().as_ptr() == b.body().as_ptr()
}

#[test]
fn streams_of_one_set_share_the_encoding_of_a_selection_and_differ_in_the_nonce_only() {
    let v1 = set("v1");
    let (mut a, mut b) = (stream(&v1, false), stream(&v1, false));
    let (ca, cb) = (ask(&mut a, CLUSTER, &[]), ask(&mut b, CLUSTER, &[]));
    assert!(same_body(&ca, &cb), "one encoding of the clusters");
    let (ea, eb) = (
        ask(&mut a, ENDPOINT, &["web", "db"]),
        ask(&mut b, ENDPOINT, &["db", "web"]),
    );
    assert!(
        same_body(&ea, &eb),
        "one encoding of the same names, asked in any order"
    );
    assert!(!same_body(&ca, &ea));
    // Each is its stream's message: the shared body with its own nonce.
    let (ma, mb) = (ca.message(), cb.message());
    assert_eq!(
        (ma.version_info, ma.resources),
        (mb.version_info, mb.resources)
    );
    assert_eq!((ma.nonce, mb.nonce), (ca.nonce.clone(), cb.nonce.clone()));

    // Another selection is another encoding; so is the same one wrapped for TTLs.
    let mut c = stream(&v1, false);
    assert!(!same_body(&ask(&mut c, ENDPOINT, &["db"]), &ea));
    let mut d = stream(&v1, true);
    assert!(!same_body(&ask(&mut d, ENDPOINT, &["web", "db"]), &ea));

    // A new set: the streams share its encoding, not the old one.
    let v2 = set("v2");
    let (ua, ub) = (a.on_update(Some(Arc::clone(&v2))), b.on_update(Some(v2)));
    assert_eq!(
        (ua.len(), ub.len()),
        (2, 2),
        "the clusters, and the endpoints that warm"
    );
    assert!(same_body(&ua[0], &ub[0]) && !same_body(&ua[0], &ca));
    assert!(same_body(&ua[1], &ub[1]));
    assert_eq!(ua[0].message().resources.len(), 2);
}

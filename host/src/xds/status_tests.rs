//! The node registry's tests: what operators read back of what streams recorded.

use super::super::nack::unix_now;
use super::*;

#[test]
fn a_node_lives_while_a_stream_is_open() {
    let reg = Arc::new(NodeRegistry::default());
    let a = reg.open(
        &Node {
            id: "n1".into(),
            ..Node::default()
        },
        "g",
    );
    let b = reg.open(
        &Node {
            id: "n1".into(),
            ..Node::default()
        },
        "g",
    );
    a.sent("t.Cluster", "v1", "1");
    assert_eq!(reg.get("n1").map(|n| n.streams), Some(2));
    drop(a);
    assert_eq!(
        reg.get("n1").map(|n| n.types["t.Cluster"].responses),
        Some(1)
    );
    drop(b);
    assert!(reg.get("n1").is_none());
    assert!(reg.is_empty());
}

#[test]
fn acked_version_outlives_the_next_send_until_it_is_acked() {
    let reg = Arc::new(NodeRegistry::default());
    let s = reg.open(
        &Node {
            id: "n1".into(),
            ..Node::default()
        },
        "g",
    );
    let t = |reg: &NodeRegistry| {
        let n = reg.get("n1").unwrap_or_default();
        n.types.get("t").cloned().unwrap_or_default()
    };
    s.sent("t", "v1", "1");
    s.acked("t", "v1");
    s.sent("t", "v2", "2");
    let sent_v2 = t(&reg);
    assert_eq!(sent_v2.sent_version.as_deref(), Some("v2"));
    assert_eq!(sent_v2.acked_version.as_deref(), Some("v1"));
    s.acked("t", "v2");
    assert_eq!(t(&reg).acked_version.as_deref(), Some("v2"));
    // A client may ACK with a version it was not last sent (an older response's).
    s.acked("t", "v0");
    s.sent("t", "v2", "3");
    let resent = t(&reg);
    assert_eq!(resent.acked_version.as_deref(), Some("v0"));
    assert_eq!(resent.sent_nonce.as_deref(), Some("3"));
    assert_eq!((resent.responses, resent.acks), (3, 3));
}

#[test]
fn nonces_read_back_as_sent() {
    for nonce in [
        "0",
        "1",
        "42",
        "007",
        "",
        "abc",
        "18446744073709551616",
        "+1",
    ] {
        assert_eq!(Nonce::of(nonce).to_string(), nonce);
    }
    assert_eq!(Nonce::of("42"), Nonce::Minted(42));
}

#[test]
fn a_type_record_stays_small() {
    // Held per node and type for every connected node: a field that grows it should be
    // boxed or shared (see `NodeRegistry`).
    assert!(std::mem::size_of::<TypeRecord>() <= 128);
    assert!(std::mem::size_of::<NodeRecord>() <= 80);
}

#[test]
fn nack_is_recorded_and_not_counted_as_configured() {
    let reg = Arc::new(NodeRegistry::default());
    let mut s = reg.open(
        &Node {
            id: "n1".into(),
            ..Node::default()
        },
        "g",
    );
    s.sent("t", "v1", "1");
    s.acked("t", "v1");
    s.sent("t", "v2", "2");
    s.nacked(
        "t",
        Nack {
            nonce: "2".into(),
            rejected_version: Some("v2".into()),
            kept_version: "v1".into(),
            code: 3,
            message: "bad cluster".into(),
            at_unix_secs: unix_now(),
        },
    );
    let t = reg
        .get("n1")
        .map(|n| n.types["t"].clone())
        .unwrap_or_default();
    assert_eq!(t.state, Some(DeliveryState::Nacked));
    assert_eq!(t.acked_version.as_deref(), Some("v1"));
    assert_eq!(
        t.last_nack.map(|n| n.message),
        Some("bad cluster".to_owned())
    );
}

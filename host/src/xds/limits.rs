//! Bounds on what a client's data can make the server hold or log: truncated client strings,
//! the per-stream count of name bytes held, and the per-stream NACK log rate.

use std::time::Instant;

/// The most bytes of a NACK's `error_detail.message` that are stored or logged.
pub(crate) const MAX_NACK_MESSAGE_BYTES: usize = 4096;
/// The most bytes of a version string from a client that are stored.
pub(crate) const MAX_CLIENT_VERSION_BYTES: usize = 256;
/// The most bytes of a type URL from a client that a log line or an error message quotes.
pub(crate) const QUOTED_TYPE_URL_BYTES: usize = 128;
/// The most bytes of a node id that a log line quotes before the node is admitted.
pub(crate) const LOGGED_NODE_ID_BYTES: usize = 128;

/// `s` if it fits in `max` bytes, else its first `max` bytes (cut at a character boundary)
/// followed by a marker that gives the original length.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let cut = s.floor_char_boundary(max);
    format!("{}… [truncated, {} bytes]", &s[..cut], s.len())
}

/// The bytes of resource names (and type URLs, and announced versions) one stream makes the
/// server hold, kept as a running count and mirrored in the `xds_name_bytes_held` gauge
/// (summed over all streams) until the stream ends.
#[derive(Debug, Default)]
pub(crate) struct NameBytes(usize);

impl NameBytes {
    /// The bytes held now.
    pub(crate) fn get(&self) -> usize {
        self.0
    }

    /// Records that a part of the stream's state went from `before` to `after` bytes.
    pub(crate) fn change(&mut self, before: usize, after: usize) {
        if after >= before {
            let grown = after - before;
            self.0 = self.0.saturating_add(grown);
            metrics::gauge!("xds_name_bytes_held").increment(grown as f64);
        } else {
            let shrunk = (before - after).min(self.0);
            self.0 -= shrunk;
            metrics::gauge!("xds_name_bytes_held").decrement(shrunk as f64);
        }
    }
}

impl Drop for NameBytes {
    fn drop(&mut self) {
        if self.0 > 0 {
            metrics::gauge!("xds_name_bytes_held").decrement(self.0 as f64);
        }
    }
}

/// A token bucket for one stream's NACK log lines: a burst of [`NackLog::BURST`], then one
/// line per second. The lines it drops are counted, and the next line logged says how many.
#[derive(Debug)]
pub(crate) struct NackLog {
    tokens: f64,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for NackLog {
    fn default() -> Self {
        NackLog {
            tokens: Self::BURST,
            last: None,
            suppressed: 0,
        }
    }
}

impl NackLog {
    /// How many lines may be logged at once.
    pub(crate) const BURST: f64 = 5.0;
    /// How many lines a second may be logged after the burst.
    pub(crate) const PER_SECOND: f64 = 1.0;

    /// Whether a NACK arriving at `now` may be logged: `Some(n)` if so, with the number of
    /// lines dropped since the last one logged; `None` (and one more dropped) if not.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * Self::PER_SECOND;
            self.tokens = (self.tokens + refill).min(Self::BURST);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            metrics::counter!("xds_nack_logs_suppressed_total").increment(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_char_boundary_and_marked() {
        assert_eq!(truncated("short", 8), "short");
        let long = "é".repeat(3000); // 6000 bytes
        let t = truncated(&long, MAX_NACK_MESSAGE_BYTES);
        assert!(t.starts_with(&"é".repeat(2048)));
        assert!(t.ends_with("… [truncated, 6000 bytes]"), "{}", &t[4000..]);
        assert!(t.len() < MAX_NACK_MESSAGE_BYTES + 32);
        let t = truncated("aé", 2);
        assert_eq!(t, "a… [truncated, 3 bytes]");
    }

    #[test]
    fn nack_lines_are_limited_to_a_burst_then_one_a_second_and_report_drops() {
        let mut log = NackLog::default();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| log.admit(t0).is_some()).count();
        assert_eq!(admitted, 5);
        assert_eq!(log.admit(t0 + Duration::from_millis(500)), None);
        // One second after the burst: one line, which says 96 were dropped.
        assert_eq!(log.admit(t0 + Duration::from_millis(1100)), Some(96));
        assert_eq!(log.admit(t0 + Duration::from_millis(1200)), None);
    }

    #[test]
    fn name_bytes_follow_changes() {
        let mut b = NameBytes::default();
        b.change(0, 100);
        b.change(100, 40);
        b.change(7, 7);
        assert_eq!(b.get(), 40);
        b.change(1000, 0);
        assert_eq!(b.get(), 0);
    }

    /// Stream-level tests: each limit refuses what it bounds, naming itself.
    mod streams {
        use std::sync::Arc;

        use nebucloud_xds_proto::envoy::config::core::v3::Node;
        use nebucloud_xds_proto::envoy::service::discovery::v3::{
            DeltaDiscoveryRequest, DiscoveryRequest,
        };
        use nebucloud_xds_proto::google::protobuf::{value::Kind, Struct, Value};
        use nebucloud_xds_proto::google::rpc::Status as RpcStatus;
        use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};
        use tonic::{Code, Status};

        use crate::cache::{Resource, ResourceSet};
        use crate::xds::context::{check_node, Scope, StreamContext, StreamProtocol};
        use crate::xds::delta::DeltaStream;
        use crate::xds::limits::{MAX_CLIENT_VERSION_BYTES, MAX_NACK_MESSAGE_BYTES};
        use crate::xds::sotw::SotwStream;
        use crate::xds::status::NodeRegistry;
        use crate::xds::StreamLimits;

        const MADE_UP: &str = "type.googleapis.com/example.v1.Thing";

        fn ctx(limits: StreamLimits) -> StreamContext {
            StreamContext::detached(Scope::Aggregated, limits)
        }

        fn set(resources: &[(&str, &str)]) -> Option<Arc<ResourceSet>> {
            let r = resources
                .iter()
                .map(|(t, n)| Resource::new(*t, *n, n.as_bytes().to_vec()));
            Some(Arc::new(ResourceSet::new(r).unwrap()))
        }

        fn sotw(type_url: &str, names: &[String]) -> DiscoveryRequest {
            DiscoveryRequest {
                type_url: type_url.to_owned(),
                resource_names: names.to_vec(),
                ..DiscoveryRequest::default()
            }
        }

        fn delta(
            type_url: &str,
            subscribe: &[String],
            unsubscribe: &[String],
        ) -> DeltaDiscoveryRequest {
            DeltaDiscoveryRequest {
                type_url: type_url.to_owned(),
                resource_names_subscribe: subscribe.to_vec(),
                resource_names_unsubscribe: unsubscribe.to_vec(),
                ..DeltaDiscoveryRequest::default()
            }
        }

        fn refused<T: std::fmt::Debug>(r: Result<T, Status>, limit: &str) {
            let status = r.unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains(limit), "{}", status.message());
        }

        #[test]
        fn a_name_over_max_name_bytes_ends_the_stream_naming_the_limit() {
            let long = vec!["n".repeat(4097)];
            let limits = StreamLimits::default();
            refused(
                SotwStream::new(ctx(limits), None).on_request(sotw(ENDPOINT, &long)),
                "max_name_bytes",
            );
            let mut d = DeltaStream::new(ctx(limits), None);
            refused(d.on_request(delta(ENDPOINT, &long, &[])), "max_name_bytes");
            let mut announced = delta(ENDPOINT, &[], &[]);
            announced
                .initial_resource_versions
                .insert("a".into(), "v".repeat(4097));
            refused(
                DeltaStream::new(ctx(limits), None).on_request(announced),
                "max_name_bytes",
            );
            let long_type = format!("type.googleapis.com/{}", "t".repeat(4096));
            refused(
                SotwStream::new(ctx(limits), None).on_request(sotw(&long_type, &[])),
                "max_name_bytes",
            );
            let fits = vec!["n".repeat(4096)];
            assert!(SotwStream::new(ctx(limits), None)
                .on_request(sotw(ENDPOINT, &fits))
                .is_ok());
        }

        #[test]
        fn name_bytes_accumulate_across_requests_and_types_up_to_max_names_bytes() {
            let limits = StreamLimits {
                max_names_bytes: 10_000,
                ..StreamLimits::default()
            };
            let name = |i: usize| vec![format!("{i:04}{}", "x".repeat(996))];
            let mut d = DeltaStream::new(ctx(limits), None);
            let mut held = 0;
            for i in 0.. {
                match d.on_request(delta(ENDPOINT, &name(i), &[])) {
                    Ok(_) => held = d.name_bytes(),
                    Err(status) => {
                        refused::<()>(Err(status), "max_names_bytes");
                        break;
                    }
                }
            }
            assert_eq!(held, ENDPOINT.len() + 9 * 1000);
            // SotW: two types share one budget.
            let mut s = SotwStream::new(ctx(limits), None);
            let names = |from: usize| (from..from + 4).flat_map(name).collect::<Vec<_>>();
            assert!(s.on_request(sotw(ENDPOINT, &names(0))).is_ok());
            assert_eq!(s.name_bytes(), ENDPOINT.len() + 4000);
            refused(
                s.on_request(sotw(CLUSTER, &[names(4), names(8)].concat())),
                "max_names_bytes",
            );
        }

        #[test]
        fn unsubscribing_frees_name_bytes() {
            let limits = StreamLimits {
                max_names_bytes: 8_000,
                ..StreamLimits::default()
            };
            let name = |i: usize| format!("{i:04}{}", "x".repeat(2996));
            let mut d = DeltaStream::new(ctx(limits), None);
            let mut s = SotwStream::new(ctx(limits), None);
            let mut previous = Vec::new();
            for i in 0..20 {
                let now = vec![name(i)];
                assert!(d.on_request(delta(ENDPOINT, &now, &previous)).is_ok());
                assert!(s.on_request(sotw(ENDPOINT, &now)).is_ok());
                previous = now;
            }
            assert_eq!(d.name_bytes(), ENDPOINT.len() + 3000);
            assert_eq!(s.name_bytes(), ENDPOINT.len() + 3000);
        }

        #[test]
        fn announced_versions_count_until_reconciled_with_the_set() {
            let mut d = DeltaStream::new(ctx(StreamLimits::default()), None);
            let mut first = delta(ENDPOINT, &["a".into()], &[]);
            first.initial_resource_versions =
                [("a".into(), "v1".into()), ("gone".into(), "v2".into())].into();
            assert!(d.on_request(first).unwrap().is_empty());
            // Names retained only while subscribed: "gone" is not, so it is dropped at once.
            assert_eq!(
                d.name_bytes(),
                ENDPOINT.len() + "a".len() + "a".len() + "v1".len()
            );
            let out = d.on_update(set(&[(ENDPOINT, "a")]));
            assert_eq!(out.len(), 1);
            assert_eq!(d.name_bytes(), ENDPOINT.len() + "a".len());
        }

        #[test]
        fn a_node_over_max_node_bytes_is_refused_naming_the_limit() {
            let limits = StreamLimits::default();
            let mut node = Node {
                id: "n1".into(),
                ..Node::default()
            };
            assert!(check_node(&limits, &node).is_ok());
            let big = Value {
                kind: Some(Kind::StringValue("m".repeat(64 << 10))),
            };
            node.metadata = Some(Struct {
                fields: [("k".to_owned(), big)].into(),
            });
            refused(check_node(&limits, &node), "max_node_bytes");
        }

        #[test]
        fn nack_details_and_versions_are_stored_bounded() {
            let registry = Arc::new(NodeRegistry::default());
            let node = Node {
                id: "n1".into(),
                ..Node::default()
            };
            let record = registry.open(&node, "g");
            let ctx = StreamContext::new(&node, Scope::Aggregated, StreamLimits::default(), record);
            let mut s = SotwStream::new(ctx, set(&[(CLUSTER, "c")]));
            let r = s.on_request(sotw(CLUSTER, &[])).unwrap().remove(0);
            let nack = DiscoveryRequest {
                version_info: "v".repeat(1 << 20),
                response_nonce: r.nonce.clone(),
                error_detail: Some(RpcStatus {
                    code: 3,
                    message: "e".repeat(1 << 20),
                    details: vec![],
                }),
                ..sotw(CLUSTER, &[])
            };
            assert!(s.on_request(nack).unwrap().is_empty());
            let stored = registry.get("n1").unwrap().types[CLUSTER]
                .last_nack
                .clone()
                .unwrap();
            assert!(stored.message.len() <= MAX_NACK_MESSAGE_BYTES + 40);
            assert!(stored
                .message
                .ends_with(&format!("[truncated, {} bytes]", 1 << 20)));
            assert!(stored.kept_version.len() <= MAX_CLIENT_VERSION_BYTES + 40);
            assert_eq!(stored.nonce, r.nonce);
        }

        #[test]
        fn types_the_group_does_not_serve_are_not_answered_and_few_are_remembered() {
            let limits = StreamLimits {
                max_types: 8,
                ..StreamLimits::default()
            };
            let mut s = SotwStream::new(ctx(limits), set(&[(CLUSTER, "c")]));
            let mut d = DeltaStream::new(ctx(limits), set(&[(CLUSTER, "c")]));
            for t in 0..64 {
                let made_up = format!("x/{t}{}", "y".repeat(1024));
                assert!(s.on_request(sotw(&made_up, &[])).unwrap().is_empty());
                assert!(d.on_request(delta(&made_up, &[], &[])).unwrap().is_empty());
            }
            // Four are remembered, the rest dropped: a type served is still within max_types.
            assert_eq!(s.on_request(sotw(CLUSTER, &[])).unwrap().len(), 1);
            assert_eq!(d.on_request(delta(CLUSTER, &[], &[])).unwrap().len(), 1);
            // A remembered type is answered once the group has resources of it.
            let mut s = SotwStream::new(ctx(limits), set(&[]));
            assert!(s.on_request(sotw(MADE_UP, &[])).unwrap().is_empty());
            let out = s.on_update(set(&[(MADE_UP, "t")]));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].message().type_url, MADE_UP);
        }
    }
}

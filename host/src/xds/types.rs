//! The xDS resource types the server knows: their order on an aggregated stream and whether a
//! State-of-the-World response for them carries the full set.

use nebucloud_xds_proto::type_url;

/// The order in which an aggregated stream pushes types so that nothing is referenced before
/// it exists (make before break): clusters, their endpoints, listeners, routes, then the rest.
/// Types not listed are pushed after these, in type URL order.
pub(crate) const PUSH_ORDER: &[&str] = &[
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LB_ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
    type_url::SCOPED_ROUTE,
    type_url::VIRTUAL_HOST,
    type_url::SECRET,
    type_url::RUNTIME,
    type_url::EXTENSION_CONFIG,
];

/// The rank of a type in [`PUSH_ORDER`]; unknown types come last.
pub(crate) fn push_rank(type_url: &str) -> usize {
    PUSH_ORDER
        .iter()
        .position(|t| *t == type_url)
        .unwrap_or(PUSH_ORDER.len())
}

/// Whether a SotW response of this type lists every resource the client should hold, so that
/// a missing resource means "deleted" (the xDS spec: Listener, Cluster, and the types whose
/// subscriptions are wildcard-only, scoped routes among them). For the others (endpoints,
/// routes, secrets, …) absence from a response means nothing.
pub(crate) fn is_full_state(type_url: &str) -> bool {
    matches!(
        type_url,
        type_url::LISTENER | type_url::CLUSTER | type_url::SCOPED_ROUTE
    )
}

/// Whether removals of this type must wait until the rest of an update has been pushed:
/// a cluster (and its endpoints) may still be referenced by the listeners and routes that are
/// about to replace the ones using it.
pub(crate) fn removal_deferred(type_url: &str) -> bool {
    matches!(type_url, type_url::CLUSTER | type_url::ENDPOINT)
}

/// A short, stable label for logs: `Cluster`, `Listener`, …
pub(crate) fn short_name(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

/// Whether `type_url` is one of the Envoy v3 xDS types the server knows ([`PUSH_ORDER`]).
pub(crate) fn is_known(type_url: &str) -> bool {
    PUSH_ORDER.contains(&type_url)
}

/// The `type` label of a metric: the short name of a known type, `other` for anything else.
/// Never derived from what a client sent, so a client cannot grow the set of label values.
pub(crate) fn metric_label(type_url: &str) -> &'static str {
    PUSH_ORDER
        .iter()
        .find(|t| **t == type_url)
        .map_or("other", |t| short_name(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_endpoints_listeners_routes_in_that_order() {
        let mut v = vec![
            type_url::ROUTE,
            type_url::LISTENER,
            type_url::ENDPOINT,
            type_url::CLUSTER,
        ];
        v.sort_by_key(|t| push_rank(t));
        assert_eq!(
            v,
            vec![
                type_url::CLUSTER,
                type_url::ENDPOINT,
                type_url::LISTENER,
                type_url::ROUTE
            ]
        );
        assert_eq!(push_rank("type.googleapis.com/x.Unknown"), PUSH_ORDER.len());
    }

    #[test]
    fn only_listeners_clusters_and_scoped_routes_are_full_state() {
        assert!(is_full_state(type_url::LISTENER));
        assert!(is_full_state(type_url::CLUSTER));
        assert!(!is_full_state(type_url::ENDPOINT));
        assert!(!is_full_state(type_url::ROUTE));
        assert_eq!(short_name(type_url::CLUSTER), "Cluster");
    }

    #[test]
    fn metric_labels_are_known_short_names_or_other() {
        assert_eq!(metric_label(type_url::CLUSTER), "Cluster");
        assert_eq!(metric_label(type_url::LB_ENDPOINT), "LbEndpoint");
        assert_eq!(
            metric_label("type.googleapis.com/example.v1.Thing"),
            "other"
        );
        assert_eq!(metric_label(&format!("x/{}", "a".repeat(1024))), "other");
        assert!(is_known(type_url::ROUTE) && !is_known("type.googleapis.com/t.A"));
    }
}

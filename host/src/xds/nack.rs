//! A client's rejection of a response (a NACK), with every string it sent bounded.

use std::time::{SystemTime, UNIX_EPOCH};

use nebucloud_xds_proto::google::rpc::Status as RpcStatus;
use serde::Serialize;

use super::limits::{truncated, MAX_CLIENT_VERSION_BYTES, MAX_NACK_MESSAGE_BYTES};

/// A rejection by a client, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The version we sent in the rejected response, if the nonce was ours.
    pub rejected_version: Option<String>,
    /// The version the client still runs (its `version_info`; empty if none), cut to 256
    /// bytes.
    pub kept_version: String,
    /// The `google.rpc.Status` code of `error_detail`.
    pub code: i32,
    /// The `error_detail` message: the client's reason, cut to 4 KiB (at a character
    /// boundary, marked `… [truncated, N bytes]`).
    pub message: String,
    /// When it arrived, in seconds since the Unix epoch.
    pub at_unix_secs: u64,
}

impl Nack {
    /// The record of a NACK of our response `nonce` (which carried `rejected_version`), with
    /// every string the client sent bounded.
    pub(crate) fn from_client(
        nonce: &str,
        rejected_version: Option<String>,
        kept_version: &str,
        error: &RpcStatus,
    ) -> Self {
        Nack {
            nonce: nonce.to_owned(),
            rejected_version,
            kept_version: truncated(kept_version, MAX_CLIENT_VERSION_BYTES),
            code: error.code,
            message: truncated(&error.message, MAX_NACK_MESSAGE_BYTES),
            at_unix_secs: unix_now(),
        }
    }
}

/// Seconds since the Unix epoch, for records.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

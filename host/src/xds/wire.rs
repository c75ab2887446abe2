//! SotW responses as they go on the wire. What a response says besides its nonce (version,
//! resources, type) is the same for every stream that sends that selection of a set, so it is
//! encoded once and kept with the set (`cache::Encodings`); each stream adds its nonce. The
//! bytes are those prost writes for the whole message: fields 1, 2 and 4, then 5.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource as WrappedResource,
};
use nebucloud_xds_proto::google::protobuf::Any;
use nebucloud_xds_proto::type_url::RESOURCE_WRAPPER;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use crate::cache::{EncodingKey, Resource, ResourceSet};

use super::callbacks::{CallbackResponse, Callbacks, StreamId, StreamResponse};
use super::context::pb_duration;

/// `DiscoveryResponse.nonce`'s field number.
const NONCE_FIELD: u32 = 5;

/// One SotW response of one stream.
#[derive(Debug, Clone)]
pub(crate) struct SotwResponse {
    pub(crate) version_info: String,
    pub(crate) nonce: String,
    /// How many resources it carries.
    pub(crate) resource_count: usize,
    /// Fields 1 (`version_info`), 2 (`resources`) and 4 (`type_url`), encoded; shared.
    body: Bytes,
}

impl SotwResponse {
    /// A response of `body` (made by [`body`] of the same version and `resource_count`
    /// resources) with `nonce`.
    pub(crate) fn new(
        (version_info, resource_count): (&str, usize),
        nonce: String,
        body: Bytes,
    ) -> Self {
        SotwResponse {
            version_info: version_info.to_owned(),
            nonce,
            resource_count,
            body,
        }
    }

    /// The whole message, as a client decodes it.
    pub(crate) fn message(&self) -> DiscoveryResponse {
        // The body is ours, encoded by prost: it decodes (an empty message if it ever did not).
        let mut message = DiscoveryResponse::decode(self.body.clone()).unwrap_or_default();
        message.nonce.clone_from(&self.nonce);
        message
    }

    /// The shared part of the encoding.
    #[cfg(test)]
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// The whole message, checked to be what the codec writes for it: prost's bytes.
    #[cfg(test)]
    pub(crate) fn checked_message(&self) -> DiscoveryResponse {
        let message = self.message();
        let mut wire = Vec::new();
        self.encode_to(&mut wire);
        assert_eq!(wire, message.encode_to_vec(), "the wire bytes are prost's");
        message
    }

    /// Writes it: the shared body, then the nonce.
    fn encode_to(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.body);
        if !self.nonce.is_empty() {
            prost::encoding::string::encode(NONCE_FIELD, &self.nonce, buf);
        }
    }
}

/// The body of a response of `resources` (a selection of `set`) at `version`: the set's own
/// encoding of it, made now if no stream made it before. `wrap`: resources with a TTL go in a
/// `Resource` wrapper; `heartbeat`: without their bodies.
pub(crate) fn shared_body(
    set: Option<&ResourceSet>,
    (type_url, version): (&str, &str),
    resources: &[Arc<Resource>],
    wrap: bool,
    heartbeat: bool,
) -> Bytes {
    let encode = || body(version, type_url, anys(resources, wrap, heartbeat));
    let Some(set) = set else {
        return encode();
    };
    let key = EncodingKey {
        type_url,
        version,
        variant: u8::from(wrap) | u8::from(heartbeat) << 1,
    };
    set.encodings().get_or_make(key, resources, encode).0
}

/// The resources as a response carries them: each in an `Any`, or, with `wrap`, those with a
/// TTL in a `Resource` wrapper that gives it (without the resource for a heartbeat).
fn anys(resources: &[Arc<Resource>], wrap: bool, heartbeat: bool) -> Vec<Any> {
    resources
        .iter()
        .map(|r| match r.ttl() {
            Some(ttl) if wrap => {
                let wrapped = WrappedResource {
                    name: r.name().to_owned(),
                    version: r.version().to_owned(),
                    resource: (!heartbeat).then(|| r.to_any()),
                    ttl: Some(pb_duration(ttl)),
                    ..WrappedResource::default()
                };
                Any {
                    type_url: RESOURCE_WRAPPER.to_owned(),
                    value: wrapped.encode_to_vec().into(),
                }
            }
            _ => r.to_any(),
        })
        .collect()
}

/// The body of a response: what it says besides its nonce.
fn body(version_info: &str, type_url: &str, resources: Vec<Any>) -> Bytes {
    DiscoveryResponse {
        version_info: version_info.to_owned(),
        resources,
        type_url: type_url.to_owned(),
        ..DiscoveryResponse::default()
    }
    .encode_to_vec()
    .into()
}

impl CallbackResponse for SotwResponse {
    fn report(&self, callbacks: &dyn Callbacks, stream: StreamId) {
        callbacks.on_stream_response(stream, StreamResponse::Sotw(&self.message()));
    }
}

/// The SotW streams' codec: requests decoded by prost, responses written as they are (body
/// and nonce), with the small buffers of every xDS stream.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SotwCodec;

impl Codec for SotwCodec {
    type Encode = SotwResponse;
    type Decode = DiscoveryRequest;
    type Encoder = SotwEncoder;
    type Decoder = ProstDecoder<DiscoveryRequest>;

    fn encoder(&mut self) -> SotwEncoder {
        SotwEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<DiscoveryRequest> {
        ProstDecoder::new(nebucloud_xds_proto::codec::settings())
    }
}

/// Writes a [`SotwResponse`].
#[derive(Debug)]
pub(crate) struct SotwEncoder;

impl Encoder for SotwEncoder {
    type Item = SotwResponse;
    type Error = Status;

    fn encode(&mut self, item: SotwResponse, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_to(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        nebucloud_xds_proto::codec::settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_the_bytes_prost_writes_for_the_whole_message() {
        let resources = vec![
            Any {
                type_url: "type.googleapis.com/x.A".to_owned(),
                value: Bytes::from_static(b"\x0a\x01a"),
            },
            Any {
                type_url: "type.googleapis.com/x.A".to_owned(),
                value: Bytes::new(),
            },
        ];
        let whole = DiscoveryResponse {
            version_info: "v1".to_owned(),
            resources: resources.clone(),
            type_url: "type.googleapis.com/x.A".to_owned(),
            nonce: "7".to_owned(),
            ..DiscoveryResponse::default()
        };
        let shared = body("v1", "type.googleapis.com/x.A", resources);
        let head = ("v1", 2);
        let response = SotwResponse::new(head, "7".to_owned(), shared);
        let mut wire = Vec::new();
        response.encode_to(&mut wire);
        assert_eq!(wire, whole.encode_to_vec());
        assert_eq!(response.message(), whole);
        // Without resources or a nonce, as prost writes it too.
        let bare = SotwResponse::new(("", 0), String::new(), body("", "t/x", Vec::new()));
        let mut wire = Vec::new();
        bare.encode_to(&mut wire);
        assert_eq!(wire, bare.message().encode_to_vec());
    }
}

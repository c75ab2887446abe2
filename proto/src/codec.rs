//! The gRPC codec every generated service and client uses: prost's, with small per-stream
//! buffers.
//!
//! tonic allocates an encode and a decode buffer for every RPC up front, 8 KiB each by default.
//! An xDS server holds one long-lived stream per connected node (several on ADS-less clients),
//! and xDS requests are a few hundred bytes: the default costs 16 KiB per stream, most of a
//! node's memory on the server. These buffers start at 1 KiB and grow when a message needs it
//! (a large response grows the encode buffer by doubling, as any `BytesMut` does). Every xDS
//! message of the host's tests goes through it, the 100,000-name subscription included; the
//! memory it saves is measured by the load generator (`benches/`).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The initial size of each stream's encode and decode buffer.
pub const STREAM_BUFFER_BYTES: usize = 1024;

/// How many encoded bytes are batched into one write when several responses are ready
/// (tonic's default).
pub const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// prost's codec with [`STREAM_BUFFER_BYTES`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct XdsCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for XdsCodec<T, U> {
    fn default() -> Self {
        XdsCodec(PhantomData)
    }
}

/// The buffer settings of every xDS stream: [`STREAM_BUFFER_BYTES`] buffers, tonic's yield
/// threshold. Public for codecs of the server's own (the host's SotW responses).
pub fn settings() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for XdsCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

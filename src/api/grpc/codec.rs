//! The protobuf codec of every generated service and client: prost, with
//! small first buffers.
//!
//! tonic allocates an encode and a decode buffer for every call up front,
//! 8 KiB each by default: 16 KiB per call whatever its size, so 4,096
//! calls in flight held 64 MiB in buffers alone, and each idle
//! subscription stream 16 KiB. Requests and answers are mostly far
//! smaller; a larger message grows its buffer as it needs.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// First size of a call's encode and decode buffers: most requests and
/// answers fit (a GetState is well under 256 bytes); larger ones grow them.
const BUFFER_BYTES: usize = 256;
/// tonic's default: how much a stream encodes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers (set in `build.rs`).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

//! Snappy *block* format (not the framed/stream format), as remote-write and remote-read require.
//!
//! [`decompress`] reads the varint length header first and refuses a body whose declared
//! decoded length exceeds the caller's limit before allocating anything, so a small hostile body
//! cannot make a receiver allocate gigabytes (a decompression bomb).

use crate::{Error, Result};

/// Compresses `data` in the snappy block format.
pub fn compress(data: &[u8]) -> Result<Vec<u8>> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .map_err(|e| Error::EncodeSnappy(e.to_string()))
}

/// [`compress`] through a scratch buffer kept by the caller: the encoder needs an output buffer
/// of its worst-case size, which a fresh allocation would zero on every call; only the
/// compressed bytes are copied out.
pub fn compress_reusing(data: &[u8], scratch: &mut Vec<u8>) -> Result<Vec<u8>> {
    let max = snap::raw::max_compress_len(data.len());
    if max == 0 && !data.is_empty() {
        return Err(Error::EncodeSnappy(format!(
            "{} bytes is too large",
            data.len()
        )));
    }
    if scratch.len() < max {
        scratch.resize(max, 0);
    }
    let n = snap::raw::Encoder::new()
        .compress(data, scratch)
        .map_err(|e| Error::EncodeSnappy(e.to_string()))?;
    Ok(scratch[..n].to_vec())
}

/// The decoded length a snappy block body declares in its header.
pub fn declared_len(body: &[u8]) -> Result<usize> {
    snap::raw::decompress_len(body).map_err(|e| Error::DecodeSnappy(e.to_string()))
}

/// Decompresses a snappy block body, refusing it if it declares more than `limit` bytes.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>> {
    let declared = declared_len(body)?;
    if declared > limit {
        return Err(Error::DecodedTooLarge {
            declared: declared as u64,
            limit: limit as u64,
        });
    }
    let mut out = vec![0; declared];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| Error::DecodeSnappy(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bomb_is_refused_before_allocation() {
        // A header declaring 4 GiB - 1 and no payload: must be refused by the limit check.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f];
        match decompress(&body, 32 << 20) {
            Err(Error::DecodedTooLarge { declared, limit }) => {
                assert_eq!(declared, 0xffff_ffff);
                assert_eq!(limit, 32 << 20);
            }
            other => panic!("expected DecodedTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn exact_limit_is_accepted() {
        let data = vec![7u8; 1000];
        let body = compress(&data).unwrap();
        assert_eq!(decompress(&body, 1000).unwrap(), data);
        assert!(decompress(&body, 999).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let body = compress(&data).unwrap();
            prop_assert_eq!(decompress(&body, data.len()).unwrap(), data);
        }

        #[test]
        fn a_reused_scratch_buffer_compresses_the_same(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            first in proptest::collection::vec(any::<u8>(), 0..8192),
        ) {
            let mut scratch = Vec::new();
            compress_reusing(&first, &mut scratch).unwrap();
            prop_assert_eq!(compress_reusing(&data, &mut scratch).unwrap(), compress(&data).unwrap());
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decompress(&data, 1 << 20);
        }
    }
}

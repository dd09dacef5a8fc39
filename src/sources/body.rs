/*!
Request bodies: read within a size limit, then decompress within another.

Split gzips its webhook bodies but does not always say so, so gzip is recognised by the
`Content-Encoding` header *or* by the `1f 8b` magic bytes. Decompression stops as soon as the
output passes the limit, so a gzip bomb never allocates more than the limit.
*/

use std::io::Read as _;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http_body_util::BodyExt as _;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a body could not be turned into plain bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// The body as sent is over the limit.
    #[error("request body is larger than {limit} bytes (limits.max_body_bytes); send smaller batches")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body inflates past the limit.
    #[error(
        "request body decompresses to more than {limit} bytes (limits.max_decompressed_bytes); send smaller batches"
    )]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `Content-Encoding` other than gzip or identity.
    #[error("unsupported Content-Encoding `{0}`: send gzip or uncompressed JSON")]
    UnsupportedEncoding(String),
    /// The gzip stream is damaged or cut short.
    #[error("the gzip body is corrupt or truncated after {inflated} decompressed bytes: {reason}")]
    CorruptGzip {
        /// Bytes inflated before the error.
        inflated: usize,
        /// What the decoder reported.
        reason: String,
    },
    /// The connection failed while the body was being read.
    #[error("failed to read the request body: {0}")]
    Read(String),
}

/// Reads the whole body, refusing more than `limit` bytes (checked against `Content-Length`
/// first, then while reading, since the header may be absent or wrong).
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// How the body is encoded, from the `Content-Encoding` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// gzip, or no header and the body starts with the gzip magic bytes.
    Gzip,
    /// Plain bytes.
    Identity,
}

/// Decides the encoding from the header and, when the header is absent or `identity`, from the bytes.
pub fn detect_encoding(headers: &HeaderMap, body: &[u8]) -> Result<Encoding, BodyError> {
    let declared = match headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| BodyError::UnsupportedEncoding("<not ASCII>".into()))?.trim()),
    };
    match declared.map(str::to_ascii_lowercase).as_deref() {
        Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
        None | Some("") | Some("identity") if body.starts_with(&GZIP_MAGIC) => Ok(Encoding::Gzip),
        None | Some("") | Some("identity") => Ok(Encoding::Identity),
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Returns the plain body: `raw` itself, or its gzip decompression of at most `limit` bytes.
pub fn decode(encoding: Encoding, raw: Bytes, limit: usize) -> Result<Bytes, BodyError> {
    match encoding {
        Encoding::Identity if raw.len() > limit => Err(BodyError::DecompressedTooLarge { limit }),
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => gunzip(&raw, limit).map(Bytes::from),
    }
}

fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    // JSON usually compresses 5-15x; start there and let Vec grow, never past limit + 1.
    let mut out = Vec::with_capacity(raw.len().saturating_mul(8).min(limit));
    // MultiGzDecoder: concatenated gzip members are valid gzip and some clients send them.
    let mut decoder = MultiGzDecoder::new(raw).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| BodyError::CorruptGzip { inflated: out.len(), reason: e.to_string() })?;
    if out.len() > limit {
        return Err(BodyError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn with_encoding(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn gzip_is_recognised_by_header_or_by_magic_bytes() {
        let gz = gzip(b"[]");
        assert_eq!(detect_encoding(&with_encoding("gzip"), &gz), Ok(Encoding::Gzip));
        assert_eq!(detect_encoding(&with_encoding("X-GZIP"), &gz), Ok(Encoding::Gzip));
        assert_eq!(detect_encoding(&HeaderMap::new(), &gz), Ok(Encoding::Gzip));
        assert_eq!(detect_encoding(&HeaderMap::new(), b"[]"), Ok(Encoding::Identity));
        assert_eq!(detect_encoding(&with_encoding("identity"), b"[]"), Ok(Encoding::Identity));
    }

    #[test]
    fn other_encodings_are_refused_by_name() {
        assert_eq!(detect_encoding(&with_encoding("br"), b"x"), Err(BodyError::UnsupportedEncoding("br".into())));
    }

    #[test]
    fn gzip_round_trips_including_concatenated_members() {
        let mut two = gzip(b"[1,");
        two.extend(gzip(b"2]"));
        assert_eq!(decode(Encoding::Gzip, Bytes::from(two), 100).unwrap(), Bytes::from_static(b"[1,2]"));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 200 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
        assert_eq!(
            decode(Encoding::Gzip, Bytes::from(bomb), 1024 * 1024),
            Err(BodyError::DecompressedTooLarge { limit: 1024 * 1024 })
        );
    }

    #[test]
    fn truncated_and_corrupt_gzip_are_reported() {
        let gz = gzip(&vec![b'a'; 10_000]);
        let err = decode(Encoding::Gzip, Bytes::copy_from_slice(&gz[..gz.len() / 2]), 1 << 20).unwrap_err();
        assert!(matches!(err, BodyError::CorruptGzip { .. }), "{err}");
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 6] ^= 0xff; // the CRC32 trailer
        let err = decode(Encoding::Gzip, Bytes::from(bad), 1 << 20).unwrap_err();
        assert!(matches!(err, BodyError::CorruptGzip { .. }), "{err}");
    }

    #[test]
    fn identity_bodies_over_the_decompressed_limit_are_refused() {
        assert_eq!(
            decode(Encoding::Identity, Bytes::from_static(b"[1,2,3]"), 3),
            Err(BodyError::DecompressedTooLarge { limit: 3 })
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_never_exceed_the_limit(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                let mut body = GZIP_MAGIC.to_vec();
                body.extend(&data);
                if let Ok(out) = decode(Encoding::Gzip, Bytes::from(body), 256) {
                    prop_assert!(out.len() <= 256);
                }
            }
        }
    }
}

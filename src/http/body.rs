/*!
Request bodies: read within a size limit and a deadline, then decompress within another limit.

Split gzips its webhook bodies but does not always say so, so gzip is recognised by the
`Content-Encoding` header *or* by the `1f 8b` magic bytes. Decompression stops as soon as the
output passes the limit, so a gzip bomb never allocates more than the limit.

Per-request limits alone let many requests together exhaust memory, so every byte read or
inflated is also drawn from one [`ByteBudget`] shared by all requests (`limits.max_in_flight_bytes`);
when it is spent the request answers 503 instead of allocating.
*/

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// The client did not send the whole body in time.
    #[error(
        "the request body did not arrive within {} ms (http.body_read_timeout_ms); send it faster or in smaller batches",
        .0.as_millis()
    )]
    Timeout(Duration),
    /// The bytes all requests hold together are at `limits.max_in_flight_bytes`.
    #[error("too many request bytes in flight (limits.max_in_flight_bytes = {total}); retry shortly")]
    Busy {
        /// The shared budget in bytes.
        total: u64,
    },
}

/// Budget units are KiB, so that a `u32` count of permits covers any sensible budget.
const UNIT: u64 = 1024;

/// The bytes that request bodies (as sent and decoded) may hold at once, across all requests.
#[derive(Debug)]
pub struct ByteBudget {
    units: Arc<Semaphore>,
    total: u64,
}

impl ByteBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> ByteBudget {
        let units = usize::try_from(total.div_ceil(UNIT)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        ByteBudget { units: Arc::new(Semaphore::new(units)), total }
    }

    /// An empty claim on the budget, grown as bytes arrive and given back when dropped.
    pub fn reservation(&self) -> Reservation {
        Reservation { units: self.units.clone(), total: self.total, held: None, bytes: 0 }
    }
}

/// One request's share of the [`ByteBudget`].
#[derive(Debug)]
pub struct Reservation {
    units: Arc<Semaphore>,
    total: u64,
    held: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    /// Makes sure at least `bytes` are held; never waits: a spent budget is an error at once.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), BodyError> {
        let bytes = bytes as u64;
        if bytes <= self.bytes {
            return Ok(());
        }
        let have = self.bytes.div_ceil(UNIT);
        let want = bytes.div_ceil(UNIT);
        let more = u32::try_from(want - have).map_err(|_| BodyError::Busy { total: self.total })?;
        if more > 0 {
            let permit =
                self.units.clone().try_acquire_many_owned(more).map_err(|_| BodyError::Busy { total: self.total })?;
            match &mut self.held {
                Some(held) => held.merge(permit),
                None => self.held = Some(permit),
            }
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// Reads the whole body within `timeout`, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading, since the header may be absent or wrong) and
/// drawing every byte from `reservation`.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    reservation: &mut Reservation,
) -> Result<Bytes, BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // One deadline for the whole body: a per-chunk timeout would let a client trickle forever.
    // Pre-sized from the declared length, but not beyond 1 MiB before the bytes arrive: a
    // header alone must not make sluice allocate.
    let capacity = declared.map_or(0, |len| (len as usize).min(1 << 20));
    tokio::time::timeout(timeout, collect(body, limit, capacity, reservation))
        .await
        .map_err(|_| BodyError::Timeout(timeout))?
}

/// Collects the frames into a buffer of `capacity` to start with; the bytes are claimed from the
/// budget as they arrive.
async fn collect(
    mut body: Body,
    limit: usize,
    capacity: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, BodyError> {
    let mut out = Vec::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        let len = out.len() + data.len();
        if len > limit {
            return Err(BodyError::TooLarge { limit });
        }
        reservation.grow_to(len)?;
        out.extend_from_slice(&data);
    }
    Ok(Bytes::from(out))
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

/// Returns the plain body: `raw` itself, or its gzip decompression of at most `limit` bytes,
/// drawn from `reservation` on top of what `raw` already holds. Blocks: call it off the async workers.
pub fn decode(encoding: Encoding, raw: Bytes, limit: usize, reservation: &mut Reservation) -> Result<Bytes, BodyError> {
    match encoding {
        Encoding::Identity if raw.len() > limit => Err(BodyError::DecompressedTooLarge { limit }),
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => gunzip(&raw, limit, reservation),
    }
}

/// Inflated bodies grow in an ordinary heap buffer up to this size; a larger one moves to a
/// mapping of its own ([`Mapped`]).
const MAPPED_FROM: usize = 1 << 20;

fn gunzip(raw: &[u8], limit: usize, reservation: &mut Reservation) -> Result<Bytes, BodyError> {
    const CHUNK: usize = 64 * 1024;
    // JSON usually compresses 5-15x: start there (claimed first, like every later growth).
    let initial = raw.len().saturating_mul(8).min(limit).min(MAPPED_FROM);
    reservation.grow_to(raw.len() + initial)?;
    let mut out: Vec<u8> = Vec::with_capacity(initial);
    // MultiGzDecoder: concatenated gzip members are valid gzip and some clients send them.
    let mut decoder = MultiGzDecoder::new(raw).take(limit as u64 + 1);
    let corrupt = |inflated, e: std::io::Error| BodyError::CorruptGzip { inflated, reason: e.to_string() };
    let mut chunk = vec![0; CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(Bytes::from(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(out.len(), e)),
        };
        if out.len() + n > limit {
            return Err(BodyError::DecompressedTooLarge { limit });
        }
        if out.len() + n > MAPPED_FROM {
            let mut mapped = Mapped::new(limit, &out).map_err(|e| BodyError::Read(e.to_string()))?;
            drop(out);
            mapped.extend(&chunk[..n], raw.len(), reservation)?;
            drop(chunk);
            return mapped.inflate(&mut decoder, limit, raw.len(), reservation).map_err(|e| match e {
                Inflate::Body(e) => e,
                Inflate::Io(inflated, e) => corrupt(inflated, e),
            });
        }
        if out.len() + n > out.capacity() {
            // Grow as Vec would (doubling), but claim the new capacity from the budget first:
            // what is bounded is the memory actually allocated.
            let capacity = (out.capacity() * 2).max(out.len() + n).max(CHUNK).min(limit).min(MAPPED_FROM);
            reservation.grow_to(raw.len() + capacity)?;
            out.reserve_exact(capacity - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// A large inflated body, in an anonymous mapping of `limit` bytes of address space of which only
/// the pages written hold memory, given back to the OS when the body is dropped.
///
/// Why not the heap: a heap buffer grows by copying into one twice its size, so a 100 MiB body
/// briefly holds 150; and the allocator keeps freed large blocks for reuse, so a burst of
/// gzip bombs (each inflating to the limit, then refused) left the process at four times
/// `limits.max_in_flight_bytes` long after the burst.
struct Mapped {
    map: memmap2::MmapMut,
    len: usize,
}

/// Why inflating into a [`Mapped`] stopped.
enum Inflate {
    /// A limit or the budget.
    Body(BodyError),
    /// The gzip stream, after this many bytes.
    Io(usize, std::io::Error),
}

impl Mapped {
    /// A mapping with room for `limit` bytes, holding `start`.
    fn new(limit: usize, start: &[u8]) -> std::io::Result<Mapped> {
        // Address space only: no swap is reserved and untouched pages cost nothing.
        let mut map = memmap2::MmapOptions::new().len(limit.max(1)).no_reserve_swap().map_anon()?;
        map[..start.len()].copy_from_slice(start);
        Ok(Mapped { map, len: start.len() })
    }

    /// Appends `bytes`, claiming them first (`before`: what the request holds besides).
    fn extend(&mut self, bytes: &[u8], before: usize, reservation: &mut Reservation) -> Result<(), BodyError> {
        reservation.grow_to(before + self.len + bytes.len())?;
        self.map[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }

    /// Inflates the rest of `decoder` straight into the mapping, claiming each chunk's pages
    /// before writing them.
    fn inflate(
        mut self,
        decoder: &mut impl std::io::Read,
        limit: usize,
        before: usize,
        reservation: &mut Reservation,
    ) -> Result<Bytes, Inflate> {
        const CHUNK: usize = 256 * 1024;
        loop {
            if self.len == limit {
                // Full: one more byte means over the limit.
                let mut probe = [0; 1];
                return match decoder.read(&mut probe) {
                    Ok(0) => Ok(self.into_bytes()),
                    Ok(_) => Err(Inflate::Body(BodyError::DecompressedTooLarge { limit })),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(Inflate::Io(self.len, e)),
                };
            }
            let end = (self.len + CHUNK).min(limit);
            reservation.grow_to(before + end).map_err(Inflate::Body)?;
            match decoder.read(&mut self.map[self.len..end]) {
                Ok(0) => return Ok(self.into_bytes()),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Inflate::Io(self.len, e)),
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
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

    /// Decodes with a budget too large to matter.
    fn decode(encoding: Encoding, raw: Bytes, limit: usize) -> Result<Bytes, BodyError> {
        super::decode(encoding, raw, limit, &mut ByteBudget::new(1 << 40).reservation())
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
    fn large_bodies_inflate_exactly_up_to_the_limit_across_the_move_to_a_mapping() {
        let data: Vec<u8> = (0..3 * MAPPED_FROM + 17).map(|i| (i % 251) as u8).collect();
        // Members that end on both sides of the move from the heap to the mapping.
        let mut members = gzip(&data[..MAPPED_FROM - 5]);
        members.extend(gzip(&data[MAPPED_FROM - 5..]));
        for gz in [gzip(&data), members] {
            let gz = Bytes::from(gz);
            assert_eq!(decode(Encoding::Gzip, gz.clone(), data.len()).unwrap(), data, "exactly at the limit");
            assert_eq!(decode(Encoding::Gzip, gz.clone(), data.len() + 1).unwrap(), data);
            assert_eq!(
                decode(Encoding::Gzip, gz.clone(), data.len() - 1),
                Err(BodyError::DecompressedTooLarge { limit: data.len() - 1 })
            );
            assert_eq!(
                decode(Encoding::Gzip, gz, 2 * MAPPED_FROM),
                Err(BodyError::DecompressedTooLarge { limit: 2 * MAPPED_FROM })
            );
        }
        let gz = gzip(&data);
        let err = decode(Encoding::Gzip, Bytes::copy_from_slice(&gz[..gz.len() - 100]), 8 * MAPPED_FROM).unwrap_err();
        assert!(matches!(err, BodyError::CorruptGzip { inflated, .. } if inflated > MAPPED_FROM), "{err}");
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

    #[test]
    fn inflating_draws_from_the_budget_shared_by_all_requests() {
        let budget = ByteBudget::new(3 * 1024 * 1024);
        let gz = Bytes::from(gzip(&vec![b'0'; 2 * 1024 * 1024]));
        let mut first = budget.reservation();
        let plain = super::decode(Encoding::Gzip, gz.clone(), 10 << 20, &mut first).unwrap();
        assert_eq!(plain.len(), 2 * 1024 * 1024);
        let mut second = budget.reservation();
        assert_eq!(
            super::decode(Encoding::Gzip, gz.clone(), 10 << 20, &mut second),
            Err(BodyError::Busy { total: 3 * 1024 * 1024 })
        );
        drop((first, second));
        assert!(super::decode(Encoding::Gzip, gz, 10 << 20, &mut budget.reservation()).is_ok(), "given back on drop");
    }

    #[tokio::test]
    async fn reading_a_body_draws_from_the_budget_and_stops_at_the_deadline() {
        let budget = ByteBudget::new(1024 * 1024);
        let mut held = budget.reservation();
        held.grow_to(900 * 1024).unwrap();
        let body = Body::from(vec![b' '; 200 * 1024]);
        let got =
            read_limited(&HeaderMap::new(), body, 1 << 20, Duration::from_secs(5), &mut budget.reservation()).await;
        assert_eq!(got, Err(BodyError::Busy { total: 1024 * 1024 }));

        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let never = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let timeout = Duration::from_millis(100);
        let got = read_limited(&HeaderMap::new(), never, 1 << 20, timeout, &mut budget.reservation()).await;
        assert_eq!(got, Err(BodyError::Timeout(timeout)));
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

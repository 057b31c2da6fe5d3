//! Frames: a 16-byte header, then the payload, optionally zstd-compressed.
//!
//! A reader reads [`FRAME_HEADER_LEN`] bytes, decodes them with
//! [`decode_header`] (which bounds both lengths by the negotiated payload
//! limit before anything is allocated), reads the stored payload, and
//! hands both to [`Codec::open`], which checks the CRC and decompresses
//! into a buffer of exactly the declared size.

use crate::message::Message;
use crate::Error;

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 16;
/// Offset of the stored payload length.
pub const FRAME_STORED_LEN_OFF: usize = 0;
/// Offset of the kind byte (which message the payload holds).
pub const FRAME_KIND_OFF: usize = 4;
/// Offset of the flags byte.
pub const FRAME_FLAGS_OFF: usize = 5;
/// Offset of two reserved bytes.
pub const FRAME_RESERVED_OFF: usize = 6;
/// Offset of the payload's length after decompression.
pub const FRAME_RAW_LEN_OFF: usize = 8;
/// Offset of the CRC-32 of header bytes 0 .. 12 and the stored payload.
pub const FRAME_CRC_OFF: usize = 12;

const _: () = assert!(FRAME_STORED_LEN_OFF + 4 == FRAME_KIND_OFF);
const _: () = assert!(FRAME_KIND_OFF + 1 == FRAME_FLAGS_OFF);
const _: () = assert!(FRAME_FLAGS_OFF + 1 == FRAME_RESERVED_OFF);
const _: () = assert!(FRAME_RESERVED_OFF + 2 == FRAME_RAW_LEN_OFF);
const _: () = assert!(FRAME_RAW_LEN_OFF + 4 == FRAME_CRC_OFF);
const _: () = assert!(FRAME_CRC_OFF + 4 == FRAME_HEADER_LEN);

/// Flag bit: the payload is one zstd frame.
pub const FLAG_ZSTD: u8 = 1;

/// The largest payload any peer may accept (stored or decompressed).
pub const MAX_PAYLOAD: u32 = 4 << 20;
/// The smallest payload limit a peer may announce: a data message of
/// [`crate::MAX_DATA`] bytes must fit.
pub const MIN_PAYLOAD: u32 = (1 << 20) + 64;

/// zstd's level for data: fast, since the link is usually faster than a
/// higher level could compress.
pub const ZSTD_LEVEL: i32 = 1;

/// Payloads shorter than this are never compressed.
const COMPRESS_MIN: usize = 256;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of payload that follow the header.
    pub stored_len: u32,
    /// The message kind.
    pub kind: u8,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// Bytes of the payload once decompressed.
    pub raw_len: u32,
    /// The CRC-32 the header carries.
    pub crc: u32,
}

/// Decodes a frame header, refusing lengths above `max_payload` (the
/// negotiated limit) before the caller allocates anything for them.
pub fn decode_header(b: &[u8; FRAME_HEADER_LEN], max_payload: u32) -> Result<FrameHeader, Error> {
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let field = |field: &'static str, offset: usize, problem: String| Error::FrameHeader {
        field,
        offset,
        problem,
    };
    let stored_len = u32_at(FRAME_STORED_LEN_OFF);
    let raw_len = u32_at(FRAME_RAW_LEN_OFF);
    let flags = b[FRAME_FLAGS_OFF];
    let kind = b[FRAME_KIND_OFF];
    if flags & !FLAG_ZSTD != 0 {
        return Err(field(
            "flags",
            FRAME_FLAGS_OFF,
            format!("unknown flag bits {:#04x}", flags & !FLAG_ZSTD),
        ));
    }
    if b[FRAME_RESERVED_OFF] != 0 || b[FRAME_RESERVED_OFF + 1] != 0 {
        return Err(field(
            "reserved",
            FRAME_RESERVED_OFF,
            "reserved byte is not zero".into(),
        ));
    }
    if stored_len > max_payload {
        return Err(field(
            "stored length",
            FRAME_STORED_LEN_OFF,
            format!("{stored_len} bytes exceed the limit of {max_payload}"),
        ));
    }
    if raw_len > max_payload {
        return Err(field(
            "raw length",
            FRAME_RAW_LEN_OFF,
            format!("{raw_len} bytes exceed the limit of {max_payload}"),
        ));
    }
    let compressed = flags & FLAG_ZSTD != 0;
    if !compressed && raw_len != stored_len {
        return Err(field(
            "raw length",
            FRAME_RAW_LEN_OFF,
            format!(
                "{raw_len} differs from the stored length {stored_len} of an uncompressed payload"
            ),
        ));
    }
    if compressed && (stored_len == 0 || stored_len >= raw_len) {
        return Err(field(
            "stored length",
            FRAME_STORED_LEN_OFF,
            format!("a compressed payload of {stored_len} bytes for {raw_len} bytes of data"),
        ));
    }
    Ok(FrameHeader {
        stored_len,
        kind,
        compressed,
        raw_len,
        crc: u32_at(FRAME_CRC_OFF),
    })
}

/// The CRC a frame carries: over header bytes 0 .. 12, then the stored
/// payload.
fn frame_crc(head: &[u8], stored: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head.get(..FRAME_CRC_OFF).unwrap_or(head));
    h.update(stored);
    h.finalize()
}

/// Compression contexts, kept from frame to frame.
#[derive(Default)]
pub struct Codec {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// A `write` payload being sealed ([`Codec::seal_data`]), kept for the
    /// next: bulk data is a megabyte a frame.
    raw: Vec<u8>,
    /// The compressed payload being sealed, kept for the next.
    packed: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("compressor", &self.compressor.is_some())
            .field("decompressor", &self.decompressor.is_some())
            .finish()
    }
}

impl Codec {
    /// A codec with no context yet.
    pub fn new() -> Self {
        Codec::default()
    }

    /// The whole frame (header and payload) of `message`. Messages that
    /// carry data, and others of some size, are compressed when that makes
    /// them smaller. Fails when the payload would exceed `max_payload`.
    pub fn seal(&mut self, message: &Message, max_payload: u32) -> Result<Vec<u8>, Error> {
        let kind = message.kind();
        let raw = message.encode()?;
        self.seal_raw(
            kind,
            message.name(),
            &raw,
            message.compressible(),
            max_payload,
        )
    }

    /// The frame of `Message::Write { offset, data }` (or of a `data`
    /// answer, by `kind`), byte for byte what [`Codec::seal`] makes of it,
    /// without the copies and allocations of building the message first.
    pub fn seal_data(
        &mut self,
        kind: u8,
        offset: u64,
        data: &[u8],
        max_payload: u32,
    ) -> Result<Vec<u8>, Error> {
        use crate::message::kind as k;
        let name = match kind {
            k::WRITE => "write",
            k::DATA => "data",
            _ => return Err(Error::UnknownKind { kind }),
        };
        if data.is_empty() || data.len() > crate::message::MAX_DATA as usize {
            return Err(Error::Encode {
                message: name,
                problem: format!(
                    "data: {} bytes is outside 1 to {}",
                    data.len(),
                    crate::message::MAX_DATA
                ),
            });
        }
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        raw.extend_from_slice(&offset.to_le_bytes());
        raw.extend_from_slice(data);
        let sealed = self.seal_raw(kind, name, &raw, true, max_payload);
        self.raw = raw;
        sealed
    }

    /// The frame of a payload already encoded ([`Message::encode`] of a
    /// message of `kind`, named `name` in errors).
    pub fn seal_raw(
        &mut self,
        kind: u8,
        name: &'static str,
        raw: &[u8],
        compressible: bool,
        max_payload: u32,
    ) -> Result<Vec<u8>, Error> {
        let too_large = |len: usize| Error::Encode {
            message: name,
            problem: format!("a payload of {len} bytes exceeds the limit of {max_payload}"),
        };
        let raw_len = u32::try_from(raw.len())
            .ok()
            .filter(|&n| n <= max_payload)
            .ok_or_else(|| too_large(raw.len()))?;
        let packed = compressible && raw.len() >= COMPRESS_MIN && self.compress(raw, name)?;
        let (flags, stored) = if packed && self.packed.len() < raw.len() {
            (FLAG_ZSTD, self.packed.as_slice())
        } else {
            (0, raw)
        };
        // `stored` is never longer than `raw`, which fits.
        let stored_len = stored.len() as u32;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + stored.len());
        frame.extend_from_slice(&stored_len.to_le_bytes());
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&raw_len.to_le_bytes());
        let crc = frame_crc(&frame, stored);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame.extend_from_slice(stored);
        Ok(frame)
    }

    /// Compresses `raw` into `self.packed`; `false` when it does not go.
    fn compress(&mut self, raw: &[u8], name: &'static str) -> Result<bool, Error> {
        let c = match &mut self.compressor {
            Some(c) => c,
            None => self
                .compressor
                .insert(
                    zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| Error::Encode {
                        message: name,
                        problem: format!("zstd context: {e}"),
                    })?,
                ),
        };
        // A compressor that fails on some input is no reason to fail the
        // frame: it goes out stored.
        self.packed.clear();
        self.packed
            .reserve(zstd::zstd_safe::compress_bound(raw.len()));
        Ok(c.compress_to_buffer(raw, &mut self.packed).is_ok())
    }

    /// Checks the CRC of a frame whose header is `header` (decoded from
    /// `head`) and whose stored payload is `stored`, decompresses it and
    /// decodes the message.
    pub fn open(
        &mut self,
        head: &[u8; FRAME_HEADER_LEN],
        header: &FrameHeader,
        stored: &[u8],
    ) -> Result<Message, Error> {
        let payload = self.payload(head, header, stored)?;
        Message::decode(header.kind, &payload)
    }

    /// The payload of a frame, checked and decompressed.
    pub fn payload(
        &mut self,
        head: &[u8; FRAME_HEADER_LEN],
        header: &FrameHeader,
        stored: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.payload_into(head, header, stored, &mut out)?;
        Ok(out)
    }

    /// [`Codec::payload`] into `out`, whose allocation a receiver keeps
    /// from frame to frame (bulk data is megabytes a frame).
    pub fn payload_into(
        &mut self,
        head: &[u8; FRAME_HEADER_LEN],
        header: &FrameHeader,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let kind = header.kind;
        if stored.len() != header.stored_len as usize {
            return Err(Error::FrameHeader {
                field: "stored length",
                offset: FRAME_STORED_LEN_OFF,
                problem: format!(
                    "{} bytes declared, {} given",
                    header.stored_len,
                    stored.len()
                ),
            });
        }
        let computed = frame_crc(head, stored);
        if computed != header.crc {
            return Err(Error::Checksum {
                kind,
                stored: header.crc,
                computed,
            });
        }
        out.clear();
        if !header.compressed {
            out.extend_from_slice(stored);
            return Ok(());
        }
        let fail = |problem: String| Error::Decompress { kind, problem };
        let d = match &mut self.decompressor {
            Some(d) => d,
            None => self.decompressor.insert(
                zstd::bulk::Decompressor::new().map_err(|e| fail(format!("zstd context: {e}")))?,
            ),
        };
        // `raw_len` is bounded by the agreed payload limit (decode_header).
        let want = header.raw_len as usize;
        out.reserve(want);
        // Into the spare capacity, which zstd never writes beyond.
        let n = d
            .decompress_to_buffer(stored, out)
            .map_err(|e| fail(e.to_string().to_lowercase()))?;
        if n != want {
            return Err(fail(format!(
                "{n} bytes decompressed, the frame declares {want}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(frame: &[u8]) -> [u8; FRAME_HEADER_LEN] {
        frame[..FRAME_HEADER_LEN].try_into().unwrap()
    }

    #[test]
    fn sealed_data_is_the_sealed_message_and_opens_into_a_kept_buffer() {
        let mut plain = Codec::new();
        let mut fast = Codec::new();
        let mut receiver = Codec::new();
        let mut payload = Vec::new();
        // Compressible, incompressible, tiny; a buffer kept across frames
        // of different sizes.
        let noisy: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let cases: [(u8, u64, Vec<u8>); 4] = [
            (crate::message::kind::WRITE, 4096, vec![7u8; 1 << 20]),
            (crate::message::kind::WRITE, 12, noisy),
            (crate::message::kind::DATA, 1, vec![1, 2, 3]),
            (crate::message::kind::WRITE, u64::MAX - 9, vec![9u8; 9]),
        ];
        for (kind, offset, data) in cases {
            let m = if kind == crate::message::kind::WRITE {
                Message::Write {
                    offset,
                    data: data.clone(),
                }
            } else {
                Message::Data {
                    offset,
                    data: data.clone(),
                }
            };
            let a = plain.seal(&m, MAX_PAYLOAD).unwrap();
            let b = fast.seal_data(kind, offset, &data, MAX_PAYLOAD).unwrap();
            assert_eq!(a, b, "offset {offset}");
            let h = decode_header(&header_of(&b), MAX_PAYLOAD).unwrap();
            receiver
                .payload_into(&header_of(&b), &h, &b[FRAME_HEADER_LEN..], &mut payload)
                .unwrap();
            let (at, bytes) = Message::decode_data(kind, &payload).unwrap();
            assert_eq!((at, bytes), (offset, &data[..]));
        }
        assert!(fast
            .seal_data(crate::message::kind::WRITE, 0, &[], MAX_PAYLOAD)
            .is_err());
        assert!(fast
            .seal_data(crate::message::kind::FENCE, 0, &[1], MAX_PAYLOAD)
            .is_err());
        assert!(Message::decode_data(crate::message::kind::WRITE, &[0u8; 8]).is_err());
    }

    #[test]
    fn data_is_compressed_and_comes_back() {
        let mut codec = Codec::new();
        let m = Message::Write {
            offset: 8192,
            data: vec![0u8; 1 << 20],
        };
        let frame = codec.seal(&m, MAX_PAYLOAD).unwrap();
        assert!(frame.len() < 1000, "zeros compress: {}", frame.len());
        let head = header_of(&frame);
        let h = decode_header(&head, MAX_PAYLOAD).unwrap();
        assert!(h.compressed);
        let back = codec.open(&head, &h, &frame[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn bounds_are_checked_before_allocation() {
        let mut head = [0u8; FRAME_HEADER_LEN];
        head[..4].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        head[8..12].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let e = decode_header(&head, MAX_PAYLOAD).unwrap_err();
        assert!(matches!(
            e,
            Error::FrameHeader {
                field: "stored length",
                offset: 0,
                ..
            }
        ));
        // A compressed frame claiming a huge expansion is refused too.
        head[..4].copy_from_slice(&10u32.to_le_bytes());
        head[5] = FLAG_ZSTD;
        let e = decode_header(&head, MAX_PAYLOAD).unwrap_err();
        assert!(matches!(
            e,
            Error::FrameHeader {
                field: "raw length",
                ..
            }
        ));
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut codec = Codec::new();
        let mut frame = codec
            .seal(
                &Message::Read {
                    offset: 4096,
                    len: 4096,
                },
                MAX_PAYLOAD,
            )
            .unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 0x10;
        let head = header_of(&frame);
        let h = decode_header(&head, MAX_PAYLOAD).unwrap();
        let e = codec
            .open(&head, &h, &frame[FRAME_HEADER_LEN..])
            .unwrap_err();
        assert!(matches!(e, Error::Checksum { kind: 0x02, .. }));
    }
}

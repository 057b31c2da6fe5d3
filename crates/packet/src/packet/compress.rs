//! Record payload compression, with contexts kept across records.
//!
//! Decompression writes into the caller's buffer, cut to the record's
//! declared uncompressed size, so a hostile payload can never make it
//! produce (or allocate) more than that.

use super::Compression;
use crate::Error;

/// zstd contexts, created on first use and reused.
#[derive(Default)]
pub(crate) struct Codec {
    zstd_c: Option<zstd::bulk::Compressor<'static>>,
    zstd_d: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("zstd_c", &self.zstd_c.is_some())
            .field("zstd_d", &self.zstd_d.is_some())
            .finish()
    }
}

impl Codec {
    /// `data` compressed with `kind`, or `None` when that would not make it
    /// smaller (the record is then stored uncompressed).
    pub(crate) fn compress(
        &mut self,
        kind: Compression,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        let out = match kind {
            Compression::None => return Ok(None),
            Compression::Lz4 => lz4_flex::block::compress(data),
            Compression::Zstd => {
                let c = match &mut self.zstd_c {
                    Some(c) => c,
                    None => self.zstd_c.insert(
                        zstd::bulk::Compressor::new(super::ZSTD_LEVEL)
                            .map_err(|e| Error::encode("zstd payload", e.to_string()))?,
                    ),
                };
                c.compress(data)
                    .map_err(|e| Error::encode("zstd payload", e.to_string()))?
            }
        };
        Ok((out.len() < data.len()).then_some(out))
    }

    /// Decompresses `src` into all of `dst`, which must come out exactly full.
    /// `at` is the payload's file offset, for errors.
    pub(crate) fn decompress(
        &mut self,
        kind: Compression,
        src: &[u8],
        dst: &mut [u8],
        at: u64,
    ) -> Result<(), Error> {
        let fail = |problem: String| Error::Decompress {
            offset: at,
            problem,
        };
        let n = match kind {
            Compression::None => {
                if src.len() != dst.len() {
                    return Err(fail(format!(
                        "{} stored bytes for {} bytes of data",
                        src.len(),
                        dst.len()
                    )));
                }
                dst.copy_from_slice(src);
                src.len()
            }
            Compression::Lz4 => {
                lz4_flex::block::decompress_into(src, dst).map_err(|e| fail(e.to_string()))?
            }
            Compression::Zstd => {
                let d = match &mut self.zstd_d {
                    Some(d) => d,
                    None => self.zstd_d.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| fail(format!("zstd context: {e}")))?,
                    ),
                };
                d.decompress_to_buffer(src, dst)
                    .map_err(|e| fail(e.to_string().to_lowercase()))?
            }
        };
        if n != dst.len() {
            return Err(fail(format!(
                "{n} bytes decompressed, the record declares {}",
                dst.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_wrong_sizes() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i / 64) as u8).collect();
        let mut codec = Codec::default();
        for kind in [Compression::Zstd, Compression::Lz4] {
            let packed = codec.compress(kind, &data).unwrap().expect("compressible");
            let mut out = vec![0u8; data.len()];
            codec.decompress(kind, &packed, &mut out, 7).unwrap();
            assert_eq!(out, data);
            // A buffer one byte short or long: refused, never overrun.
            let mut short = vec![0u8; data.len() - 1];
            let err = codec.decompress(kind, &packed, &mut short, 7).unwrap_err();
            assert_eq!(err.offset(), Some(7));
            let mut long = vec![0u8; data.len() + 1];
            assert!(codec.decompress(kind, &packed, &mut long, 7).is_err());
            // Garbage.
            assert!(codec.decompress(kind, &[0xff; 40], &mut out, 7).is_err());
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(codec.compress(Compression::Lz4, &noise).unwrap().is_none());
        assert!(codec.compress(Compression::None, &data).unwrap().is_none());
    }
}

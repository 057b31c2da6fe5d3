//! Tags (checksums or MACs) and signing keys.
//!
//! Every tag is the first [`TAG_LEN`] bytes of a BLAKE3 output: in keyed
//! mode (`blake3::Hasher::new_keyed`) when a key is given, in plain hash mode
//! otherwise. The hashed input always starts with a domain string naming the
//! structure (a NUL-terminated ASCII constant, so that no domain is a prefix
//! of another), which keeps a tag of one kind of structure from ever being
//! valid for another. `docs/packet.md` ("Tags") is the specification.

use crate::Error;

/// Bytes of a stored tag: BLAKE3 output truncated to 128 bits.
pub const TAG_LEN: usize = 16;

/// A signing key: 32 bytes, as BLAKE3's keyed mode takes them.
pub type Key = [u8; 32];

/// The BLAKE3 `derive_key` context that turns a key file into a [`Key`].
pub const KEY_CONTEXT: &str = "poolsync packet signing key v1";

/// The shortest key file [`key_from_file`] accepts.
pub const MIN_KEY_FILE_LEN: usize = 16;

/// The largest key file [`key_from_file`] accepts (a key file is a secret,
/// not a document; this bounds what the engine reads).
pub const MAX_KEY_FILE_LEN: usize = 64 * 1024;

/// Domain of a packet file header tag.
pub(crate) const DOMAIN_HEADER: &[u8] = b"poolsync packet v1 header\0";
/// Domain of a packet record tag in version 1 packets (over the payload).
pub(crate) const DOMAIN_RECORD_V1: &[u8] = b"poolsync packet v1 record\0";
/// Domain of a packet record tag in version 2 packets (over the payload's
/// hash).
pub(crate) const DOMAIN_RECORD: &[u8] = b"poolsync packet v2 record\0";
/// Domain of a packet trailer tag.
pub(crate) const DOMAIN_TRAILER: &[u8] = b"poolsync packet v1 trailer\0";
/// Domain of a logical packet's content digest.
pub(crate) const DOMAIN_CONTENT: &[u8] = b"poolsync packet v1 content\0";
/// Domain of a state file head tag.
pub(crate) const DOMAIN_STATE_HEAD: &[u8] = b"poolsync state v1 head\0";
/// Domain of a state file chunk tag.
pub(crate) const DOMAIN_STATE_CHUNK: &[u8] = b"poolsync state v1 chunk\0";
/// Domain of a rewind request tag.
pub(crate) const DOMAIN_REWIND: &[u8] = b"poolsync rewind v1\0";

/// Turns the bytes of a key file into a signing key.
///
/// The key is BLAKE3's `derive_key` with the context [`KEY_CONTEXT`] over
/// the file's bytes exactly as stored (a trailing newline is part of the
/// key). Any file of [`MIN_KEY_FILE_LEN`] to [`MAX_KEY_FILE_LEN`] bytes
/// works; 32 random bytes (`head -c 32 /dev/urandom`) is the intended kind.
///
/// ```
/// let key = poolsync_packet::key_from_file(b"0123456789abcdef0123456789abcdef")?;
/// assert_ne!(key, [0; 32]);
/// assert!(poolsync_packet::key_from_file(b"short").is_err());
/// # Ok::<(), poolsync_packet::Error>(())
/// ```
pub fn key_from_file(bytes: &[u8]) -> Result<Key, Error> {
    if bytes.len() < MIN_KEY_FILE_LEN || bytes.len() > MAX_KEY_FILE_LEN {
        return Err(Error::KeyFile {
            len: bytes.len(),
            min: MIN_KEY_FILE_LEN,
            max: MAX_KEY_FILE_LEN,
        });
    }
    Ok(blake3::derive_key(KEY_CONTEXT, bytes))
}

/// An incremental tag computation.
pub(crate) struct Tagger(blake3::Hasher);

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tagger")
    }
}

impl Tagger {
    /// Starts a tag of the structure named by `domain`, keyed when `key` is given.
    pub(crate) fn new(key: Option<&Key>, domain: &[u8]) -> Self {
        let mut h = match key {
            Some(k) => blake3::Hasher::new_keyed(k),
            None => blake3::Hasher::new(),
        };
        h.update(domain);
        Tagger(h)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// The truncated tag.
    pub(crate) fn tag(&self) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        self.0.finalize_xof().fill(&mut out);
        out
    }

    /// The full 32-byte output (content digests).
    pub(crate) fn digest(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Compares two tags without an early exit, so that the time taken says
/// nothing about where they differ.
pub(crate) fn tags_equal(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_distinct_and_prefix_free() {
        let all = [
            DOMAIN_HEADER,
            DOMAIN_RECORD_V1,
            DOMAIN_RECORD,
            DOMAIN_TRAILER,
            DOMAIN_CONTENT,
            DOMAIN_STATE_HEAD,
            DOMAIN_STATE_CHUNK,
            DOMAIN_REWIND,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.last(), Some(&0));
            assert_eq!(a.iter().filter(|&&b| b == 0).count(), 1);
            for b in &all[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
    }

    #[test]
    fn keyed_and_plain_tags_differ_and_truncate_the_hash() {
        let key = [7u8; 32];
        let plain = Tagger::new(None, DOMAIN_RECORD).update(b"x").tag();
        let keyed = Tagger::new(Some(&key), DOMAIN_RECORD).update(b"x").tag();
        assert_ne!(plain, keyed);
        let mut input = DOMAIN_RECORD.to_vec();
        input.push(b'x');
        assert_eq!(&blake3::hash(&input).as_bytes()[..TAG_LEN], &plain);
        assert_eq!(
            &blake3::keyed_hash(&key, &input).as_bytes()[..TAG_LEN],
            &keyed
        );
        assert!(tags_equal(&plain, &plain));
        assert!(!tags_equal(&plain, &keyed));
    }

    #[test]
    fn key_files_are_bounded_and_derived() {
        assert!(key_from_file(&[0; MIN_KEY_FILE_LEN - 1]).is_err());
        assert!(key_from_file(&vec![0; MAX_KEY_FILE_LEN + 1]).is_err());
        let bytes = [3u8; 32];
        assert_eq!(
            key_from_file(&bytes).unwrap(),
            blake3::derive_key(KEY_CONTEXT, &bytes)
        );
    }
}

//! The crate's one error type.

/// Why bytes from a peer are not a usable greeting, frame or message, or
/// why a message cannot be encoded.
///
/// Every decoding error names the structure (the greeting, a frame header,
/// or a message by its name) and, where there is one, the field and its
/// byte offset within the greeting, the frame header or the frame's
/// payload; the caller adds the peer and the frame's number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first bytes from the peer are not a greeting: something else
    /// (a shell profile, a shell's error, another program) spoke first.
    #[error("the peer's first bytes are not a poolsync greeting: received \"{}\"", quote(.received))]
    NotAGreeting {
        /// The bytes received (at most [`crate::HELLO_LEN`]).
        received: Vec<u8>,
    },
    /// A field of the greeting holds a value the protocol does not allow.
    #[error("invalid {field} at offset {offset} of the greeting: {problem}")]
    Hello {
        /// The field.
        field: &'static str,
        /// Its offset in the greeting.
        offset: usize,
        /// What is wrong, lowercase.
        problem: String,
    },
    /// The two sides share no protocol version.
    #[error("no protocol version in common: this side speaks {ours_min} to {ours_max}, the peer {theirs_min} to {theirs_max} (install the same poolsync release on both hosts)")]
    NoCommonVersion {
        /// Our lowest version.
        ours_min: u16,
        /// Our highest version.
        ours_max: u16,
        /// The peer's lowest version.
        theirs_min: u16,
        /// The peer's highest version.
        theirs_max: u16,
    },
    /// A field of a frame header holds a value the protocol does not allow.
    #[error("invalid {field} at offset {offset} of the frame header: {problem}")]
    FrameHeader {
        /// The field.
        field: &'static str,
        /// Its offset in the frame header.
        offset: usize,
        /// What is wrong, lowercase.
        problem: String,
    },
    /// A frame's checksum does not match its bytes.
    #[error("frame of kind {kind:#04x} fails its checksum (stored {stored:#010x}, computed {computed:#010x}): the connection is corrupting data")]
    Checksum {
        /// The frame's kind byte.
        kind: u8,
        /// The checksum in the frame header.
        stored: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },
    /// A compressed payload does not decompress to its declared size.
    #[error("frame of kind {kind:#04x}: the payload does not decompress: {problem}")]
    Decompress {
        /// The frame's kind byte.
        kind: u8,
        /// What went wrong.
        problem: String,
    },
    /// The frame's kind byte names no message of this protocol version.
    #[error("frame of unknown kind {kind:#04x}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A message field holds a value the protocol does not allow.
    #[error("invalid {field} at offset {offset} of the {message} message: {problem}")]
    Field {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// Its offset in the payload.
        offset: usize,
        /// What is wrong, lowercase.
        problem: String,
    },
    /// A message's payload ends inside a field.
    #[error("the {message} message is truncated in {field} at offset {offset}: {needed} bytes needed, {available} present")]
    Truncated {
        /// The message.
        message: &'static str,
        /// The field being read.
        field: &'static str,
        /// Offset of the field in the payload.
        offset: usize,
        /// Bytes needed from `offset`.
        needed: usize,
        /// Bytes present from `offset`.
        available: usize,
    },
    /// Bytes follow the last field of a message.
    #[error("the {message} message has {extra} bytes after its last field, at offset {offset}")]
    Trailing {
        /// The message.
        message: &'static str,
        /// Offset of the first extra byte.
        offset: usize,
        /// How many extra bytes.
        extra: usize,
    },
    /// A value given to an encoder is outside what the protocol carries.
    #[error("cannot encode the {message} message: {problem}")]
    Encode {
        /// The message.
        message: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// The byte offset the error names (in the greeting, the frame header
    /// or the payload), if it names one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Error::Hello { offset, .. }
            | Error::FrameHeader { offset, .. }
            | Error::Field { offset, .. }
            | Error::Truncated { offset, .. }
            | Error::Trailing { offset, .. } => Some(*offset),
            Error::NotAGreeting { .. } => Some(0),
            _ => None,
        }
    }
}

/// `bytes` as printable ASCII, with everything else escaped (`\n`,
/// `\x1b`), for quoting what a peer sent.
pub fn quote(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_escape_what_is_not_printable() {
        assert_eq!(
            quote(b"Welcome\r\n\x1b[0m\xff"),
            "Welcome\\r\\n\\x1b[0m\\xff"
        );
        let e = Error::NotAGreeting {
            received: b"bash: poolsync".to_vec(),
        };
        assert_eq!(
            e.to_string(),
            "the peer's first bytes are not a poolsync greeting: received \"bash: poolsync\""
        );
        assert_eq!(e.offset(), Some(0));
    }
}

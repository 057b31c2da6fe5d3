//! The crate's one error type.

use crate::packet::PartProblem;

/// Why bytes are not a usable packet file, state file or rewind request, or
/// why a value cannot be encoded.
///
/// Every decoding error names the structure or field at fault and its byte
/// offset in the file it was read from ([`Error::offset`]); the caller adds
/// the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ends inside a structure.
    #[error("{what} is truncated at offset {offset}: {needed} bytes needed, {available} present")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// File offset where the missing bytes should start.
        offset: u64,
        /// Bytes needed from `offset`.
        needed: u64,
        /// Bytes present from `offset`.
        available: u64,
    },
    /// The structure does not start with its magic number.
    #[error("{what} at offset {offset} starts with \"{found}\", expected \"{expected}\"")]
    BadMagic {
        /// The structure expected.
        what: &'static str,
        /// File offset of the magic number.
        offset: u64,
        /// The bytes found, escaped.
        found: String,
        /// The magic number expected.
        expected: String,
    },
    /// The format version is not one this build reads.
    #[error(
        "{what} version {found} at offset {offset} is not supported, this build reads {supported}"
    )]
    Version {
        /// The structure.
        what: &'static str,
        /// File offset of the version field.
        offset: u64,
        /// The version found.
        found: u16,
        /// The versions this build reads, as text (`version 1`, `versions
        /// 1 and 2`).
        supported: &'static str,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field} at offset {offset}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// File offset of the field (or of the offending byte in it).
        offset: u64,
        /// What is wrong, lowercase.
        problem: String,
    },
    /// A stored tag does not match the bytes it covers.
    #[error("{what} at offset {offset} fails its {}: the file is damaged or the structure is not this packet's", if *.signed { "signature" } else { "checksum" })]
    BadTag {
        /// The structure.
        what: &'static str,
        /// File offset of the structure (not of its tag).
        offset: u64,
        /// Whether the tag is a keyed MAC.
        signed: bool,
    },
    /// Signed input was met without a key.
    #[error("{what} is signed (flags at offset {offset}) but no key was given")]
    KeyRequired {
        /// The structure.
        what: &'static str,
        /// File offset of its flags.
        offset: u64,
    },
    /// Unsigned input was met while a key is in use.
    #[error("{what} is not signed (flags at offset {offset}) but a key was given, and unsigned input is refused when a key is in use")]
    NotSigned {
        /// The structure.
        what: &'static str,
        /// File offset of its flags.
        offset: u64,
    },
    /// A record is out of sequence: reordered, missing or spliced in.
    #[error("record at offset {offset} has sequence number {found}, expected {expected}")]
    Sequence {
        /// File offset of the record.
        offset: u64,
        /// The sequence number expected here.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A compressed payload does not decompress to its declared size.
    #[error("payload at offset {offset} does not decompress: {problem}")]
    Decompress {
        /// File offset of the payload.
        offset: u64,
        /// The decompressor's complaint, or the size mismatch.
        problem: String,
    },
    /// A file of a logical packet is missing, duplicated, foreign or
    /// inconsistent with the others.
    #[error("{0}")]
    Part(PartProblem),
    /// The caller's buffer is too small (a bug of the caller, not of the input).
    #[error("the output buffer holds {len} bytes, the record needs {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer holds.
        len: usize,
    },
    /// The caller used a stateful API out of order (a bug of the caller).
    #[error("misuse of {api}: {problem}")]
    Misuse {
        /// The function.
        api: &'static str,
        /// What was wrong.
        problem: &'static str,
    },
    /// A `--max-size` value is malformed or out of range.
    #[error("invalid max size \"{text}\": {problem}")]
    MaxSize {
        /// The text given.
        text: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A key file is too short or too long.
    #[error("key file is {len} bytes, expected {min} to {max}")]
    KeyFile {
        /// Its length.
        len: usize,
        /// The shortest accepted.
        min: usize,
        /// The longest accepted.
        max: usize,
    },
    /// A timeline history is not canonical, or two histories contradict
    /// each other.
    #[error("invalid timeline history: {problem}")]
    History {
        /// What is wrong.
        problem: String,
    },
    /// A value given to an encoder breaks a rule or bound of the format.
    #[error("cannot encode {what}: {problem}")]
    Encode {
        /// The field or structure.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// The byte offset in the file that this error is about, if it is about
    /// bytes of a file.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Truncated { offset, .. }
            | Error::BadMagic { offset, .. }
            | Error::Version { offset, .. }
            | Error::Field { offset, .. }
            | Error::BadTag { offset, .. }
            | Error::KeyRequired { offset, .. }
            | Error::NotSigned { offset, .. }
            | Error::Sequence { offset, .. }
            | Error::Decompress { offset, .. } => Some(*offset),
            Error::Part(p) => p.offset(),
            Error::BufferTooSmall { .. }
            | Error::Misuse { .. }
            | Error::MaxSize { .. }
            | Error::KeyFile { .. }
            | Error::History { .. }
            | Error::Encode { .. } => None,
        }
    }

    pub(crate) fn field(field: &'static str, offset: u64, problem: impl Into<String>) -> Error {
        Error::Field {
            field,
            offset,
            problem: problem.into(),
        }
    }

    pub(crate) fn encode(what: &'static str, problem: impl Into<String>) -> Error {
        Error::Encode {
            what,
            problem: problem.into(),
        }
    }
}

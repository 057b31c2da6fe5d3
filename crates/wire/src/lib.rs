//! The protocol poolsync speaks with `poolsync serve`, its remote end, over
//! the standard input and output of an ssh session.
//!
//! This crate does no I/O: encoders return bytes and decoders take `&[u8]`.
//! The engine reads and writes them over whatever connection it is given.
//! `docs/wire.md` is the byte-level specification; every offset there is a
//! constant here, checked at compile time.
//!
//! * [`hello`]: the 32-byte greeting each side sends first, with the
//!   versions it speaks and the largest frame it accepts; [`negotiate`]
//!   picks the highest common version. The server's greeting is the first
//!   thing it writes, so text printed before it (a noisy shell profile,
//!   `command not found`) is caught at once ([`Error::NotAGreeting`]
//!   quotes it).
//! * [`frame`]: every later message travels in a frame, a 16-byte header
//!   (stored and decompressed lengths, kind, flags, CRC-32) and its
//!   payload, zstd-compressed when that makes it smaller. Lengths are
//!   bounded by the negotiated limit before anything is allocated, and
//!   decompression writes into a buffer of exactly the declared size, so a
//!   hostile or broken peer cannot make either side allocate without
//!   bound.
//! * [`message`]: the requests (open a remote pool set, read, digests,
//!   write, flush, fence, write a header, create a part, remove, inspect,
//!   mark, close) and their answers.
//! * [`mark`]: the sync mark a remote host keeps beside its pool set file
//!   after an update, which lets the next update send only the blocks
//!   changed since.
//!
//! # Example
//!
//! ```
//! use poolsync_wire::{
//!     decode_header, negotiate, Codec, Hello, Message, Role, FRAME_HEADER_LEN,
//! };
//!
//! // Each side greets; both agree on a version and a frame limit.
//! let server = Hello::decode(&Hello::ours(Role::Server).encode(), Role::Server)?;
//! let agreed = negotiate(&Hello::ours(Role::Client), &server)?;
//!
//! // A write of 64 KiB of zeros travels compressed.
//! let mut codec = Codec::new();
//! let write = Message::Write { offset: 4096, data: vec![0; 65536] };
//! let frame = codec.seal(&write, agreed.max_payload)?;
//! assert!(frame.len() < 200);
//!
//! // The receiver bounds the header, then checks and opens the payload.
//! let head: [u8; FRAME_HEADER_LEN] = frame[..FRAME_HEADER_LEN].try_into().unwrap();
//! let header = decode_header(&head, agreed.max_payload)?;
//! let got = codec.open(&head, &header, &frame[FRAME_HEADER_LEN..])?;
//! assert_eq!(got, write);
//!
//! // Text where a greeting belongs is quoted back.
//! let noise = Hello::decode(b"Welcome to b.example.org\n", Role::Server).unwrap_err();
//! assert!(noise.to_string().contains("Welcome to b.example.org\\n"));
//! # Ok::<(), poolsync_wire::Error>(())
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod frame;
pub mod hello;
pub mod mark;
pub mod message;

pub use error::{quote, Error};
pub use frame::{
    decode_header, Codec, FrameHeader, FLAG_ZSTD, FRAME_HEADER_LEN, MAX_PAYLOAD, MIN_PAYLOAD,
};
pub use hello::{negotiate, Agreed, Hello, Role, HELLO_LEN, MAGIC, MAX_VERSION, MIN_VERSION};
pub use mark::{SyncMark, MARK_LEN};
pub use message::{
    name_of, DigestRun, Failure, FailureCode, HeaderPage, HeaderWrite, Message, Open, Opened,
    PartReport, PartStatus, RemovedFile, HEADER_PAGE, MAX_DATA, MAX_DIGESTS, MAX_DIGEST_PIECE,
    MAX_DIGEST_RUNS, MAX_PARTS,
};

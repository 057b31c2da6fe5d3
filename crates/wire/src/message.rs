//! The messages of protocol version 2, and their payload encoding.
//!
//! Requests go from the client to the server; the server answers the ones
//! that ask for an answer, in order, and nothing else (so a client that
//! sends writes without waiting never finds an answer it did not expect).
//! `Write` and `Flush` have no answer: a failure among them is reported by
//! the next `Fence`.
//!
//! Every field is little-endian; strings are a `u32` length then UTF-8,
//! lists a `u32` count then the items, each with its bound (the `MAX_*`
//! constants) checked before anything is allocated; data and digests run
//! to the end of the payload. Nothing may follow the last field.

use crate::mark::{SyncMark, MARK_LEN};
use crate::Error;

/// Bytes of data one `Write` or `Data` message carries at most.
pub const MAX_DATA: u32 = 1 << 20;
/// Longest path a request or answer names.
pub const MAX_PATH: usize = 4096;
/// Longest pool set file text an `Opened` answer carries.
pub const MAX_SET_TEXT: usize = 1 << 20;
/// Most parts of a remote pool set (each brings its 4 KiB header page).
pub const MAX_PARTS: usize = 512;
/// Longest failure message or verdict line.
pub const MAX_TEXT: usize = 16384;
/// Most verdict lines in an `Opened` answer.
pub const MAX_VERDICTS: usize = 1024;
/// Most runs in a `Digests` request.
pub const MAX_DIGEST_RUNS: usize = 4096;
/// Most digests one `Digests` request asks for.
pub const MAX_DIGESTS: u64 = 65536;
/// Longest piece one digest covers.
pub const MAX_DIGEST_PIECE: u32 = 64 << 20;
/// Bytes of a pool header page.
pub const HEADER_PAGE: usize = 4096;
/// Longest name of the server's software in an `Opened` answer.
pub const MAX_SERVER_NAME: usize = 256;
/// Most files a `Removed` answer lists.
pub const MAX_REMOVED: usize = MAX_PARTS + 8;

/// `Open`: open a pool set file under the server's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The pool set file, relative to the server's root (1 to
    /// [`MAX_PATH`] bytes).
    pub path: String,
    /// Open the parts read-write (otherwise read-only).
    pub write: bool,
    /// The pool set UUID the client's pool has: the server refuses a
    /// remote pool whose valid headers carry another.
    pub expect_uuid: Option<[u8; 16]>,
}

/// One run of equally long pieces, each of which gets a digest:
/// `[offset + i × piece, offset + (i + 1) × piece)` for `i < count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestRun {
    /// Logical offset of the first piece.
    pub offset: u64,
    /// Bytes of each piece (1 to [`MAX_DIGEST_PIECE`]).
    pub piece: u32,
    /// Pieces (at least 1).
    pub count: u32,
}

/// What `WriteHeader` writes into a part's header page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderWrite {
    /// The whole page; with `stamp_crtime` the server stamps the creation
    /// time from the file and computes the checksum again.
    Whole {
        /// The [`HEADER_PAGE`] bytes.
        page: Vec<u8>,
        /// Take the creation time from the file.
        stamp_crtime: bool,
    },
    /// Only the checksum field.
    Checksum {
        /// The value.
        value: u64,
    },
}

/// Why a request failed, in categories the client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// Anything else.
    Other,
    /// The path is refused by the server's rules (absolute, `..`, leaving
    /// the root through a symlink, a part outside the root).
    Refused,
    /// The pool set file does not exist.
    NotFound,
    /// A file is locked by another process: the pool is in use.
    Locked,
    /// The remote pool's pool set UUID differs from the client's.
    Mismatch,
    /// Reading or writing failed.
    Io,
    /// The request breaks the protocol (for example, no pool set is open).
    Protocol,
    /// Something this server does not support.
    Unsupported,
    /// A code this build does not know (a newer peer's).
    Unknown(u16),
}

impl FailureCode {
    fn to_u16(self) -> u16 {
        match self {
            FailureCode::Other => 1,
            FailureCode::Refused => 2,
            FailureCode::NotFound => 3,
            FailureCode::Locked => 4,
            FailureCode::Mismatch => 5,
            FailureCode::Io => 6,
            FailureCode::Protocol => 7,
            FailureCode::Unsupported => 8,
            FailureCode::Unknown(n) => n,
        }
    }

    fn from_u16(n: u16) -> FailureCode {
        match n {
            1 => FailureCode::Other,
            2 => FailureCode::Refused,
            3 => FailureCode::NotFound,
            4 => FailureCode::Locked,
            5 => FailureCode::Mismatch,
            6 => FailureCode::Io,
            7 => FailureCode::Protocol,
            8 => FailureCode::Unsupported,
            n => FailureCode::Unknown(n),
        }
    }
}

/// `Failed`: the request failed; the session goes on unless the failure
/// broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The category.
    pub code: FailureCode,
    /// The server's message (at most [`MAX_TEXT`] bytes).
    pub message: String,
}

/// What opening a part found on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStatus {
    /// Open, locked, of the configured size.
    Ok,
    /// The file does not exist.
    Missing,
    /// It exists but cannot be opened (the reason says why).
    Inaccessible,
    /// Its size differs from the configured size.
    SizeMismatch,
}

/// A part's header page as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPage {
    /// The part carries no header (SINGLEHDR, part ≥ 1).
    None,
    /// The part was not opened.
    NotRead,
    /// Reading it failed.
    Unreadable {
        /// Why.
        reason: String,
    },
    /// Its bytes.
    Read {
        /// The [`HEADER_PAGE`] bytes.
        bytes: Vec<u8>,
    },
}

/// One part of the remote pool set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReport {
    /// What opening it found.
    pub status: PartStatus,
    /// The file's size (0 when unknown).
    pub size: u64,
    /// Its permission bits (0 when unknown).
    pub mode: u32,
    /// Why it is inaccessible (empty otherwise).
    pub reason: String,
    /// Its header page.
    pub header: HeaderPage,
    /// The server's health check found it broken (its own fault, or its
    /// replica's): it must be rebuilt.
    pub broken: bool,
}

/// `Opened`: the remote pool set as the server found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The pool set file as the server resolved it (for messages).
    pub set_path: String,
    /// The pool set file's text.
    pub set_text: String,
    /// The server's software and version (`poolsync 0.1.0`).
    pub server: String,
    /// Every part of every replica, in set order.
    pub parts: Vec<PartReport>,
    /// The server's health check found every part healthy.
    pub healthy: bool,
    /// `heap_offset + heap_size` from the remote pool's descriptor, when
    /// its header and descriptor are healthy; 0 otherwise.
    pub pool_size: u64,
    /// The health check's verdicts, one line each.
    pub verdicts: Vec<String>,
    /// The sync mark the server found beside the pool set file and
    /// verified, if any. When the set was opened for writing, the server
    /// removed the file (durably) before answering.
    pub mark: Option<SyncMark>,
}

/// One file a `Remove` request dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedFile {
    /// The file.
    pub path: String,
    /// `true`: removed; `false`: it did not exist.
    pub removed: bool,
}

/// A message of protocol version 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Request: open a pool set. Answer: `Opened` or `Failed`.
    Open(Open),
    /// Request: read `len` bytes (1 to [`MAX_DATA`]) at logical `offset`.
    /// Answer: `Data` or `Failed`.
    Read {
        /// Logical offset.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// Request: digests of the pieces the runs describe. Answer:
    /// `DigestList` or `Failed`.
    Digests {
        /// The runs, at most [`MAX_DIGEST_RUNS`], asking for at most
        /// [`MAX_DIGESTS`] digests in all.
        runs: Vec<DigestRun>,
    },
    /// Request, unanswered: write `data` (1 to [`MAX_DATA`] bytes) at
    /// logical `offset`.
    Write {
        /// Logical offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Request, unanswered: schedule a range for persistence.
    Flush {
        /// Logical offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Request: make every write and flush so far durable. Answer: `Done`,
    /// or `Failed` with the first failure of a write or flush since the
    /// last fence.
    Fence,
    /// Request: write a part's header page durably. Answer: `Done` or
    /// `Failed`.
    WriteHeader {
        /// The part, counted over every replica in set order.
        part: u32,
        /// What to write.
        write: HeaderWrite,
    },
    /// Request: create a part of the remote set, fully allocated, with
    /// mode 0 (as PMDK creates parts), durably (file and directory entry);
    /// with `replace`, an existing file is removed first. Answer: `Done`
    /// or `Failed`.
    CreatePart {
        /// The part, counted over every replica in set order.
        part: u32,
        /// Remove an existing file first.
        replace: bool,
    },
    /// Request: set a part's permission bits, durably. Answer: `Done` or
    /// `Failed`.
    SetMode {
        /// The part, counted over every replica in set order.
        part: u32,
        /// Permission bits (at most `0o7777`).
        mode: u32,
    },
    /// Request: remove the remote set's part files (and with `set_file`,
    /// the pool set file too), durably. Answer: `Removed` or `Failed`.
    Remove {
        /// Also the pool set file.
        set_file: bool,
    },
    /// Request: read the headers again and judge the set's health.
    /// Answer: `Opened` or `Failed`.
    Inspect,
    /// Request: the session ends; the server releases its locks. Answer:
    /// `Done`.
    Close,
    /// Request, in a session opened for writing with nothing failed since
    /// its last fence: write the sync mark (the server adds the pool's
    /// `run_id`) beside the pool set file, durably. Answer: `Done` or
    /// `Failed`.
    Mark {
        /// The pool set UUID (the server refuses another pool's).
        poolset_uuid: [u8; 16],
        /// The source's lineage.
        lineage: [u8; 16],
        /// The source's timeline.
        timeline: u32,
        /// The source's epoch the pool now holds.
        epoch: u32,
    },
    /// Answer: the request succeeded.
    Done,
    /// Answer: the request failed.
    Failed(Failure),
    /// Answer to `Open` and `Inspect`.
    Opened(Box<Opened>),
    /// Answer to `Read`.
    Data {
        /// Logical offset of the first byte.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Answer to `Digests`: one 128-bit digest per piece, in order.
    DigestList(Vec<u128>),
    /// Answer to `Remove`.
    Removed(Vec<RemovedFile>),
}

/// Kind bytes.
pub mod kind {
    /// `Open`.
    pub const OPEN: u8 = 0x01;
    /// `Read`.
    pub const READ: u8 = 0x02;
    /// `Digests`.
    pub const DIGESTS: u8 = 0x03;
    /// `Write`.
    pub const WRITE: u8 = 0x04;
    /// `Flush`.
    pub const FLUSH: u8 = 0x05;
    /// `Fence`.
    pub const FENCE: u8 = 0x06;
    /// `WriteHeader`.
    pub const WRITE_HEADER: u8 = 0x07;
    /// `CreatePart`.
    pub const CREATE_PART: u8 = 0x08;
    /// `Remove`.
    pub const REMOVE: u8 = 0x09;
    /// `Inspect`.
    pub const INSPECT: u8 = 0x0A;
    /// `Close`.
    pub const CLOSE: u8 = 0x0B;
    /// `SetMode`.
    pub const SET_MODE: u8 = 0x0C;
    /// `Mark`.
    pub const MARK: u8 = 0x0D;
    /// `Done`.
    pub const DONE: u8 = 0x80;
    /// `Failed`.
    pub const FAILED: u8 = 0x81;
    /// `Opened`.
    pub const OPENED: u8 = 0x82;
    /// `Data`.
    pub const DATA: u8 = 0x83;
    /// `DigestList`.
    pub const DIGEST_LIST: u8 = 0x84;
    /// `Removed`.
    pub const REMOVED: u8 = 0x85;
}

impl Message {
    /// The kind byte of its frame.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Open(_) => kind::OPEN,
            Message::Read { .. } => kind::READ,
            Message::Digests { .. } => kind::DIGESTS,
            Message::Write { .. } => kind::WRITE,
            Message::Flush { .. } => kind::FLUSH,
            Message::Fence => kind::FENCE,
            Message::WriteHeader { .. } => kind::WRITE_HEADER,
            Message::CreatePart { .. } => kind::CREATE_PART,
            Message::Remove { .. } => kind::REMOVE,
            Message::Inspect => kind::INSPECT,
            Message::Close => kind::CLOSE,
            Message::SetMode { .. } => kind::SET_MODE,
            Message::Mark { .. } => kind::MARK,
            Message::Done => kind::DONE,
            Message::Failed(_) => kind::FAILED,
            Message::Opened(_) => kind::OPENED,
            Message::Data { .. } => kind::DATA,
            Message::DigestList(_) => kind::DIGEST_LIST,
            Message::Removed(_) => kind::REMOVED,
        }
    }

    /// Its name in messages.
    pub fn name(&self) -> &'static str {
        name_of(self.kind()).unwrap_or("unknown")
    }

    /// Whether its frame is worth compressing (data, and answers with
    /// header pages).
    pub fn compressible(&self) -> bool {
        matches!(
            self,
            Message::Write { .. }
                | Message::Data { .. }
                | Message::Opened(_)
                | Message::WriteHeader { .. }
        )
    }

    /// Whether the server answers it.
    pub fn expects_answer(&self) -> bool {
        !matches!(self, Message::Write { .. } | Message::Flush { .. })
    }

    /// The payload.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut w = Writer {
            buf: Vec::new(),
            message: self.name(),
        };
        match self {
            Message::Open(o) => {
                w.str(&o.path, MAX_PATH, "path")?;
                w.u8(u8::from(o.write));
                match &o.expect_uuid {
                    Some(u) => {
                        w.u8(1);
                        w.bytes(u);
                    }
                    None => w.u8(0),
                }
            }
            Message::Read { offset, len } => {
                w.u64(*offset);
                w.u32(*len);
            }
            Message::Digests { runs } => {
                w.count(runs.len(), MAX_DIGEST_RUNS, "runs")?;
                for r in runs {
                    w.u64(r.offset);
                    w.u32(r.piece);
                    w.u32(r.count);
                }
            }
            Message::Write { offset, data } | Message::Data { offset, data } => {
                w.check_len(data.len(), MAX_DATA as usize, "data")?;
                w.u64(*offset);
                w.bytes(data);
            }
            Message::Flush { offset, len } => {
                w.u64(*offset);
                w.u64(*len);
            }
            Message::WriteHeader { part, write } => {
                w.u32(*part);
                match write {
                    HeaderWrite::Whole { page, stamp_crtime } => {
                        if page.len() != HEADER_PAGE {
                            return Err(w.fail(format!(
                                "a header page of {} bytes (not {HEADER_PAGE})",
                                page.len()
                            )));
                        }
                        w.u8(1);
                        w.u8(u8::from(*stamp_crtime));
                        w.bytes(page);
                    }
                    HeaderWrite::Checksum { value } => {
                        w.u8(2);
                        w.u64(*value);
                    }
                }
            }
            Message::CreatePart { part, replace } => {
                w.u32(*part);
                w.u8(u8::from(*replace));
            }
            Message::SetMode { part, mode } => {
                if *mode > 0o7777 {
                    return Err(w.fail(format!("{mode:#o} is not a file mode")));
                }
                w.u32(*part);
                w.u32(*mode);
            }
            Message::Remove { set_file } => w.u8(u8::from(*set_file)),
            Message::Mark {
                poolset_uuid,
                lineage,
                timeline,
                epoch,
            } => {
                w.bytes(poolset_uuid);
                w.bytes(lineage);
                w.u32(*timeline);
                w.u32(*epoch);
            }
            Message::Fence | Message::Inspect | Message::Close | Message::Done => {}
            Message::Failed(f) => {
                w.u16(f.code.to_u16());
                w.str(&f.message, MAX_TEXT, "message")?;
            }
            Message::Opened(o) => encode_opened(&mut w, o)?,
            Message::DigestList(list) => {
                let max = usize::try_from(MAX_DIGESTS).unwrap_or(usize::MAX);
                w.check_len(list.len(), max, "digests")?;
                for d in list {
                    w.bytes(&d.to_le_bytes());
                }
            }
            Message::Removed(files) => {
                w.count(files.len(), MAX_REMOVED, "files")?;
                for f in files {
                    w.str(&f.path, MAX_PATH, "path")?;
                    w.u8(u8::from(f.removed));
                }
            }
        }
        Ok(w.buf)
    }

    /// The offset and bytes of a `write` or `data` payload, borrowed from
    /// it instead of copied: what [`Message::decode`] checks, for the
    /// receiver of bulk data that writes the bytes straight away.
    pub fn decode_data(kind: u8, payload: &[u8]) -> Result<(u64, &[u8]), Error> {
        let message = match kind {
            kind::WRITE | kind::DATA => name_of(kind).unwrap_or("data"),
            _ => return Err(Error::UnknownKind { kind }),
        };
        let mut r = Reader {
            buf: payload,
            pos: 0,
            message,
        };
        data_fields(&mut r)
    }

    /// Decodes the payload of a frame of kind `kind`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, Error> {
        let name = name_of(kind).ok_or(Error::UnknownKind { kind })?;
        let mut r = Reader {
            buf: payload,
            pos: 0,
            message: name,
        };
        let m = match kind {
            kind::OPEN => {
                let path = r.str(MAX_PATH, "path")?;
                if path.is_empty() {
                    return Err(r.field_at(4, "path", "empty".into()));
                }
                let write = r.bool("write")?;
                let expect_uuid = match r.u8("uuid present")? {
                    0 => None,
                    1 => Some(r.array::<16>("pool set uuid")?),
                    n => return Err(r.field_back(1, "uuid present", format!("{n} is not 0 or 1"))),
                };
                Message::Open(Open {
                    path,
                    write,
                    expect_uuid,
                })
            }
            kind::READ => {
                let offset = r.u64("offset")?;
                let len = r.u32("length")?;
                if len == 0 || len > MAX_DATA {
                    return Err(r.field_back(
                        4,
                        "length",
                        format!("{len} is outside 1 to {MAX_DATA}"),
                    ));
                }
                check_range(&r, offset, u64::from(len), 12)?;
                Message::Read { offset, len }
            }
            kind::DIGESTS => decode_digests(&mut r)?,
            kind::WRITE | kind::DATA => {
                let (offset, data) = data_fields(&mut r)?;
                let data = data.to_vec();
                if kind == kind::WRITE {
                    Message::Write { offset, data }
                } else {
                    Message::Data { offset, data }
                }
            }
            kind::FLUSH => {
                let offset = r.u64("offset")?;
                let len = r.u64("length")?;
                check_range(&r, offset, len, 16)?;
                Message::Flush { offset, len }
            }
            kind::FENCE => Message::Fence,
            kind::WRITE_HEADER => {
                let part = r.u32("part")?;
                let write = match r.u8("write kind")? {
                    1 => {
                        let stamp_crtime = r.bool("stamp crtime")?;
                        let page = r.take(HEADER_PAGE, "header page")?.to_vec();
                        HeaderWrite::Whole { page, stamp_crtime }
                    }
                    2 => HeaderWrite::Checksum {
                        value: r.u64("checksum")?,
                    },
                    n => return Err(r.field_back(1, "write kind", format!("{n} is not 1 or 2"))),
                };
                Message::WriteHeader { part, write }
            }
            kind::CREATE_PART => Message::CreatePart {
                part: r.u32("part")?,
                replace: r.bool("replace")?,
            },
            kind::SET_MODE => {
                let part = r.u32("part")?;
                let mode = r.u32("mode")?;
                if mode > 0o7777 {
                    return Err(r.field_back(4, "mode", format!("{mode:#o} is not a file mode")));
                }
                Message::SetMode { part, mode }
            }
            kind::REMOVE => Message::Remove {
                set_file: r.bool("set file")?,
            },
            kind::MARK => Message::Mark {
                poolset_uuid: r.array::<16>("pool set uuid")?,
                lineage: r.array::<16>("lineage")?,
                timeline: r.u32("timeline")?,
                epoch: r.u32("epoch")?,
            },
            kind::INSPECT => Message::Inspect,
            kind::CLOSE => Message::Close,
            kind::DONE => Message::Done,
            kind::FAILED => {
                let code = FailureCode::from_u16(r.u16("code")?);
                let message = r.str(MAX_TEXT, "message")?;
                Message::Failed(Failure { code, message })
            }
            kind::OPENED => Message::Opened(Box::new(decode_opened(&mut r)?)),
            kind::DIGEST_LIST => {
                let rest = r.rest();
                if !rest.len().is_multiple_of(16) || rest.len() as u64 / 16 > MAX_DIGESTS {
                    return Err(r.field_at(
                        0,
                        "digests",
                        format!(
                            "{} bytes are not at most {MAX_DIGESTS} digests of 16 bytes",
                            rest.len()
                        ),
                    ));
                }
                Message::DigestList(
                    rest.chunks_exact(16)
                        .map(|c| {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(c);
                            u128::from_le_bytes(b)
                        })
                        .collect(),
                )
            }
            kind::REMOVED => {
                let n = r.count(MAX_REMOVED, "files")?;
                let mut files = Vec::with_capacity(n);
                for _ in 0..n {
                    let path = r.str(MAX_PATH, "path")?;
                    let removed = r.bool("removed")?;
                    files.push(RemovedFile { path, removed });
                }
                Message::Removed(files)
            }
            _ => return Err(Error::UnknownKind { kind }),
        };
        r.finish()?;
        Ok(m)
    }
}

/// The name of the message of kind `kind`, if there is one.
pub fn name_of(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::OPEN => "open",
        kind::READ => "read",
        kind::DIGESTS => "digests",
        kind::WRITE => "write",
        kind::FLUSH => "flush",
        kind::FENCE => "fence",
        kind::WRITE_HEADER => "write header",
        kind::CREATE_PART => "create part",
        kind::REMOVE => "remove",
        kind::INSPECT => "inspect",
        kind::CLOSE => "close",
        kind::SET_MODE => "set mode",
        kind::MARK => "mark",
        kind::DONE => "done",
        kind::FAILED => "failed",
        kind::OPENED => "opened",
        kind::DATA => "data",
        kind::DIGEST_LIST => "digest list",
        kind::REMOVED => "removed",
        _ => return None,
    })
}

/// The fields of a `write` or `data` payload: the offset, then 1 to
/// [`MAX_DATA`] bytes that fit below 2^64.
fn data_fields<'a>(r: &mut Reader<'a>) -> Result<(u64, &'a [u8]), Error> {
    let offset = r.u64("offset")?;
    let data = r.rest();
    if data.is_empty() || data.len() > MAX_DATA as usize {
        return Err(r.field_at(
            8,
            "data",
            format!("{} bytes is outside 1 to {MAX_DATA}", data.len()),
        ));
    }
    check_range(r, offset, data.len() as u64, 8)?;
    Ok((offset, data))
}

/// Refuses a range whose end overflows 64 bits.
fn check_range(r: &Reader<'_>, offset: u64, len: u64, at: usize) -> Result<(), Error> {
    if offset.checked_add(len).is_none() {
        return Err(r.field_at(
            at,
            "length",
            format!("the range at {offset} of {len} bytes overflows a 64-bit offset"),
        ));
    }
    Ok(())
}

fn decode_digests(r: &mut Reader<'_>) -> Result<Message, Error> {
    let n = r.count(MAX_DIGEST_RUNS, "runs")?;
    let mut runs = Vec::with_capacity(n);
    let mut total = 0u64;
    for _ in 0..n {
        let at = r.pos;
        let offset = r.u64("run offset")?;
        let piece = r.u32("run piece")?;
        let count = r.u32("run count")?;
        if piece == 0 || piece > MAX_DIGEST_PIECE {
            return Err(r.field_at(
                at + 8,
                "run piece",
                format!("{piece} is outside 1 to {MAX_DIGEST_PIECE}"),
            ));
        }
        if count == 0 {
            return Err(r.field_at(at + 12, "run count", "zero".into()));
        }
        total += u64::from(count);
        if total > MAX_DIGESTS {
            return Err(r.field_at(
                at + 12,
                "run count",
                format!("the runs ask for more than {MAX_DIGESTS} digests"),
            ));
        }
        check_range(r, offset, u64::from(piece) * u64::from(count), at)?;
        runs.push(DigestRun {
            offset,
            piece,
            count,
        });
    }
    Ok(Message::Digests { runs })
}

fn encode_opened(w: &mut Writer, o: &Opened) -> Result<(), Error> {
    w.str(&o.set_path, MAX_PATH, "set path")?;
    w.str(&o.set_text, MAX_SET_TEXT, "set text")?;
    w.str(&o.server, MAX_SERVER_NAME, "server")?;
    w.count(o.parts.len(), MAX_PARTS, "parts")?;
    for p in &o.parts {
        w.u8(match p.status {
            PartStatus::Ok => 0,
            PartStatus::Missing => 1,
            PartStatus::Inaccessible => 2,
            PartStatus::SizeMismatch => 3,
        });
        w.u64(p.size);
        w.u32(p.mode);
        w.str(&p.reason, MAX_TEXT, "reason")?;
        match &p.header {
            HeaderPage::None => w.u8(0),
            HeaderPage::NotRead => w.u8(1),
            HeaderPage::Unreadable { reason } => {
                w.u8(2);
                w.str(reason, MAX_TEXT, "header reason")?;
            }
            HeaderPage::Read { bytes } => {
                if bytes.len() != HEADER_PAGE {
                    return Err(w.fail(format!(
                        "a header page of {} bytes (not {HEADER_PAGE})",
                        bytes.len()
                    )));
                }
                w.u8(3);
                w.bytes(bytes);
            }
        }
        w.u8(u8::from(p.broken));
    }
    w.u8(u8::from(o.healthy));
    w.u64(o.pool_size);
    w.count(o.verdicts.len(), MAX_VERDICTS, "verdicts")?;
    for v in &o.verdicts {
        w.str(v, MAX_TEXT, "verdict")?;
    }
    match &o.mark {
        Some(m) => {
            w.u8(1);
            w.bytes(&m.encode());
        }
        None => w.u8(0),
    }
    Ok(())
}

fn decode_opened(r: &mut Reader<'_>) -> Result<Opened, Error> {
    let set_path = r.str(MAX_PATH, "set path")?;
    let set_text = r.str(MAX_SET_TEXT, "set text")?;
    let server = r.str(MAX_SERVER_NAME, "server")?;
    let n = r.count(MAX_PARTS, "parts")?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let status = match r.u8("part status")? {
            0 => PartStatus::Ok,
            1 => PartStatus::Missing,
            2 => PartStatus::Inaccessible,
            3 => PartStatus::SizeMismatch,
            s => return Err(r.field_back(1, "part status", format!("{s} is not 0 to 3"))),
        };
        let size = r.u64("part size")?;
        let mode = r.u32("part mode")?;
        let reason = r.str(MAX_TEXT, "reason")?;
        let header = match r.u8("header kind")? {
            0 => HeaderPage::None,
            1 => HeaderPage::NotRead,
            2 => HeaderPage::Unreadable {
                reason: r.str(MAX_TEXT, "header reason")?,
            },
            3 => HeaderPage::Read {
                bytes: r.take(HEADER_PAGE, "header page")?.to_vec(),
            },
            k => return Err(r.field_back(1, "header kind", format!("{k} is not 0 to 3"))),
        };
        let broken = r.bool("broken")?;
        parts.push(PartReport {
            status,
            size,
            mode,
            reason,
            header,
            broken,
        });
    }
    let healthy = r.bool("healthy")?;
    let pool_size = r.u64("pool size")?;
    let n = r.count(MAX_VERDICTS, "verdicts")?;
    let mut verdicts = Vec::with_capacity(n);
    for _ in 0..n {
        verdicts.push(r.str(MAX_TEXT, "verdict")?);
    }
    let mark = match r.u8("mark present")? {
        0 => None,
        1 => {
            let at = r.pos;
            let bytes = r.take(MARK_LEN, "mark")?.to_vec();
            Some(SyncMark::decode(&bytes).map_err(|e| r.field_at(at, "mark", e.to_string()))?)
        }
        n => return Err(r.field_back(1, "mark present", format!("{n} is not 0 or 1"))),
    };
    Ok(Opened {
        set_path,
        set_text,
        server,
        parts,
        healthy,
        pool_size,
        verdicts,
        mark,
    })
}

/// Builds a payload.
struct Writer {
    buf: Vec<u8>,
    message: &'static str,
}

impl Writer {
    fn fail(&self, problem: String) -> Error {
        Error::Encode {
            message: self.message,
            problem,
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn check_len(&self, len: usize, max: usize, field: &str) -> Result<(), Error> {
        if len > max {
            return Err(self.fail(format!("{field}: {len} is more than {max}")));
        }
        Ok(())
    }
    fn count(&mut self, n: usize, max: usize, field: &str) -> Result<(), Error> {
        self.check_len(n, max, field)?;
        // `n` is at most `max`, which fits in a u32.
        self.u32(n as u32);
        Ok(())
    }
    fn str(&mut self, s: &str, max: usize, field: &str) -> Result<(), Error> {
        self.count(s.len(), max, field)?;
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// Reads a payload: every read is bounded by its end, and errors name the
/// message, the field and the offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn field_at(&self, offset: usize, field: &'static str, problem: String) -> Error {
        Error::Field {
            message: self.message,
            field,
            offset,
            problem,
        }
    }
    /// An error of the field that ends at the current position and is `len` long.
    fn field_back(&self, len: usize, field: &'static str, problem: String) -> Error {
        self.field_at(self.pos.saturating_sub(len), field, problem)
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Error::Truncated {
                message: self.message,
                field,
                offset: self.pos,
                needed: n,
                available: self.buf.len().saturating_sub(self.pos),
            }),
        }
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(field)?[0])
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, Error> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.field_back(1, field, format!("{n} is not 0 or 1"))),
        }
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// A count (or length) bounded by `max`, checked before the caller
    /// allocates by it.
    fn count(&mut self, max: usize, field: &'static str) -> Result<usize, Error> {
        let n = self.u32(field)?;
        match usize::try_from(n) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(self.field_back(4, field, format!("{n} is more than {max}"))),
        }
    }
    fn str(&mut self, max: usize, field: &'static str) -> Result<String, Error> {
        let n = self.count(max, field)?;
        let at = self.pos;
        let bytes = self.take(n, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.field_at(at + e.valid_up_to(), field, "not valid UTF-8".into())),
        }
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }
    fn finish(&self) -> Result<(), Error> {
        if self.pos < self.buf.len() {
            return Err(Error::Trailing {
                message: self.message,
                offset: self.pos,
                extra: self.buf.len() - self.pos,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_name_and_unknown_kinds_are_refused() {
        assert_eq!(name_of(kind::WRITE_HEADER), Some("write header"));
        assert_eq!(
            Message::decode(0x7f, &[]),
            Err(Error::UnknownKind { kind: 0x7f })
        );
    }

    #[test]
    fn refusals_name_the_message_field_and_offset() {
        let mut p = Message::Read { offset: 0, len: 1 }.encode().unwrap();
        p[8..12].copy_from_slice(&(MAX_DATA + 1).to_le_bytes());
        assert_eq!(
            Message::decode(kind::READ, &p).unwrap_err().to_string(),
            format!(
                "invalid length at offset 8 of the read message: {} is outside 1 to {MAX_DATA}",
                MAX_DATA + 1
            )
        );
        let e = Message::decode(kind::FLUSH, &[0; 15]).unwrap_err();
        assert!(matches!(
            e,
            Error::Truncated {
                message: "flush",
                field: "length",
                offset: 8,
                ..
            }
        ));
        let e = Message::decode(kind::FENCE, &[0]).unwrap_err();
        assert!(matches!(
            e,
            Error::Trailing {
                offset: 0,
                extra: 1,
                ..
            }
        ));
        // A count far beyond the payload is refused by its bound.
        let mut p = vec![];
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = Message::decode(kind::DIGESTS, &p).unwrap_err();
        assert!(matches!(
            e,
            Error::Field {
                field: "runs",
                offset: 0,
                ..
            }
        ));
    }

    #[test]
    fn digest_runs_are_bounded_in_total() {
        let runs = vec![
            DigestRun {
                offset: 0,
                piece: 4096,
                count: 40000,
            },
            DigestRun {
                offset: 1 << 30,
                piece: 4096,
                count: 40000,
            },
        ];
        let p = Message::Digests { runs }.encode().unwrap();
        let e = Message::decode(kind::DIGESTS, &p).unwrap_err();
        assert!(e.to_string().contains("more than 65536 digests"), "{e}");
    }
}

//! `poolsync serve`: the remote end of the protocol (docs/wire.md), over
//! any [`Storage`] and any pair of byte streams.
//!
//! The server greets first, so a client that meets anything else knows
//! at once. It then answers requests in order until the client closes the
//! session or its input ends. It opens one pool set per session, resolved
//! under its root by [`rules`], and touches nothing but that
//! file and the parts it lists, each flocked for the whole session. The
//! local replica of that set is an ordinary [`OpenReplica`](crate::open::OpenReplica), so reads,
//! writes, digests and header writes are the engine's own.
//!
//! A failed write or flush is remembered and reported by the next fence,
//! which is what makes the client's writes pipelined: it never waits for
//! a write.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use poolsync_header::PoolHdr;
use poolsync_pmem::{Access, PartFile, Storage};
use poolsync_wire::{
    decode_header, negotiate, Agreed, Codec, DigestRun, Failure, FailureCode, Hello, Message,
    Opened, PartReport, PartStatus as WireStatus, RemovedFile, Role, SyncMark, FRAME_HEADER_LEN,
    HELLO_LEN,
};
use serde::Serialize;

use super::rules;
use crate::compare::LogicalRange;
use crate::endpoint::{Endpoint, HeaderPage, HeaderWrite};
use crate::inspect::{inspect, Health};
use crate::open::{open, reread_headers, HeaderState, OpenSet, PartStatus};
use crate::sync::plan::is_invalidated;
use crate::Error;

/// How `poolsync serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The directory every pool set path is resolved under (`serve.root`).
    pub root: PathBuf,
    /// The server's name in `opened` answers (`poolsync 0.1.0`).
    pub server: String,
}

/// What a session did, for the server's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServeReport {
    /// The pool set file served, resolved.
    pub set: Option<PathBuf>,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Whether the client closed the session (rather than vanishing).
    pub closed: bool,
}

/// Serves one session on `input` and `output` (the standard input and
/// output of `ssh host poolsync serve`). Returns when the client closes
/// the session or its input ends; fails when the connection fails or the
/// client breaks the protocol (after telling it so, when it can).
pub fn serve<S: Storage>(
    storage: &S,
    options: &ServeOptions,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<ServeReport, Error> {
    let mut out = BufWriter::with_capacity(256 << 10, output);
    let mut input = BufReader::with_capacity(256 << 10, input);
    let ours = Hello::ours(Role::Server);
    out.write_all(&ours.encode())
        .and_then(|()| out.flush())
        .map_err(|e| conn_error("sending the greeting", &e))?;
    let mut hello = [0u8; HELLO_LEN];
    input
        .read_exact(&mut hello)
        .map_err(|e| conn_error("reading the client's greeting", &e))?;
    let theirs = Hello::decode(&hello, Role::Client).map_err(|source| Error::ServeProtocol {
        frame: 0,
        error: source,
    })?;
    let agreed = negotiate(&ours, &theirs).map_err(|source| Error::ServeProtocol {
        frame: 0,
        error: source,
    })?;
    let mut server = Server {
        storage,
        options,
        agreed,
        served: None,
        encoder: Codec::new(),
        decoder: Codec::new(),
        report: ServeReport::default(),
        stored: Vec::new(),
        payload: Vec::new(),
    };
    loop {
        let message = match server.receive(&mut input)? {
            Some(Received::Message(m)) => m,
            // Written already; a write has no answer.
            Some(Received::Written) => continue,
            // The client went away: dropping the set releases its locks.
            None => return Ok(server.report),
        };
        let close = matches!(message, Message::Close);
        let answer = server.handle(message);
        if let Some(answer) = answer {
            server.send(&mut out, &answer)?;
        }
        if close {
            server.report.closed = true;
            return Ok(server.report);
        }
    }
}

fn conn_error(what: &str, e: &std::io::Error) -> Error {
    Error::ServeConnection {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// The pool set a session opened.
struct Served<F> {
    set: OpenSet<F>,
    /// The pool set file's text.
    text: String,
    /// The path the client named.
    name: String,
    /// The first failure of a write or flush since the last fence.
    pending: Option<String>,
    /// Opened for writing.
    write: bool,
}

struct Server<'a, S: Storage> {
    storage: &'a S,
    options: &'a ServeOptions,
    agreed: Agreed,
    served: Option<Served<S::File>>,
    encoder: Codec,
    decoder: Codec,
    report: ServeReport,
    /// The stored payload of the frame being read (kept for the next).
    stored: Vec<u8>,
    /// Its payload, decompressed (kept for the next).
    payload: Vec<u8>,
}

/// A frame received.
enum Received {
    /// A request to handle.
    Message(Message),
    /// A `write` request, which [`Server::receive`] carried out (or, after
    /// an earlier failure, dropped) as it read it.
    Written,
}

/// Carries out a `write` request: its failure is kept for the next fence,
/// and once one failed, writes are dropped until then.
fn write_to<F: PartFile>(served: Option<&mut Served<F>>, offset: u64, data: &[u8]) {
    if let Some(s) = served {
        if s.pending.is_none() {
            if let Err(e) = s.replica().and_then(|r| r.write(offset, data)) {
                s.pending = Some(e.to_string());
            }
        }
    }
}

/// A `failed` answer.
fn failed(code: FailureCode, message: String) -> Message {
    // Messages longer than the protocol carries are cut at a character.
    let mut message = message;
    if message.len() > poolsync_wire::message::MAX_TEXT {
        let mut end = poolsync_wire::message::MAX_TEXT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Message::Failed(Failure { code, message })
}

/// The failure code of an engine error.
fn code_of(e: &Error) -> FailureCode {
    match e {
        Error::ServeRefused { .. } => FailureCode::Refused,
        Error::ServeNotFound { .. } => FailureCode::NotFound,
        Error::Storage(poolsync_pmem::Error::Locked { .. })
        | Error::PartStorage {
            error: poolsync_pmem::Error::Locked { .. },
            ..
        } => FailureCode::Locked,
        Error::Storage(_) | Error::PartStorage { .. } | Error::LogicalRead { .. } => {
            FailureCode::Io
        }
        Error::Unsupported { .. } | Error::NoHdrs { .. } => FailureCode::Unsupported,
        _ => FailureCode::Other,
    }
}

fn failure(e: &Error) -> Message {
    failed(code_of(e), e.to_string())
}

impl<S: Storage> Server<'_, S> {
    /// The next message, `None` when the client's input ended between
    /// frames.
    fn receive(&mut self, input: &mut dyn Read) -> Result<Option<Received>, Error> {
        let frame = self.report.frames_in + 1;
        let mut head = [0u8; FRAME_HEADER_LEN];
        let mut got = 0;
        while got < FRAME_HEADER_LEN {
            match input.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(Error::ServeConnection {
                        what: format!("reading frame {frame}"),
                        reason: "the input ended inside a frame header".to_string(),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(conn_error(&format!("reading frame {frame}"), &e)),
            }
        }
        let header = decode_header(&head, self.agreed.max_payload).map_err(|source| {
            Error::ServeProtocol {
                frame,
                error: source,
            }
        })?;
        // Bulk data comes a few megabytes a frame: the buffers are kept
        // from frame to frame, and a write's bytes go to the replica from
        // them without a copy.
        let stored_len = header.stored_len as usize;
        if self.stored.len() < stored_len {
            self.stored.resize(stored_len, 0);
        }
        let stored = &mut self.stored[..stored_len];
        input
            .read_exact(stored)
            .map_err(|e| conn_error(&format!("reading frame {frame}"), &e))?;
        self.report.frames_in = frame;
        let protocol = |source| Error::ServeProtocol {
            frame,
            error: source,
        };
        self.decoder
            .payload_into(&head, &header, stored, &mut self.payload)
            .map_err(protocol)?;
        if header.kind == poolsync_wire::message::kind::WRITE {
            let (offset, data) =
                Message::decode_data(header.kind, &self.payload).map_err(protocol)?;
            write_to(self.served.as_mut(), offset, data);
            return Ok(Some(Received::Written));
        }
        Message::decode(header.kind, &self.payload)
            .map(|m| Some(Received::Message(m)))
            .map_err(protocol)
    }

    fn send(&mut self, out: &mut dyn Write, answer: &Message) -> Result<(), Error> {
        let frame = match self.encoder.seal(answer, self.agreed.max_payload) {
            Ok(f) => f,
            // An answer too large for a frame becomes a failure the client
            // can read.
            Err(e) => self
                .encoder
                .seal(
                    &failed(FailureCode::Other, e.to_string()),
                    self.agreed.max_payload,
                )
                .map_err(|source| Error::ServeProtocol {
                    frame: self.report.frames_out + 1,
                    error: source,
                })?,
        };
        out.write_all(&frame)
            .and_then(|()| out.flush())
            .map_err(|e| conn_error(&format!("sending a {} answer", answer.name()), &e))?;
        self.report.frames_out += 1;
        Ok(())
    }

    /// Handles one request; `None` for the requests that have no answer.
    fn handle(&mut self, message: Message) -> Option<Message> {
        let name = message.name();
        let no_set = || {
            failed(
                FailureCode::Protocol,
                format!("a {name} request before a pool set is open"),
            )
        };
        match message {
            Message::Open(open) => Some(self.open(&open)),
            Message::Close => Some(Message::Done),
            Message::Write { offset, data } => {
                write_to(self.served.as_mut(), offset, &data);
                None
            }
            Message::Flush { offset, len } => {
                if let Some(s) = self.served.as_mut() {
                    if s.pending.is_none() {
                        if let Err(e) = s.replica().and_then(|r| r.flush(offset, len)) {
                            s.pending = Some(e.to_string());
                        }
                    }
                }
                None
            }
            other => {
                if self.served.is_none() {
                    return Some(no_set());
                }
                Some(self.handle_open(other).unwrap_or_else(|e| failure(&e)))
            }
        }
    }

    /// Requests that need an open set.
    fn handle_open(&mut self, message: Message) -> Result<Message, Error> {
        let storage = self.storage;
        let Some(served) = self.served.as_mut() else {
            return Ok(failed(FailureCode::Protocol, "no pool set is open".into()));
        };
        match message {
            Message::Read { offset, len } => {
                let mut data = vec![0u8; len as usize];
                served.replica()?.read(offset, &mut data)?;
                Ok(Message::Data { offset, data })
            }
            Message::Digests { runs } => Ok(Message::DigestList(digests(served, &runs)?)),
            Message::Fence => {
                let fenced = served.replica()?.fence();
                match (served.pending.take(), fenced) {
                    (Some(first), _) => Ok(failed(FailureCode::Io, first)),
                    (None, Err(e)) => Err(e),
                    (None, Ok(())) => Ok(Message::Done),
                }
            }
            Message::WriteHeader { part, write } => {
                let part = served.part_index(part)?;
                let write = match write {
                    poolsync_wire::HeaderWrite::Whole { page, stamp_crtime } => {
                        let header = PoolHdr::decode(&page).map_err(|e| Error::InvalidRequest {
                            path: served.set.path.clone(),
                            reason: format!("a header page for part {part}: {e}"),
                        })?;
                        HeaderWrite::Whole {
                            header: Box::new(header),
                            stamp_crtime,
                        }
                    }
                    poolsync_wire::HeaderWrite::Checksum { value } => {
                        HeaderWrite::Checksum { value }
                    }
                };
                served.replica()?.write_header(part, &write)?;
                reread_headers(&mut served.set);
                Ok(Message::Done)
            }
            Message::CreatePart { part, replace } => {
                create_part(storage, served, part, replace)?;
                Ok(Message::Done)
            }
            Message::SetMode { part, mode } => {
                let part = served.part_index(part)?;
                let path = served.part_path(part)?;
                storage.set_mode(&path, mode)?;
                storage.fsync_parent(&path)?;
                Ok(Message::Done)
            }
            Message::Remove { set_file } => {
                let removed = remove(storage, served, set_file)?;
                self.served = None;
                Ok(Message::Removed(removed))
            }
            Message::Inspect => {
                reread_headers(&mut served.set);
                let mark = super::mark::read(storage, &served.set.path);
                Ok(Message::Opened(Box::new(opened(
                    &served.set,
                    &served.text,
                    &served.name,
                    &self.options.server,
                    mark,
                ))))
            }
            Message::Mark {
                poolset_uuid,
                lineage,
                timeline,
                epoch,
            } => write_mark(storage, served, poolset_uuid, lineage, timeline, epoch),
            Message::Open(_) => Ok(failed(
                FailureCode::Protocol,
                format!("{} is open already", served.name),
            )),
            other => Ok(failed(
                FailureCode::Protocol,
                format!("a {} message is not a request", other.name()),
            )),
        }
    }

    fn open(&mut self, request: &poolsync_wire::Open) -> Message {
        if let Some(s) = &self.served {
            return failed(FailureCode::Protocol, format!("{} is open already", s.name));
        }
        match open_set(self.storage, self.options, request) {
            Ok((set, text)) => {
                // A session that may write forgets the mark before anything
                // can change (docs/wire.md section 9).
                let mark = super::mark::read(self.storage, &set.path);
                if request.write {
                    if let Err(e) = super::mark::forget(self.storage, &set.path) {
                        return failure(&e);
                    }
                }
                let answer = opened(&set, &text, &request.path, &self.options.server, mark);
                self.report.set = Some(set.path.clone());
                self.served = Some(Served {
                    set,
                    text,
                    name: request.path.clone(),
                    pending: None,
                    write: request.write,
                });
                Message::Opened(Box::new(answer))
            }
            Err(e) => failure(&e),
        }
    }
}

impl<F: PartFile> Served<F> {
    fn replica(&self) -> Result<&crate::open::OpenReplica<F>, Error> {
        self.set
            .replicas
            .first()
            .ok_or_else(|| Error::InvalidRequest {
                path: self.set.path.clone(),
                reason: "the pool set has no replica".to_string(),
            })
    }

    /// Part `part` (counted over every replica; there is one).
    fn part_index(&self, part: u32) -> Result<usize, Error> {
        let n = self.replica()?.parts.len();
        usize::try_from(part)
            .ok()
            .filter(|&p| p < n)
            .ok_or_else(|| Error::InvalidRequest {
                path: self.set.path.clone(),
                reason: format!("part {part} does not exist (the pool set has {n})"),
            })
    }

    fn part_path(&self, part: usize) -> Result<PathBuf, Error> {
        self.replica()?
            .parts
            .get(part)
            .map(|p| p.path.clone())
            .ok_or_else(|| Error::InvalidRequest {
                path: self.set.path.clone(),
                reason: format!("part {part} does not exist"),
            })
    }
}

/// Resolves, opens, locks and checks the pool set a client asked for.
fn open_set<S: Storage>(
    storage: &S,
    options: &ServeOptions,
    request: &poolsync_wire::Open,
) -> Result<(OpenSet<S::File>, String), Error> {
    let root = rules::resolve_root(storage, &options.root)?;
    let path = rules::resolve_set(storage, &root, &request.path)?;
    let unsupported = |line: usize, what: String| Error::Unsupported {
        set: path.clone(),
        line,
        what,
    };
    // The set file's own text is checked first, before any part is touched.
    let access = if request.write {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let loaded = crate::load::load(storage, &path, Access::ReadOnly)?;
    if !loaded.is_poolset {
        return Err(unsupported(
            0,
            "a remote replica named by a single-file pool rather than a pool set file:".to_string()
                + " remote replicas are pool set files, and other files are",
        ));
    }
    let (local, remotes) = loaded.set.split_remote();
    if let Some(r) = remotes.first() {
        return Err(unsupported(
            r.line,
            format!(
                "a remote pool set with a remote replica of its own (REPLICA {} {}) is",
                r.node, r.descriptor
            ),
        ));
    }
    if local.replicas.len() != 1 {
        let line = local.replicas.get(1).map_or(0, |r| r.line());
        return Err(unsupported(
            line,
            "a remote pool set with more than one replica (give the standby one replica; its host's own sync can keep replicas of it) is".to_string(),
        ));
    }
    for part in local.replicas.iter().flat_map(|r| r.parts()) {
        rules::check_part(
            storage,
            &root,
            &request.path,
            part.line,
            Path::new(&part.path),
        )?;
    }
    let text = set_text(&loaded.file, &path)?;
    drop(loaded);
    let set = open(storage, &path, access)?;
    if let Some(expected) = request.expect_uuid {
        check_uuid(&set, &request.path, expected)?;
    }
    Ok((set, text))
}

/// The pool set file's text, as the client will parse it (with its line
/// numbers).
fn set_text<F: PartFile>(file: &F, path: &Path) -> Result<String, Error> {
    let len = file.len()?;
    let max = poolsync_wire::message::MAX_SET_TEXT;
    let n = usize::try_from(len)
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| Error::Unsupported {
            set: path.to_path_buf(),
            line: 0,
            what: format!("a remote pool set file of {len} bytes (more than {max}) is"),
        })?;
    let mut buf = vec![0u8; n];
    file.read_at(0, &mut buf)?;
    // `load` parsed it, so it is UTF-8.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Refuses a remote pool whose headers (intact, or invalidated by an
/// interrupted update) belong to another pool.
fn check_uuid<F: PartFile>(set: &OpenSet<F>, name: &str, expected: [u8; 16]) -> Result<(), Error> {
    for part in set.parts() {
        let Some(hdr) = part.header() else { continue };
        let ours = hdr.checksum == hdr.compute_checksum() || is_invalidated(hdr);
        let zero = part
            .header_bytes()
            .is_some_and(|b| b.iter().all(|&x| x == 0));
        if ours && !zero && hdr.poolset_uuid.0 != expected {
            return Err(Error::ServeRefused {
                path: format!("{name}:{}", part.line),
                reason: format!(
                    "{} belongs to the pool {}, not to the client's pool {}: the remote pool set file names another pool's parts",
                    part.path.display(),
                    hdr.poolset_uuid.to_canonical(),
                    poolsync_header::RawUuid(expected).to_canonical()
                ),
            });
        }
    }
    Ok(())
}

/// The `opened` answer: what opening found and the health check's verdict,
/// judged here, on the remote host.
fn opened<F: PartFile>(
    set: &OpenSet<F>,
    text: &str,
    name: &str,
    server: &str,
    mark: Option<SyncMark>,
) -> Opened {
    let health = inspect(set);
    let parts = set
        .parts()
        .map(|p| {
            let (status, reason) = match &p.status {
                PartStatus::Ok => (WireStatus::Ok, String::new()),
                PartStatus::Missing => (WireStatus::Missing, String::new()),
                PartStatus::Inaccessible { reason } => (WireStatus::Inaccessible, reason.clone()),
                PartStatus::SizeMismatch { .. } => (WireStatus::SizeMismatch, String::new()),
            };
            let header = match HeaderPage::from(&p.header) {
                HeaderPage::None => poolsync_wire::HeaderPage::None,
                HeaderPage::NotRead => poolsync_wire::HeaderPage::NotRead,
                HeaderPage::Unreadable { reason } => {
                    poolsync_wire::HeaderPage::Unreadable { reason }
                }
                HeaderPage::Read { bytes } => poolsync_wire::HeaderPage::Read { bytes },
            };
            PartReport {
                status,
                size: p.meta.map_or(0, |m| m.len),
                mode: p.meta.map_or(0, |m| m.mode & 0o7777),
                reason,
                header,
                broken: health.part_broken(p.replica, p.index),
            }
        })
        .collect();
    Opened {
        set_path: name.to_string(),
        set_text: text.to_string(),
        server: server.to_string(),
        parts,
        healthy: health.is_healthy(),
        pool_size: health.pool_size.unwrap_or(0),
        verdicts: verdicts(&health),
        mark,
    }
}

/// The `mark` request: once everything written is durable and the pool is
/// healthy and the client's, writes the sync mark with the pool's
/// `run_id` (docs/wire.md section 9).
fn write_mark<S: Storage>(
    storage: &S,
    served: &mut Served<S::File>,
    poolset_uuid: [u8; 16],
    lineage: [u8; 16],
    timeline: u32,
    epoch: u32,
) -> Result<Message, Error> {
    if !served.write {
        return Ok(failed(
            FailureCode::Protocol,
            format!(
                "{} is open read-only: a mark needs a session opened for writing",
                served.name
            ),
        ));
    }
    let fenced = served.replica()?.fence();
    if let Some(first) = served.pending.take() {
        return Ok(failed(FailureCode::Io, first));
    }
    fenced?;
    reread_headers(&mut served.set);
    let health = inspect(&served.set);
    if !health.is_healthy() {
        return Ok(failed(
            FailureCode::Io,
            format!("{} is not healthy: no mark is written", served.name),
        ));
    }
    check_uuid(&served.set, &served.name, poolset_uuid)?;
    let mut run_id = [0u8; 8];
    let at = poolsync_header::OBJ_DESC_OFF + poolsync_header::OBJ_DESC_RUN_ID_OFF as u64;
    served.replica()?.read(at, &mut run_id)?;
    let mark = SyncMark {
        poolset_uuid,
        lineage,
        timeline,
        epoch,
        run_id: u64::from_le_bytes(run_id),
    };
    super::mark::write(storage, &served.set.path, &mark)?;
    Ok(Message::Done)
}

/// The health check's findings, one line each.
pub(crate) fn verdicts(health: &Health) -> Vec<String> {
    let mut out = Vec::new();
    for r in &health.replicas {
        if let Some(m) = &r.message {
            out.push(m.clone());
        }
        out.extend(r.parts.iter().filter_map(|p| p.message.clone()));
    }
    out.extend(health.inconsistencies.iter().map(ToString::to_string));
    out.truncate(poolsync_wire::message::MAX_VERDICTS);
    out
}

/// The digests a `digests` request asks for.
fn digests<F: PartFile>(served: &Served<F>, runs: &[DigestRun]) -> Result<Vec<u128>, Error> {
    let mut ranges = Vec::new();
    for run in runs {
        for i in 0..u64::from(run.count) {
            ranges.push(LogicalRange::new(
                run.offset + i * u64::from(run.piece),
                u64::from(run.piece),
            ));
        }
    }
    let mut out = Vec::with_capacity(ranges.len());
    served.replica()?.digests(&ranges, &mut out)?;
    Ok(out)
}

/// Creates part `part` anew (fully allocated, mode 0), durably.
fn create_part<S: Storage>(
    storage: &S,
    served: &mut Served<S::File>,
    part: u32,
    replace: bool,
) -> Result<(), Error> {
    let index = served.part_index(part)?;
    let set_path = served.set.path.clone();
    let slot = served
        .set
        .replicas
        .first_mut()
        .and_then(|r| r.parts.get_mut(index))
        .ok_or_else(|| Error::InvalidRequest {
            path: set_path.clone(),
            reason: format!("part {part} does not exist"),
        })?;
    let exists = storage.stat(&slot.path)?.is_some();
    if exists && !replace {
        return Err(Error::InvalidRequest {
            path: set_path,
            reason: format!(
                "{} exists; it is replaced only when asked",
                slot.path.display()
            ),
        });
    }
    // Unlinked while our lock is held, as libpmempool does.
    slot.file = None;
    if exists {
        storage.remove(&slot.path)?;
    }
    let file = storage.create(&slot.path, slot.configured_size)?;
    // The first fence makes the allocation durable, the directory sync the
    // new entry.
    file.fence()?;
    storage.fsync_parent(&slot.path)?;
    slot.file = Some(file);
    slot.status = PartStatus::Ok;
    slot.meta = storage.stat(&slot.path)?;
    if !matches!(slot.header, HeaderState::None) {
        slot.header = HeaderState::NotRead;
    }
    reread_headers(&mut served.set);
    Ok(())
}

/// Removes every part (and the pool set file with `set_file`), durably.
fn remove<S: Storage>(
    storage: &S,
    served: &mut Served<S::File>,
    set_file: bool,
) -> Result<Vec<RemovedFile>, Error> {
    let mut out = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    let mut paths: Vec<PathBuf> = served.set.parts().map(|p| p.path.clone()).collect();
    // The pool's sync mark goes with it (a write session removed the
    // mark itself at open; a temporary copy may be left).
    for mark in super::mark::mark_files(&served.set.path) {
        if storage.stat(&mark)?.is_some() {
            paths.push(mark);
        }
    }
    if set_file {
        paths.push(served.set.path.clone());
    }
    // The locks are held until every file is gone.
    for path in &paths {
        let removed = match storage.stat(path)? {
            Some(_) => {
                storage.remove(path)?;
                dirs.insert(path.parent().map(Path::to_path_buf).unwrap_or_default());
                true
            }
            None => false,
        };
        out.push(RemovedFile {
            path: path.display().to_string(),
            removed,
        });
    }
    for dir in dirs {
        storage.fsync_dir(&dir)?;
    }
    served.set.release();
    Ok(out)
}

//! [`RemoteReplica`]: a remote pool set opened through a [`Session`], as
//! an [`Endpoint`] of the one executor.
//!
//! Reads, writes, flushes, fences and header writes become requests;
//! writes and flushes go out without waiting (the server reports their
//! failures at the next fence). Comparisons exchange digests, never the
//! remote bytes ([`Endpoint::prefers_digests`]). The remote pool set file
//! arrives as text and is parsed here, so logical ranges are placed on the
//! remote parts by the same [`poolsync_poolset::map_range`] as local ones.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use poolsync_poolset::{Extent, PoolSet};
use poolsync_wire::{
    DigestRun, Message, Opened, MAX_DATA, MAX_DIGESTS, MAX_DIGEST_PIECE, MAX_DIGEST_RUNS,
};

use super::session::{Session, WireStats};
use crate::compare::LogicalRange;
use crate::endpoint::{digest, Digest, Endpoint, HeaderPage, HeaderWrite, Location};
use crate::open::HeaderState;
use crate::Error;

/// Where a remote replica is named: the administrator's pool set file and
/// its `REPLICA` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// The administrator's pool set file.
    pub set: PathBuf,
    /// The line of the `REPLICA host set` line.
    pub line: usize,
    /// `[user@]host`.
    pub node: String,
    /// The remote pool set file, relative to the server's root.
    pub descriptor: String,
}

impl RemoteRef {
    /// The remote replica of `line` in the pool set file at `set`.
    pub fn of(set: &std::path::Path, line: &poolsync_poolset::RemoteLine) -> RemoteRef {
        RemoteRef {
            set: set.to_path_buf(),
            line: line.line,
            node: line.node.clone(),
            descriptor: line.descriptor.clone(),
        }
    }

    /// `host:set`, as messages name the remote replica.
    pub fn name(&self) -> String {
        super::remote_name(&self.node, &self.descriptor)
    }

    /// A refusal concerning this remote replica.
    pub fn refuse(&self, reason: String) -> Error {
        Error::RemoteRefused {
            set: self.set.clone(),
            line: self.line,
            node: self.node.clone(),
            descriptor: self.descriptor.clone(),
            reason,
        }
    }
}

/// What the server reported of the remote pool set, parsed.
#[derive(Debug, Clone)]
pub struct RemoteView {
    /// The server's answer, as received.
    pub opened: Opened,
    /// The remote pool set file, parsed.
    pub set: PoolSet,
    /// Where each part lies in the logical address space.
    pub extents: Vec<Extent>,
    /// Header-carrying parts (SINGLEHDR: 1).
    pub nhdrs: usize,
    /// The header page of each part, decoded.
    pub headers: Vec<HeaderState>,
    /// Net size of the replica from its part sizes.
    pub net_size: u64,
    /// The part paths, as the remote set file names them.
    pub paths: Vec<PathBuf>,
}

impl RemoteView {
    fn of(opened: Opened, at: &RemoteRef) -> Result<RemoteView, Error> {
        let set = poolsync_poolset::parse(&opened.set_text).map_err(|e| {
            at.refuse(format!(
                "the remote pool set file, line {}: {}",
                e.line(),
                e.reason()
            ))
        })?;
        if set.replicas.len() != 1 || set.replicas.iter().any(|r| r.is_remote()) {
            return Err(at.refuse(
                "the remote pool set file must have exactly one local replica".to_string(),
            ));
        }
        let extents = set.extents(0).ok_or_else(|| {
            at.refuse("the remote pool set's parts are too small to map".to_string())
        })?;
        let paths: Vec<PathBuf> = set
            .replicas
            .first()
            .map(|r| r.parts().iter().map(|p| PathBuf::from(&p.path)).collect())
            .unwrap_or_default();
        if paths.len() != opened.parts.len() {
            return Err(at.refuse(format!(
                "the server reports {} parts of a pool set file that lists {}",
                opened.parts.len(),
                paths.len()
            )));
        }
        let headers = opened
            .parts
            .iter()
            .map(|p| {
                HeaderState::from(match &p.header {
                    poolsync_wire::HeaderPage::None => HeaderPage::None,
                    poolsync_wire::HeaderPage::NotRead => HeaderPage::NotRead,
                    poolsync_wire::HeaderPage::Unreadable { reason } => HeaderPage::Unreadable {
                        reason: reason.clone(),
                    },
                    poolsync_wire::HeaderPage::Read { bytes } => HeaderPage::Read {
                        bytes: bytes.clone(),
                    },
                })
            })
            .collect();
        Ok(RemoteView {
            nhdrs: set.nhdrs(0),
            net_size: set.replica_size(0).unwrap_or(0),
            extents,
            headers,
            paths,
            set,
            opened,
        })
    }

    /// One past the last logical byte.
    pub fn end(&self) -> u64 {
        self.extents
            .iter()
            .map(|e| e.logical.saturating_add(e.len))
            .max()
            .unwrap_or(0)
    }
}

/// A remote replica: an [`Endpoint`] over a [`Session`].
pub struct RemoteReplica {
    /// Its number in a plan.
    pub index: usize,
    /// Where it is named.
    pub at: RemoteRef,
    session: Session,
    view: Mutex<RemoteView>,
}

impl std::fmt::Debug for RemoteReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteReplica")
            .field("index", &self.index)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl RemoteReplica {
    /// Opens the remote pool set `at` names over `session` (read-write
    /// with `write`), refused by the server when its headers carry another
    /// pool set UUID than `expect_uuid`; numbered `index` in plans.
    pub fn open(
        session: Session,
        at: RemoteRef,
        index: usize,
        write: bool,
        expect_uuid: Option<[u8; 16]>,
    ) -> Result<RemoteReplica, Error> {
        session.set_name(&at.descriptor);
        let request = Message::Open(poolsync_wire::Open {
            path: at.descriptor.clone(),
            write,
            expect_uuid,
        });
        let answer = session.request(&request)?;
        let Message::Opened(opened) = answer else {
            return Err(session.unexpected("open", &answer));
        };
        let view = RemoteView::of(*opened, &at)?;
        Ok(RemoteReplica {
            index,
            at,
            session,
            view: Mutex::new(view),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RemoteView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the server reported, as of the last open or [`Self::refresh`].
    pub fn view(&self) -> RemoteView {
        self.lock().clone()
    }

    /// Asks the server to read the headers again and judge the set.
    pub fn refresh(&self) -> Result<RemoteView, Error> {
        let answer = self.session.request(&Message::Inspect)?;
        let Message::Opened(opened) = answer else {
            return Err(self.session.unexpected("inspect", &answer));
        };
        let view = RemoteView::of(*opened, &self.at)?;
        *self.lock() = view.clone();
        Ok(view)
    }

    /// Removes the remote parts, and with `set_file` the remote pool set
    /// file; returns each file and whether it existed.
    pub fn remove(&self, set_file: bool) -> Result<Vec<(String, bool)>, Error> {
        let answer = self.session.request(&Message::Remove { set_file })?;
        let Message::Removed(files) = answer else {
            return Err(self.session.unexpected("remove", &answer));
        };
        Ok(files.into_iter().map(|f| (f.path, f.removed)).collect())
    }

    /// Asks the server to write the sync mark (`docs/wire.md` section 9):
    /// the remote pool now holds `epoch` of `lineage` on `timeline`.
    pub fn mark(
        &self,
        poolset_uuid: [u8; 16],
        lineage: [u8; 16],
        timeline: u32,
        epoch: u32,
    ) -> Result<(), Error> {
        let answer = self.session.request(&Message::Mark {
            poolset_uuid,
            lineage,
            timeline,
            epoch,
        })?;
        self.expect_done("mark", answer)
    }

    /// What the session moved so far.
    pub fn stats(&self) -> WireStats {
        self.session.stats()
    }

    /// The session's transport command, for messages.
    pub fn command(&self) -> &str {
        self.session.command()
    }

    /// Ends the session; see [`Session::close`].
    pub fn close(self) -> Option<String> {
        self.session.close()
    }

    fn expect_done(&self, request: &'static str, answer: Message) -> Result<(), Error> {
        match answer {
            Message::Done => Ok(()),
            other => Err(self.session.unexpected(request, &other)),
        }
    }

    /// The part number of `part` on the wire.
    fn wire_part(&self, part: usize) -> Result<u32, Error> {
        u32::try_from(part).map_err(|_| Error::InvalidRequest {
            path: self.at.set.clone(),
            reason: format!("part {part} of {}", self.at.name()),
        })
    }
}

/// Groups consecutive ranges of one length that follow each other into
/// runs, each within the protocol's bounds.
fn runs_of(ranges: &[LogicalRange]) -> Vec<DigestRun> {
    let mut runs: Vec<DigestRun> = Vec::new();
    for r in ranges {
        let piece = u32::try_from(r.len).unwrap_or(u32::MAX);
        match runs.last_mut() {
            Some(last)
                if last.piece == piece
                    && last.count < u32::MAX
                    && last.offset + u64::from(last.piece) * u64::from(last.count) == r.offset =>
            {
                last.count += 1;
            }
            _ => runs.push(DigestRun {
                offset: r.offset,
                piece,
                count: 1,
            }),
        }
    }
    runs
}

impl Endpoint for RemoteReplica {
    fn name(&self) -> String {
        format!("remote replica {}", self.at.name())
    }

    fn end(&self) -> u64 {
        self.lock().end()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut at = 0usize;
        while at < buf.len() {
            let n = (buf.len() - at).min(MAX_DATA as usize);
            let pos = offset + at as u64;
            let answer = self.session.request(&Message::Read {
                offset: pos,
                len: n as u32,
            })?;
            match answer {
                Message::Data { offset: got, data } if got == pos && data.len() == n => {
                    if let Some(dst) = buf.get_mut(at..at + n) {
                        dst.copy_from_slice(&data);
                    }
                }
                other => return Err(self.session.unexpected("read", &other)),
            }
            at += n;
        }
        Ok(())
    }

    fn digests(&self, ranges: &[LogicalRange], out: &mut Vec<Digest>) -> Result<(), Error> {
        // Empty ranges are answered here; the protocol has no empty pieces.
        let mut start = 0;
        while start < ranges.len() {
            let mut end = start;
            let mut total = 0u64;
            while let Some(r) = ranges.get(end) {
                if r.len == 0 || total == MAX_DIGESTS {
                    break;
                }
                if r.len > u64::from(MAX_DIGEST_PIECE) {
                    return Err(Error::InvalidRequest {
                        path: self.at.set.clone(),
                        reason: format!(
                            "a digest of {} bytes at {} from {}: pieces are at most {MAX_DIGEST_PIECE} bytes",
                            r.len,
                            r.offset,
                            self.at.name()
                        ),
                    });
                }
                total += 1;
                end += 1;
            }
            if end == start {
                out.push(digest(&[]));
                start += 1;
                continue;
            }
            let mut runs = runs_of(ranges.get(start..end).unwrap_or_default());
            // Too many runs: ask in more requests.
            while !runs.is_empty() {
                let rest = runs.split_off(runs.len().min(MAX_DIGEST_RUNS));
                let want: u64 = runs.iter().map(|r| u64::from(r.count)).sum();
                let answer = self.session.request(&Message::Digests { runs })?;
                match answer {
                    Message::DigestList(list) if list.len() as u64 == want => out.extend(list),
                    other => return Err(self.session.unexpected("digests", &other)),
                }
                runs = rest;
            }
            start = end;
        }
        Ok(())
    }

    fn prefers_digests(&self) -> bool {
        true
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        for (i, chunk) in data.chunks(MAX_DATA as usize).enumerate() {
            self.session
                .send_write(offset + (i * MAX_DATA as usize) as u64, chunk)?;
        }
        Ok(())
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.session.send(&Message::Flush { offset, len })
    }

    fn fence(&self) -> Result<(), Error> {
        let answer = self.session.request(&Message::Fence)?;
        self.expect_done("fence", answer)
    }

    fn headers(&self) -> Vec<HeaderState> {
        self.lock().headers.clone()
    }

    fn write_header(&self, part: usize, write: &HeaderWrite) -> Result<(), Error> {
        let wire = match write {
            HeaderWrite::Whole {
                header,
                stamp_crtime,
            } => poolsync_wire::HeaderWrite::Whole {
                page: header.encode_raw().to_vec(),
                stamp_crtime: *stamp_crtime,
            },
            HeaderWrite::Checksum { value } => {
                poolsync_wire::HeaderWrite::Checksum { value: *value }
            }
        };
        let answer = self.session.request(&Message::WriteHeader {
            part: self.wire_part(part)?,
            write: wire,
        })?;
        self.expect_done("write header", answer)?;
        // The server stamped or recomputed what it wrote: learn it.
        self.refresh()?;
        Ok(())
    }

    fn locate(&self, range: LogicalRange) -> Vec<Location> {
        let view = self.lock();
        poolsync_poolset::map_range(&view.extents, range.offset, range.len)
            .into_iter()
            .map(|piece| Location {
                replica: self.index,
                part: piece.part,
                path: view.paths.get(piece.part).cloned().unwrap_or_default(),
                file_offset: piece.file_offset,
                len: piece.len,
            })
            .collect()
    }

    fn create_part(&self, part: usize, replace: bool) -> Result<(), Error> {
        let answer = self.session.request(&Message::CreatePart {
            part: self.wire_part(part)?,
            replace,
        })?;
        self.expect_done("create part", answer)
    }

    fn set_mode(&self, part: usize, mode: u32) -> Result<(), Error> {
        let answer = self.session.request(&Message::SetMode {
            part: self.wire_part(part)?,
            mode: mode & 0o7777,
        })?;
        self.expect_done("set mode", answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_equal_pieces_become_one_run() {
        let r = |o, l| LogicalRange::new(o, l);
        let runs = runs_of(&[r(0, 10), r(10, 10), r(20, 10), r(40, 10), r(50, 5)]);
        assert_eq!(
            runs,
            vec![
                DigestRun {
                    offset: 0,
                    piece: 10,
                    count: 3
                },
                DigestRun {
                    offset: 40,
                    piece: 10,
                    count: 1
                },
                DigestRun {
                    offset: 50,
                    piece: 5,
                    count: 1
                },
            ]
        );
    }
}

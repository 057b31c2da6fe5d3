//! What `info` and `check` say of remote replicas: each one's health,
//! judged on its host by `poolsync serve`, and how far it lags behind the
//! local source.
//!
//! The lag is measured, not estimated: the source's replicated range is
//! compared with the remote replica by digests, hierarchically (a digest
//! per 64 KiB, then per block only where those differ), so only digests
//! cross the wire, never data; both hosts read the range once. `check
//! --data` compares the source's live ranges only (its heap walked as for
//! the local replicas), block by block.

use std::path::Path;

use poolsync_pmem::{Access, Storage};
use serde::Serialize;

use super::replica::{RemoteRef, RemoteReplica};
use super::session::{Session, WireStats};
use super::Connector;
use crate::compare::{compare_many, CompareOptions, LogicalRange};
use crate::endpoint::Endpoint;
use crate::exec::{Progress, Tuning};
use crate::inspect::inspect;
use crate::open::{open, OpenSet};
use crate::Error;

/// How [`remote_status`] looks at the remote replicas.
#[derive(Debug, Clone, Copy)]
pub struct StatusOptions {
    /// Measure the lag (compare with the local source by digests).
    pub compare: bool,
    /// Compare only the source's live ranges (`check --data`).
    pub live_only: bool,
    /// Stride and workers of the comparison.
    pub tuning: Tuning,
}

/// How far a remote replica is behind the local source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// The local replica compared with.
    pub source: usize,
    /// Bytes compared on each host.
    pub bytes_compared: u64,
    /// 4 KiB blocks that differ.
    pub blocks: u64,
    /// Bytes of them (a multiple of 4096, except at range ends).
    pub bytes: u64,
    /// Only live ranges were compared (`check --data`).
    pub live_only: bool,
    /// The first differing ranges (at most 64).
    pub ranges: Vec<LogicalRange>,
}

/// One remote replica as `info` and `check` report it.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStatus {
    /// `host:set`.
    pub remote: String,
    /// Line of its `REPLICA` line.
    pub line: usize,
    /// The transport's command.
    pub command: String,
    /// The server's software, once reached.
    pub server: Option<String>,
    /// Healthy, judged on the remote host.
    pub healthy: bool,
    /// The remote health check's findings.
    pub verdicts: Vec<String>,
    /// The remote pool set file's text.
    pub set_text: Option<String>,
    /// Its lag, when measured.
    pub lag: Option<Lag>,
    /// Bytes and frames on the wire.
    pub wire: WireStats,
    /// Why it could not be reached or judged, when it could not.
    pub error: Option<String>,
    /// When it was last brought up to date (Unix seconds), from the
    /// record beside the pool set file ([`super::record`]).
    pub last_sync: Option<u64>,
    /// Why that time is not known, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_unknown: Option<String>,
}

/// Reports every remote replica of the pool set at `path`.
pub fn remote_status<S: Storage>(
    storage: &S,
    path: &Path,
    connector: &dyn Connector,
    options: &StatusOptions,
    progress: &dyn Progress,
) -> Result<Vec<RemoteStatus>, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    let mut found = status_of(&set, connector, options, progress)?;
    if !found.is_empty() {
        let record = super::record::read(storage, &set.path);
        let uuid = {
            let health = inspect(&set);
            health
                .sync_source()
                .and_then(|s| set.part(s, 0))
                .and_then(|p| p.header())
                .map(|h| poolsync_header::RawUuid(h.poolset_uuid.0).to_canonical())
        };
        for (status, line) in found.iter_mut().zip(&set.remotes) {
            match record.last_sync(&line.node, &line.descriptor, uuid.as_deref()) {
                Ok(t) => status.last_sync = Some(t),
                Err(why) => status.last_sync_unknown = Some(why),
            }
        }
    }
    Ok(found)
}

/// [`remote_status`] of a set already open.
pub fn status_of<F: poolsync_pmem::PartFile>(
    set: &OpenSet<F>,
    connector: &dyn Connector,
    options: &StatusOptions,
    progress: &dyn Progress,
) -> Result<Vec<RemoteStatus>, Error> {
    if set.remotes.is_empty() {
        return Ok(Vec::new());
    }
    let health = inspect(set);
    let source = health.sync_source();
    let uuid = source
        .and_then(|s| set.part(s, 0))
        .and_then(|p| p.header())
        .map(|h| h.poolset_uuid.0);
    let pool_size = health.pool_size;
    let mut out = Vec::new();
    for line in &set.remotes {
        let at = RemoteRef::of(&set.path, line);
        let mut status = RemoteStatus {
            remote: at.name(),
            line: at.line,
            command: String::new(),
            server: None,
            healthy: false,
            verdicts: Vec::new(),
            set_text: None,
            lag: None,
            wire: WireStats::default(),
            error: None,
            last_sync: None,
            last_sync_unknown: None,
        };
        let reached = connector
            .connect(&at.node)
            .and_then(|t| Session::start(&at.node, t))
            .and_then(|session| {
                RemoteReplica::open(session, at.clone(), set.replicas.len(), false, uuid)
            });
        let remote = match reached {
            Ok(r) => r,
            Err(e) => {
                status.error = Some(e.to_string());
                out.push(status);
                continue;
            }
        };
        status.command = remote.command().to_string();
        let view = remote.view();
        status.server = Some(view.opened.server.clone());
        status.healthy = view.opened.healthy;
        status.verdicts = view.opened.verdicts.clone();
        status.set_text = Some(view.opened.set_text.clone());
        if let (true, Some(source), Some(pool_size)) = (options.compare, source, pool_size) {
            match lag(set, source, pool_size, &remote, options, progress) {
                Ok(l) => status.lag = Some(l),
                Err(e) => status.error = Some(e.to_string()),
            }
        }
        status.wire = remote.stats();
        let _ = remote.close();
        out.push(status);
    }
    Ok(out)
}

/// Compares the source's replicated (or live) range with the remote.
fn lag<F: poolsync_pmem::PartFile>(
    set: &OpenSet<F>,
    source: usize,
    pool_size: u64,
    remote: &RemoteReplica,
    options: &StatusOptions,
    progress: &dyn Progress,
) -> Result<Lag, Error> {
    let end = pool_size.min(remote.end());
    let ranges: Vec<LogicalRange> = if options.live_only {
        let mut live: Vec<LogicalRange> = Vec::new();
        crate::verify::walk_source(set, source, pool_size, |r| {
            let range = LogicalRange::new(r.offset, r.len);
            crate::compare::push_merged(&mut live, range);
        })?;
        live
    } else {
        vec![LogicalRange::from_bounds(poolsync_poolset::PAGE, end)]
    };
    let src = set.replica(source).ok_or_else(|| Error::InvalidRequest {
        path: set.path.clone(),
        reason: format!("replica {source} does not exist"),
    })?;
    let compare = CompareOptions {
        stride: options.tuning.stride,
        threads: options.tuning.threads,
    };
    let mut found = compare_many(src, &[remote as &dyn Endpoint], &ranges, &compare, progress)?;
    let outcome = found.pop().unwrap_or_default();
    let blocks = outcome
        .differing
        .iter()
        .map(|r| {
            let first = r.offset / crate::compare::BLOCK;
            let last = (r.end() - 1) / crate::compare::BLOCK;
            last - first + 1
        })
        .sum();
    Ok(Lag {
        source,
        bytes_compared: outcome.stats.bytes_compared,
        blocks,
        bytes: outcome.stats.bytes_differing,
        live_only: options.live_only,
        ranges: outcome.differing.iter().take(64).copied().collect(),
    })
}

//! `sync` of a pool set with remote replicas: the local replicas are
//! repaired as by [`crate::sync::sync`], then every remote replica is
//! brought up to date from the local source ([`update`](super::update)).
//!
//! Each remote replica is reached over its own connection, opened
//! read-write with the pool's pool set UUID (the server refuses a remote
//! pool of another pool), planned (its digests compared, nothing
//! written), and, unless a dry run, updated. A remote replica that fails
//! does not stop the others; its error is in its outcome.

use std::path::Path;

use poolsync_pmem::Storage;
use serde::Serialize;

use super::replica::{RemoteRef, RemoteReplica};
use super::restore::{plan_restore, run_restore, RestoreOptions, RestorePlan};
use super::session::{Session, WireStats};
use super::update::{plan_update, run_update, RemotePlan, SourceFacts, UpdateOptions};
use super::Connector;
use crate::exec::{ExecReport, NoProgress, Progress};
use crate::inspect::inspect;
use crate::open::OpenSet;
use crate::sync::{open_for_sync, SyncOptions, SyncOutcome};
use crate::Error;

/// What happened to one remote replica.
#[derive(Debug, Serialize)]
pub struct RemoteOutcome {
    /// `host:set`.
    pub remote: String,
    /// Line of its `REPLICA` line.
    pub line: usize,
    /// Its plan, once made.
    pub plan: Option<RemotePlan>,
    /// What the update did (a real run that had something to do).
    pub report: Option<ExecReport>,
    /// Bytes and frames on the wire, both ways, for the whole session.
    pub wire: WireStats,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Why the time of this sync could not be recorded (see
    /// [`super::record`]), when it could not: the update itself is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<String>,
    /// How the remote replica was changed on its host since its last sync
    /// (its `run_id` moved: the pool was opened there), when it was; its
    /// changed blocks are overwritten from the source, so it is rewound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_on_host: Option<String>,
}

/// The `run_id` of a healthy remote replica (logical offset 0x1808, in the
/// pool descriptor), or `None` when it is not healthy.
fn remote_run_id(remote: &RemoteReplica) -> Result<Option<u64>, Error> {
    use crate::endpoint::Endpoint;
    if !remote.view().opened.healthy {
        return Ok(None);
    }
    let mut b = [0u8; 8];
    let at = poolsync_header::OBJ_DESC_OFF + poolsync_header::OBJ_DESC_RUN_ID_OFF as u64;
    remote.read(at, &mut b)?;
    Ok(Some(u64::from_le_bytes(b)))
}

/// A restore of the local replicas from a remote replica.
#[derive(Debug, Serialize)]
pub struct RestoreOutcome {
    /// Its plan.
    pub plan: RestorePlan,
    /// What was done (a real run).
    pub report: Option<ExecReport>,
    /// Bytes and frames on the wire.
    pub wire: WireStats,
}

/// The outcome of a sync with remote replicas.
#[derive(Debug, Serialize)]
pub struct SyncAllOutcome {
    /// The local replicas restored from a remote replica, when none was
    /// healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoreOutcome>,
    /// The local replicas' sync (`None` for the dry run of a restore: the
    /// local replicas are planned after it).
    pub local: Option<SyncOutcome>,
    /// Each remote replica, in set order.
    pub remotes: Vec<RemoteOutcome>,
}

impl SyncAllOutcome {
    /// The first remote replica that failed, if any.
    pub fn first_failure(&self) -> Option<&RemoteOutcome> {
        self.remotes.iter().find(|r| r.error.is_some())
    }
}

/// Syncs the local replicas of the pool set at `path`, then brings every
/// remote replica up to date, reaching the hosts through `connector`.
pub fn sync_all<S: Storage>(
    storage: &S,
    path: &Path,
    options: &SyncOptions,
    connector: &dyn Connector,
    progress: &dyn Progress,
) -> Result<SyncAllOutcome, Error> {
    let mut set = open_for_sync(storage, path, options)?;
    let mut survey = crate::sync::survey(storage, &set, options)?;
    let mut restored = None;
    if survey.health.source.is_none() && !set.remotes.is_empty() {
        let outcome = restore(
            storage,
            &mut set,
            &survey.health,
            options,
            connector,
            progress,
        )?;
        if options.dry_run {
            return Ok(SyncAllOutcome {
                restored: Some(outcome),
                local: None,
                remotes: Vec::new(),
            });
        }
        restored = Some(outcome);
        crate::open::reread_headers(&mut set);
        survey = crate::sync::survey(storage, &set, options)?;
    }
    let mut plan = crate::sync::plan(&set, &survey, options)?;
    let local = if options.dry_run {
        crate::sync::prepare(storage, &set, &mut plan, &[], options, &NoProgress)?;
        SyncOutcome { plan, report: None }
    } else {
        let prepared = crate::sync::prepare(storage, &set, &mut plan, &[], options, progress)?;
        let report = crate::sync::execute(
            storage,
            &mut set,
            &plan,
            prepared.as_ref(),
            options,
            progress,
        )
        .map_err(|e| crate::sync::unfinished(e, path, options, ""))?;
        SyncOutcome {
            plan,
            report: Some(report),
        }
    };
    let remotes = update_remotes(
        storage,
        &mut set,
        Some(local.plan.source),
        options,
        connector,
        progress,
    )?;
    Ok(SyncAllOutcome {
        restored,
        local: Some(local),
        remotes,
    })
}

/// No local replica is healthy: restores them all from the first remote
/// replica that is healthy on its host.
fn restore<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    health: &crate::inspect::Health,
    options: &SyncOptions,
    connector: &dyn Connector,
    progress: &dyn Progress,
) -> Result<RestoreOutcome, Error> {
    // The pool the remote must belong to, when a local header still says.
    let uuid = set
        .parts()
        .filter_map(|p| p.header())
        .find(|h| h.checksum == h.compute_checksum() && h.pool_type().is_some())
        .map(|h| h.poolset_uuid.0);
    let mut reasons = Vec::new();
    for line in set.remotes.clone() {
        let at = RemoteRef::of(&set.path, &line);
        let name = at.name();
        let remote = match connector
            .connect(&at.node)
            .and_then(|t| Session::start(&at.node, t))
            .and_then(|s| RemoteReplica::open(s, at, set.replicas.len(), false, uuid))
        {
            Ok(r) => r,
            Err(e) => {
                reasons.push(format!("{name}: {e}"));
                continue;
            }
        };
        if !remote.view().opened.healthy {
            reasons.push(format!("{name}: not healthy on its host"));
            continue;
        }
        let restore_options = RestoreOptions {
            tuning: options.tuning(),
            uuids: &options.uuids,
            undo: options.undo,
        };
        let plan = plan_restore(storage, set, health, &remote, restore_options, progress)?;
        let report = if options.dry_run {
            None
        } else {
            Some(run_restore(
                storage,
                set,
                &plan,
                &remote,
                options.tuning(),
                progress,
            )?)
        };
        let wire = remote.stats();
        let _ = remote.close();
        return Ok(RestoreOutcome { plan, report, wire });
    }
    Err(Error::CannotSync {
        set: set.path.clone(),
        reason: format!(
            "no local replica is healthy ({}), and no remote replica can restore them: {}",
            crate::sync::plan::replica_reasons(health),
            reasons.join("; ")
        ),
    })
}

/// Brings every remote replica of the pool set at `path` up to date from
/// its local source, the local replicas as they are (after `sync
/// --verify`, say): the set is opened as for a sync.
pub fn update_remotes_at<S: Storage>(
    storage: &S,
    path: &Path,
    options: &SyncOptions,
    connector: &dyn Connector,
    progress: &dyn Progress,
) -> Result<Vec<RemoteOutcome>, Error> {
    let mut set = open_for_sync(storage, path, options)?;
    update_remotes(
        storage,
        &mut set,
        options.source,
        options,
        connector,
        progress,
    )
}

/// Brings every remote replica of `set` up to date from replica `source`
/// (by default the first healthy one).
pub fn update_remotes<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    source: Option<usize>,
    options: &SyncOptions,
    connector: &dyn Connector,
    progress: &dyn Progress,
) -> Result<Vec<RemoteOutcome>, Error> {
    if set.remotes.is_empty() {
        return Ok(Vec::new());
    }
    // The source as it stands now: in a real run every local replica is
    // healthy again; in a dry run the plan's source is.
    crate::open::reread_headers(set);
    let health = inspect(set);
    let source = source
        .or(health.sync_source())
        .ok_or_else(|| Error::CannotSync {
            set: set.path.clone(),
            reason: "no local replica is healthy to bring the remote replicas up to date from"
                .to_string(),
        })?;
    let facts = SourceFacts::of(set, &health, source)?;
    let mut remotes = Vec::new();
    for line in set.remotes.clone() {
        let at = RemoteRef::of(&set.path, &line);
        remotes.push(update_one(
            storage, set, &facts, connector, at, options, progress,
        ));
    }
    Ok(remotes)
}

/// Connects to one remote replica, plans its update and (unless a dry
/// run) carries it out.
pub(crate) fn update_one<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    facts: &SourceFacts,
    connector: &dyn Connector,
    at: RemoteRef,
    options: &SyncOptions,
    progress: &dyn Progress,
) -> RemoteOutcome {
    update_one_with(storage, set, facts, connector, at, options, false, progress)
}

/// [`update_one`], replacing the remote parts that exist with `recreate`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn update_one_with<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    facts: &SourceFacts,
    connector: &dyn Connector,
    at: RemoteRef,
    options: &SyncOptions,
    recreate: bool,
    progress: &dyn Progress,
) -> RemoteOutcome {
    let mut outcome = RemoteOutcome {
        remote: at.name(),
        line: at.line,
        plan: None,
        report: None,
        wire: WireStats::default(),
        error: None,
        unrecorded: None,
        changed_on_host: None,
    };
    let (node, descriptor) = (at.node.clone(), at.descriptor.clone());
    let uuid = poolsync_header::RawUuid(facts.master.poolset_uuid.0).to_canonical();
    let remote = match connect(connector, at, set.replicas.len(), !options.dry_run, facts) {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    // Opened on its host since the last sync? Its run_id says so.
    let record = super::record::read(storage, &set.path);
    if let (Some(was), Some(now)) = (
        record
            .entry(&node, &descriptor, &uuid)
            .and_then(|e| e.run_id),
        // A read that fails here fails the update's first request too.
        remote_run_id(&remote).ok().flatten(),
    ) {
        if was != now {
            outcome.changed_on_host = Some(format!(
                "its run_id is {now}, {was} after its last sync: the pool was opened on its host"
            ));
        }
    }
    let result = (|| {
        let update = UpdateOptions {
            tuning: options.tuning(),
            uuids: &options.uuids,
            recreate,
        };
        let plan = plan_update(storage, set, facts, &remote, update, progress)?;
        let report = if options.dry_run || plan.current {
            None
        } else {
            Some(run_update(
                storage,
                set,
                &plan,
                &remote,
                options.tuning(),
                progress,
            )?)
        };
        Ok::<_, Error>((plan, report))
    })();
    outcome.wire = remote.stats();
    match result {
        Ok((mut plan, report)) => {
            plan.rewind = outcome.changed_on_host.is_some();
            outcome.plan = Some(plan);
            outcome.report = report;
            // The run_id the remote holds now, judged after the update (a
            // seeded remote was not healthy when opened): part of the
            // session, so a connection lost here is an error like any.
            let run_id = if options.dry_run {
                Ok(None)
            } else {
                remote.refresh().and_then(|_| remote_run_id(&remote))
            };
            outcome.wire = remote.stats();
            match run_id {
                Err(e) => outcome.error = Some(e.to_string()),
                Ok(run_id) => {
                    // The work is durable on both ends; a failed goodbye
                    // changes nothing.
                    let _ = remote.close();
                    if !options.dry_run {
                        if let Err(e) = super::record::note_sync(
                            storage,
                            &set.path,
                            &node,
                            &descriptor,
                            &uuid,
                            run_id,
                        ) {
                            outcome.unrecorded = Some(e.to_string());
                        }
                    }
                }
            }
        }
        Err(e) => outcome.error = Some(e.to_string()),
    }
    outcome
}

/// Starts a session with the remote replica `at` and opens its pool set.
pub fn connect(
    connector: &dyn Connector,
    at: RemoteRef,
    index: usize,
    write: bool,
    facts: &SourceFacts,
) -> Result<RemoteReplica, Error> {
    let transport = connector.connect(&at.node)?;
    let session = Session::start(&at.node, transport)?;
    RemoteReplica::open(session, at, index, write, Some(facts.master.poolset_uuid.0))
}

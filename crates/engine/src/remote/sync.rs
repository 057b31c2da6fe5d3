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

use super::epochs::{Tracked, Tracker};
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
///
/// Every remote replica is connected first, and its sync mark judged
/// against the pool's state file ([`super::epochs`]); then the source is
/// scanned once, and each remote replica whose mark proves an epoch gets
/// the blocks changed since, the others are compared by digests.
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
    let connected: Vec<Connected> = set
        .remotes
        .clone()
        .iter()
        .map(|line| {
            let at = RemoteRef::of(&set.path, line);
            Connected::new(connector, at, set.replicas.len(), !options.dry_run, &facts)
        })
        .collect();
    let epochs = track(storage, set, &facts, &connected, options, progress)?;
    let mut remotes = Vec::new();
    for (i, c) in connected.into_iter().enumerate() {
        let use_epochs = match &epochs {
            Ok(t) => Ok((t, i)),
            Err(why) => Err(why.clone()),
        };
        remotes.push(update_connected(
            storage,
            set,
            &facts,
            c,
            (options, false),
            Some(use_epochs),
            progress,
        ));
    }
    Ok(remotes)
}

/// A remote replica connected, with its `run_id` when it is healthy.
pub(crate) struct Connected {
    at: RemoteRef,
    remote: Result<RemoteReplica, Error>,
    run_id: Option<u64>,
}

impl Connected {
    pub(crate) fn new(
        connector: &dyn Connector,
        at: RemoteRef,
        index: usize,
        write: bool,
        facts: &SourceFacts,
    ) -> Connected {
        let remote = connect(connector, at.clone(), index, write, facts);
        // A read that fails here fails the update's first request too.
        let run_id = remote
            .as_ref()
            .ok()
            .and_then(|r| remote_run_id(r).ok().flatten());
        Connected { at, remote, run_id }
    }
}

/// Scans the source once against the pool's state file, for the remote
/// replicas whose sync marks prove an epoch; `Err` says why every remote
/// replica is compared by digests instead.
fn track<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    facts: &SourceFacts,
    connected: &[Connected],
    options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<Result<Tracked, String>, Error> {
    if connected.iter().all(|c| c.remote.is_err()) {
        return Ok(Err("no remote replica could be reached".to_string()));
    }
    // A remote replica with no part yet receives every block whatever the
    // epochs say: when every one reached is such a seed, the scan would
    // only read the whole source a second time (the next sync scans, and
    // marks them).
    let seed = |c: &Connected| {
        c.remote.as_ref().is_ok_and(|r| {
            r.view()
                .opened
                .parts
                .iter()
                .all(|p| p.status == poolsync_wire::PartStatus::Missing)
        })
    };
    if connected.iter().filter(|c| c.remote.is_ok()).all(seed) {
        return Ok(Err(
            "it is being seeded: every block is sent, and the next sync tracks its epochs"
                .to_string(),
        ));
    }
    let tracker = match Tracker::begin(
        storage,
        &set.path,
        facts.master.poolset_uuid.0,
        (set.set_pool_size(), facts.pool_size),
        &options.uuids,
    ) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Ok(Err(
                "this site keeps no epochs of its own (it follows another, importing packets)"
                    .to_string(),
            ))
        }
        Err(e) => return Ok(Err(format!("the local state file cannot be read: {e}"))),
    };
    let bases: Vec<Result<u32, String>> = connected
        .iter()
        .map(|c| match &c.remote {
            Ok(_) if options.remote_digests => {
                Err("`--verify` compares every block of the remote replicas".to_string())
            }
            Ok(r) => {
                let view = r.view();
                tracker.base(view.opened.mark.as_ref(), c.run_id, &view)
            }
            Err(_) => Err("not reached".to_string()),
        })
        .collect();
    let wanted: Vec<Option<u32>> = bases.iter().map(|b| b.as_ref().ok().copied()).collect();
    let src = set
        .replica(facts.source)
        .ok_or_else(|| Error::InvalidRequest {
            path: set.path.clone(),
            reason: format!("replica {} does not exist", facts.source),
        })?;
    match tracker.scan(
        storage,
        &set.path,
        src,
        &wanted,
        (options.tuning(), options.dry_run),
        progress,
    ) {
        Ok(mut t) => {
            t.refusals = bases.into_iter().map(Result::err).collect();
            Ok(Ok(t))
        }
        Err(e) => Ok(Err(format!("the local state file cannot be updated: {e}"))),
    }
}

/// Connects to one remote replica, plans its update and (unless a dry
/// run) carries it out, comparing by digests (replacing the parts that
/// exist with `recreate`).
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
    let c = Connected::new(connector, at, set.replicas.len(), !options.dry_run, facts);
    update_connected(storage, set, facts, c, (options, recreate), None, progress)
}

/// Plans and (unless a dry run) carries out the update of one connected
/// remote replica; with `epochs`, sends only the blocks changed since the
/// epoch its mark proves, when it proves one, and marks it afterwards.
fn update_connected<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    facts: &SourceFacts,
    c: Connected,
    (options, recreate): (&SyncOptions, bool),
    epochs: Option<Result<(&Tracked, usize), String>>,
    progress: &dyn Progress,
) -> RemoteOutcome {
    let Connected { at, remote, run_id } = c;
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
    let remote = match remote {
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
        run_id,
    ) {
        if was != now {
            outcome.changed_on_host = Some(format!(
                "its run_id is {now}, {was} after its last sync: the pool was opened on its host"
            ));
        }
    }
    let (known, digests_because) = match &epochs {
        Some(Ok((t, i))) => match (t.since.get(*i), t.refusals.get(*i)) {
            (Some(Some(ranges)), _) => (t.base_of(*i).map(|e| (e, ranges.as_slice())), None),
            (_, Some(Some(why))) => (None, Some(why.clone())),
            _ => (None, None),
        },
        Some(Err(why)) => (None, Some(why.clone())),
        None => (None, None),
    };
    let result = (|| {
        let update = UpdateOptions {
            tuning: options.tuning(),
            uuids: &options.uuids,
            recreate,
            known,
        };
        let mut plan = plan_update(storage, set, facts, &remote, update, progress)?;
        if plan.since_epoch.is_none() {
            plan.digests_because = digests_because;
        }
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
            if !options.dry_run {
                finish(storage, set, &remote, &at, &uuid, epochs, &mut outcome);
            }
            outcome.wire = remote.stats();
            // The work is durable on both ends; a failed goodbye changes
            // nothing.
            let _ = remote.close();
        }
        Err(e) => outcome.error = Some(e.to_string()),
    }
    outcome
}

/// After an update that succeeded: marks the remote replica with the
/// source's epoch (when the source's changes are tracked) and records the
/// time and its `run_id`, judged after the update (a seeded remote was not
/// healthy when opened). A connection lost here is an error like any.
fn finish<S: Storage>(
    storage: &S,
    set: &OpenSet<S::File>,
    remote: &RemoteReplica,
    at: &RemoteRef,
    uuid: &str,
    epochs: Option<Result<(&Tracked, usize), String>>,
    outcome: &mut RemoteOutcome,
) {
    let run_id = match remote.refresh().and_then(|_| remote_run_id(remote)) {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return;
        }
    };
    // The update is done and durable; without its mark, the next update
    // compares by digests. A connection lost here is an error all the
    // same (the command exits 1, and a re-run converges).
    if let Some(Ok((t, _))) = epochs {
        if let Err(e) = remote.mark(t.poolset_uuid, t.lineage, t.timeline, t.epoch) {
            outcome.error = Some(format!(
                "the update is complete, but the remote host could not keep its sync mark: {e}"
            ));
        }
    }
    if let Err(e) =
        super::record::note_sync(storage, &set.path, &at.node, &at.descriptor, uuid, run_id)
    {
        outcome.unrecorded = Some(e.to_string());
    }
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

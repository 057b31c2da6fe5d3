//! `transform` of pool sets with remote replicas: a remote replica is
//! added (its parts created and seeded on its host, as `create` seeds
//! them) or removed (its parts removed on its host; its pool set file
//! stays, as pmempool's transform leaves set files alone).
//!
//! The local replicas and the remote ones change in separate transforms:
//! when both pool set files name the same remote replicas, the local
//! transform runs as before ([`crate::transform`], which looks at the
//! local replicas only); when they name different remote replicas, their
//! local replicas must be the same, and only the remote replicas change.

use std::path::Path;

use poolsync_pmem::{Access, Storage};
use poolsync_poolset::RemoteLine;
use serde::Serialize;

use super::replica::RemoteRef;
use super::sync::{update_one_with, RemoteOutcome};
use super::update::SourceFacts;
use super::Connector;
use crate::exec::Progress;
use crate::inspect::inspect;
use crate::open::open;
use crate::sync::SyncOptions;
use crate::transform::{TransformOptions, TransformOutcome};
use crate::Error;

/// A remote replica removed by a transform.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedRemote {
    /// `host:set`.
    pub remote: String,
    /// Its files, with whether each existed (a dry run lists the parts it
    /// would remove as not removed).
    pub files: Vec<(String, bool)>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// What a transform of the remote replicas did.
#[derive(Debug, Serialize)]
pub struct RemoteTransform {
    /// Remote replicas added, each seeded (its plan, and for a real run
    /// what was done).
    pub added: Vec<RemoteOutcome>,
    /// Remote replicas removed.
    pub removed: Vec<RemovedRemote>,
}

impl RemoteTransform {
    /// The first failure, if any.
    pub fn first_failure(&self) -> Option<&str> {
        self.added
            .iter()
            .find_map(|r| r.error.as_deref())
            .or_else(|| self.removed.iter().find_map(|r| r.error.as_deref()))
    }
}

/// What [`transform_all`] did: a local transform, or a remote one.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransformAll {
    /// The local replicas changed.
    Local(Box<TransformOutcome>),
    /// Remote replicas were added or removed.
    Remote(RemoteTransform),
}

fn remote_lines<S: Storage>(storage: &S, path: &Path) -> Result<Vec<RemoteLine>, Error> {
    let loaded = crate::load::load(storage, path, Access::ReadOnly)?;
    Ok(loaded.set.split_remote().1)
}

fn local_view<S: Storage>(storage: &S, path: &Path) -> Result<poolsync_poolset::PoolSet, Error> {
    let loaded = crate::load::load(storage, path, Access::ReadOnly)?;
    Ok(loaded.set.split_remote().0.without_lines())
}

/// Transforms `src` into `dst` (see the module documentation).
pub fn transform_all<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    options: &TransformOptions,
    connector: &dyn Connector,
    sync: &SyncOptions,
    progress: &dyn Progress,
) -> Result<TransformAll, Error> {
    let key = |l: &RemoteLine| (l.node.clone(), l.descriptor.clone());
    let s = remote_lines(storage, src)?;
    let d = remote_lines(storage, dst)?;
    let added: Vec<&RemoteLine> = d
        .iter()
        .filter(|l| !s.iter().any(|x| key(x) == key(l)))
        .collect();
    let removed: Vec<&RemoteLine> = s
        .iter()
        .filter(|l| !d.iter().any(|x| key(x) == key(l)))
        .collect();
    if added.is_empty() && removed.is_empty() {
        return crate::transform::transform(storage, src, dst, options, progress)
            .map(|o| TransformAll::Local(Box::new(o)));
    }
    if local_view(storage, src)? != local_view(storage, dst)? {
        return Err(Error::CannotTransform {
            source_set: src.to_path_buf(),
            target_set: dst.to_path_buf(),
            reason: "the local replicas and the remote replicas change together; change one thing at a time: first the remote replicas (same local replicas in both files), then the local ones".to_string(),
        });
    }
    let mut set = open(storage, src, Access::ReadWrite)?;
    let health = inspect(&set);
    let source = health.sync_source().ok_or_else(|| Error::CannotTransform {
        source_set: src.to_path_buf(),
        target_set: dst.to_path_buf(),
        reason: format!(
            "no local replica is healthy to seed a remote replica from; repair it with `poolsync sync {}` first",
            src.display()
        ),
    })?;
    let facts = SourceFacts::of(&set, &health, source)?;
    let sync = SyncOptions {
        dry_run: options.dry_run,
        ..sync.clone()
    };
    let mut out = RemoteTransform {
        added: Vec::new(),
        removed: Vec::new(),
    };
    for line in removed {
        let at = at(src, line);
        let name = at.name();
        let result = if options.dry_run {
            list_remote(connector, at, facts.master.poolset_uuid.0)
        } else {
            remove_remote(connector, at, facts.master.poolset_uuid.0)
        };
        out.removed.push(match result {
            Ok(files) => RemovedRemote {
                remote: name,
                files,
                error: None,
            },
            Err(e) => RemovedRemote {
                remote: name,
                files: Vec::new(),
                error: Some(e.to_string()),
            },
        });
    }
    for line in added {
        // As `create`: the new parts must be absent, or empty files of
        // their configured size.
        let size = facts.pool_size;
        if let Err(e) = super::create::precheck(connector, at(dst, line), size, false) {
            out.added.push(RemoteOutcome {
                remote: at(dst, line).name(),
                line: line.line,
                plan: None,
                report: None,
                wire: super::WireStats::default(),
                error: Some(e.to_string()),
                unrecorded: None,
                changed_on_host: None,
            });
            continue;
        }
        out.added.push(update_one_with(
            storage,
            &mut set,
            &facts,
            connector,
            at(dst, line),
            &sync,
            false,
            progress,
        ));
    }
    Ok(TransformAll::Remote(out))
}

fn at(set: &Path, line: &RemoteLine) -> RemoteRef {
    RemoteRef::of(set, line)
}

/// The parts a removal would remove.
fn list_remote(
    connector: &dyn Connector,
    at: RemoteRef,
    uuid: [u8; 16],
) -> Result<Vec<(String, bool)>, Error> {
    let transport = connector.connect(&at.node)?;
    let session = super::Session::start(&at.node, transport)?;
    let remote = super::RemoteReplica::open(session, at, 0, false, Some(uuid))?;
    let view = remote.view();
    let _ = remote.close();
    Ok(view
        .paths
        .iter()
        .map(|p| (p.display().to_string(), false))
        .collect())
}

/// Removes a remote replica's parts on its host.
fn remove_remote(
    connector: &dyn Connector,
    at: RemoteRef,
    uuid: [u8; 16],
) -> Result<Vec<(String, bool)>, Error> {
    let transport = connector.connect(&at.node)?;
    let session = super::Session::start(&at.node, transport)?;
    let remote = super::RemoteReplica::open(session, at, 0, true, Some(uuid))?;
    let files = remote.remove(false)?;
    let _ = remote.close();
    Ok(files)
}

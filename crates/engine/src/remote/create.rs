//! `create obj ADMIN.SET` of a pool set with remote replicas: the local
//! replicas are created as by [`crate::create::create`], then every remote
//! replica is seeded with the new pool.
//!
//! As with rpmemd, the remote pool set file must already exist on its
//! host; its parts are created there. Before anything is created, every
//! remote replica is reached and checked (its set file exists, it is large
//! enough, its parts are absent or reusable: the configured size and a
//! zeroed header page, as `create` reuses local ones; with `force` they are
//! replaced), so that an unreachable or unsuitable remote refuses the
//! command with nothing written. A remote replica whose seeding fails
//! afterwards leaves the local pool created and the error names the
//! remote; `poolsync sync` completes it.

use std::path::Path;

use poolsync_pmem::{Access, Storage};
use poolsync_poolset::RemoteLine;
use poolsync_wire::{HeaderPage, PartStatus};
use serde::Serialize;

use super::replica::{RemoteRef, RemoteReplica};
use super::session::Session;
use super::sync::RemoteOutcome;
use super::update::SourceFacts;
use super::Connector;
use crate::create::{create_local, CreateOptions, Created};
use crate::exec::Progress;
use crate::inspect::inspect;
use crate::open::open;
use crate::sync::SyncOptions;
use crate::Error;

/// What [`create_all`] did.
#[derive(Debug, Serialize)]
pub struct CreatedAll {
    /// The local replicas.
    pub local: Created,
    /// Each remote replica's seeding, in set order.
    pub remotes: Vec<RemoteOutcome>,
}

/// Creates the pool set at `target`: its local replicas, then (seeded from
/// local replica 0) its remote replicas, reached through `connector`.
/// `sync` gives the stride, workers and UUID source of the seeding.
pub fn create_all<S: Storage>(
    storage: &S,
    target: &Path,
    options: &CreateOptions,
    connector: &dyn Connector,
    sync: &SyncOptions,
    progress: &dyn Progress,
) -> Result<CreatedAll, Error> {
    let remotes = remote_lines(storage, target)?;
    if remotes.is_empty() {
        return Ok(CreatedAll {
            local: crate::create::create(storage, target, options)?,
            remotes: Vec::new(),
        });
    }
    let pool_size = {
        let loaded = crate::load::load(storage, target, Access::ReadOnly)?;
        loaded.set.split_remote().0.pool_size().unwrap_or(0)
    };
    for line in &remotes {
        precheck(connector, at(target, line), pool_size, options.force)?;
    }
    let local = create_local(storage, target, options)?;
    let mut set = open(storage, target, Access::ReadWrite)?;
    let health = inspect(&set);
    let facts = SourceFacts::of(&set, &health, 0)?;
    let outcomes = remotes
        .iter()
        .map(|line| {
            super::sync::update_one_with(
                storage,
                &mut set,
                &facts,
                connector,
                at(target, line),
                sync,
                options.force,
                progress,
            )
        })
        .collect();
    Ok(CreatedAll {
        local,
        remotes: outcomes,
    })
}

fn at(target: &Path, line: &RemoteLine) -> RemoteRef {
    RemoteRef::of(target, line)
}

/// The remote replica lines of the pool set file at `target` (none for a
/// single-file pool or a missing file, which `create` judges).
fn remote_lines<S: Storage>(storage: &S, target: &Path) -> Result<Vec<RemoteLine>, Error> {
    if storage.stat(target)?.is_none() {
        return Ok(Vec::new());
    }
    let loaded = crate::load::load(storage, target, Access::ReadOnly)?;
    if !loaded.is_poolset {
        return Ok(Vec::new());
    }
    Ok(loaded.set.split_remote().1)
}

/// Reaches a remote replica before anything is created and checks that it
/// can take the pool.
pub(crate) fn precheck(
    connector: &dyn Connector,
    at: RemoteRef,
    pool_size: u64,
    force: bool,
) -> Result<(), Error> {
    let transport = connector.connect(&at.node)?;
    let session = Session::start(&at.node, transport)?;
    let remote = RemoteReplica::open(session, at.clone(), 0, false, None)?;
    let view = remote.view();
    if view.net_size < pool_size {
        return Err(at.refuse(format!(
            "the remote pool set is too small: its net size is {} bytes, the pool needs {pool_size}",
            view.net_size
        )));
    }
    for (p, part) in view.opened.parts.iter().enumerate() {
        let path = view
            .paths
            .get(p)
            .map_or(String::new(), |x| x.display().to_string());
        match part.status {
            PartStatus::Missing => {}
            _ if force => {}
            PartStatus::Ok => {
                let zero = match &part.header {
                    HeaderPage::Read { bytes } => bytes.iter().all(|&b| b == 0),
                    HeaderPage::None => true,
                    _ => false,
                };
                if !zero {
                    return Err(at.refuse(format!(
                        "part {p} ({path}) exists and is not empty: the pool header area (bytes 0..4096) is not zero; remove it on the remote host or use -f"
                    )));
                }
            }
            PartStatus::SizeMismatch => {
                return Err(at.refuse(format!(
                    "part {p} ({path}) exists with another size ({} bytes); remove it on the remote host or use -f",
                    part.size
                )))
            }
            PartStatus::Inaccessible => {
                return Err(at.refuse(format!(
                    "part {p} ({path}) cannot be opened on the remote host: {}",
                    part.reason
                )))
            }
        }
    }
    let _ = remote.close();
    Ok(())
}

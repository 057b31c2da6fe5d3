//! Remote replicas (`REPLICA [user@]host remote.set`): an asynchronous warm
//! standby on another host, kept current by `sync` over a connection to
//! `poolsync serve` (ARCHITECTURE.md, "Remote replicas").
//!
//! A remote replica is a whole pool set on its host, with the pool's pool
//! set UUID and a UUID ring of its own, so libpmemobj opens it there by
//! itself. It is not in the local replicas' ring: the application's set
//! file lists only the local replicas, the administrator's adds the
//! `REPLICA host …` lines, and poolsync's commands act on both.
//!
//! The engine does no process or network I/O of its own: the command line
//! spawns the transport (`ssh host poolsync serve`) and hands the engine a
//! [`Transport`], two byte streams and a way to learn what the remote side
//! wrote on its standard error, through a [`Connector`]. Tests connect the
//! two ends in one process ([`pipe`]).
//!
//! * [`session`]: the client side of the protocol (`poolsync_wire`): the
//!   greeting, requests and answers, and the errors that name the host,
//!   the frame and the field.
//! * [`replica`]: [`RemoteReplica`], an [`Endpoint`](crate::endpoint::Endpoint)
//!   over a session, so the one executor copies to and compares with a
//!   remote replica as with a local one (by digests, never by bytes).
//! * [`serve`]: the server side, `poolsync serve`, over any [`Storage`](poolsync_pmem::Storage).
//! * [`rules`]: which paths the server may touch.
//! * [`record`]: when each remote replica was last brought up to date.

pub mod create;
pub mod epochs;
pub mod mark;
pub mod pipe;
pub mod record;
pub mod replica;
pub mod restore;
pub mod rules;
pub mod serve;
pub mod session;
pub mod status;
pub mod sync;
pub mod transform;
pub mod update;

use std::io::{Read, Write};

pub use replica::RemoteReplica;
pub use session::{Session, WireStats};

use crate::Error;

/// A connection to one remote host: the server's standard input and
/// output, and control over the command that carries them.
pub struct Transport {
    /// Bytes from the server (its standard output).
    pub reader: Box<dyn Read + Send>,
    /// Bytes to the server (its standard input).
    pub writer: Box<dyn Write + Send>,
    /// The command behind the streams.
    pub control: Box<dyn TransportControl>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("command", &self.control.command())
            .finish_non_exhaustive()
    }
}

/// The command that carries a [`Transport`] (an `ssh` process, or a
/// thread in tests).
pub trait TransportControl: Send {
    /// The command line, for messages (`ssh -p 2222 b poolsync serve`).
    fn command(&self) -> String;
    /// What the remote side wrote on its standard error so far (the last
    /// few kilobytes), for messages.
    fn diagnostics(&self) -> String;
    /// Waits for the command to end (the streams are closed by then) and
    /// describes how it ended when that was not a success (`exit status
    /// 127`); waits a bounded time, then stops it.
    fn finish(&mut self) -> Option<String>;
    /// Stops the command now (after a protocol error).
    fn abort(&mut self);
}

/// Opens connections to remote hosts: what the command line gives the
/// engine.
pub trait Connector: Send + Sync {
    /// Starts `poolsync serve` on `node` (`[user@]host`).
    fn connect(&self, node: &str) -> Result<Transport, Error>;
}

/// A [`Connector`] for sets without remote replicas: every connection is
/// refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRemotes;

impl Connector for NoRemotes {
    fn connect(&self, node: &str) -> Result<Transport, Error> {
        Err(Error::RemoteConnect {
            node: node.to_string(),
            command: String::new(),
            reason: "this command does not reach remote hosts".to_string(),
        })
    }
}

/// How messages name a remote replica: `b.example.org:standby.set`.
pub fn remote_name(node: &str, descriptor: &str) -> String {
    format!("{node}:{descriptor}")
}

//! The engine's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Every variant names the file
/// and the line, offset or field concerned.
///
/// A variant that quotes another error's message keeps that error in a
/// field (`error`) rather than as its [`std::error::Error::source`], so
/// that printing an error with its chain of sources shows each message,
/// and the system's text in it, once. Only [`Error::Storage`], which is
/// transparent, passes its inner error's source on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pool set file failed to parse.
    #[error("{path}:{line}: {reason}", path = path.display())]
    PoolSet {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The path does not exist.
    #[error("{path}: no such file or directory", path = path.display())]
    NotFound { path: PathBuf },
    /// The path is a directory, not a pool or pool set file.
    #[error("{path}: is a directory, not a pool or pool set file", path = path.display())]
    IsDirectory { path: PathBuf },
    /// A file that starts like a pool set but is far too large to be one.
    #[error("{path}: pool set file is {len} bytes, larger than any pool set file can be", path = path.display())]
    SetTooLarge { path: PathBuf, len: u64 },
    /// Storage failed (open, lock, read, write, create, remove).
    #[error(transparent)]
    Storage(#[from] poolsync_pmem::Error),
    // Module owners: add new variants BELOW this line, each with path and
    // field/offset context.
    // --- create and rm ---
    /// `create`: the layout name does not fit the pool descriptor.
    #[error("{path}: layout name is {len} bytes; it must be shorter than {max} bytes (the descriptor keeps a terminating NUL)", path = path.display())]
    LayoutTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    /// `create`: the layout name contains a NUL byte, which would cut it short.
    #[error("{path}: layout name contains a NUL byte", path = path.display())]
    LayoutNul { path: PathBuf },
    /// `create -s` with a pool set file: part sizes come from the file.
    #[error("{path}: -s|--size cannot be used with a pool set file (the part sizes come from the file)", path = path.display())]
    SizeWithPoolSet { path: PathBuf },
    /// `create -s SIZE` below the smallest obj pool.
    #[error("{path}: size {size} is too small: an obj pool must be >= {min} bytes", path = path.display())]
    SizeTooSmall { path: PathBuf, size: u64, min: u64 },
    /// `create -s SIZE` on an existing file without `-f`.
    #[error("{path}: file already exists; with -s an existing file is not reused (use -f to replace it)", path = path.display())]
    AlreadyExists { path: PathBuf },
    /// `create` reusing an existing single file that is too small.
    #[error("{path}: file is not a pool set file and its size ({size}) is smaller than {min}", path = path.display())]
    FileTooSmall { path: PathBuf, size: u64, min: u64 },
    /// `create` reusing an existing part whose header page is not zero.
    #[error("{}: non-empty file detected: the pool header area (bytes 0..4096) is not zero; remove the file or use -f", part_at(set, *line, part))]
    NonEmpty {
        set: PathBuf,
        line: usize,
        part: PathBuf,
    },
    /// `create` reusing an existing part of the wrong size.
    #[error("{}: file size does not match config: {actual} != {configured}", part_at(set, *line, part))]
    PartSizeMismatch {
        set: PathBuf,
        line: usize,
        part: PathBuf,
        actual: u64,
        configured: u64,
    },
    /// A part line's size is below `PMEMOBJ_MIN_PART`.
    #[error("{}: size {size} smaller than {min} (the smallest part of an obj pool)", part_at(set, *line, part))]
    PartTooSmall {
        set: PathBuf,
        line: usize,
        part: PathBuf,
        size: u64,
        min: u64,
    },
    /// The net size of the smallest replica is below `PMEMOBJ_MIN_POOL`.
    #[error("{}: replica {replica}: net pool size {size} smaller than {min}", at(set, *line))]
    NetPoolTooSmall {
        set: PathBuf,
        line: usize,
        replica: usize,
        size: u64,
        min: u64,
    },
    /// `OPTION NOHDRS` in a set with local replicas.
    #[error("{set}: the NOHDRS poolset option is not supported for local poolsets", set = set.display())]
    NoHdrs { set: PathBuf },
    /// Something PMDK supports that poolsync does not support yet.
    #[error("{}: {what} not supported yet", at(set, *line))]
    Unsupported {
        set: PathBuf,
        line: usize,
        what: String,
    },
    /// The same file named twice in one pool set (same path, or a link to it).
    #[error("{}: is the same file as {other} on line {other_line}; every part must be a distinct file", part_at(set, *line, part), other = other.display())]
    DuplicatePart {
        set: PathBuf,
        line: usize,
        part: PathBuf,
        other_line: usize,
        other: PathBuf,
    },
    /// A logical offset the pool needs lies beyond a replica's parts.
    #[error("{set}: replica {replica} does not cover logical offset {offset:#x}", set = set.display())]
    AddressSpace {
        set: PathBuf,
        replica: usize,
        offset: u64,
    },
    /// A storage call on a part failed; names the part's line.
    #[error("{}{error}", line_prefix(set, *line))]
    PartStorage {
        set: PathBuf,
        line: usize,
        error: poolsync_pmem::Error,
    },
    /// A failed `create` could not remove every file it had created.
    #[error("{error}; removing the files this run created failed too ({}): its journal keeps them named, and the same `poolsync create` run again removes them first", leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Leftovers {
        error: Box<Error>,
        leftovers: Vec<PathBuf>,
    },
    // --- open, inspect, info and check ---
    /// A logical range of a replica could not be read.
    #[error("replica {replica}: cannot read logical range [{offset:#x}, {end:#x}): {reason}")]
    LogicalRead {
        replica: usize,
        offset: u64,
        end: u64,
        reason: String,
    },
    /// A part `check` or `info` needs is missing, unreadable or of the wrong size.
    #[error("{}: replica {replica} part {part_index} ({part}): {reason}", set.display(), part = part.display())]
    PartUnusable {
        set: PathBuf,
        replica: usize,
        part_index: usize,
        part: PathBuf,
        reason: String,
    },
    /// `info`: the pool set does not pass the header checks libpmemobj makes at open.
    #[error("{path}: opening poolset failed: {reason}", path = path.display())]
    OpenValidation { path: PathBuf, reason: String },
    /// `info`: the pool header of replica 0 part 0 has a wrong checksum.
    #[error("{path}: invalid checksum of the pool header (replica 0 part 0, offset 4088)", path = path.display())]
    InvalidChecksum { path: PathBuf },
    /// The pool header of replica 0 part 0 names no known pool type.
    #[error("{path}: unknown pool type -- '{signature}' (pool header signature, offset 0)", path = path.display())]
    UnknownPoolType { path: PathBuf, signature: String },
    /// A blk or log pool: poolsync handles obj pools only.
    #[error("{path}: {kind} pools are not supported, poolsync handles obj pools only", path = path.display())]
    UnsupportedPoolType { path: PathBuf, kind: &'static str },
    /// A request that does not fit the pool (such as a replica number out of range).
    #[error("{path}: {reason}", path = path.display())]
    InvalidRequest { path: PathBuf, reason: String },
    /// Options that cannot be combined.
    #[error("{reason}")]
    InvalidOptions { reason: &'static str },
    // --- remote replicas, client side ---
    /// The transport to a remote host could not be started.
    #[error("remote host {node}: cannot start `{command}`: {reason}")]
    RemoteConnect {
        node: String,
        command: String,
        reason: String,
    },
    /// Something other than `poolsync serve` spoke first (a shell profile
    /// that prints text, a wrong remote path).
    #[error("remote host {node}: the remote end did not answer as poolsync serve: it sent \"{received}\" where the poolsync greeting belongs{}; make the remote shell print nothing for a non-interactive command (look for output in ~/.bashrc, ~/.profile and the like on {node}), and check that --remote-path (POOLSYNC_REMOTE_PATH) runs poolsync there (the command was `{command}`)", said(stderr))]
    RemoteNoise {
        node: String,
        command: String,
        /// The first bytes received, escaped.
        received: String,
        stderr: String,
    },
    /// The remote command ended before `poolsync serve` greeted.
    #[error("remote host {node}: the connection ended before poolsync serve greeted{}{}; install poolsync on {node} or give its path with --remote-path (POOLSYNC_REMOTE_PATH), and check that `{command}` logs in", ended(status), said(stderr))]
    RemoteNoGreeting {
        node: String,
        command: String,
        status: Option<String>,
        stderr: String,
    },
    /// The connection dropped or failed during a session.
    #[error("remote host {node}: the connection failed {what}: {reason}{}; run the command again when the host is reachable (an interrupted update leaves the remote replica marked broken, and the next run completes it)", said(stderr))]
    RemoteConnection {
        node: String,
        /// What was going on: `reading the answer to fence (frame 12)`.
        what: String,
        reason: String,
        stderr: String,
    },
    /// The peer broke the protocol: the frame and field at fault.
    #[error("remote host {node}: frame {frame} {direction}: {error}")]
    RemoteProtocol {
        node: String,
        frame: u64,
        /// `from the server`, `to the server`.
        direction: &'static str,
        error: poolsync_wire::Error,
    },
    /// The server refused or failed a request.
    #[error("remote replica {node}:{set}: {request} failed on the remote host: {message}")]
    RemoteFailed {
        node: String,
        set: String,
        request: &'static str,
        code: poolsync_wire::FailureCode,
        message: String,
    },
    /// A remote replica cannot be used for what was asked (its shape,
    /// size, pool, or state).
    #[error("{}: remote replica {node}:{descriptor}: {reason}", at(set, *line))]
    RemoteRefused {
        set: PathBuf,
        line: usize,
        node: String,
        descriptor: String,
        reason: String,
    },
    // --- remote replicas, server side (poolsync serve) ---
    /// `serve`: a path the rules refuse.
    #[error("{path}: refused: {reason}")]
    ServeRefused { path: String, reason: String },
    /// `serve`: the pool set file does not exist.
    #[error("{path}: no such pool set file under the server's root ({})", resolved.display())]
    ServeNotFound { path: String, resolved: PathBuf },
    /// `serve`: the client broke the protocol.
    #[error("frame {frame} from the client: {error}")]
    ServeProtocol {
        frame: u64,
        error: poolsync_wire::Error,
    },
    /// `serve`: the connection to the client failed.
    #[error("the connection to the client failed {what}: {reason}")]
    ServeConnection { what: String, reason: String },
    /// The thread that writes repaired blocks stopped early (it reports its
    /// own error; this one is seen only if it panicked).
    #[error("the writer of repaired blocks stopped unexpectedly")]
    WriterStopped,
    // --- sync ---
    /// `sync`: the path names a single-file pool, not a pool set file.
    #[error("{path}: file is not a poolset file", path = path.display())]
    NotPoolSet { path: PathBuf },
    /// `sync`: the pool set has one replica, so there is nothing to sync.
    #[error("{path}: no replica(s) found in the pool set", path = path.display())]
    NoReplicas { path: PathBuf },
    /// `sync`: a part smaller than a whole obj pool (PMDK's sync refuses those).
    #[error("{}: replica {replica}, part {part}: file is too small ({size} bytes; sync needs parts of at least {min} bytes)", at(set, *line))]
    SyncPartTooSmall {
        set: PathBuf,
        line: usize,
        replica: usize,
        part: usize,
        size: u64,
        min: u64,
    },
    /// `sync`: the directory a part lives in does not exist.
    #[error("{}: directory {dir} for part {part} in replica {replica} does not exist or is not accessible", at(set, *line), dir = dir.display())]
    PartDirectory {
        set: PathBuf,
        line: usize,
        replica: usize,
        part: usize,
        dir: PathBuf,
    },
    /// The pool set file lists a replica smaller than the pool its
    /// descriptor describes.
    #[error("{set}: replica {replica} is too small for the pool: the pool set file lists {listed} bytes for it (without part headers), and the pool is {pool} bytes (heap_offset + heap_size of the descriptor); was the pool set file edited? `poolsync transform` reshapes replicas", set = set.display())]
    ReplicaTooSmall {
        set: PathBuf,
        replica: usize,
        listed: u64,
        pool: u64,
    },
    /// A pool set names one file twice (`first_line` 0: the pool set file).
    #[error("{}", same_file_text(set, *line, path, *first_line, first))]
    SameFileTwice {
        set: PathBuf,
        line: usize,
        path: PathBuf,
        first_line: usize,
        first: PathBuf,
    },
    /// `sync`: a missing part is a symbolic link to a file in a directory
    /// that does not exist, so it cannot be created.
    #[error("{}: part {part} in replica {replica} is missing, and {link} is a symbolic link to {target}, whose directory does not exist: create the directory, or point the link elsewhere", at(set, *line), link = link.display(), target = target.display())]
    LinkDirectory {
        set: PathBuf,
        line: usize,
        replica: usize,
        part: usize,
        link: PathBuf,
        target: PathBuf,
    },
    /// `sync`: the health check found the set impossible to synchronize
    /// (the reason names the replica, part or field).
    #[error("{set}: {reason}", set = set.display())]
    CannotSync { set: PathBuf, reason: String },
    /// `rm`: a file of the pool set at `path` could not be removed (a
    /// read-only mount, a directory not writable by this user, an
    /// immutable file), so none is. The reason names that file; `rm`
    /// names `path` before it.
    #[error("{reason}; nothing was removed")]
    CannotRemove { path: PathBuf, reason: String },
    /// A writer failed after its first write. Running `command` again
    /// finishes what the run began (each writer's re-run converges, see
    /// ARCHITECTURE.md "Crash model").
    #[error("{error}; once that is fixed, run `{command}` again: it finishes what this run began")]
    Unfinished { command: String, error: Box<Error> },
    /// `sync`: a bad block recovery file is refused or cannot be used.
    #[error("{path}: {reason}", path = path.display())]
    RecoveryFile { path: PathBuf, reason: String },
    /// `sync`: a logical range is unreadable or bad in every healthy replica.
    #[error("{set}: a part of the pool has uncorrectable errors in all replicas: logical range [{offset:#x}, {end:#x}) of replica {replica}", set = set.display())]
    Uncorrectable {
        set: PathBuf,
        replica: usize,
        offset: u64,
        end: u64,
    },
    // --- verify (check --data, sync --verify) ---
    /// The source replica's heap is not what libpmemobj writes.
    #[error("{set}: the heap of replica {replica}, the source, is corrupted: {error}; nothing was written: compare with another replica's copy with --source N (replicas {others})", set = set.display())]
    SourceHeap {
        set: PathBuf,
        replica: usize,
        others: String,
        error: Box<poolsync_header::Error>,
    },
    /// The source replica's obj descriptor cannot be read or decoded.
    #[error("{set}: the pool descriptor of replica {replica}, the source, is unusable: {reason}; nothing was written: use another replica with --source N (replicas {others})", set = set.display())]
    SourceDescriptor {
        set: PathBuf,
        replica: usize,
        reason: String,
        others: String,
    },
    /// The majority rule: the source disagrees where all others agree.
    #[error("{set}: replica {replica}, the source, is outvoted: replicas {} agree with each other and not with it at logical [{offset:#x}, {end:#x}) {what}; nothing was written: use --source {take} to take the majority's copy, or --force-source to spread replica {replica}'s", list(majority), set = set.display())]
    Outvoted {
        set: PathBuf,
        replica: usize,
        /// The replicas that agree with each other.
        majority: Vec<usize>,
        take: usize,
        offset: u64,
        end: u64,
        /// What the first range belongs to, how many more there are, and
        /// the replicas that had no vote, and why (` (replica 0 has no
        /// vote: ...)`).
        what: String,
    },
    /// Two replicas (or more, with no majority) disagree on live data and
    /// nothing tells which one is right.
    #[error("{set}: replicas {first} and {second} differ at logical [{offset:#x}, {end:#x}) {what}, and nothing tells which one is right{absent}; nothing was written: use --source N to copy from replica N, or --force-source to copy from replica {first}, the source, anyway", set = set.display())]
    Tie {
        set: PathBuf,
        /// The source.
        first: usize,
        /// The replica that differs from it.
        second: usize,
        offset: u64,
        end: u64,
        /// What the first range belongs to, and how many more there are.
        what: String,
        /// The replicas that had no vote, and why (` (replica 0 has no
        /// vote: ...)`), or nothing.
        absent: String,
    },
    /// The undo file a repair needs does not fit.
    #[error("{set}: {shortfall}; nothing was written: free some space, or repair without an undo file (--no-undo)", set = set.display())]
    UndoSpace { set: PathBuf, shortfall: String },
    /// An undo file that cannot be used.
    #[error("{path}: offset {offset}: {reason}", path = path.display())]
    UndoFile {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// `undo`: a range holds neither the bytes the repair wrote nor the
    /// ones it saved.
    #[error("{path}: the pool changed since the repair: replica {replica} part {part} (file offset {file_offset:#x}), logical [{offset:#x}, {end:#x}) holds neither the repaired bytes nor the saved ones; nothing was restored", path = path.display())]
    PoolChanged {
        path: PathBuf,
        replica: usize,
        part: usize,
        file_offset: u64,
        offset: u64,
        end: u64,
    },
    /// A block read again for an export no longer held what the scan had
    /// read a moment before.
    #[error("{endpoint}: the block at logical offset {offset:#x} changed while it was read; the pool set must not be in use while it is exported")]
    SourceChanged { endpoint: String, offset: u64 },
    /// `sync --wait-lock`: the pool stayed in use for the whole wait.
    #[error("{error}; still locked after waiting {seconds} s (--wait-lock)")]
    LockTimeout {
        seconds: u64,
        error: poolsync_pmem::Error,
    },
    // --- Device DAX ---
    /// A pool set whose Device DAX parts break one of PMDK's rules.
    #[error("{}: {reason}", at(set, *line))]
    DeviceDaxSet {
        set: PathBuf,
        line: usize,
        reason: String,
    },
    /// Something a Device DAX part cannot do (be created, resized or
    /// removed), or an option that does not apply to one.
    #[error("{}: {reason}", part_at(set, *line, part))]
    DeviceDaxPart {
        set: PathBuf,
        line: usize,
        part: PathBuf,
        reason: String,
    },
    // --- feature ---
    /// `feature -e|-d SINGLEHDR`: the bit follows the pool set file's option.
    #[error("{path}: unsupported feature: {feature} cannot be enabled or disabled, it follows OPTION SINGLEHDR of the pool set file (`poolsync transform OLD.set NEW.set` adds or removes the option); nothing was written", path = path.display())]
    FeatureUnchangeable {
        path: PathBuf,
        feature: poolsync_header::Feature,
    },
    /// `feature`: a header's masks cannot be used (unknown bits, or masks
    /// that differ from the other headers' in more than one feature).
    #[error("{set}: replica {replica} part {part} ({path}): {reason}; nothing was written", set = set.display(), path = path.display())]
    FeatureMismatch {
        set: PathBuf,
        replica: usize,
        part: usize,
        path: PathBuf,
        reason: String,
    },
    /// `feature -e|-d`: a feature another one depends on is in the way.
    #[error("{path}: {} prior to {} {feature} (run `poolsync feature {} {other} {path}` first); nothing was written", if *enable { format!("enable {other}") } else { format!("disable {other}") }, if *enable { "enabling" } else { "disabling" }, if *enable { "-e" } else { "-d" }, path = path.display())]
    FeatureDependency {
        path: PathBuf,
        feature: poolsync_header::Feature,
        other: poolsync_header::Feature,
        enable: bool,
    },
    /// `feature`: the headers disagree on one feature only, as an
    /// interrupted `feature -e|-d` leaves them (docs/format.md §24.3).
    #[error("{path}: the pool headers disagree on {feature} (set in: {enabled}; clear in: {disabled}{torn}): a change of {feature} was interrupted; finish it with `poolsync feature -e {feature} {path}` or undo it with `poolsync feature -d {feature} {path}`", path = path.display())]
    FeatureInterrupted {
        path: PathBuf,
        feature: poolsync_header::Feature,
        enabled: String,
        disabled: String,
        torn: String,
    },
    // --- transform ---
    /// `transform` refuses the pair of pool sets.
    #[error("failed to transform {source_set} -> {target_set}: {reason}", source_set = source_set.display(), target_set = target_set.display())]
    CannotTransform {
        source_set: PathBuf,
        target_set: PathBuf,
        reason: String,
    },
    /// A file that would be deleted does not belong to the pool set.
    #[error("{path}: refusing to delete: the file {what}, not this pool set's uuid {expected} ({hint})", path = path.display())]
    NotOwned {
        path: PathBuf,
        what: String,
        expected: String,
        hint: String,
    },
    /// `create`: the journal of an interrupted create cannot be read.
    #[error("{}: create journal: {reason}; it records a create that was interrupted, but the files it names cannot be told from others without it: check them, remove the journal and run create again", at(path, *line))]
    CreateJournal {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// `create`: the journal of an interrupted create names a file that is
    /// not provably that create's.
    #[error("{}: records an interrupted create of the file {}, but the file {what}, so it is not provably that create's: if it is not needed, remove it (`rm {}`) and run create again", journal.display(), path.display(), path.display())]
    CreateLeftover {
        journal: PathBuf,
        path: PathBuf,
        what: String,
    },
    /// `transform`: the journal of an interrupted transform cannot be used.
    #[error("{}: transform journal: {reason}", at(path, *line))]
    Journal {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// `transform`: a part being added already exists and is not provably
    /// left by an interrupted run of the same transform.
    #[error("{}: some parts being added already exist: the file {what}, not this pool set's uuid {expected}; if it is not needed, remove it (`rm {path}`) and run again", part_at(set, *line, path), path = path.display())]
    PartExists {
        set: PathBuf,
        line: usize,
        path: PathBuf,
        what: String,
        expected: String,
    },
    // --- update packets ---
    /// A state file that cannot be read or written.
    #[error("{path}: {reason}", path = path.display())]
    StateFile { path: PathBuf, reason: String },
    /// A key file that cannot be used.
    #[error("{path}: key file: {reason}", path = path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// A packet file that is refused: damaged, truncated, missing parts,
    /// foreign, or not made for this pool. The reason names the offset.
    #[error("{path}: {reason}", path = path.display())]
    PacketFile {
        path: PathBuf,
        offset: Option<u64>,
        reason: String,
    },
    /// A rewind request that cannot be used.
    #[error("{path}: rewind request: {reason}", path = path.display())]
    RewindRequest { path: PathBuf, reason: String },
    /// `export` refuses (the reason says why and what to do).
    #[error("{set}: {reason}", set = set.display())]
    CannotExport { set: PathBuf, reason: String },
    /// `import` refuses (the reason names the packet and why).
    #[error("{set}: {reason}", set = set.display())]
    CannotImport { set: PathBuf, reason: String },
    /// `epoch` refuses.
    #[error("{set}: {reason}", set = set.display())]
    CannotChangeEpoch { set: PathBuf, reason: String },
}

/// Linux's `EIO`: what a read of a bad block of persistent memory, or of a
/// failing disk, returns.
const EIO: i32 = 5;

/// `; the remote side said: "…"` when it said something.
fn said(stderr: &str) -> String {
    let text = stderr.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; the remote side said: \"{}\"", text.escape_debug())
    }
}

/// ` (exit status 127)` when the command's end is known.
fn ended(status: &Option<String>) -> String {
    status
        .as_ref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default()
}

impl Error {
    /// Whether `create` refused its arguments before it tried to create
    /// anything (pmempool then prints no "creating pool file failed").
    pub fn is_refused_argument(&self) -> bool {
        matches!(
            self,
            Error::LayoutTooLong { .. }
                | Error::LayoutNul { .. }
                | Error::SizeTooSmall { .. }
                | Error::SizeWithPoolSet { .. }
        )
    }

    /// Whether this is an I/O error (`EIO`) of the storage: a bad block,
    /// which another replica may be able to provide.
    pub fn is_eio(&self) -> bool {
        match self {
            Error::Storage(e) | Error::PartStorage { error: e, .. } => storage_is_eio(e),
            _ => false,
        }
    }
}

/// Whether a storage error is `EIO`.
pub(crate) fn storage_is_eio(e: &poolsync_pmem::Error) -> bool {
    match e {
        poolsync_pmem::Error::Io { .. } | poolsync_pmem::Error::IoAt { .. } => {
            e.os_error().and_then(std::io::Error::raw_os_error) == Some(EIO)
        }
        _ => false,
    }
}

/// `set` or `set:line` (line 0: the whole file, or a single-file pool).
/// The message of [`Error::SameFileTwice`].
fn same_file_text(
    set: &std::path::Path,
    line: usize,
    path: &std::path::Path,
    first_line: usize,
    first: &std::path::Path,
) -> String {
    if first_line == 0 {
        format!(
            "{}: {} is the pool set file itself (or a link to it); a part must be a file of its own",
            at(set, line),
            path.display()
        )
    } else {
        format!(
            "{}: {} is the same file as {} on line {first_line} (listed twice, or a hard or symbolic link to it); a pool set names each part once",
            at(set, line),
            path.display(),
            first.display()
        )
    }
}

/// Replica indexes as `1, 2`.
fn list(replicas: &[usize]) -> String {
    replicas
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn at(set: &std::path::Path, line: usize) -> String {
    if line == 0 {
        set.display().to_string()
    } else {
        format!("{}:{line}", set.display())
    }
}

/// `set:line: ` before a message about a part, or nothing for a
/// single-file pool (whose messages name the file already).
fn line_prefix(set: &std::path::Path, line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("{}: ", at(set, line))
    }
}

/// Where a part is named: `set:line: part`, or just the part of a single-file pool.
fn part_at(set: &std::path::Path, line: usize, part: &std::path::Path) -> String {
    if line == 0 && set == part {
        part.display().to_string()
    } else {
        format!("{}: {}", at(set, line), part.display())
    }
}

//! `poolsync info`: `pmempool info [<args>] <file>` for obj pools and pool
//! sets, printing the sections and labels pmempool prints, or `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use poolsync_engine::info::{self, HeaderInfo, Info, InfoOptions, ObjInfo, PartInfo};
use poolsync_header::{
    alignment_of_type, data_name, format_alignment_desc, format_checksum, format_compat,
    format_incompat, format_ro_compat, last_shutdown_name, machine_class_name, machine_name,
    ALIGNMENT_TYPES,
};
use poolsync_pmem::{Access, AnyStorage, PersistMode};

use crate::diagnose::{explain, Waiting};
use crate::output::{emit_json, field, hexdump, local_time, out, size};
use crate::settings::Settings;
use poolsync_engine::exec::{NoProgress, Tuning};
use poolsync_engine::remote::status::{remote_status, RemoteStatus, StatusOptions};

/// Arguments of `poolsync info` (pmempool syntax).
///
/// The options pmempool offers for dumping lanes, heaps, objects and blk or
/// log pools are accepted by name and refused with a clear error, so that a
/// script relying on them fails loudly instead of printing less.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Increase verbosity (alignment details, run id)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Parse the pool as the given type without validating its headers (obj only)
    #[arg(short = 'f', long = "force", value_name = "TYPE")]
    force: Option<String>,
    /// Print sizes in human-readable form
    #[arg(short = 'n', long = "human")]
    human: bool,
    /// Hex-dump the headers
    #[arg(short = 'x', long = "headers-hex")]
    headers_hex: bool,
    /// Print bad blocks (only `no` is supported)
    #[arg(short = 'k', long = "bad-blocks", value_name = "yes|no")]
    bad_blocks: Option<String>,
    /// Show the headers of replica N (0 = master)
    #[arg(short = 'p', long = "replica", value_name = "N")]
    replica: Option<usize>,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Wait up to SECONDS while another process has the pool open (default: the
    /// wait_lock setting, 0)
    #[arg(long = "wait-lock", value_name = "SECONDS", value_parser = crate::settings::wait_lock_flag)]
    wait_lock: Option<String>,
    #[command(flatten)]
    unsupported: Unsupported,
    #[command(flatten)]
    remote: crate::transport::RemoteArgs,
    /// The pool file or pool set file
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// pmempool info options poolsync does not implement yet.
#[derive(Debug, clap::Args)]
struct Unsupported {
    #[arg(short = 'd', long = "data", hide = true)]
    data: bool,
    #[arg(short = 's', long = "stats", hide = true)]
    stats: bool,
    #[arg(short = 'r', long = "range", hide = true, value_name = "RANGE")]
    range: Option<String>,
    #[arg(short = 'w', long = "walk", hide = true, value_name = "SIZE")]
    walk: Option<String>,
    #[arg(short = 'm', long = "map", hide = true)]
    map: bool,
    #[arg(short = 'g', long = "flog", hide = true)]
    flog: bool,
    #[arg(short = 'B', long = "backup", hide = true)]
    backup: bool,
    #[arg(short = 'z', long = "skip-zeros", hide = true)]
    skip_zeros: bool,
    #[arg(short = 'e', long = "skip-error", hide = true)]
    skip_error: bool,
    #[arg(short = 'u', long = "skip-no-flag", hide = true)]
    skip_no_flag: bool,
    #[arg(short = 'l', long = "lanes", hide = true)]
    lanes: bool,
    #[arg(short = 'R', long = "recovery", hide = true)]
    recovery: bool,
    #[arg(short = 'S', long = "section", hide = true, value_name = "SECTIONS")]
    section: Option<String>,
    #[arg(short = 'O', long = "object-store", hide = true)]
    object_store: bool,
    #[arg(short = 't', long = "types", hide = true, value_name = "RANGE")]
    types: Option<String>,
    #[arg(short = 'E', long = "no-empty", hide = true)]
    no_empty: bool,
    #[arg(short = 'o', long = "root", hide = true)]
    root: bool,
    #[arg(short = 'A', long = "alloc-header", hide = true)]
    alloc_header: bool,
    #[arg(short = 'a', long = "oob-header", hide = true)]
    oob_header: bool,
    #[arg(short = 'H', long = "heap", hide = true)]
    heap: bool,
    #[arg(short = 'Z', long = "zones", hide = true)]
    zones: bool,
    #[arg(short = 'C', long = "chunks", hide = true)]
    chunks: bool,
    #[arg(short = 'T', long = "chunk-type", hide = true, value_name = "TYPES")]
    chunk_type: Option<String>,
    #[arg(short = 'b', long = "bitmap", hide = true)]
    bitmap: bool,
}

impl Unsupported {
    /// The first option given that poolsync does not implement.
    fn first(&self) -> Option<&'static str> {
        let flags = [
            (self.data, "-d|--data"),
            (self.stats, "-s|--stats"),
            (self.range.is_some(), "-r|--range"),
            (self.walk.is_some(), "-w|--walk"),
            (self.map, "-m|--map"),
            (self.flog, "-g|--flog"),
            (self.backup, "-B|--backup"),
            (self.skip_zeros, "-z|--skip-zeros"),
            (self.skip_error, "-e|--skip-error"),
            (self.skip_no_flag, "-u|--skip-no-flag"),
            (self.lanes, "-l|--lanes"),
            (self.recovery, "-R|--recovery"),
            (self.section.is_some(), "-S|--section"),
            (self.object_store, "-O|--object-store"),
            (self.types.is_some(), "-t|--types"),
            (self.no_empty, "-E|--no-empty"),
            (self.root, "-o|--root"),
            (self.alloc_header, "-A|--alloc-header"),
            (self.oob_header, "-a|--oob-header"),
            (self.heap, "-H|--heap"),
            (self.zones, "-Z|--zones"),
            (self.chunks, "-C|--chunks"),
            (self.chunk_type.is_some(), "-T|--chunk-type"),
            (self.bitmap, "-b|--bitmap"),
        ];
        flags
            .into_iter()
            .find(|(given, _)| *given)
            .map(|(_, name)| name)
    }
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The file the command works on.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let wait = settings.wait_lock(args.wait_lock.as_deref())?;
    if let Some(option) = args.unsupported.first() {
        bail!("info {option} is not supported yet: poolsync shows the pool set structure, the pool header and the obj header");
    }
    let force = match args.force.as_deref() {
        None => false,
        Some("obj") => true,
        Some(t @ ("blk" | "log" | "btt")) => {
            bail!("info -f {t}: {t} pools are not supported, poolsync handles obj pools only")
        }
        Some(other) => bail!("info -f {other}: invalid pool type, expected obj"),
    };
    match args.bad_blocks.as_deref() {
        None | Some("no") => {}
        Some("yes") => bail!("info -k yes: listing bad blocks is not supported yet"),
        Some(other) => bail!("info -k {other}: expected yes or no"),
    }
    let opts = InfoOptions {
        replica: args.replica.unwrap_or(0),
        force,
    };
    let info = crate::wait::open(
        &AnyStorage::new(PersistMode::PageCache),
        &args.file,
        Access::ReadOnly,
        wait,
    )
    .and_then(|set| info::info_open(&set, &opts))
    .map_err(|e| anyhow::anyhow!(explain(e, &args.file, Waiting::Supported(wait))))?;
    let connector = args.remote.connector(settings)?;
    let status = StatusOptions {
        compare: true,
        live_only: false,
        tuning: Tuning {
            stride: poolsync_engine::compare::DEFAULT_STRIDE,
            threads: settings.jobs(None)?,
        },
    };
    let remotes = anyhow::Context::with_context(
        remote_status(
            &AnyStorage::new(PersistMode::PageCache),
            &args.file,
            &connector,
            &status,
            &NoProgress,
        ),
        || {
            format!(
                "{}: cannot describe the remote replicas",
                args.file.display()
            )
        },
    )?;
    if args.json {
        emit_json(
            "info",
            &Document {
                info: &info,
                remotes: &remotes,
            },
        )?;
    } else {
        out!(
            "{}",
            render(&info, args.verbose > 0, args.human, args.headers_hex)
        );
        out!("{}", remote_sections(&remotes));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--json` document: pmempool's fields, and the remote replicas.
#[derive(Debug, serde::Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    info: &'a Info,
    /// Each remote replica: health judged on its host, and lag (absent
    /// without remote replicas).
    #[serde(skip_serializing_if = "<[RemoteStatus]>::is_empty")]
    remotes: &'a [RemoteStatus],
}

/// One section per remote replica, after pmempool's sections.
fn remote_sections(remotes: &[RemoteStatus]) -> String {
    let mut out = String::new();
    for r in remotes {
        out.push_str(&format!(
            "\nRemote replica {} (line {}):\n",
            r.remote, r.line
        ));
        if let Some(e) = &r.error {
            field(&mut out, "error", e);
            continue;
        }
        field(&mut out, "command", &r.command);
        if let Some(server) = &r.server {
            field(&mut out, "server", server);
        }
        let health = if r.healthy {
            "healthy (judged on the remote host)".to_string()
        } else {
            format!(
                "broken (judged on the remote host): {}",
                r.verdicts.join("; ")
            )
        };
        field(&mut out, "health", health);
        if let Some(l) = &r.lag {
            let lag = if l.blocks == 0 {
                format!(
                    "none: equal to replica {} ({} bytes compared by digests)",
                    l.source, l.bytes_compared
                )
            } else {
                format!(
                    "{} block(s), {} bytes differ from replica {} (changed since its last sync)",
                    l.blocks, l.bytes, l.source
                )
            };
            field(&mut out, "lag", lag);
        }
        field(&mut out, "last sync", crate::output::last_sync_text(r));
    }
    out
}

/// The text pmempool info prints.
fn render(info: &Info, verbose: bool, human: bool, hex: bool) -> String {
    let mut out = String::new();
    if let Some(set) = &info.poolset {
        out.push_str("Poolset structure:\n");
        field(&mut out, "Number of replicas", set.replicas.len());
        for rep in &set.replicas {
            let master = if rep.replica == 0 { " (master)" } else { "" };
            out.push_str(&format!(
                "Replica {}{master} - local, {} part(s):\n",
                rep.replica,
                rep.parts.len()
            ));
            for (i, part) in rep.parts.iter().enumerate() {
                out.push_str(&format!("part {i}:\n"));
                part_fields(&mut out, part, human);
            }
        }
        if !set.options.is_empty() {
            out.push_str("\nPoolset options:\n");
            for option in &set.options {
                out.push_str(option);
                out.push('\n');
            }
        }
    } else if let Some(file) = &info.part_file {
        out.push_str("Part file:\n");
        part_fields(&mut out, file, human);
    }
    out.push_str("\nPOOL Header:\n");
    pool_header(&mut out, &info.pool_header, info.is_part, verbose, hex);
    if let Some(obj) = &info.obj_header {
        out.push_str("\nPMEM OBJ Header:\n");
        obj_header(&mut out, obj, verbose, hex);
    }
    out
}

fn part_fields(out: &mut String, part: &PartInfo, human: bool) {
    field(out, "path", part.path.display());
    field(out, "type", part.kind);
    field(out, "size", size(part.size, human));
    if let Some(alignment) = part.alignment {
        field(out, "alignment", size(alignment, human));
    }
}

fn pool_header(out: &mut String, h: &HeaderInfo, is_part: bool, verbose: bool, hex: bool) {
    if hex {
        hexdump(out, &h.raw, 0);
    }
    let part_mark = if is_part { " [part file]" } else { "" };
    field(out, "Signature", format!("{}{part_mark}", h.signature));
    field(out, "Major", h.major);
    field(
        out,
        "Mandatory features",
        format_incompat(h.features.incompat),
    );
    field(
        out,
        "Not mandatory features",
        format_compat(h.features.compat),
    );
    field(out, "Forced RO", format_ro_compat(h.features.ro_compat));
    field(out, "Pool set UUID", h.poolset_uuid.to_canonical());
    field(out, "UUID", h.uuid.to_canonical());
    field(out, "Previous part UUID", h.prev_part_uuid.to_canonical());
    field(out, "Next part UUID", h.next_part_uuid.to_canonical());
    field(
        out,
        "Previous replica UUID",
        h.prev_repl_uuid.to_canonical(),
    );
    field(out, "Next replica UUID", h.next_repl_uuid.to_canonical());
    field(out, "Creation Time", local_time(h.crtime));
    let ad = h.arch_flags.alignment_desc;
    let cur = h.expected_alignment_desc;
    field(out, "Alignment Descriptor", format_alignment_desc(ad, cur));
    if verbose {
        for (i, name) in ALIGNMENT_TYPES.iter().enumerate() {
            let a = alignment_of_type(ad, i);
            let value = if ad == cur {
                format!("{a:2}")
            } else {
                let want = alignment_of_type(cur, i);
                if a == want {
                    format!("{a:2} [OK]")
                } else {
                    format!("{a:2} [wrong! should be {want:2}]")
                }
            };
            field(out, &format!("  {name}"), value);
        }
    }
    field(out, "Class", machine_class_name(h.arch_flags.machine_class));
    field(out, "Data", data_name(h.arch_flags.data));
    field(out, "Machine", machine_name(h.arch_flags.machine));
    field(out, "Last shutdown", last_shutdown_name(u8::from(h.dirty)));
    field(
        out,
        "Checksum",
        format_checksum(h.checksum, h.expected_checksum),
    );
}

fn obj_header(out: &mut String, o: &ObjInfo, verbose: bool, hex: bool) {
    if hex {
        hexdump(out, &o.raw, 0x1000);
    }
    field(out, "Layout", o.layout.as_deref().unwrap_or("(null)"));
    field(out, "Lanes offset", format!("{:#x}", o.lanes_offset));
    field(out, "Number of lanes", o.nlanes);
    field(out, "Heap offset", format!("{:#x}", o.heap_offset));
    field(out, "Heap size", o.heap_size);
    field(
        out,
        "Checksum",
        format_checksum(o.checksum, o.expected_checksum),
    );
    field(out, "Root offset", format!("{:#x}", o.root_offset));
    if verbose {
        field(out, "Run id", o.run_id);
    }
}

//! Remote replicas in the output of `sync` (and the commands that reach
//! them): a remote update's plan, what it did, and its failure, as text.

use poolsync_engine::exec::HeaderAction;
use poolsync_engine::remote::sync::RemoteOutcome;
use poolsync_engine::remote::update::{RemotePartAction, RemotePlan};

/// The plan of one remote update as text (a dry run, or `-vvv`).
pub fn plan_text(o: &RemoteOutcome, plan: &RemotePlan, dry_run: bool) -> String {
    let mut out = format!(
        "remote replica {} (line {}) over `{}`{}\n",
        plan.remote,
        plan.line,
        plan.command,
        if dry_run {
            " (dry run: nothing is changed)"
        } else {
            ""
        }
    );
    if plan.healthy {
        out.push_str(&format!(
            "  health on the remote host: healthy ({})\n",
            plan.server
        ));
    } else {
        out.push_str(&format!(
            "  health on the remote host: broken: {}\n",
            if plan.verdicts.is_empty() {
                "no verdict".to_string()
            } else {
                plan.verdicts.join("; ")
            }
        ));
    }
    if let Some(how) = &o.changed_on_host {
        out.push_str(&format!(
            "  changed on its host since its last sync ({how}): its changed blocks are overwritten from the source, rewinding it\n"
        ));
    }
    out.push_str(&method_line(plan));
    if plan.current {
        out.push_str("  current: nothing differs; nothing to send\n");
        return out;
    }
    for part in &plan.parts {
        let data = match part.action {
            RemotePartAction::Create => format!("create, {} bytes to copy", part.bytes_differing),
            RemotePartAction::Recreate => format!(
                "remove and create (wrong size), {} bytes to copy",
                part.bytes_differing
            ),
            RemotePartAction::Compare => {
                format!("compare, {} bytes differ", part.bytes_differing)
            }
        };
        let header = match part.header {
            HeaderAction::None => String::new(),
            HeaderAction::Keep => ", keep header".to_string(),
            HeaderAction::Relink => ", rewrite header".to_string(),
            HeaderAction::New => {
                format!(", new header (uuid {})", part.uuid.as_deref().unwrap_or(""))
            }
            HeaderAction::Restore => ", invalidate and restore header".to_string(),
        };
        out.push_str(&format!(
            "  part {} {}: {data}{header}\n",
            part.part,
            part.path.display()
        ));
    }
    let t = &plan.totals;
    out.push_str(&format!(
        "  this host: {} bytes read to compare and {} to send; remote host: {} bytes read to compare, {} bytes written, {} part(s) created, {} header(s) invalidated first and {} written last\n",
        t.bytes_compared,
        t.bytes_to_send(),
        t.bytes_compared,
        t.bytes_to_send(),
        t.parts_to_create,
        t.headers_to_invalidate,
        t.headers_to_write
    ));
    out.push_str(&format!(
        "  wire: {} bytes of data to send (before compression), {} bytes of digests exchanged to compare\n",
        t.bytes_to_send(),
        t.wire_compare
    ));
    let _ = o;
    out
}

/// How the update finds what differs, as one indented line.
fn method_line(plan: &RemotePlan) -> String {
    match (plan.since_epoch, &plan.digests_because) {
        (Some(e), _) => format!(
            "  by epochs: its sync mark proves it holds epoch {e}; the {} bytes the source changed after it are sent, and nothing is read to compare\n",
            plan.totals.bytes_differing
        ),
        // Every part new: nothing to compare, everything is sent.
        (None, Some(why)) if plan.totals.bytes_compared == 0 && plan.totals.bytes_to_copy > 0 => {
            format!(
                "  whole: {} bytes sent, nothing to compare, because {why}\n",
                plan.totals.bytes_to_copy
            )
        }
        (None, Some(why)) => format!(
            "  by digests: {} bytes compared, because {why}\n",
            plan.totals.bytes_compared
        ),
        (None, None) => format!(
            "  by digests: {} bytes compared\n",
            plan.totals.bytes_compared
        ),
    }
}

/// Warns on stderr of each remote replica that was changed on its host and
/// is now rewound, and of each whose update is done but whose time could
/// not be recorded (info and check then call it unknown).
pub fn warn_unrecorded(outcomes: &[RemoteOutcome]) {
    for o in outcomes {
        if let (Some(how), true) = (&o.changed_on_host, o.report.is_some()) {
            eprintln!(
                "warning: remote replica {} was changed on its host since its last sync ({how}): rewound to the source, what was written there is overwritten",
                o.remote
            );
        }
        if let Some(why) = &o.unrecorded {
            eprintln!(
                "warning: remote replica {} is up to date, but the time of this sync is not recorded: {why}",
                o.remote
            );
        }
    }
}

/// One line for what a remote update did.
pub fn done_line(o: &RemoteOutcome) -> String {
    match (&o.plan, &o.report) {
        (Some(plan), None) if plan.current => format!(
            "remote replica {}: current ({}; {} bytes on the wire)",
            o.remote,
            match plan.since_epoch {
                Some(e) => format!("nothing changed since epoch {e}, which its sync mark proves"),
                None => format!("{} bytes compared by digests", plan.totals.bytes_compared),
            },
            o.wire.bytes_sent + o.wire.bytes_received
        ),
        (Some(plan), Some(report)) => format!(
            "remote replica {}: {}updated{}: {} bytes differed, {} bytes copied, {} bytes written there; {} bytes sent and {} received on the wire",
            o.remote,
            match &o.changed_on_host {
                Some(how) => format!("changed on its host since its last sync ({how}): rewound to the source; "),
                None => String::new(),
            },
            match plan.since_epoch {
                Some(e) => format!(" with the changes since epoch {e}"),
                None if plan.totals.bytes_compared > 0 => " by digests".to_string(),
                // Every part new: nothing to compare.
                None => String::new(),
            },
            plan.totals.bytes_differing,
            plan.totals.bytes_to_copy,
            report.bytes_written,
            o.wire.bytes_sent,
            o.wire.bytes_received
        ),
        _ => format!("remote replica {}: not updated", o.remote),
    }
}

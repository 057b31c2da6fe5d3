//! `pmempool feature` (docs/format.md §24): query, enable or disable one
//! feature bit in the pool header of every header-carrying part of every
//! replica.
//!
//! The run has two halves, as every writer here has. `survey` opens and
//! locks every part and judges every header without writing: it refuses
//! what libpmempool refuses (a missing part, unknown feature bits, headers
//! whose masks disagree) and what it should refuse (a header that is not a
//! valid obj header, which libpmempool would rewrite with a fresh
//! checksum, blessing whatever it holds), and it recognises what an
//! interrupted run leaves (§24.3). Then [`set`] writes the headers that
//! change, one at a time in set order, each whole and durable before the
//! next: a crash leaves every header old, new, or torn between the two in
//! a way `PoolHdr::torn_feature_change` recognises, and running the same
//! command (or the opposite one) again finishes the change.

use std::path::{Path, PathBuf};

use poolsync_header::{format_features, Feature, Features, PoolHdr, PoolType};
use poolsync_pmem::{Access, PartFile, Storage};
use serde::Serialize;

use crate::inspect::ser_hex;
use crate::open::{open, unusable, OpenSet, PartStatus};
use crate::Error;

/// What the command does with the feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureOp {
    /// `-q`: print 0 or 1.
    Query,
    /// `-e`: set the bit in every header.
    Enable,
    /// `-d`: clear the bit in every header.
    Disable,
}

/// The feature's value across the pool's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureState {
    /// Set in every header.
    Enabled,
    /// Clear in every header.
    Disabled,
    /// Set in some headers and clear in others, or a header torn between
    /// the two: a change was interrupted (docs/format.md §24.3).
    Interrupted,
}

impl FeatureState {
    fn of(enabled: bool) -> FeatureState {
        if enabled {
            FeatureState::Enabled
        } else {
            FeatureState::Disabled
        }
    }
}

/// One header-carrying part as the command found and left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderFeature {
    /// Replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// The feature's value in the header as found (for a torn header: the
    /// value under which its checksum is right).
    pub enabled: bool,
    /// The header's checksum was wrong because an earlier change of this
    /// feature was interrupted while writing it (docs/format.md §24.3).
    pub torn: bool,
    /// The header was rewritten.
    pub written: bool,
    /// The header's checksum afterwards.
    #[serde(serialize_with = "ser_hex")]
    pub checksum: u64,
}

/// What a `feature` run found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureReport {
    /// The pool or pool set file.
    pub path: PathBuf,
    /// The feature.
    pub feature: Feature,
    /// What was asked.
    pub op: FeatureOp,
    /// The feature's value before the run.
    pub before: FeatureState,
    /// The feature's value after the run (for a query: its value).
    pub enabled: bool,
    /// `true` when headers were written.
    pub changed: bool,
    /// Every header-carrying part, replica after replica.
    pub headers: Vec<HeaderFeature>,
}

/// A header as the survey judged it.
#[derive(Debug)]
struct Judged {
    replica: usize,
    part: usize,
    path: PathBuf,
    /// The bytes on the part now.
    raw: Vec<u8>,
    /// The header with a valid checksum: as read, or, for a torn header,
    /// as it was on one side of the interrupted write.
    valid: PoolHdr,
    /// The feature whose interrupted change tore it.
    torn: Option<Feature>,
}

/// The headers of an open pool and what they say together.
#[derive(Debug)]
struct Survey {
    headers: Vec<Judged>,
    /// The masks all headers share, but for the bits of `varying`; those of
    /// replica 0 part 0.
    base: Features,
    /// The one feature whose bit differs between headers, or that tore one.
    varying: Option<Feature>,
}

/// `pmempool feature -q FEATURE <path>`: the feature's value, the same in
/// every header. Opens every part read-only; writes nothing.
pub fn query<S: Storage>(
    storage: &S,
    path: &Path,
    feature: Feature,
) -> Result<FeatureReport, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    let survey = survey(&set)?;
    if let Some(varying) = survey.varying {
        return Err(interrupted(&set, &survey, varying));
    }
    let enabled = feature.is_set(&survey.base);
    Ok(report(
        &set,
        feature,
        FeatureOp::Query,
        &survey,
        enabled,
        &[],
    ))
}

/// `pmempool feature -e|-d FEATURE <path>`: sets the feature to `on` in
/// every header-carrying part of every replica, durably, one header at a
/// time (docs/format.md §24.2). A feature that has the value already in
/// every header is left alone. Refused before anything is written: a
/// feature that cannot be changed (`SINGLEHDR`), a dependency that is not
/// met, and everything [`query`] refuses but an interrupted change of this
/// very feature, which this finishes.
pub fn set<S: Storage>(
    storage: &S,
    path: &Path,
    feature: Feature,
    on: bool,
) -> Result<FeatureReport, Error> {
    let op = if on {
        FeatureOp::Enable
    } else {
        FeatureOp::Disable
    };
    if !feature.is_changeable() {
        return Err(Error::FeatureUnchangeable {
            path: path.to_path_buf(),
            feature,
        });
    }
    let set = open(storage, path, Access::ReadWrite)?;
    let survey = survey(&set)?;
    match survey.varying {
        Some(varying) if varying != feature => {
            return Err(interrupted(&set, &survey, varying));
        }
        None if feature.is_set(&survey.base) == on => {
            return Ok(report(&set, feature, op, &survey, on, &[]));
        }
        _ => {}
    }
    check_dependency(&set, &survey, feature, on)?;
    let mut written = Vec::new();
    for h in &survey.headers {
        let target = h.valid.with_feature(feature, on);
        let bytes = target.encode_raw();
        if h.raw == bytes {
            continue;
        }
        let file = set
            .part(h.replica, h.part)
            .and_then(|p| p.file.as_ref())
            .ok_or_else(|| not_open(&set, h))?;
        crate::durable::write_at(file, 0, &bytes).map_err(|e| match e {
            Error::Storage(source) => Error::PartStorage {
                set: set.path.clone(),
                line: set.part(h.replica, h.part).map_or(0, |p| p.line),
                error: source,
            },
            other => other,
        })?;
        written.push((h.replica, h.part, target.checksum));
    }
    Ok(report(&set, feature, op, &survey, on, &written))
}

/// How to finish an interrupted change of `feature` on the pool set `set`
/// (docs/format.md §24.3): either direction leaves every header valid.
pub fn finish_hint(set: &Path, feature: Feature) -> String {
    format!(
        "a change of {feature} was interrupted: finish it with `poolsync feature -e {feature} {set}` \
         or undo it with `poolsync feature -d {feature} {set}`",
        set = set.display()
    )
}

/// The interrupted feature change the health check found, if any.
pub fn interrupted_change(health: &crate::inspect::Health) -> Option<Feature> {
    health.inconsistencies.iter().find_map(|i| match i {
        crate::inspect::Inconsistency::FeaturesDiffer {
            feature: Some(f), ..
        }
        | crate::inspect::Inconsistency::FeatureChangeTorn { feature: f, .. } => Some(*f),
        _ => None,
    })
}

/// The report of a run that wrote `written` (replica, part, new checksum).
fn report<F>(
    set: &OpenSet<F>,
    feature: Feature,
    op: FeatureOp,
    survey: &Survey,
    enabled: bool,
    written: &[(usize, usize, u64)],
) -> FeatureReport {
    let before = match survey.varying {
        Some(_) => FeatureState::Interrupted,
        None => FeatureState::of(feature.is_set(&survey.base)),
    };
    let headers = survey
        .headers
        .iter()
        .map(|h| {
            let new = written
                .iter()
                .find(|(r, p, _)| (*r, *p) == (h.replica, h.part));
            HeaderFeature {
                replica: h.replica,
                part: h.part,
                path: h.path.clone(),
                enabled: feature.is_set(&h.valid.features),
                torn: h.torn.is_some(),
                written: new.is_some(),
                checksum: new.map_or(h.valid.checksum, |(_, _, c)| *c),
            }
        })
        .collect();
    FeatureReport {
        path: set.path.clone(),
        feature,
        op,
        before,
        enabled,
        changed: !written.is_empty(),
        headers,
    }
}

/// Reads and judges the header of every header-carrying part.
fn survey<F: PartFile>(set: &OpenSet<F>) -> Result<Survey, Error> {
    // The remote hosts' headers are theirs to change: one command cannot
    // rewrite them crash-safely together with the local ones.
    if let Some(remote) = set.remotes.first() {
        return Err(Error::Unsupported {
            set: set.path.clone(),
            line: remote.line,
            what: format!(
                "poolsync feature on a pool set with remote replicas (REPLICA {} {}: run it on a \
                 set file without the remote REPLICA lines, and on each remote host's set file) is",
                remote.node, remote.descriptor
            ),
        });
    }
    let mut headers = Vec::new();
    for rep in &set.replicas {
        for part in &rep.parts {
            if part.status != PartStatus::Ok {
                return Err(unusable(
                    set,
                    part.replica,
                    part.index,
                    &part.path,
                    part.status.to_string(),
                ));
            }
        }
        for part in rep.parts.iter().take(rep.nhdrs) {
            let read = part
                .read_header()
                .map_err(|reason| unusable(set, part.replica, part.index, &part.path, reason))?;
            let (valid, torn) = judge_header(&read.hdr)
                .map_err(|reason| unusable(set, part.replica, part.index, &part.path, reason))?;
            headers.push(Judged {
                replica: part.replica,
                part: part.index,
                path: part.path.clone(),
                raw: read.raw.clone(),
                valid,
                torn,
            });
        }
    }
    let Some(first) = headers.first() else {
        return Err(Error::InvalidRequest {
            path: set.path.clone(),
            reason: "the pool set has no pool header".to_string(),
        });
    };
    let base = first.valid.features;
    if let Some(ty @ (PoolType::Blk | PoolType::Log)) = first.valid.pool_type() {
        return Err(Error::UnsupportedPoolType {
            path: set.path.clone(),
            kind: ty.name(),
        });
    }
    // Unknown bits first, in every header: libpmempool refuses those
    // whatever is asked (docs/format.md §24.1).
    for h in &headers {
        let unknown = h.valid.features.unknown();
        if unknown != Features::default() {
            return Err(Error::FeatureMismatch {
                set: set.path.clone(),
                replica: h.replica,
                part: h.part,
                path: h.path.clone(),
                reason: format!(
                    "invalid features detected: {} (header offsets 12..24): bits this version of the format does not define",
                    format_features(&unknown)
                ),
            });
        }
    }
    let mut varying = None;
    for h in &headers {
        let mut seen: Vec<Feature> = h.torn.into_iter().collect();
        let diff = Features {
            compat: h.valid.features.compat ^ base.compat,
            incompat: h.valid.features.incompat ^ base.incompat,
            ro_compat: h.valid.features.ro_compat ^ base.ro_compat,
        };
        if diff != Features::default() {
            match Feature::ALL
                .into_iter()
                .find(|f| f.is_changeable() && f.mask() == diff)
            {
                Some(f) => seen.push(f),
                None => return Err(mismatch(set, h, &base)),
            }
        }
        for f in seen {
            match varying {
                None => varying = Some(f),
                Some(v) if v == f => {}
                Some(_) => return Err(mismatch(set, h, &base)),
            }
        }
    }
    Ok(Survey {
        headers,
        base,
        varying,
    })
}

/// A header with a valid checksum (as read, or as it was on one side of an
/// interrupted feature change) and the feature that tore it, or why the
/// header cannot be used.
fn judge_header(hdr: &PoolHdr) -> Result<(PoolHdr, Option<Feature>), String> {
    if hdr.is_zero() {
        return Err("the pool header is all zero".to_string());
    }
    let (valid, torn) = if hdr.checksum_ok() {
        (hdr.clone(), None)
    } else {
        match hdr.torn_feature_change() {
            Some((feature, value)) => {
                let mut valid = hdr.clone();
                valid.features = feature.apply(valid.features, value);
                (valid, Some(feature))
            }
            None => {
                return Err(format!(
                    "invalid checksum of pool header (offset 4088: stored {:#x}, should be {:#x})",
                    hdr.checksum,
                    hdr.compute_checksum()
                ))
            }
        }
    };
    if valid.pool_type().is_none() {
        return Err(format!(
            "invalid signature \"{}\" in the pool header (offset 0)",
            crate::inspect::signature_text(&valid.signature)
        ));
    }
    Ok((valid, torn))
}

/// libpmempool's dependency rules: `SHUTDOWN_STATE` needs `CKSUM_2K`.
fn check_dependency<F>(
    set: &OpenSet<F>,
    survey: &Survey,
    feature: Feature,
    on: bool,
) -> Result<(), Error> {
    let (other, needed) = if on {
        match feature.requires() {
            Some(other) => (other, true),
            None => return Ok(()),
        }
    } else {
        match feature.required_by() {
            Some(other) => (other, false),
            None => return Ok(()),
        }
    };
    if other.is_set(&survey.base) == needed {
        return Ok(());
    }
    Err(Error::FeatureDependency {
        path: set.path.clone(),
        feature,
        other,
        enable: on,
    })
}

/// The error for headers whose masks disagree in more than one feature's
/// bit, or in bits no single feature has.
fn mismatch<F>(set: &OpenSet<F>, h: &Judged, base: &Features) -> Error {
    Error::FeatureMismatch {
        set: set.path.clone(),
        replica: h.replica,
        part: h.part,
        path: h.path.clone(),
        reason: format!(
            "features mismatch detected: {} != {} (replica 0 part 0's; header offsets 12..24)",
            format_features(&h.valid.features),
            format_features(base)
        ),
    }
}

/// The error for a pool whose headers disagree on `feature` alone.
fn interrupted<F>(set: &OpenSet<F>, survey: &Survey, feature: Feature) -> Error {
    let list = |on: bool| {
        let parts: Vec<String> = survey
            .headers
            .iter()
            .filter(|h| h.torn.is_none() && feature.is_set(&h.valid.features) == on)
            .map(|h| format!("replica {} part {}", h.replica, h.part))
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    };
    let torn: Vec<String> = survey
        .headers
        .iter()
        .filter(|h| h.torn.is_some())
        .map(|h| {
            format!(
                "replica {} part {} ({})",
                h.replica,
                h.part,
                h.path.display()
            )
        })
        .collect();
    Error::FeatureInterrupted {
        path: set.path.clone(),
        feature,
        enabled: list(true),
        disabled: list(false),
        torn: if torn.is_empty() {
            String::new()
        } else {
            format!("; torn mid-write: {}", torn.join(", "))
        },
    }
}

fn not_open<F>(set: &OpenSet<F>, h: &Judged) -> Error {
    unusable(
        set,
        h.replica,
        h.part,
        &h.path,
        "the part is not open".to_string(),
    )
}

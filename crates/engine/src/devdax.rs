//! Device DAX parts (docs/format.md §25): `AUTO` sizes, the rules PMDK
//! checks for devices when it reads a pool set, and what stands in for
//! removing a file when the file is a device.
//!
//! Whether a path is a Device DAX, and its size and alignment, is asked of
//! the storage (`Storage::device_dax`, pmem's one probe), never of the
//! system here. [`resolve`] runs when a pool set file is loaded, as PMDK's
//! parser does it: every `AUTO` size becomes the device's size, and a pool
//! set that mixes devices with files in one replica, or concatenates
//! devices whose alignment is not 4 KiB without `OPTION SINGLEHDR`, is
//! refused. After that every size is known, and the engine's size rules,
//! address-space map and plans work on devices as on files.
//!
//! A device is never created, unlinked, truncated or allocated (pmem's
//! storage refuses to unlink one). Where a file would be removed, the
//! device's first bytes are zeroed instead ([`zero_head`]), as libpmempool's
//! `util_unlink` does; where a part would be created, the device is reused
//! when its size is right and its header page is zero, as for an existing
//! file at create (docs/format.md §16.4).

use std::path::Path;

use poolsync_pmem::{DevDax, PartFile, Storage};
use poolsync_poolset::{PartSize, PoolSet, Replica};

use crate::Error;

/// Bytes at the start of a Device DAX that removing it zeroes, as
/// libpmempool does (`DEVICE_DAX_ZERO_LEN`, docs/format.md §25.4).
pub const DEVICE_DAX_ZERO_LEN: u64 = 2 << 20;

/// The mapping alignment that concatenated devices need without
/// `OPTION SINGLEHDR` (docs/format.md §25.2).
pub const CONCAT_ALIGN: u64 = 4096;

/// The Device DAX of every part: `devices[r][p]`, `None` for a file (and
/// an empty list for a remote replica).
pub type Devices = Vec<Vec<Option<DevDax>>>;

/// Resolves the `AUTO` sizes of `set` (read from `path`) and checks PMDK's
/// Device DAX rules (docs/format.md §25.2); returns the set with every
/// local size known, and each part's device.
pub fn resolve<S: Storage>(
    storage: &S,
    path: &Path,
    set: &PoolSet,
) -> Result<(PoolSet, Devices), Error> {
    let mut resolved = set.clone();
    let mut devices: Devices = Vec::with_capacity(set.replicas.len());
    for (r, replica) in resolved.replicas.iter_mut().enumerate() {
        let Replica::Local { parts, .. } = replica else {
            devices.push(Vec::new());
            continue;
        };
        let mut found = Vec::with_capacity(parts.len());
        for part in parts.iter_mut() {
            let part_path = Path::new(&part.path);
            let device = storage
                .device_dax(part_path)
                .map_err(|source| Error::PartStorage {
                    set: path.to_path_buf(),
                    line: part.line,
                    error: source,
                })?;
            if part.size == PartSize::Auto {
                let Some(dev) = device else {
                    let what = match storage.stat(part_path) {
                        Ok(Some(_)) => "is not a Device DAX",
                        _ => "does not exist",
                    };
                    return Err(Error::PoolSet {
                        path: path.to_path_buf(),
                        line: part.line,
                        reason: format!(
                            "cannot determine size of a part: AUTO takes the size of a Device DAX, and {} {what}",
                            part.path
                        ),
                    });
                };
                part.size = PartSize::Bytes(dev.size);
            }
            found.push(device);
        }
        check_replica(path, r, parts, &found, set.options.single_hdr)?;
        devices.push(found);
    }
    Ok((resolved, devices))
}

/// PMDK's two rules for the devices of one replica.
fn check_replica(
    path: &Path,
    r: usize,
    parts: &[poolsync_poolset::Part],
    devices: &[Option<DevDax>],
    single_hdr: bool,
) -> Result<(), Error> {
    let first = devices.first().copied().flatten();
    for (part, device) in parts.iter().zip(devices) {
        if device.is_some() != first.is_some() {
            let (dax, file) = if device.is_some() {
                (
                    part.path.as_str(),
                    parts.first().map_or("", |p| p.path.as_str()),
                )
            } else {
                (
                    parts.first().map_or("", |p| p.path.as_str()),
                    part.path.as_str(),
                )
            };
            return Err(Error::DeviceDaxSet {
                set: path.to_path_buf(),
                line: part.line,
                reason: format!(
                    "replica {r}: either all the parts must be Device DAX or none ({dax} is a Device DAX, {file} is not)"
                ),
            });
        }
        if let Some(dev) = device {
            if parts.len() > 1 && !single_hdr && dev.align != CONCAT_ALIGN {
                return Err(Error::DeviceDaxSet {
                    set: path.to_path_buf(),
                    line: part.line,
                    reason: format!(
                        "replica {r}: Multiple DAX devices with alignment other than 4KB. Use the SINGLEHDR poolset option. ({} has an alignment of {} bytes; without SINGLEHDR every part after the first is mapped from its byte 4096)",
                        part.path, dev.align
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Zeroes the first `min(DEVICE_DAX_ZERO_LEN, size)` bytes of the device
/// `file`, durably: what removing a pool leaves on a device (libpmempool
/// zeroes the same range). The header goes first, so a crash leaves no
/// valid header in front of half-zeroed metadata.
pub fn zero_head<F: PartFile>(file: &F, size: u64) -> Result<(), Error> {
    const CHUNK: u64 = 256 << 10;
    let len = size.min(DEVICE_DAX_ZERO_LEN);
    let zeroes = vec![0u8; CHUNK.min(len) as usize];
    // The header page alone first: once it is durable, nothing claims a pool.
    let mut offset = (poolsync_header::POOL_HDR_SIZE as u64).min(len);
    crate::durable::write_at(file, 0, zeroes.get(..offset as usize).unwrap_or(&zeroes))?;
    while offset < len {
        let n = CHUNK.min(len - offset);
        let chunk = zeroes.get(..n as usize).unwrap_or(&zeroes);
        crate::durable::write_at(file, offset, chunk)?;
        offset += n;
    }
    Ok(())
}

/// Whether the header page of a part is all zero, as a part must be before
/// create or transform writes a new pool onto it.
pub fn header_is_zero<F: PartFile>(file: &F) -> Result<bool, Error> {
    let mut page = vec![0u8; poolsync_header::POOL_HDR_SIZE];
    file.read_at(0, &mut page)?;
    Ok(page.iter().all(|&b| b == 0))
}

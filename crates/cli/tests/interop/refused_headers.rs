//! Issue 15, defect 2: a pool header with a valid checksum but a field
//! libpmemobj refuses at open (docs/format.md §16.2) is a broken part: `check`
//! says so and names it, `sync -d` plans to rebuild its header from a
//! healthy replica, `info` blames that part and no other, and `sync`
//! leaves a pool libpmemobj opens. (pmempool 1.12 calls these pools
//! consistent; libpmemobj refuses them.)

use crate::support::{
    fix_header_checksum, objclient, pmempool, pmempool_set, poolsync, read_header, temp_dir,
    write_at, SET_DAMAGE,
};

const SEED: &str = "5150";
const BYTES: &str = "200000";

/// (what, header offset, bytes written there, words the report must hold)
const CASES: &[(&str, usize, &[u8], &str)] = &[
    ("major 0", 8, &[0, 0, 0, 0], "invalid major version 0"),
    ("major 0xffffffff", 8, &[0xff; 4], "pool version 4294967295"),
    (
        "incompat all ones",
        16,
        &[0xff; 4],
        "unknown incompat feature bits",
    ),
    (
        "ro_compat all ones",
        20,
        &[0xff; 4],
        "unknown ro_compat feature bits",
    ),
    (
        "alignment descriptor all ones",
        128,
        &[0xff; 8],
        "arch_flags.alignment_desc",
    ),
    (
        "machine class 0xff",
        136,
        &[0xff],
        "arch_flags.machine_class",
    ),
    ("data 0xff", 137, &[0xff], "arch_flags.data"),
    ("machine 0xff", 142, &[0xff], "arch_flags.machine"),
    (
        "a PMEMBLK signature",
        0,
        b"PMEMBLK\0",
        "wrong pool type blk",
    ),
];

#[test]
fn headers_libpmemobj_refuses_are_broken_and_sync_rebuilds_them() {
    require_pmdk!();
    for &(what, offset, bytes, words) in CASES {
        let dir = temp_dir();
        let files = pmempool_set(dir.path(), "refused", &SET_DAMAGE);
        let set = files.set_str();
        objclient(&["fill", set, "-", BYTES, SEED]).assert_success();
        // Replica 1 part 0 (a replica's first part, whose replica links
        // libpmemobj reads) gets the bad field with a valid checksum.
        let part = files.part(1, 0);
        let mut hdr = read_header(part);
        hdr[offset..offset + bytes.len()].copy_from_slice(bytes);
        fix_header_checksum(&mut hdr);
        write_at(part, 0, &hdr);
        let refused = objclient(&["verify", set, "-", BYTES, SEED]);
        assert_eq!(
            refused.code,
            Some(1),
            "test premise: libpmemobj refuses {what}\n{}",
            refused.describe()
        );

        let check = poolsync(&["check", "-v", set]);
        assert_eq!(check.code, Some(1), "{what}: {}", check.describe());
        assert!(
            check.stdout.contains("replica 1 part 0") && check.stdout.contains(words),
            "{what}: check does not name the part and the field\n{}",
            check.describe()
        );
        assert!(
            check.stderr.contains("poolsync sync"),
            "{what}: check does not name the fix\n{}",
            check.describe()
        );
        let plan = poolsync(&["sync", "-d", set]);
        assert_eq!(plan.code, Some(0), "{what}: {}", plan.describe());
        assert!(
            plan.stdout.contains("replica 1: to repair") && plan.stdout.contains(words),
            "{what}: sync -d does not plan the header's rebuild for the same reason\n{}",
            plan.describe()
        );
        let info = poolsync(&["info", set]);
        assert_eq!(info.code, Some(1), "{what}: {}", info.describe());
        assert!(
            info.stderr.contains("replica 1 part 0") && !info.stderr.contains("replica 0 part"),
            "{what}: info blames another part\n{}",
            info.describe()
        );

        let sync = poolsync(&["sync", set]);
        assert_eq!(sync.code, Some(0), "{what}: {}", sync.describe());
        let healed = objclient(&["verify", set, "-", BYTES, SEED]);
        assert_eq!(healed.code, Some(0), "{what}: {}", healed.describe());
        let theirs = pmempool(&["check", "-v", set]);
        assert!(
            theirs.code == Some(0) && theirs.stdout.contains("consistent"),
            "{what}: pmempool check after sync\n{}",
            theirs.describe()
        );
        assert_eq!(
            poolsync(&["check", set]).code,
            Some(0),
            "{what}: poolsync check after sync"
        );
    }
}

//! Integration tests: PMDK fixtures, the real `pmempool` when installed, and
//! round-trip properties of every codec.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use poolsync_header::*;
use proptest::prelude::*;

mod heap;

const LAYOUT: &str = "fixture";
const CASES: [&str; 5] = ["single", "cksum4k", "parts", "replicas", "singlehdr"];

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pmdk")
        .join(case)
}

/// Header pages of a case, keyed by (replica, part) from their `r<R>p<P>.hdr` names.
fn headers(case: &str) -> BTreeMap<(usize, usize), Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(fixture_dir(case)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(stem) = name.strip_suffix(".hdr") else {
            continue;
        };
        let (r, p) = stem.strip_prefix('r').unwrap().split_once('p').unwrap();
        out.insert(
            (r.parse().unwrap(), p.parse().unwrap()),
            fs::read(&path).unwrap(),
        );
    }
    assert!(!out.is_empty(), "no headers in fixture {case}");
    out
}

/// Part sizes per replica and the SINGLEHDR option, from the fixture's pool.set
/// (the `single` case is one 8 MiB file).
fn structure(case: &str) -> (Vec<Vec<u64>>, bool) {
    let Ok(text) = fs::read_to_string(fixture_dir(case).join("pool.set")) else {
        return (vec![vec![8 << 20]], false);
    };
    let mut reps = vec![Vec::new()];
    let mut singlehdr = false;
    for line in text.lines().skip(1) {
        match line {
            "REPLICA" => reps.push(Vec::new()),
            "OPTION SINGLEHDR" => singlehdr = true,
            _ => {
                let size = line.split_whitespace().next().unwrap();
                let mib: u64 = size.strip_suffix('M').unwrap().parse().unwrap();
                reps.last_mut().unwrap().push(mib << 20);
            }
        }
    }
    (reps, singlehdr)
}

/// Pool size of a set: the smallest replica's usable size
/// (docs/format.md §14.1, §15.1).
fn pool_size(reps: &[Vec<u64>], singlehdr: bool) -> u64 {
    let h = if singlehdr { 0 } else { 4096 };
    reps.iter()
        .map(|parts| {
            parts
                .iter()
                .enumerate()
                .map(|(p, s)| s / 4096 * 4096 - if p == 0 { 0 } else { h })
                .sum::<u64>()
        })
        .min()
        .unwrap()
}

/// `pmempool info` lines as (label, value), in order.
fn info_fields(case: &str) -> Vec<(String, String)> {
    fs::read_to_string(fixture_dir(case).join("info.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim_end().to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn fixture_headers_decode_verify_and_reencode() {
    for case in CASES {
        let (reps, singlehdr) = structure(case);
        let hdrs = headers(case);
        let expected_count: usize = reps
            .iter()
            .map(|p| if singlehdr { 1 } else { p.len() })
            .sum();
        assert_eq!(hdrs.len(), expected_count, "{case}");
        for (&(r, p), bytes) in &hdrs {
            let h = PoolHdr::decode(bytes).unwrap();
            assert!(h.checksum_ok(), "{case} r{r}p{p}");
            assert_eq!(
                h.encode_raw().as_slice(),
                bytes.as_slice(),
                "{case} r{r}p{p}"
            );
            assert_eq!(h.validate_basic(), Ok(PoolType::Obj));
            assert_eq!(
                h.validate_with_arch(PoolType::Obj, &ArchFlags::x86_64()),
                Ok(())
            );
            assert!(h.problems(PoolType::Obj, &ArchFlags::x86_64()).is_empty());
            // `cksum4k` had SHUTDOWN_STATE and CKSUM_2K turned off after creation.
            let (want_range, want_incompat) = if case == "cksum4k" {
                (ChecksumRange::FourK, 0)
            } else {
                let single = if singlehdr { FEAT_SINGLEHDR } else { 0 };
                (ChecksumRange::TwoK, FEAT_CKSUM_2K | FEAT_SDS | single)
            };
            assert_eq!(h.checksum_range(), want_range, "{case}");
            assert_eq!(
                h.features,
                Features {
                    compat: FEAT_CHECK_BAD_BLOCKS,
                    incompat: want_incompat,
                    ro_compat: 0
                }
            );
            // Regular files: the SDS is clean and zero, and compares OK.
            assert!(h.sds.is_clean_zero());
            assert_eq!(
                Sds::compare(&h.sds, &Sds::current_non_pmem()),
                SdsVerdict::Ok
            );
            // Re-encoding with a fresh checksum changes nothing.
            let mut again = h.clone();
            assert_eq!(again.encode().as_slice(), bytes.as_slice());
        }
    }
}

#[test]
fn fixture_links_form_the_documented_rings() {
    for case in CASES {
        let hdrs: BTreeMap<_, _> = headers(case)
            .into_iter()
            .map(|(k, b)| (k, PoolHdr::decode(&b).unwrap()))
            .collect();
        let nrep = hdrs.keys().map(|k| k.0).max().unwrap() + 1;
        let uuids: Vec<Vec<RawUuid>> = (0..nrep)
            .map(|r| {
                hdrs.range((r, 0)..(r + 1, 0))
                    .map(|(_, h)| h.uuid)
                    .collect()
            })
            .collect();
        let links = ring_links(&uuids).unwrap();
        let poolset = hdrs[&(0, 0)].poolset_uuid;
        let mut all_uuids: Vec<RawUuid> = Vec::new();
        for (&(r, p), h) in &hdrs {
            assert_eq!(h.links(), links[r][p], "{case} r{r}p{p}");
            assert_eq!(h.poolset_uuid, poolset, "{case} r{r}p{p}");
            all_uuids.push(h.uuid);
        }
        all_uuids.push(poolset);
        all_uuids.sort();
        all_uuids.dedup();
        assert_eq!(
            all_uuids.len(),
            hdrs.len() + 1,
            "{case}: UUIDs must be unique"
        );
    }
}

#[test]
fn fixture_descriptor_and_heap_header_match_the_computed_image() {
    for case in CASES {
        let (reps, singlehdr) = structure(case);
        let size = pool_size(&reps, singlehdr);
        let desc_bytes = fs::read(fixture_dir(case).join("desc.bin")).unwrap();
        assert_eq!(desc_bytes.len(), OBJ_DESC_LEN);
        let d = ObjDescriptor::decode(&desc_bytes).unwrap();
        assert!(d.checksum_ok(), "{case}");
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.check_unused_zero(), Ok(()));
        assert_eq!(d.check_layout(LAYOUT), Ok(()));
        assert_eq!(d.layout_name(), LAYOUT);
        assert_eq!(
            (d.lanes_offset, d.nlanes, d.heap_offset, d.run_id),
            (0x2000, 1024, 0x30_2000, 2),
            "{case}"
        );
        assert_eq!(d.pool_size(), Some(size), "{case}");
        assert_eq!(
            d.encode_raw().as_slice(),
            &desc_bytes[..OBJ_DESC_PERSISTENT_LEN],
            "{case}"
        );

        // The computed image reproduces the persistent descriptor exactly.
        let writes = obj_initial_image(size, LAYOUT).unwrap();
        assert_eq!(writes[0].offset, OBJ_DESC_OFF);
        assert_eq!(
            writes[0].bytes.as_slice(),
            &desc_bytes[..OBJ_DESC_PERSISTENT_LEN]
        );

        let heap = fs::read(fixture_dir(case).join("heap_hdr.bin")).unwrap();
        assert_eq!(
            heap.as_slice(),
            HeapHeader::standard().encode_raw().as_slice()
        );
        let last = writes.last().unwrap();
        assert_eq!(
            (last.offset, last.bytes.as_slice()),
            (d.heap_offset, heap.as_slice())
        );
        assert_eq!(
            HeapHeader::decode(&heap).unwrap().validate(d.heap_offset),
            Ok(())
        );
    }
}

#[test]
fn our_formatting_matches_pmempool_info() {
    for case in CASES {
        let fields = info_fields(case);
        let get = |label: &str| -> Vec<&str> {
            fields
                .iter()
                .filter(|(k, _)| k == label)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let h = PoolHdr::decode(&headers(case)[&(0, 0)]).unwrap();
        let d =
            ObjDescriptor::decode(&fs::read(fixture_dir(case).join("desc.bin")).unwrap()).unwrap();
        let sig = String::from_utf8_lossy(&h.signature[..7]).into_owned();
        let expect = [
            ("Signature", vec![sig]),
            ("Major", vec![h.major.to_string()]),
            (
                "Mandatory features",
                vec![format_incompat(h.features.incompat)],
            ),
            (
                "Not mandatory features",
                vec![format_compat(h.features.compat)],
            ),
            ("Forced RO", vec![format_ro_compat(h.features.ro_compat)]),
            ("Pool set UUID", vec![h.poolset_uuid.to_canonical()]),
            ("UUID", vec![h.uuid.to_canonical()]),
            ("Previous part UUID", vec![h.prev_part_uuid.to_canonical()]),
            ("Next part UUID", vec![h.next_part_uuid.to_canonical()]),
            (
                "Previous replica UUID",
                vec![h.prev_repl_uuid.to_canonical()],
            ),
            ("Next replica UUID", vec![h.next_repl_uuid.to_canonical()]),
            (
                "Alignment Descriptor",
                vec![format_alignment_desc(
                    h.arch_flags.alignment_desc,
                    ArchFlags::x86_64().alignment_desc,
                )],
            ),
            (
                "Class",
                vec![machine_class_name(h.arch_flags.machine_class).to_owned()],
            ),
            ("Data", vec![data_name(h.arch_flags.data).to_owned()]),
            ("Machine", vec![machine_name(h.arch_flags.machine)]),
            (
                "Last shutdown",
                vec![last_shutdown_name(h.sds.dirty).to_owned()],
            ),
            (
                "Checksum",
                vec![
                    format_checksum(h.checksum, h.compute_checksum()),
                    format_checksum(d.checksum, d.compute_checksum()),
                ],
            ),
            ("Layout", vec![d.layout_name()]),
            ("Lanes offset", vec![format!("{:#x}", d.lanes_offset)]),
            ("Number of lanes", vec![d.nlanes.to_string()]),
            ("Heap offset", vec![format!("{:#x}", d.heap_offset)]),
            ("Heap size", vec![d.heap_size.to_string()]),
            ("Root offset", vec![format!("{:#x}", d.root_offset)]),
        ];
        for (label, want) in expect {
            assert_eq!(get(label), want, "{case}: {label}");
        }
    }
}

/// Creates a pool with the real pmempool and compares it with our codec and
/// image. Runs only where pmempool is installed (the fixtures above cover
/// machines without PMDK); it fails if pmempool exists but disagrees.
#[test]
fn real_pmempool_pool_matches_when_available() {
    let Ok(version) = std::process::Command::new("pmempool")
        .arg("--version")
        .output()
    else {
        eprintln!("pmempool not installed: comparison with a live pool skipped");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.obj");
    let status = std::process::Command::new("pmempool")
        .args(["create", "-l", "mylayout", "obj"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let data = fs::read(&file).unwrap();
    assert_eq!(data.len(), 8 << 20);

    let h = PoolHdr::decode(&data).unwrap();
    assert_eq!(h.encode_raw().as_slice(), &data[..POOL_HDR_SIZE]);
    assert_eq!(h.validate(PoolType::Obj), Ok(()));
    assert_eq!(h.links(), ring_links(&[[h.uuid]]).unwrap()[0][0]);

    let d = ObjDescriptor::decode(&data[0x1000..0x2000]).unwrap();
    assert_eq!(d.checksum, 0x7EDF_D487_D612_2CE6);

    let end = (d.heap_offset + HEAP_HDR_SIZE as u64) as usize;
    let mut image = vec![0u8; end];
    for w in obj_initial_image(data.len() as u64, "mylayout").unwrap() {
        let off = w.offset as usize;
        image[off..off + w.bytes.len()].copy_from_slice(&w.bytes);
    }
    let volatile = OBJ_DESC_OFF as usize + OBJ_DESC_PERSISTENT_LEN..OBJ_LANES_OFFSET as usize;
    assert_eq!(
        &image[0x1000..volatile.start],
        &data[0x1000..volatile.start]
    );
    assert_eq!(&image[volatile.end..end], &data[volatile.end..end]);
    // Everything after the heap header is still zero in a fresh pool.
    assert!(data[end..].iter().all(|&b| b == 0));
}

fn arb_uuid() -> impl Strategy<Value = RawUuid> {
    any::<[u8; 16]>().prop_map(RawUuid)
}

fn arb_sds() -> impl Strategy<Value = Sds> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        proptest::array::uniform::<_, SDS_RESERVED_LEN>(any::<u8>()),
        any::<u64>(),
    )
        .prop_map(|(usc, uuid, dirty, reserved, checksum)| Sds {
            usc,
            uuid,
            dirty,
            reserved,
            checksum,
        })
}

prop_compose! {
    fn arb_hdr()(
        signature in any::<[u8; 8]>(),
        major in any::<u32>(),
        (compat, incompat, ro_compat) in any::<(u32, u32, u32)>(),
        uuids in proptest::array::uniform::<_, 6>(arb_uuid()),
        crtime in any::<u64>(),
        (alignment_desc, machine_class, data, reserved, machine) in any::<(u64, u8, u8, [u8; 4], u16)>(),
        unused in proptest::collection::vec(any::<u8>(), POOL_HDR_UNUSED_AREA_LEN),
        sds in arb_sds(),
        checksum in any::<u64>(),
    ) -> PoolHdr {
        PoolHdr {
            signature,
            major,
            features: Features { compat, incompat, ro_compat },
            poolset_uuid: uuids[0],
            uuid: uuids[1],
            prev_part_uuid: uuids[2],
            next_part_uuid: uuids[3],
            prev_repl_uuid: uuids[4],
            next_repl_uuid: uuids[5],
            crtime,
            arch_flags: ArchFlags { alignment_desc, machine_class, data, reserved, machine },
            unused,
            sds,
            checksum,
        }
    }
}

prop_compose! {
    fn arb_desc()(
        layout in proptest::array::uniform::<_, OBJ_LAYOUT_MAX>(any::<u8>()),
        head in any::<[u64; 4]>(),
        unused in proptest::array::uniform::<_, OBJ_DESC_UNUSED_LEN>(any::<u8>()),
        tail in any::<[u64; 7]>(),
        pmem_reserved in proptest::array::uniform::<_, OBJ_DESC_PMEM_RESERVED_LEN>(any::<u8>()),
    ) -> ObjDescriptor {
        ObjDescriptor {
            layout,
            lanes_offset: head[0],
            nlanes: head[1],
            heap_offset: head[2],
            unused3: head[3],
            unused,
            checksum: tail[0],
            root_offset: tail[1],
            run_id: tail[2],
            root_size: tail[3],
            conversion_flags: tail[4],
            heap_size: tail[5],
            heap_curr_allocated: tail[6],
            pmem_reserved,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pool_hdr_round_trips(h in arb_hdr()) {
        let bytes = h.encode_raw();
        prop_assert_eq!(PoolHdr::decode(&bytes).unwrap(), h.clone());
        let mut fresh = h;
        let bytes = fresh.encode();
        let back = PoolHdr::decode(&bytes).unwrap();
        prop_assert!(back.checksum_ok());
        prop_assert_eq!(back, fresh);
    }

    #[test]
    fn sds_round_trips(s in arb_sds()) {
        prop_assert_eq!(Sds::decode(&s.encode_raw()).unwrap(), s);
        let mut fresh = s;
        fresh.encode();
        prop_assert!(fresh.checksum_ok());
    }

    #[test]
    fn descriptor_round_trips(d in arb_desc()) {
        prop_assert_eq!(ObjDescriptor::decode(&d.encode_raw()).unwrap(), d.clone());
        let mut fresh = d;
        let bytes = fresh.encode();
        let back = ObjDescriptor::decode(&bytes).unwrap();
        prop_assert!(back.check_checksum().is_ok());
        prop_assert_eq!(back, fresh);
    }

    #[test]
    fn heap_header_round_trips(
        signature in any::<[u8; 16]>(),
        words in any::<[u64; 6]>(),
        reserved in proptest::array::uniform::<_, HEAP_HDR_RESERVED_LEN>(any::<u8>()),
    ) {
        let h = HeapHeader {
            signature,
            major: words[0],
            minor: words[1],
            unused: words[2],
            chunksize: words[3],
            chunks_per_zone: words[4],
            reserved,
            checksum: words[5],
        };
        prop_assert_eq!(HeapHeader::decode(&h.encode_raw()).unwrap(), h);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        match PoolHdr::decode(&bytes) {
            Ok(h) => {
                let _ = h.validate_basic();
                let _ = h.validate(PoolType::Obj);
                let _ = h.problems(PoolType::Blk, &ArchFlags::current());
                let _ = Sds::compare(&h.sds, &Sds::current_non_pmem());
                prop_assert_eq!(&h.encode_raw()[..], &bytes[..POOL_HDR_SIZE]);
            }
            Err(e) => prop_assert!(bytes.len() < POOL_HDR_SIZE, "{}", e),
        }
        match ObjDescriptor::decode(&bytes) {
            Ok(d) => {
                let _ = (d.validate(), d.check_unused_zero(), d.check_layout("x"), d.layout_name());
                prop_assert_eq!(&d.encode_raw()[..], &bytes[..OBJ_DESC_PERSISTENT_LEN]);
            }
            Err(_) => prop_assert!(bytes.len() < OBJ_DESC_PERSISTENT_LEN),
        }
        prop_assert_eq!(Sds::decode(&bytes).is_ok(), bytes.len() >= SDS_SIZE);
        prop_assert_eq!(HeapHeader::decode(&bytes).is_ok(), bytes.len() >= HEAP_HDR_SIZE);
    }

    #[test]
    fn decoding_a_window_of_arbitrary_bytes_at_any_start(
        bytes in proptest::collection::vec(any::<u8>(), 4096..4200),
        start in 0usize..200,
    ) {
        let window = bytes.get(start..).unwrap_or_default();
        prop_assert_eq!(PoolHdr::decode(window).is_ok(), window.len() >= POOL_HDR_SIZE);
    }

    #[test]
    fn fletcher64_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        csum_off in any::<usize>(),
        skip in any::<Option<usize>>(),
    ) {
        let _ = fletcher64(&bytes, csum_off, skip);
    }

    #[test]
    fn rings_are_consistent(sizes in proptest::collection::vec(1usize..5, 1..5)) {
        let mut n = 0u8;
        let reps: Vec<Vec<RawUuid>> = sizes
            .iter()
            .map(|&m| (0..m).map(|_| { n += 1; RawUuid([n; 16]) }).collect())
            .collect();
        let links = ring_links(&reps).unwrap();
        for (r, parts) in reps.iter().enumerate() {
            for (p, u) in parts.iter().enumerate() {
                let l = links[r][p];
                // Following next then prev (and vice versa) comes back to this part.
                let np = parts.iter().position(|x| *x == l.next_part).unwrap();
                prop_assert_eq!(links[r][np].prev_part, *u);
                let nr = reps.iter().position(|x| x[0] == l.next_repl).unwrap();
                prop_assert_eq!(links[nr][0].prev_repl, reps[r][0]);
            }
        }
    }

    #[test]
    fn canonical_uuid_round_trips(u in arb_uuid()) {
        prop_assert_eq!(RawUuid::from_canonical(&u.to_canonical()).unwrap(), u);
    }
}

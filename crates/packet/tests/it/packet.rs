//! Packet files: round trips, and refusal of every corruption.

use poolsync_packet::*;
use proptest::prelude::*;

use crate::common::*;

fn arb_compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Zstd),
        Just(Compression::Lz4)
    ]
}

fn arb_history() -> impl Strategy<Value = (u32, Vec<Fork>)> {
    prop::collection::vec((1u32..4, 0u32..3), 0..5).prop_map(|steps| {
        let mut timeline = ROOT_TIMELINE;
        let mut epoch = 0;
        let mut history = Vec::new();
        for (dt, de) in steps {
            epoch += de;
            history.push(Fork {
                timeline: timeline + dt,
                parent: timeline,
                epoch,
            });
            timeline += dt;
        }
        (timeline, history)
    })
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.\\-é]{1,40}".prop_filter("at most 255 bytes", |s| s.len() <= 255)
}

fn arb_meta() -> impl Strategy<Value = PacketMeta> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        arb_history(),
        (0u32..1000, 1u32..1000),
        (9u32..=16, 1u64..4096, 0u64..1000),
        any::<u64>(),
        ".{0,60}",
        prop::collection::vec(arb_name(), 0..6),
        (
            arb_compression(),
            "[a-zA-Z0-9/._\\-]{0,80}",
            prop::option::of((1u32..10, any::<u32>())),
        ),
    )
        .prop_map(
            |(
                id,
                uuid,
                lineage,
                (timeline, history),
                (base, delta),
                (shift, blocks, start),
                created,
                comment,
                destinations,
                (compression, source, rewind),
            )| {
                let bs = 1u32 << shift;
                let fork = fork_epoch(&history);
                let base_epoch = base + fork;
                PacketMeta {
                    packet_id: id,
                    poolset_uuid: uuid,
                    lineage,
                    timeline,
                    history,
                    base_epoch,
                    new_epoch: base_epoch + delta,
                    block_size: bs,
                    range: start * u64::from(bs)..(start + blocks) * u64::from(bs),
                    created,
                    comment,
                    destinations,
                    source,
                    rewind: rewind.map(|(timeline, epoch)| Position { timeline, epoch }),
                    compression,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn file_headers_round_trip(meta in arb_meta(), parts in 1u32..4, signed in any::<bool>()) {
        let key = signed.then_some(&KEY);
        let mut enc = PacketEncoder::new(meta.clone(), key).unwrap();
        for part in 0..parts {
            let bytes = enc.start_file().unwrap();
            prop_assert_eq!(bytes.len(), enc.header_len());
            prop_assert_eq!(file_header_len(&bytes[..FILE_HEADER_FIXED_LEN]).unwrap(), bytes.len());
            let h = decode_file_header(&bytes, key).unwrap();
            prop_assert_eq!(&h.meta, &meta);
            prop_assert_eq!(h.part_index, part);
            prop_assert_eq!(h.signed, signed);
            prop_assert_eq!(h.len, bytes.len());
            // Trailing bytes after the header are the records': ignored.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0xee; 100]);
            prop_assert_eq!(decode_file_header(&longer, key).unwrap(), h);
            enc.end_file().unwrap();
        }
    }

    #[test]
    fn packets_round_trip(
        compression in arb_compression(),
        signed in any::<bool>(),
        shift in 9u32..=13,
        runs in prop::collection::vec((0u8..3, 1usize..12, 0u64..4, any::<u64>()), 1..12),
        max_size in 300u64..40_000,
    ) {
        let bs = 1u32 << shift;
        let mut m = meta(bs, compression);
        m.range = 0..u64::from(bs) * 4096;
        let key = signed.then_some(&KEY);
        let mut records = Vec::new();
        let mut at = 0u64;
        for (kind, blocks, gap, seed) in runs {
            at += gap * u64::from(bs);
            if kind == 0 {
                records.push(Rec::Zero(at, blocks as u32));
            } else {
                records.push(Rec::Data(at, block_bytes(blocks * bs as usize, kind, seed)));
            }
            at += blocks as u64 * u64::from(bs);
        }
        let (files, summary) = build(&m, key, &records, max_size);
        let (back, read_summary) = read(&files, key, bs).unwrap();
        prop_assert_eq!(&back, &records);
        prop_assert_eq!(read_summary, summary);
        prop_assert_eq!(summary.files as usize, files.len());
        prop_assert_eq!(summary.records as usize, records.len());
        // The files may come in any order.
        let mut reversed = files.clone();
        reversed.reverse();
        prop_assert_eq!(read(&reversed, key, bs).unwrap().1, summary);
        // Every trailer decodes on its own, and only the last is last.
        for (i, f) in files.iter().enumerate() {
            let h = decode_file_header(f, key).unwrap();
            let at = f.len() - TRAILER_LEN;
            let t = decode_trailer(&f[at..], at as u64, &h, key).unwrap();
            prop_assert_eq!(t.last.is_some(), i + 1 == files.len());
            if let Some(s) = t.last {
                prop_assert_eq!(s, summary);
            }
        }
    }

    #[test]
    fn the_content_digest_ignores_splitting_and_compression(
        a in arb_compression(),
        b in arb_compression(),
        max_a in 400u64..5000,
        max_b in 400u64..5000,
    ) {
        let records = sample_packet(None, a, 1).1;
        let (_, sa) = build(&meta(512, a), None, &records, max_a);
        let (_, sb) = build(&meta(512, b), Some(&KEY), &records, max_b);
        prop_assert_eq!(sa.content_digest, sb.content_digest);
        let mut other = records.clone();
        if let Rec::Data(_, d) = &mut other[0] {
            d[0] ^= 1;
        }
        let (_, sc) = build(&meta(512, a), None, &other, max_a);
        prop_assert_ne!(sa.content_digest, sc.content_digest);
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600), signed in any::<bool>()) {
        let key = signed.then_some(&KEY);
        let _ = file_header_len(&bytes);
        let _ = decode_file_header(&bytes, key);
        let header = decode_file_header(&sample_packet(key, Compression::Zstd, 1).2[0], key).unwrap();
        let _ = decode_record_header(&bytes, 0, &header);
        let _ = decode_trailer(&bytes, 0, &header, key);
        let _ = verify_slices(&[&bytes], key, |_, _| {});
    }

    #[test]
    fn zero_runs_partition_the_blocks(pattern in prop::collection::vec(any::<bool>(), 0..64)) {
        let bs = 512;
        let mut data = vec![0u8; pattern.len() * bs];
        for (i, nonzero) in pattern.iter().enumerate() {
            if *nonzero {
                data[i * bs + i % bs] = 1;
            }
        }
        let runs: Vec<Run> = zero_runs(&data, bs).collect();
        let mut next = 0;
        for (i, r) in runs.iter().enumerate() {
            prop_assert_eq!(r.first_block, next);
            prop_assert!(r.blocks > 0);
            if i > 0 {
                prop_assert_ne!(r.zero, runs[i - 1].zero);
            }
            for nonzero in &pattern[r.first_block..r.first_block + r.blocks] {
                prop_assert_eq!(r.zero, !nonzero);
            }
            next += r.blocks;
        }
        prop_assert_eq!(next, pattern.len());
    }
}

/// Asserts that `files` are refused with an error that names an offset
/// inside the file at fault, which must be `file` when given.
fn assert_refused(files: &[Vec<u8>], key: Option<&Key>, file: Option<usize>, what: &str) -> Error {
    let (at, err) = match read(files, key, 512) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    };
    if let Some(file) = file {
        assert_eq!(at, file, "{what}: blamed file {at}: {err}");
    }
    let offset = err
        .offset()
        .unwrap_or_else(|| panic!("{what}: no offset in {err}"));
    assert!(
        offset <= files[at].len() as u64,
        "{what}: offset {offset} beyond the file: {err}"
    );
    err
}

#[test]
fn the_sample_packet_reads_back() {
    for compression in [Compression::None, Compression::Zstd, Compression::Lz4] {
        for key in [None, Some(&KEY)] {
            let (_, records, files) = sample_packet(key, compression, 1);
            assert!(files.len() >= 3, "{} files", files.len());
            let (back, _) = read(&files, key, 512).unwrap();
            assert_eq!(back, records);
        }
    }
}

#[test]
fn every_flipped_byte_is_refused_with_its_file_and_offset() {
    for (compression, key) in [
        (Compression::Zstd, None),
        (Compression::Lz4, Some(&KEY)),
        (Compression::None, None),
    ] {
        let (_, _, files) = sample_packet(key, compression, 1);
        for f in 0..files.len() {
            for i in 0..files[f].len() {
                for mask in [0x01u8, 0x80] {
                    let mut bad = files.clone();
                    bad[f][i] ^= mask;
                    assert_refused(
                        &bad,
                        key,
                        Some(f),
                        &format!("file {f} byte {i} ^ {mask:#x}"),
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let (_, _, files) = sample_packet(Some(&KEY), Compression::Zstd, 1);
    for f in 0..files.len() {
        for len in 0..files[f].len() {
            let mut bad = files.clone();
            bad[f].truncate(len);
            assert_refused(&bad, Some(&KEY), Some(f), &format!("file {f} cut to {len}"));
        }
        for extra in [&[0u8][..], &[0; 48], &files[f][..200]] {
            let mut bad = files.clone();
            bad[f].extend_from_slice(extra);
            assert_refused(
                &bad,
                Some(&KEY),
                Some(f),
                &format!("file {f} + {} bytes", extra.len()),
            );
        }
    }
}

#[test]
fn swapped_dropped_and_duplicated_records_are_refused() {
    let (_, _, files) = sample_packet(None, Compression::Lz4, 1);
    let f = (0..files.len())
        .find(|&f| record_spans(&files[f], None).len() >= 2)
        .expect("a file with two records");
    let spans = record_spans(&files[f], None);
    let (a, b) = (spans[0].clone(), spans[1].clone());
    let file = &files[f];
    let rebuild = |middle: Vec<u8>| {
        let mut out = files.clone();
        let mut bytes = file[..a.start].to_vec();
        bytes.extend_from_slice(&middle);
        bytes.extend_from_slice(&file[b.end..]);
        out[f] = bytes;
        out
    };
    let swapped = rebuild([&file[b.clone()], &file[a.clone()]].concat());
    let err = assert_refused(&swapped, None, Some(f), "swapped records");
    assert!(
        matches!(err, Error::Sequence { offset, .. } if offset == a.start as u64),
        "{err}"
    );
    let dropped = rebuild(file[b.clone()].to_vec());
    assert!(matches!(
        assert_refused(&dropped, None, Some(f), "dropped record"),
        Error::Sequence { .. }
    ));
    let doubled = rebuild([&file[a.clone()], &file[a.clone()], &file[b.clone()]].concat());
    assert_refused(&doubled, None, Some(f), "duplicated record");
}

#[test]
fn records_spliced_from_another_packet_or_file_are_refused() {
    for key in [None, Some(&KEY)] {
        let (_, _, ours) = sample_packet(key, Compression::None, 1);
        let (_, _, theirs) = sample_packet(key, Compression::None, 2);
        // Same records, same sizes, another packet id: only the tags differ.
        for f in 0..ours.len() {
            for (mine, other) in record_spans(&ours[f], key)
                .iter()
                .zip(record_spans(&theirs[f], key))
            {
                assert_eq!(mine, &other);
                let mut bad = ours.clone();
                bad[f][mine.clone()].copy_from_slice(&theirs[f][other.clone()]);
                let err = assert_refused(&bad, key, Some(f), "spliced record");
                assert!(
                    matches!(err, Error::BadTag { offset, .. } if offset == mine.start as u64),
                    "{err}"
                );
            }
        }
        // A record moved from the start of one file to the end of the previous.
        let spans = record_spans(&ours[1], key);
        let moved = ours[1][spans[0].clone()].to_vec();
        let mut bad = ours.clone();
        let end = bad[0].len() - TRAILER_LEN;
        bad[0].splice(end..end, moved);
        bad[1].drain(spans[0].clone());
        assert_refused(&bad, key, Some(0), "record moved across files");
    }
}

#[test]
fn missing_duplicated_and_foreign_files_are_named() {
    let (_, _, a) = sample_packet(None, Compression::Zstd, 1);
    let (_, _, b) = sample_packet(None, Compression::Zstd, 2);
    assert!(a.len() >= 3);
    let part = |e: Error| match e {
        Error::Part(p) => p,
        other => panic!("not a part problem: {other}"),
    };

    // A file of another packet in place of part 1.
    let mut mixed = a.clone();
    mixed[1] = b[1].clone();
    let (at, err) = read(&mixed, None, 512).unwrap_err();
    assert_eq!(at, 1);
    assert_eq!(
        part(err),
        PartProblem::Foreign {
            file: 1,
            field: "packet id",
            offset: FILE_HDR_PACKET_ID_OFF as u64
        }
    );

    // Part 1 missing.
    let mut missing = a.clone();
    missing.remove(1);
    let err = read(&missing, None, 512).unwrap_err().1;
    assert_eq!(part(err), PartProblem::Missing { first: 1, count: 1 });
    assert!(read(&missing, None, 512)
        .unwrap_err()
        .1
        .to_string()
        .contains("part index 1"));

    // The last part missing: nothing says where the packet ends.
    let mut no_end = a.clone();
    no_end.pop();
    let err = read(&no_end, None, 512).unwrap_err().1;
    assert_eq!(
        part(err),
        PartProblem::NoLast {
            highest: Some(a.len() as u32 - 2)
        }
    );

    // The same file twice.
    let mut twice = a.clone();
    twice.push(a[1].clone());
    let (at, err) = read(&twice, None, 512).unwrap_err();
    assert_eq!(at, a.len());
    assert_eq!(
        part(err),
        PartProblem::Duplicate {
            part: 1,
            first: 1,
            second: a.len()
        }
    );

    // No file at all.
    assert!(matches!(
        read(&[], None, 512).unwrap_err().1,
        Error::Part(PartProblem::NoLast { highest: None })
    ));

    // The whole report lists every problem at once.
    let decoded: Vec<(FileHeader, Trailer)> = [&a[0], &b[1], &a[1], &a[1]]
        .iter()
        .map(|f| {
            let h = decode_file_header(f, None).unwrap();
            let at = f.len() - TRAILER_LEN;
            let t = decode_trailer(&f[at..], at as u64, &h, None).unwrap();
            (h, t)
        })
        .collect();
    let parts: Vec<Part<'_>> = decoded
        .iter()
        .map(|(header, trailer)| Part {
            header,
            trailer,
            file_len: 0,
        })
        .collect();
    let report = check_parts(&parts);
    assert_eq!(report.order, vec![0, 2]);
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(matches!(
        report.problems[0],
        PartProblem::Foreign { file: 1, .. }
    ));
    assert!(matches!(
        report.problems[1],
        PartProblem::Duplicate {
            part: 1,
            first: 2,
            second: 3
        }
    ));
    assert!(matches!(
        report.problems[2],
        PartProblem::NoLast { highest: Some(1) }
    ));
}

#[test]
fn keys_must_match_the_packet() {
    let (_, _, signed) = sample_packet(Some(&KEY), Compression::Zstd, 1);
    let (_, _, unsigned) = sample_packet(None, Compression::Zstd, 1);
    let err = read(&signed, None, 512).unwrap_err().1;
    assert!(
        matches!(err, Error::KeyRequired { offset: 10, .. }),
        "{err}"
    );
    let err = read(&unsigned, Some(&KEY), 512).unwrap_err().1;
    assert!(matches!(err, Error::NotSigned { offset: 10, .. }), "{err}");
    let other = key_from_file(b"another key file, 32 bytes long!").unwrap();
    let err = read(&signed, Some(&other), 512).unwrap_err().1;
    assert!(
        matches!(
            err,
            Error::BadTag {
                offset: 0,
                signed: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("signature"));
}

#[test]
fn hostile_lengths_are_refused_before_anything_is_sized_by_them() {
    let (_, _, files) = sample_packet(None, Compression::Zstd, 1);
    let mut f = files[0].clone();
    f[FILE_HDR_LEN_OFF..FILE_HDR_LEN_OFF + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_file_header(&f, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Field {
                field: "header length",
                offset: 12,
                ..
            }
        ),
        "{err}"
    );

    let header = decode_file_header(&files[0], None).unwrap();
    let mut rec = files[0][header.len..header.len + RECORD_HEADER_LEN].to_vec();
    rec[REC_BLOCKS_OFF..REC_BLOCKS_OFF + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_record_header(&rec, 500, &header).unwrap_err();
    assert!(
        matches!(err, Error::Field { field: "block count", offset, .. } if offset == 500 + REC_BLOCKS_OFF as u64),
        "{err}"
    );
    rec[REC_BLOCKS_OFF..REC_BLOCKS_OFF + 4].copy_from_slice(&1u32.to_le_bytes());
    rec[REC_STORED_LEN_OFF..REC_STORED_LEN_OFF + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_record_header(&rec, 500, &header).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Field {
                field: "stored length",
                offset: 504,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn decompression_is_bounded_by_the_declared_size() {
    let m = meta(512, Compression::Zstd);
    let data = vec![9u8; 4096];
    let mut enc = PacketEncoder::new(m, None).unwrap();
    let mut file = enc.start_file().unwrap();
    let header = decode_file_header(&file, None).unwrap();
    let rec = enc.prepare_data(0, &data).unwrap();
    enc.write_record(rec, &mut file).unwrap();
    let r = decode_record_header(&file[header.len..], header.len as u64, &header).unwrap();
    let payload = &file[header.len + RECORD_HEADER_LEN..];
    // A buffer smaller than the record is a caller error, not an overrun.
    let mut small = vec![0u8; 4095];
    assert_eq!(
        open_record(&header, &r, payload, None, &mut small).unwrap_err(),
        Error::BufferTooSmall {
            needed: 4096,
            len: 4095
        }
    );
    let mut out = vec![0u8; MAX_RECORD_DATA];
    let body = open_record(&header, &r, payload, None, &mut out).unwrap();
    assert_eq!(
        body,
        RecordBody::Data {
            offset: 0,
            len: 4096
        }
    );
    assert_eq!(&out[..4096], &data[..]);
    // A payload of the wrong length is refused.
    assert!(open_record(&header, &r, &payload[1..], None, &mut out).is_err());
}

#[test]
fn the_encoder_refuses_what_the_format_cannot_hold() {
    let m = meta(512, Compression::None);
    let mut enc = PacketEncoder::new(m.clone(), None).unwrap();
    assert!(matches!(enc.end_file(), Err(Error::Misuse { .. })));
    let mut file = enc.start_file().unwrap();
    assert!(matches!(enc.start_file(), Err(Error::Misuse { .. })));
    assert!(enc.prepare_data(0, &[0; 100]).is_err());
    assert!(enc.prepare_data(1, &[0; 512]).is_err());
    assert!(enc
        .prepare_data(0, &vec![1; MAX_RECORD_DATA + 512])
        .is_err());
    assert!(enc.prepare_data(m.range.end, &[1; 512]).is_err());
    assert!(enc.prepare_zero(0, 0).is_err());
    assert!(enc.prepare_zero(0, 2000).is_err());
    let r = enc.prepare_data(4096, &[1; 512]).unwrap();
    enc.write_record(r, &mut file).unwrap();
    let behind = enc.prepare_data(4096, &[1; 512]).unwrap();
    assert!(enc.write_record(behind, &mut file).is_err());

    let mut bad = m.clone();
    bad.new_epoch = bad.base_epoch;
    assert!(PacketEncoder::new(bad, None).is_err());
    let mut bad = m.clone();
    bad.block_size = 1000;
    assert!(PacketEncoder::new(bad, None).is_err());
    let mut bad = m.clone();
    bad.destinations = vec![String::new()];
    assert!(PacketEncoder::new(bad, None).is_err());
    let mut bad = m.clone();
    bad.comment = "x".repeat(MAX_COMMENT + 1);
    assert!(PacketEncoder::new(bad, None).is_err());
    let mut bad = m.clone();
    bad.destinations = vec!["d".into(); MAX_DESTINATIONS + 1];
    assert!(PacketEncoder::new(bad, None).is_err());
    let mut bad = m;
    bad.new_epoch = 6; // timeline 3 forked at epoch 6
    bad.base_epoch = 5;
    assert!(PacketEncoder::new(bad, None).is_err());
}

#[test]
fn records_sized_by_max_record_data_always_fit_an_empty_file() {
    let mut m = meta(4096, Compression::None);
    m.range = 0..1 << 30;
    m.comment = "c".repeat(MAX_COMMENT);
    let enc = PacketEncoder::new(m.clone(), None).unwrap();
    for max in [MIN_MAX_SIZE, 100_000, 1 << 20, DEFAULT_MAX_SIZE] {
        let n = enc.max_record_data(max);
        assert_eq!(n % 4096, 0);
        assert!(n <= MAX_RECORD_DATA);
        let records = vec![
            Rec::Data(0, block_bytes(n, 2, 1)),
            Rec::Data(n as u64, block_bytes(n, 2, 2)),
        ];
        let (files, _) = build(&m, None, &records, max);
        assert_eq!(
            files.len(),
            if n == MAX_RECORD_DATA && max > 3 << 20 {
                1
            } else {
                2
            }
        );
        for f in &files {
            assert!(f.len() as u64 <= max, "{} > {max}", f.len());
        }
    }
    // The largest header still leaves room for a block at the minimum size.
    assert!(FILE_HEADER_MAX_LEN + RECORD_HEADER_LEN + TRAILER_LEN + 4096 < MIN_MAX_SIZE as usize);
}

#[test]
fn part_file_names_follow_multisite() {
    assert_eq!(part_file_name("exports/x.pkt", 0), "exports/x.pkt");
    assert_eq!(part_file_name("x", 2), "x_3");
    assert_eq!(part_file_name("x", u32::MAX), "x_4294967296");
}

/// Sets `bytes` at `at` in file `f` of a copy of `files`, reseals it, and
/// returns the error the reader gives.
fn forged(files: &[Vec<u8>], f: usize, at: usize, bytes: &[u8]) -> Error {
    let mut bad = files.to_vec();
    bad[f][at..at + bytes.len()].copy_from_slice(bytes);
    reseal_unsigned(&mut bad[f]);
    match read(&bad, None, 512) {
        Ok(_) => panic!("forged bytes {bytes:x?} at {at} of file {f} accepted"),
        Err((file, err)) => {
            // A forged part index makes two files claim one place; which
            // of them is blamed is a matter of order.
            // So does a forged record count: the next part then seems to
            // start at the wrong record.
            if !matches!(
                err,
                Error::Part(PartProblem::Duplicate { .. } | PartProblem::SequenceGap { .. })
            ) {
                assert_eq!(file, f, "{err}");
            }
            err
        }
    }
}

#[test]
fn version_1_packets_are_still_read() {
    // Version 1 differs only in what a record's tag covers (the payload,
    // not its hash). A packet rewritten as version 1 reads back the same.
    for compression in [Compression::None, Compression::Zstd] {
        let (m, _, files) = sample_packet(None, compression, 1);
        let v1: Vec<Vec<u8>> = files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f[FILE_HDR_VERSION_OFF..FILE_HDR_VERSION_OFF + 2].copy_from_slice(&[1, 0]);
                reseal_unsigned(&mut f);
                f
            })
            .collect();
        assert_eq!(decode_file_header(&v1[0], None).unwrap().version, 1);
        let (got, summary) = read(&v1, None, m.block_size).unwrap_or_else(|(_, e)| panic!("{e}"));
        let (want, want_summary) = read(&files, None, m.block_size).unwrap();
        assert_eq!(got, want);
        assert_eq!(summary, want_summary);
        // Its record tags are not version 2 tags: the same files declared
        // as version 2 (header and trailer resealed, records left) fail
        // at the first record.
        let mut relabelled = v1.clone();
        for (f, orig) in relabelled.iter_mut().zip(&files) {
            let mut g = f.clone();
            g[FILE_HDR_VERSION_OFF..FILE_HDR_VERSION_OFF + 2].copy_from_slice(&[2, 0]);
            reseal_unsigned(&mut g);
            let len = decode_file_header(&g, None).unwrap().len;
            let trl = g.len() - TRAILER_LEN;
            f[..len].copy_from_slice(&g[..len]);
            f[trl..].copy_from_slice(&g[trl..]);
            assert_eq!(&f[..len], &orig[..len]);
        }
        assert!(matches!(
            read(&relabelled, None, m.block_size),
            Err((0, Error::BadTag { what: "record", .. }))
        ));
    }
}

#[test]
fn the_files_of_one_packet_never_mix_format_versions() {
    // Each file would verify under its own version's rule; a packet whose
    // second file is version 1 while the first is version 2 is refused.
    let (m, _, files) = sample_packet(None, Compression::None, 1);
    assert!(files.len() > 1);
    let mut mixed = files.clone();
    mixed[1][FILE_HDR_VERSION_OFF..FILE_HDR_VERSION_OFF + 2].copy_from_slice(&[1, 0]);
    reseal_unsigned(&mut mixed[1]);
    assert_eq!(decode_file_header(&mixed[1], None).unwrap().version, 1);
    match read(&mixed, None, m.block_size) {
        Err((_, Error::Part(PartProblem::Inconsistent { field, offset, .. }))) => {
            assert_eq!((field, offset), ("version", FILE_HDR_VERSION_OFF as u64));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn resealing_an_intact_packet_changes_nothing() {
    let (_, _, files) = sample_packet(None, Compression::Zstd, 1);
    for f in &files {
        let mut copy = f.clone();
        reseal_unsigned(&mut copy);
        assert_eq!(&copy, f);
    }
}

#[test]
fn forged_unsigned_packets_are_still_judged_field_by_field() {
    let (_, _, files) = sample_packet(None, Compression::Zstd, 1);
    let h = decode_file_header(&files[0], None).unwrap();
    let rec = h.len;
    let trl = files[0].len() - TRAILER_LEN;
    let field = |e: &Error| match e {
        Error::Field { field, offset, .. } => (*field, *offset),
        Error::Version { offset, .. } => ("version", *offset),
        Error::Sequence { offset, .. } => ("sequence", *offset),
        Error::Decompress { offset, .. } => ("decompress", *offset),
        Error::Part(p) => ("part", p.offset().unwrap_or(u64::MAX)),
        Error::Truncated { offset, .. } => ("truncated", *offset),
        other => panic!("unexpected {other}"),
    };
    let cases: Vec<(usize, &[u8], (&str, usize))> = vec![
        (FILE_HDR_VERSION_OFF, &[3, 0], ("version", 8)),
        (FILE_HDR_VERSION_OFF, &[0, 0], ("version", 8)),
        (FILE_HDR_FLAGS_OFF, &[4], ("flags", 10)),
        (FILE_HDR_FLAGS_OFF, &[2], ("rewind timeline", 116)),
        (
            FILE_HDR_REWIND_EPOCH_OFF,
            &[1],
            ("rewind position (no rewind flag)", 120),
        ),
        (
            FILE_HDR_SOURCE_LEN_OFF,
            &[0xff, 0xff],
            ("source length", 114),
        ),
        (FILE_HDR_COMPRESSION_OFF, &[9], ("compression", 11)),
        (FILE_HDR_RESERVED_OFF + 3, &[1], ("reserved", 127)),
        (
            FILE_HDR_BLOCK_SIZE_OFF,
            &[0xe8, 3, 0, 0],
            ("block size", 104),
        ),
        (FILE_HDR_RANGE_END_OFF, &[0; 8], ("range end", 88)),
        (
            FILE_HDR_RANGE_START_OFF,
            &[1, 0, 0, 0, 0, 0, 0, 0],
            ("range start", 80),
        ),
        (FILE_HDR_NEW_EPOCH_OFF, &[5, 0, 0, 0], ("new epoch", 76)),
        (FILE_HDR_TIMELINE_OFF, &[4, 0, 0, 0], ("timeline", 64)),
        (
            FILE_HEADER_FIXED_LEN + 4,
            &[2, 0, 0, 0],
            ("timeline history", 128),
        ),
        (
            FILE_HDR_HISTORY_COUNT_OFF,
            &[0xff, 0xff],
            ("history count", 108),
        ),
        (FILE_HDR_DEST_COUNT_OFF, &[3, 0], ("header length", 12)),
        (FILE_HDR_COMMENT_LEN_OFF, &[12, 0], ("header length", 12)),
        (FILE_HEADER_FIXED_LEN + 24, &[0xff], ("comment", 152)),
        (FILE_HDR_PART_INDEX_OFF, &[1, 0, 0, 0], ("part", 68)),
        (
            rec + REC_KIND_OFF,
            &[7],
            ("record kind", rec as u64 as usize),
        ),
        (rec + REC_COMPRESSION_OFF, &[2], ("compression", rec + 1)),
        (rec + REC_RESERVED2_OFF, &[1], ("reserved", rec + 28)),
        (rec + REC_SEQ_OFF, &[1], ("sequence", rec)),
        (rec + REC_OFFSET_OFF, &[1], ("logical offset", rec + 16)),
        (
            rec + REC_OFFSET_OFF + 3,
            &[0x10],
            ("logical offset", rec + 16),
        ),
        (rec + REC_BLOCKS_OFF, &[0], ("block count", rec + 24)),
        (rec + REC_BLOCKS_OFF, &[3], ("decompress", rec + 48)),
        (
            rec + REC_STORED_LEN_OFF,
            &[0xff, 0xff, 0, 0],
            ("stored length", rec + 4),
        ),
        (trl + TRL_FLAGS_OFF, &[2], ("trailer flags", trl + 8)),
        (trl + TRL_FLAGS_OFF, &[1], ("total file count", trl + 12)),
        (trl + TRL_FIRST_SEQ_OFF, &[1], ("part", trl + 16)),
        (
            trl + TRL_TOTAL_RECORDS_OFF,
            &[1],
            ("totals of a file that is not the last", trl + 32),
        ),
        (trl + TRL_RESERVED_OFF, &[1], ("reserved", trl + 88)),
    ];
    for (at, bytes, (want_field, want_offset)) in cases {
        let err = forged(&files, 0, at, bytes);
        assert_eq!(
            field(&err),
            (want_field, want_offset as u64),
            "bytes {bytes:x?} at {at}: {err}"
        );
    }
    // A record count that does not match makes the next part look wrong.
    let err = forged(&files, 0, trl + TRL_RECORD_COUNT_OFF, &[9]);
    assert!(
        matches!(
            err,
            Error::Part(PartProblem::SequenceGap {
                file: 1,
                previous: Some(0),
                expected: 9,
                ..
            })
        ),
        "{err}"
    );
    // The last file's totals.
    let last = files.len() - 1;
    let trl = files[last].len() - TRAILER_LEN;
    for (at, want) in [
        (TRL_TOTAL_FILES_OFF, "total file count"),
        (TRL_TOTAL_RECORDS_OFF, "total record count"),
        (TRL_DATA_BLOCKS_OFF, "data block total"),
        (TRL_ZERO_BLOCKS_OFF, "zero block total"),
        (TRL_DIGEST_OFF, "content digest"),
    ] {
        let mut v = files[last][trl + at];
        v = v.wrapping_add(1);
        let err = forged(&files, last, trl + at, &[v]);
        assert!(
            matches!(err, Error::Field { field, offset, .. } if field == want && offset == (trl + at) as u64),
            "{want}: {err}"
        );
    }
}

/// Reads a packet back as a reader that leaves stored payloads in place
/// does: every record with its data, and whether it was decoded.
fn read_in_place(
    files: &[Vec<u8>],
    block_size: u32,
) -> Result<(Vec<(Rec, bool)>, PacketSummary), Error> {
    let mut reader = PacketReader::new(None);
    let mut out = vec![0u8; MAX_RECORD_DATA];
    let mut got = Vec::new();
    for f in files {
        let header = decode_file_header(f, None)?;
        let at = f.len() - TRAILER_LEN;
        let trailer = decode_trailer(&f[at..], at as u64, &header, None)?;
        reader.begin_file(header, trailer, f.len() as u64)?;
        while let Some(at) = reader.next_record_at() {
            let record = reader.record_header(&f[at as usize..])?;
            let start = record.payload_offset() as usize;
            let payload = &f[start..start + record.payload_len()];
            let (body, decoded) = reader.record_payload_in_place(payload, &mut out)?;
            let rec = match body {
                RecordBody::Data { offset, len } if decoded => {
                    Rec::Data(offset, out[..len].to_vec())
                }
                RecordBody::Data { offset, len } => Rec::Data(offset, payload[..len].to_vec()),
                RecordBody::Zero { offset, len } => {
                    Rec::Zero(offset, (len / u64::from(block_size)) as u32)
                }
            };
            got.push((rec, decoded));
        }
        reader.end_file()?;
    }
    Ok((got, reader.finish()?))
}

#[test]
fn stored_payloads_read_in_place_give_the_same_records_and_digest() {
    for compression in [Compression::None, Compression::Zstd, Compression::Lz4] {
        for version in [2u8, 1] {
            let (m, _, mut files) = sample_packet(None, compression, 1);
            if version == 1 {
                for f in &mut files {
                    f[FILE_HDR_VERSION_OFF..FILE_HDR_VERSION_OFF + 2].copy_from_slice(&[1, 0]);
                    reseal_unsigned(f);
                }
            }
            let (want, want_summary) = read(&files, None, m.block_size).unwrap();
            let (got, summary) = read_in_place(&files, m.block_size).unwrap();
            let records: Vec<Rec> = got.iter().map(|(r, _)| r.clone()).collect();
            assert_eq!(records, want, "{compression:?} v{version}");
            assert_eq!(summary, want_summary);
            // Only compressed payloads are decoded (a record that would
            // not shrink is stored as is even in a compressed packet).
            let decoded = got.iter().filter(|(_, d)| *d).count();
            if compression == Compression::None {
                assert_eq!(decoded, 0);
            } else {
                assert!(decoded > 0);
            }
            assert!(got.iter().all(|(r, d)| !d || matches!(r, Rec::Data(..))));
        }
    }
    // A damaged stored payload is refused in place as well.
    let (m, _, mut files) = sample_packet(None, Compression::None, 1);
    let spans = record_spans(&files[0], None);
    let last = spans[0].end - 1;
    files[0][last] ^= 1;
    assert!(matches!(
        read_in_place(&files, m.block_size),
        Err(Error::BadTag { what: "record", .. })
    ));
}

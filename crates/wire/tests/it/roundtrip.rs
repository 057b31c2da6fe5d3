//! Property tests: decode(encode(x)) == x for every message, through a
//! frame, compressed or not; arbitrary bytes never panic a decoder, and
//! whatever they decode to encodes back to the same payload.

use poolsync_wire::message::kind;
use poolsync_wire::*;
use proptest::prelude::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..3000),
        (1usize..70_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn page() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), 0usize..HEADER_PAGE).prop_map(|(b, n)| {
        let mut p = vec![0u8; HEADER_PAGE];
        p[n] = b;
        p
    })
}

fn header_page() -> impl Strategy<Value = HeaderPage> {
    prop_oneof![
        Just(HeaderPage::None),
        Just(HeaderPage::NotRead),
        text(40).prop_map(|reason| HeaderPage::Unreadable { reason }),
        page().prop_map(|bytes| HeaderPage::Read { bytes }),
    ]
}

fn part() -> impl Strategy<Value = PartReport> {
    (
        0u8..4,
        any::<u64>(),
        0u32..0o10000,
        text(30),
        header_page(),
        any::<bool>(),
    )
        .prop_map(|(s, size, mode, reason, header, broken)| PartReport {
            status: match s {
                0 => PartStatus::Ok,
                1 => PartStatus::Missing,
                2 => PartStatus::Inaccessible,
                _ => PartStatus::SizeMismatch,
            },
            size,
            mode,
            reason,
            header,
            broken,
        })
}

fn offset_len() -> impl Strategy<Value = (u64, u64)> {
    (any::<u64>(), any::<u64>()).prop_map(|(o, l)| (o / 2, l / 2))
}

fn mark() -> impl Strategy<Value = SyncMark> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(poolset_uuid, lineage, timeline, epoch, run_id)| SyncMark {
                poolset_uuid,
                lineage,
                timeline,
                epoch,
                run_id,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            text(60).prop_filter("non-empty", |s| !s.is_empty()),
            any::<bool>(),
            proptest::option::of(any::<[u8; 16]>())
        )
            .prop_map(|(path, write, expect_uuid)| Message::Open(Open {
                path,
                write,
                expect_uuid
            })),
        (0u64..1 << 50, 1u32..=MAX_DATA).prop_map(|(offset, len)| Message::Read { offset, len }),
        proptest::collection::vec((0u64..1 << 40, 1u32..=4 << 20, 1u32..64), 0..20).prop_map(
            |runs| Message::Digests {
                runs: runs
                    .into_iter()
                    .map(|(offset, piece, count)| DigestRun {
                        offset,
                        piece,
                        count
                    })
                    .collect()
            }
        ),
        (0u64..1 << 50, data()).prop_map(|(offset, data)| Message::Write { offset, data }),
        (0u64..1 << 50, data()).prop_map(|(offset, data)| Message::Data { offset, data }),
        offset_len().prop_map(|(offset, len)| Message::Flush { offset, len }),
        Just(Message::Fence),
        (any::<u32>(), page(), any::<bool>()).prop_map(|(part, page, stamp_crtime)| {
            Message::WriteHeader {
                part,
                write: HeaderWrite::Whole { page, stamp_crtime },
            }
        }),
        (any::<u32>(), any::<u64>()).prop_map(|(part, value)| Message::WriteHeader {
            part,
            write: HeaderWrite::Checksum { value }
        }),
        (any::<u32>(), any::<bool>())
            .prop_map(|(part, replace)| Message::CreatePart { part, replace }),
        (any::<u32>(), 0u32..0o10000).prop_map(|(part, mode)| Message::SetMode { part, mode }),
        any::<bool>().prop_map(|set_file| Message::Remove { set_file }),
        Just(Message::Inspect),
        Just(Message::Close),
        Just(Message::Done),
        (1u16..12, text(200)).prop_map(|(code, message)| {
            let code = match code {
                1 => FailureCode::Other,
                2 => FailureCode::Refused,
                3 => FailureCode::NotFound,
                4 => FailureCode::Locked,
                5 => FailureCode::Mismatch,
                6 => FailureCode::Io,
                7 => FailureCode::Protocol,
                8 => FailureCode::Unsupported,
                n => FailureCode::Unknown(n),
            };
            Message::Failed(Failure { code, message })
        }),
        (
            text(40),
            text(300),
            text(20),
            proptest::collection::vec(part(), 0..5),
            (any::<bool>(), any::<u64>()),
            proptest::collection::vec(text(50), 0..4),
            proptest::option::of(mark()),
        )
            .prop_map(
                |(set_path, set_text, server, parts, (healthy, pool_size), verdicts, mark)| {
                    Message::Opened(Box::new(Opened {
                        set_path,
                        set_text,
                        server,
                        parts,
                        healthy,
                        pool_size,
                        verdicts,
                        mark,
                    }))
                }
            ),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(poolset_uuid, lineage, timeline, epoch)| Message::Mark {
                poolset_uuid,
                lineage,
                timeline,
                epoch,
            }),
        proptest::collection::vec(any::<u128>(), 0..300).prop_map(Message::DigestList),
        proptest::collection::vec((text(40), any::<bool>()), 0..6).prop_map(|files| {
            Message::Removed(
                files
                    .into_iter()
                    .map(|(path, removed)| RemovedFile { path, removed })
                    .collect(),
            )
        }),
    ]
}

/// Frames `message`, then reads it back as a receiver does.
fn through_a_frame(codec: &mut Codec, message: &Message) -> Result<Message, Error> {
    let frame = codec.seal(message, MAX_PAYLOAD)?;
    let head: [u8; FRAME_HEADER_LEN] = frame[..FRAME_HEADER_LEN].try_into().unwrap();
    let header = decode_header(&head, MAX_PAYLOAD)?;
    assert_eq!(header.kind, message.kind());
    codec.open(&head, &header, &frame[FRAME_HEADER_LEN..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(m in message()) {
        let payload = m.encode().unwrap();
        prop_assert_eq!(&Message::decode(m.kind(), &payload).unwrap(), &m);
        let mut codec = Codec::new();
        prop_assert_eq!(&through_a_frame(&mut codec, &m).unwrap(), &m);
    }

    #[test]
    fn arbitrary_payloads_never_panic_and_decode_canonically(
        k in any::<u8>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok(m) = Message::decode(k, &bytes) {
            prop_assert_eq!(m.kind(), k);
            prop_assert_eq!(m.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn a_damaged_frame_is_refused(m in message(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut codec = Codec::new();
        let mut frame = codec.seal(&m, MAX_PAYLOAD).unwrap();
        let i = at.index(frame.len());
        frame[i] ^= 1 << bit;
        let head: [u8; FRAME_HEADER_LEN] = frame[..FRAME_HEADER_LEN].try_into().unwrap();
        match decode_header(&head, MAX_PAYLOAD) {
            Err(_) => {}
            Ok(h) if h.stored_len as usize != frame.len() - FRAME_HEADER_LEN => {}
            Ok(h) => prop_assert!(codec.open(&head, &h, &frame[FRAME_HEADER_LEN..]).is_err()),
        }
    }

    #[test]
    fn greetings_round_trip(min in 1u16..10, extra in 0u16..10, max_payload in MIN_PAYLOAD..=MAX_PAYLOAD, server in any::<bool>()) {
        let role = if server { Role::Server } else { Role::Client };
        let h = Hello { role, min_version: min, max_version: min + extra, max_payload, features: 1 };
        prop_assert_eq!(Hello::decode(&h.encode(), role).unwrap(), h);
    }
}

#[test]
fn a_frame_larger_than_the_limit_is_not_sealed() {
    let mut codec = Codec::new();
    // Noise does not compress, so the payload stays above the limit.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: String = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let m = Message::Opened(Box::new(Opened {
        set_path: "a.set".into(),
        set_text: noise,
        server: "test".into(),
        parts: vec![],
        healthy: true,
        pool_size: 0,
        verdicts: vec!["x".repeat(1000)],
        mark: None,
    }));
    match codec.seal(&m, MIN_PAYLOAD) {
        Err(e) => assert!(e.to_string().contains("exceeds the limit"), "{e}"),
        Ok(frame) => panic!("sealed a frame of {} bytes", frame.len()),
    }
    assert!(codec.seal(&m, MAX_PAYLOAD).is_ok());
}

#[test]
fn a_compression_bomb_is_refused_by_its_declared_size() {
    // 1 MiB of zeros compresses to a few bytes; a header declaring less
    // decompressed data than the frame holds fails, and never allocates
    // more than it declares.
    let zeros = vec![0u8; 1 << 20];
    let packed = zstd::bulk::compress(&zeros, 1).unwrap();
    let mut head = [0u8; FRAME_HEADER_LEN];
    head[0..4].copy_from_slice(&(packed.len() as u32).to_le_bytes());
    head[4] = kind::DATA;
    head[5] = FLAG_ZSTD;
    head[8..12].copy_from_slice(&4096u32.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..12]);
    crc.update(&packed);
    head[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    let h = decode_header(&head, MAX_PAYLOAD).unwrap();
    let e = Codec::new().open(&head, &h, &packed).unwrap_err();
    assert!(matches!(e, Error::Decompress { kind: 0x83, .. }), "{e}");
}

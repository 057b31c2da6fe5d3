//! State files: round trips, the size budget, and refusal of corruption.

use poolsync_packet::state::*;
use poolsync_packet::*;
use proptest::prelude::*;

use crate::common::full_state;

/// Writes a whole state file the way the engine streams it.
fn write(state: &State, entry: impl Fn(u64) -> Entry) -> Vec<u8> {
    let (mut bytes, layout) = state.encode_head().unwrap();
    for c in 0..layout.chunk_count() {
        let first = c * CHUNK_ENTRIES as u64;
        let entries: Vec<Entry> = (0..layout.chunk_entries(c) as u64)
            .map(|i| entry(first + i))
            .collect();
        assert_eq!(bytes.len() as u64, layout.chunk_offset(c));
        bytes.extend_from_slice(&layout.encode_chunk(c, &entries).unwrap());
    }
    assert_eq!(bytes.len() as u64, layout.file_len());
    bytes
}

/// Reads a whole state file the way the engine verifies it before use: the
/// head, the length, then every chunk in one pass.
fn read(bytes: &[u8]) -> Result<(State, Vec<Entry>), Error> {
    let prefix = bytes.get(..STATE_FIXED_LEN).unwrap_or(bytes);
    let head_len = state::state_head_len(prefix)?;
    let (state, layout) = State::decode_head(bytes)?;
    assert_eq!(layout.head_len, head_len as u64);
    layout.check_file_len(bytes.len() as u64)?;
    let mut entries = Vec::new();
    for c in 0..layout.chunk_count() {
        let at = layout.chunk_offset(c) as usize;
        entries.extend(layout.decode_chunk(c, &bytes[at..at + layout.chunk_len(c)])?);
    }
    Ok((state, entries))
}

fn entry(i: u64) -> Entry {
    Entry::from_xxh3_128(
        u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
        (i % 1000) as u32,
    )
}

fn small_state(blocks: u64) -> State {
    let mut s = full_state(512, blocks * 512);
    s.destinations.truncate(2);
    s.applied.truncate(3);
    s
}

fn arb_state() -> impl Strategy<Value = State> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        prop::collection::vec(0u32..3, 0..4),
        0u32..100,
        any::<u64>(),
        (9u32..=16, 1u64..5000, 0u64..100),
        prop::collection::vec(
            (
                "[a-z0-9\\-]{1,30}",
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
            ),
            0..10,
        ),
        prop::collection::vec(
            (
                any::<[u8; 16]>(),
                any::<u32>(),
                0u32..1000,
                1u32..50,
                any::<u64>(),
                any::<[u8; 32]>(),
            ),
            0..70,
        ),
    )
        .prop_map(
            |(uuid, lineage, forks, extra, generation, (shift, blocks, start), dests, applied)| {
                let mut history = Vec::new();
                let mut timeline = ROOT_TIMELINE;
                let mut epoch = 0;
                for de in forks {
                    epoch += de;
                    history.push(Fork {
                        timeline: timeline + 1,
                        parent: timeline,
                        epoch,
                    });
                    timeline += 1;
                }
                let bs = 1u32 << shift;
                let mut s = State {
                    poolset_uuid: uuid,
                    lineage,
                    timeline,
                    history,
                    epoch: epoch + extra,
                    generation,
                    block_size: bs,
                    range: start * u64::from(bs)..(start + blocks) * u64::from(bs),
                    destinations: Vec::new(),
                    applied: Vec::new(),
                    follower: generation % 2 == 1,
                };
                for (name, tl, ep, last) in dests {
                    if s.destination(&name).is_none() {
                        s.destinations.push(Destination {
                            name,
                            timeline: tl.max(1),
                            epoch: ep,
                            last_export: last,
                        });
                    }
                }
                for (id, tl, base, delta, at, digest) in applied {
                    s.record_applied(Applied {
                        packet_id: id,
                        timeline: tl,
                        base_epoch: base,
                        new_epoch: base + delta,
                        applied_at: at,
                        content_digest: digest,
                    });
                }
                s
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn heads_round_trip(state in arb_state()) {
        let (bytes, layout) = state.encode_head().unwrap();
        prop_assert_eq!(bytes.len() as u64, layout.head_len);
        prop_assert_eq!(bytes.len() % STATE_HEAD_ALIGN, 0);
        let (back, back_layout) = State::decode_head(&bytes).unwrap();
        prop_assert_eq!(&back, &state);
        prop_assert_eq!(back_layout, layout);
        prop_assert!(state.applied.len() <= MAX_APPLIED);
    }

    #[test]
    fn chunks_round_trip(blocks in 1u64..9000, stamps in any::<u32>()) {
        let mut s = small_state(blocks);
        s.epoch = stamps.max(1000);
        let bytes = write(&s, entry);
        let (back, entries) = read(&bytes).unwrap();
        prop_assert_eq!(back, s);
        prop_assert_eq!(entries.len() as u64, blocks);
        let (_, layout) = State::decode_head(&bytes).unwrap();
        for i in [0, blocks / 2, blocks - 1] {
            prop_assert_eq!(entries[i as usize], entry(i));
            let at = layout.entry_offset(i) as usize;
            let raw: [u8; ENTRY_LEN] = bytes[at..at + ENTRY_LEN].try_into().unwrap();
            prop_assert_eq!(state::decode_entry(&raw), entry(i));
        }
    }

    #[test]
    fn random_bytes_never_panic_the_state_decoder(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = state::state_head_len(&bytes);
        let _ = State::decode_head(&bytes);
        let (_, layout) = small_state(10).encode_head().unwrap();
        let _ = layout.decode_chunk(0, &bytes);
        let _ = layout.decode_chunk(5, &bytes);
    }
}

#[test]
fn entries_hold_the_low_96_bits_and_the_stamp() {
    let e = Entry::from_xxh3_128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10, 0xdead_beef);
    assert_eq!(
        e.encode(),
        [
            0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07, 0x06, 0x05, 0xef, 0xbe,
            0xad, 0xde
        ]
    );
    assert_eq!(Entry::decode(&e.encode()), e);
}

#[test]
fn the_state_file_stays_within_half_a_percent_of_the_pool() {
    let mib = 1u64 << 20;
    let mut figures = Vec::new();
    for pool in [8 * mib, 1 << 30, 1 << 40] {
        let state = full_state(4096, pool);
        let (head, layout) = state.encode_head().unwrap();
        let len = layout.file_len();
        assert_eq!(len, state::state_file_len(head.len() as u64, pool / 4096));
        let budget = pool / 200;
        figures.push(format!(
            "pool {pool}: head {} bytes, file {len} bytes = {:.3} % (budget {budget})",
            head.len(),
            len as f64 * 100.0 / pool as f64
        ));
        assert!(len <= budget, "{}", figures.last().unwrap());
    }
    // Shown with --nocapture; the figures are quoted in docs/packet.md.
    println!("{}", figures.join("\n"));
    // With every table at its maximum (64 destinations with 255-byte names,
    // 256 forks) the head is 25 KiB: that fits the budget from 24 MiB up.
    for pool in [24 * mib, 1 << 30] {
        let blocks = pool / 4096;
        let len = state::state_file_len(STATE_HEAD_MAX_LEN as u64, blocks);
        assert!(len <= pool / 200, "{pool}: {len}");
    }
    assert!(state::state_file_len(STATE_HEAD_MAX_LEN as u64, 2048) > 8 * mib / 200);
}

#[test]
fn every_damage_to_a_state_file_is_refused_with_its_offset() {
    // Two full chunks and a short third one.
    let state = small_state(2 * CHUNK_ENTRIES as u64 + 5);
    let bytes = write(&state, entry);
    let (_, layout) = State::decode_head(&bytes).unwrap();
    assert!(read(&bytes).is_ok());
    let check = |bad: &[u8], what: &str| {
        let err = read(bad)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let off = err
            .offset()
            .unwrap_or_else(|| panic!("{what}: no offset: {err}"));
        assert!(off <= bytes.len() as u64, "{what}: {err}");
        err
    };
    // Every byte of the head and of the chunk boundaries, and a sample of
    // the rest (hashing 64 KiB per flip adds up).
    let head = layout.head_len as usize;
    let interesting = |i: usize| {
        i < head + 64
            || (0..layout.chunk_count()).any(|c| {
                let start = layout.chunk_offset(c) as usize;
                let end = start + layout.chunk_len(c);
                (end - 64..end).contains(&i) || (start..start + 32).contains(&i)
            })
            || i.is_multiple_of(61)
    };
    for i in (0..bytes.len()).filter(|&i| interesting(i)) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x04;
        let err = check(&bad, &format!("byte {i}"));
        if i >= head {
            // Damage to entries is blamed on their chunk.
            let c = ((i - head) / CHUNK_STRIDE) as u64;
            assert_eq!(
                err.offset(),
                Some(layout.chunk_offset(c)),
                "byte {i}: {err}"
            );
        }
    }
    for len in (0..bytes.len()).filter(|&i| interesting(i)) {
        check(&bytes[..len], &format!("cut to {len}"));
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let err = check(&longer, "one byte more");
    assert_eq!(err.offset(), Some(bytes.len() as u64));

    // Chunks swapped: each is bound to its index.
    let (c0, c1) = (
        layout.chunk_offset(0) as usize,
        layout.chunk_offset(1) as usize,
    );
    let mut swapped = bytes.clone();
    let first = bytes[c0..c1].to_vec();
    swapped.copy_within(c1..c1 + CHUNK_STRIDE, c0);
    swapped[c1..c1 + CHUNK_STRIDE].copy_from_slice(&first);
    let err = check(&swapped, "swapped chunks");
    assert!(
        matches!(err, Error::BadTag { offset, .. } if offset == c0 as u64),
        "{err}"
    );

    // A chunk of an older version of the file (other head, same layout).
    let mut older = state.clone();
    older.generation -= 1;
    let old = write(&older, entry);
    let mut stale = bytes.clone();
    stale[c1..c1 + CHUNK_STRIDE].copy_from_slice(&old[c1..c1 + CHUNK_STRIDE]);
    let err = check(&stale, "stale chunk");
    assert!(
        matches!(err, Error::BadTag { offset, .. } if offset == c1 as u64),
        "{err}"
    );
}

#[test]
fn stamps_after_the_epoch_are_refused() {
    let state = small_state(10);
    let (_, layout) = state.encode_head().unwrap();
    let mut entries: Vec<Entry> = (0..10).map(entry).collect();
    entries[3].stamp = state.epoch + 1;
    assert!(layout.encode_chunk(0, &entries).is_err());
    assert!(layout.encode_chunk(0, &entries[..9]).is_err());
    assert!(layout.encode_chunk(1, &entries).is_err());
}

#[test]
fn the_applied_log_keeps_the_latest_and_recognises_replays() {
    let mut s = full_state(4096, 8 << 20);
    assert_eq!(s.applied.len(), MAX_APPLIED);
    let new = Applied {
        packet_id: [0xfe; 16],
        timeline: 2,
        base_epoch: 1009,
        new_epoch: 1010,
        applied_at: 1,
        content_digest: [1; 32],
    };
    assert_eq!(s.replay(&new.packet_id, &new.content_digest), Replay::New);
    let oldest = s.applied[0].packet_id;
    s.record_applied(new);
    assert_eq!(s.applied.len(), MAX_APPLIED);
    assert!(s.applied.iter().all(|a| a.packet_id != oldest));
    assert_eq!(s.applied.last(), Some(&new));
    assert_eq!(
        s.replay(&new.packet_id, &new.content_digest),
        Replay::AlreadyApplied
    );
    assert_eq!(s.replay(&new.packet_id, &[2; 32]), Replay::Altered);
    s.validate().unwrap();
    assert_eq!(
        s.destination("replica-03.site3.example.org")
            .map(|d| d.epoch),
        Some(1003)
    );
}

#[test]
fn invalid_states_are_not_encoded() {
    let good = small_state(10);
    let mut s = good.clone();
    s.destinations.push(s.destinations[0].clone());
    assert!(s.encode_head().is_err());
    let mut s = good.clone();
    s.applied.push(s.applied[0]);
    assert!(s.encode_head().is_err());
    let mut s = good.clone();
    s.epoch = 10; // before the fork at 500
    assert!(s.encode_head().is_err());
    let mut s = good.clone();
    s.range = 0..0;
    assert!(s.encode_head().is_err());
    let mut s = good;
    s.destinations = (0..=MAX_STATE_DESTINATIONS)
        .map(|i| Destination {
            name: format!("d{i}"),
            timeline: 1,
            epoch: 0,
            last_export: 0,
        })
        .collect();
    assert!(s.encode_head().is_err());
}

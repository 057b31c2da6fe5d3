//! Rewind requests: round trips, refusal of corruption, range fitting.

use poolsync_packet::rewind::*;
use poolsync_packet::*;
use proptest::prelude::*;

use crate::common::KEY;

pub fn sample(ranges: Vec<BlockRange>) -> RewindRequest {
    RewindRequest {
        poolset_uuid: [0x22; 16],
        lineage: [0x33; 16],
        timeline: 2,
        history: vec![Fork {
            timeline: 2,
            parent: 1,
            epoch: 7,
        }],
        epoch: 12,
        block_size: 4096,
        created: 1_700_000_000,
        destination: "site-b".into(),
        ranges,
    }
}

fn arb_ranges() -> impl Strategy<Value = Vec<BlockRange>> {
    prop::collection::vec((0u64..50, 1u64..20), 0..40).prop_map(|v| {
        let mut at = 0;
        v.into_iter()
            .map(|(gap, blocks)| {
                at += gap * 4096;
                let r = BlockRange { offset: at, blocks };
                at += blocks * 4096;
                r
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn requests_round_trip(ranges in arb_ranges(), signed in any::<bool>(), name in "[a-z]{1,20}") {
        let key = signed.then_some(&KEY);
        let mut req = sample(ranges);
        req.destination = name;
        let bytes = req.encode(key).unwrap();
        prop_assert_eq!(RewindRequest::declared_len(&bytes[..RWD_FIXED_LEN]).unwrap(), bytes.len());
        prop_assert_eq!(RewindRequest::decode(&bytes, key).unwrap(), req);
    }

    #[test]
    fn normalized_and_coarsened_ranges_cover_the_input(
        raw in prop::collection::vec((0u64..200, 0u64..10), 0..60),
        max in 1usize..10,
    ) {
        let mut ranges: Vec<BlockRange> = raw.iter().map(|&(b, n)| BlockRange { offset: b * 512, blocks: n }).collect();
        let covered = |v: &[BlockRange], block: u64| v.iter().any(|r| r.offset / 512 <= block && block < r.offset / 512 + r.blocks);
        let wanted: Vec<u64> = (0..220).filter(|&b| covered(&ranges, b)).collect();
        normalize_ranges(&mut ranges, 512);
        for w in ranges.windows(2) {
            prop_assert!(w[0].offset + w[0].blocks * 512 < w[1].offset);
        }
        prop_assert_eq!((0..220).filter(|&b| covered(&ranges, b)).collect::<Vec<_>>(), wanted.clone());
        coarsen_ranges(&mut ranges, 512, max);
        prop_assert!(ranges.len() <= max);
        for b in &wanted {
            prop_assert!(covered(&ranges, *b));
        }
        for w in ranges.windows(2) {
            prop_assert!(w[0].offset + w[0].blocks * 512 <= w[1].offset);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_rewind_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300), signed in any::<bool>()) {
        let _ = RewindRequest::declared_len(&bytes);
        let _ = RewindRequest::decode(&bytes, signed.then_some(&KEY));
    }
}

#[test]
fn every_flip_and_cut_is_refused_with_an_offset() {
    let ranges = vec![
        BlockRange {
            offset: 0,
            blocks: 3,
        },
        BlockRange {
            offset: 1 << 20,
            blocks: 1,
        },
    ];
    for key in [None, Some(&KEY)] {
        let bytes = sample(ranges.clone()).encode(key).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let err = RewindRequest::decode(&bad, key).unwrap_err();
            assert!(
                err.offset().is_some_and(|o| o <= bytes.len() as u64),
                "byte {i}: {err}"
            );
        }
        for len in 0..bytes.len() {
            let err = RewindRequest::decode(&bytes[..len], key).unwrap_err();
            assert!(err.offset().is_some(), "cut to {len}: {err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RewindRequest::decode(&longer, key).is_err());
    }
    let signed = sample(ranges.clone()).encode(Some(&KEY)).unwrap();
    assert!(matches!(
        RewindRequest::decode(&signed, None),
        Err(Error::KeyRequired { .. })
    ));
    let unsigned = sample(ranges).encode(None).unwrap();
    assert!(matches!(
        RewindRequest::decode(&unsigned, Some(&KEY)),
        Err(Error::NotSigned { .. })
    ));
}

#[test]
fn invalid_requests_are_not_encoded() {
    let overlapping = vec![
        BlockRange {
            offset: 0,
            blocks: 3,
        },
        BlockRange {
            offset: 4096,
            blocks: 1,
        },
    ];
    assert!(sample(overlapping).encode(None).is_err());
    assert!(sample(vec![BlockRange {
        offset: 1,
        blocks: 1
    }])
    .encode(None)
    .is_err());
    assert!(sample(vec![BlockRange {
        offset: 0,
        blocks: 0
    }])
    .encode(None)
    .is_err());
    assert!(sample(vec![BlockRange {
        offset: 0,
        blocks: u64::MAX
    }])
    .encode(None)
    .is_err());
    let too_many = (0..=MAX_REWIND_RANGES as u64)
        .map(|i| BlockRange {
            offset: i * 8192,
            blocks: 1,
        })
        .collect();
    assert!(sample(too_many).encode(None).is_err());
    let mut r = sample(vec![]);
    r.destination = String::new();
    assert!(r.encode(None).is_err());
    let mut r = sample(vec![]);
    r.epoch = 3; // before the fork at 7
    assert!(r.encode(None).is_err());
}

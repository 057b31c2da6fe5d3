//! `docs/wire.md` and the code agree: every offset constant named in a
//! table row has the offset that row gives, every offset constant of the
//! crate is named in some row, and the bounds table gives the code's values.

use std::collections::BTreeMap;

use poolsync_wire::frame::*;
use poolsync_wire::hello::*;
use poolsync_wire::mark::*;
use poolsync_wire::message::*;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wire.md"))
        .expect("reading docs/wire.md")
}

fn constants() -> BTreeMap<&'static str, usize> {
    [
        ("HELLO_MAGIC_OFF", HELLO_MAGIC_OFF),
        ("HELLO_ROLE_OFF", HELLO_ROLE_OFF),
        ("HELLO_RESERVED_OFF", HELLO_RESERVED_OFF),
        ("HELLO_MIN_VERSION_OFF", HELLO_MIN_VERSION_OFF),
        ("HELLO_MAX_VERSION_OFF", HELLO_MAX_VERSION_OFF),
        ("HELLO_RESERVED2_OFF", HELLO_RESERVED2_OFF),
        ("HELLO_MAX_PAYLOAD_OFF", HELLO_MAX_PAYLOAD_OFF),
        ("HELLO_FEATURES_OFF", HELLO_FEATURES_OFF),
        ("HELLO_CRC_OFF", HELLO_CRC_OFF),
        ("HELLO_RESERVED3_OFF", HELLO_RESERVED3_OFF),
        ("MARK_MAGIC_OFF", MARK_MAGIC_OFF),
        ("MARK_VERSION_OFF", MARK_VERSION_OFF),
        ("MARK_RESERVED_OFF", MARK_RESERVED_OFF),
        ("MARK_TIMELINE_OFF", MARK_TIMELINE_OFF),
        ("MARK_POOLSET_UUID_OFF", MARK_POOLSET_UUID_OFF),
        ("MARK_LINEAGE_OFF", MARK_LINEAGE_OFF),
        ("MARK_EPOCH_OFF", MARK_EPOCH_OFF),
        ("MARK_RESERVED2_OFF", MARK_RESERVED2_OFF),
        ("MARK_RUN_ID_OFF", MARK_RUN_ID_OFF),
        ("MARK_CRC_OFF", MARK_CRC_OFF),
        ("MARK_RESERVED3_OFF", MARK_RESERVED3_OFF),
        ("FRAME_STORED_LEN_OFF", FRAME_STORED_LEN_OFF),
        ("FRAME_KIND_OFF", FRAME_KIND_OFF),
        ("FRAME_FLAGS_OFF", FRAME_FLAGS_OFF),
        ("FRAME_RESERVED_OFF", FRAME_RESERVED_OFF),
        ("FRAME_RAW_LEN_OFF", FRAME_RAW_LEN_OFF),
        ("FRAME_CRC_OFF", FRAME_CRC_OFF),
        ("FRAME_HEADER_LEN", FRAME_HEADER_LEN),
    ]
    .into_iter()
    .collect()
}

#[test]
fn the_document_gives_every_offset_the_code_uses() {
    let doc = doc();
    let constants = constants();
    let mut seen = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(first), Some(last)) = (cells.get(1), cells.iter().rev().nth(1)) else {
            continue;
        };
        let Ok(offset) = first.parse::<usize>() else {
            continue;
        };
        for name in last.split('`').skip(1).step_by(2) {
            if let Some(&value) = constants.get(name) {
                assert_eq!(
                    value, offset,
                    "docs/wire.md gives {name} as {offset}: {line}"
                );
                seen.insert(name, offset);
            }
        }
    }
    let missing: Vec<&&str> = constants
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "not in a table of docs/wire.md: {missing:?}"
    );
}

#[test]
fn the_documented_bounds_and_kinds_are_the_code_s() {
    let doc = doc();
    for (name, value) in [
        ("HELLO_LEN", HELLO_LEN.to_string()),
        ("MARK_LEN", MARK_LEN.to_string()),
        ("FRAME_HEADER_LEN", FRAME_HEADER_LEN.to_string()),
        ("MAX_PAYLOAD", MAX_PAYLOAD.to_string()),
        ("MIN_PAYLOAD", MIN_PAYLOAD.to_string()),
        ("MAX_DATA", MAX_DATA.to_string()),
        ("MAX_DIGESTS", MAX_DIGESTS.to_string()),
        ("MAX_DIGEST_RUNS", MAX_DIGEST_RUNS.to_string()),
        ("MAX_DIGEST_PIECE", MAX_DIGEST_PIECE.to_string()),
        ("MAX_PARTS", MAX_PARTS.to_string()),
    ] {
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.ends_with(&format!("`{name}` |")))
            .unwrap_or_else(|| panic!("{name} has no row in the bounds of docs/wire.md"));
        assert!(
            row.contains(&format!("| {value}")),
            "{name} = {value}: {row}"
        );
    }
    assert_eq!(MAX_SET_TEXT, 1 << 20);
    // Every kind has its row in the message table, with its name.
    for k in 0..=255u8 {
        if let Some(name) = name_of(k) {
            let row = format!("| {k:#04x} | {name} |");
            assert!(doc.contains(&row), "docs/wire.md lacks the row {row}");
        }
    }
}

//! `docs/packet.md` and the code agree: every offset constant named in a
//! table row has the offset that row gives, and every offset constant of
//! the crate is named in some row.

use std::collections::BTreeMap;

use poolsync_packet::rewind::*;
use poolsync_packet::state::*;
use poolsync_packet::*;

/// Every offset constant, with constants that are the offset of what
/// follows a fixed part.
fn constants() -> BTreeMap<&'static str, usize> {
    let list: &[(&str, usize)] = &[
        ("FILE_HDR_MAGIC_OFF", FILE_HDR_MAGIC_OFF),
        ("FILE_HDR_VERSION_OFF", FILE_HDR_VERSION_OFF),
        ("FILE_HDR_FLAGS_OFF", FILE_HDR_FLAGS_OFF),
        ("FILE_HDR_COMPRESSION_OFF", FILE_HDR_COMPRESSION_OFF),
        ("FILE_HDR_LEN_OFF", FILE_HDR_LEN_OFF),
        ("FILE_HDR_PACKET_ID_OFF", FILE_HDR_PACKET_ID_OFF),
        ("FILE_HDR_POOLSET_UUID_OFF", FILE_HDR_POOLSET_UUID_OFF),
        ("FILE_HDR_LINEAGE_OFF", FILE_HDR_LINEAGE_OFF),
        ("FILE_HDR_TIMELINE_OFF", FILE_HDR_TIMELINE_OFF),
        ("FILE_HDR_PART_INDEX_OFF", FILE_HDR_PART_INDEX_OFF),
        ("FILE_HDR_BASE_EPOCH_OFF", FILE_HDR_BASE_EPOCH_OFF),
        ("FILE_HDR_NEW_EPOCH_OFF", FILE_HDR_NEW_EPOCH_OFF),
        ("FILE_HDR_RANGE_START_OFF", FILE_HDR_RANGE_START_OFF),
        ("FILE_HDR_RANGE_END_OFF", FILE_HDR_RANGE_END_OFF),
        ("FILE_HDR_CREATED_OFF", FILE_HDR_CREATED_OFF),
        ("FILE_HDR_BLOCK_SIZE_OFF", FILE_HDR_BLOCK_SIZE_OFF),
        ("FILE_HDR_HISTORY_COUNT_OFF", FILE_HDR_HISTORY_COUNT_OFF),
        ("FILE_HDR_DEST_COUNT_OFF", FILE_HDR_DEST_COUNT_OFF),
        ("FILE_HDR_COMMENT_LEN_OFF", FILE_HDR_COMMENT_LEN_OFF),
        ("FILE_HDR_SOURCE_LEN_OFF", FILE_HDR_SOURCE_LEN_OFF),
        ("FILE_HDR_REWIND_TIMELINE_OFF", FILE_HDR_REWIND_TIMELINE_OFF),
        ("FILE_HDR_REWIND_EPOCH_OFF", FILE_HDR_REWIND_EPOCH_OFF),
        ("FILE_HDR_RESERVED_OFF", FILE_HDR_RESERVED_OFF),
        ("FILE_HEADER_FIXED_LEN", FILE_HEADER_FIXED_LEN),
        ("REC_KIND_OFF", REC_KIND_OFF),
        ("REC_COMPRESSION_OFF", REC_COMPRESSION_OFF),
        ("REC_RESERVED_OFF", REC_RESERVED_OFF),
        ("REC_STORED_LEN_OFF", REC_STORED_LEN_OFF),
        ("REC_SEQ_OFF", REC_SEQ_OFF),
        ("REC_OFFSET_OFF", REC_OFFSET_OFF),
        ("REC_BLOCKS_OFF", REC_BLOCKS_OFF),
        ("REC_RESERVED2_OFF", REC_RESERVED2_OFF),
        ("REC_TAG_OFF", REC_TAG_OFF),
        ("RECORD_HEADER_LEN", RECORD_HEADER_LEN),
        ("TRL_MAGIC_OFF", TRL_MAGIC_OFF),
        ("TRL_FLAGS_OFF", TRL_FLAGS_OFF),
        ("TRL_TOTAL_FILES_OFF", TRL_TOTAL_FILES_OFF),
        ("TRL_FIRST_SEQ_OFF", TRL_FIRST_SEQ_OFF),
        ("TRL_RECORD_COUNT_OFF", TRL_RECORD_COUNT_OFF),
        ("TRL_TOTAL_RECORDS_OFF", TRL_TOTAL_RECORDS_OFF),
        ("TRL_DATA_BLOCKS_OFF", TRL_DATA_BLOCKS_OFF),
        ("TRL_ZERO_BLOCKS_OFF", TRL_ZERO_BLOCKS_OFF),
        ("TRL_DIGEST_OFF", TRL_DIGEST_OFF),
        ("TRL_RESERVED_OFF", TRL_RESERVED_OFF),
        ("TRL_TAG_OFF", TRL_TAG_OFF),
        ("STATE_MAGIC_OFF", STATE_MAGIC_OFF),
        ("STATE_VERSION_OFF", STATE_VERSION_OFF),
        ("STATE_FLAGS_OFF", STATE_FLAGS_OFF),
        ("STATE_HEAD_LEN_OFF", STATE_HEAD_LEN_OFF),
        ("STATE_POOLSET_UUID_OFF", STATE_POOLSET_UUID_OFF),
        ("STATE_LINEAGE_OFF", STATE_LINEAGE_OFF),
        ("STATE_TIMELINE_OFF", STATE_TIMELINE_OFF),
        ("STATE_EPOCH_OFF", STATE_EPOCH_OFF),
        ("STATE_GENERATION_OFF", STATE_GENERATION_OFF),
        ("STATE_RANGE_START_OFF", STATE_RANGE_START_OFF),
        ("STATE_RANGE_END_OFF", STATE_RANGE_END_OFF),
        ("STATE_BLOCK_SIZE_OFF", STATE_BLOCK_SIZE_OFF),
        ("STATE_HISTORY_COUNT_OFF", STATE_HISTORY_COUNT_OFF),
        ("STATE_DEST_COUNT_OFF", STATE_DEST_COUNT_OFF),
        ("STATE_APPLIED_COUNT_OFF", STATE_APPLIED_COUNT_OFF),
        ("STATE_RESERVED_OFF", STATE_RESERVED_OFF),
        ("STATE_FIXED_LEN", STATE_FIXED_LEN),
        ("DEST_TIMELINE_OFF", DEST_TIMELINE_OFF),
        ("DEST_EPOCH_OFF", DEST_EPOCH_OFF),
        ("DEST_LAST_EXPORT_OFF", DEST_LAST_EXPORT_OFF),
        ("DEST_NAME_LEN_OFF", DEST_NAME_LEN_OFF),
        ("DEST_FIXED_LEN", DEST_FIXED_LEN),
        ("APPLIED_PACKET_ID_OFF", APPLIED_PACKET_ID_OFF),
        ("APPLIED_TIMELINE_OFF", APPLIED_TIMELINE_OFF),
        ("APPLIED_BASE_EPOCH_OFF", APPLIED_BASE_EPOCH_OFF),
        ("APPLIED_NEW_EPOCH_OFF", APPLIED_NEW_EPOCH_OFF),
        ("APPLIED_RESERVED_OFF", APPLIED_RESERVED_OFF),
        ("APPLIED_AT_OFF", APPLIED_AT_OFF),
        ("APPLIED_DIGEST_OFF", APPLIED_DIGEST_OFF),
        ("ENTRY_STAMP_OFF", ENTRY_STAMP_OFF),
        ("RWD_MAGIC_OFF", RWD_MAGIC_OFF),
        ("RWD_VERSION_OFF", RWD_VERSION_OFF),
        ("RWD_FLAGS_OFF", RWD_FLAGS_OFF),
        ("RWD_RESERVED_OFF", RWD_RESERVED_OFF),
        ("RWD_LEN_OFF", RWD_LEN_OFF),
        ("RWD_POOLSET_UUID_OFF", RWD_POOLSET_UUID_OFF),
        ("RWD_LINEAGE_OFF", RWD_LINEAGE_OFF),
        ("RWD_TIMELINE_OFF", RWD_TIMELINE_OFF),
        ("RWD_EPOCH_OFF", RWD_EPOCH_OFF),
        ("RWD_BLOCK_SIZE_OFF", RWD_BLOCK_SIZE_OFF),
        ("RWD_RANGE_COUNT_OFF", RWD_RANGE_COUNT_OFF),
        ("RWD_CREATED_OFF", RWD_CREATED_OFF),
        ("RWD_HISTORY_COUNT_OFF", RWD_HISTORY_COUNT_OFF),
        ("RWD_NAME_LEN_OFF", RWD_NAME_LEN_OFF),
        ("RWD_RESERVED2_OFF", RWD_RESERVED2_OFF),
        ("RWD_FIXED_LEN", RWD_FIXED_LEN),
    ];
    list.iter().copied().collect()
}

#[test]
fn the_format_document_gives_every_offset_the_code_uses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/packet.md");
    let doc = std::fs::read_to_string(path).expect("reading docs/packet.md");
    let constants = constants();
    let mut seen = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| offset | ... | constants |": cells[0] is empty before the first bar.
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
                    "docs/packet.md gives {name} as {offset}: {line}"
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
        "not in a table of docs/packet.md: {missing:?}"
    );
}

#[test]
fn the_documented_bounds_are_the_code_s() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/packet.md"))
        .unwrap();
    for (name, value) in [
        ("FILE_HEADER_MAX_LEN", FILE_HEADER_MAX_LEN.to_string()),
        ("STATE_HEAD_MAX_LEN", STATE_HEAD_MAX_LEN.to_string()),
        ("REWIND_MAX_LEN", REWIND_MAX_LEN.to_string()),
    ] {
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("{name} has no row in docs/packet.md"));
        assert!(
            row.contains(&format!("| {value} bytes |")),
            "{name} = {value}: {row}"
        );
    }
}

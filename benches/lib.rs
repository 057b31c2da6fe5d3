//! Inputs shared by the poolsync benchmarks; the benchmarks themselves
//! live in `benches/` and run with `cargo xtask bench`.
//!
//! Inputs are built in code, not read from files, so that every run
//! measures the same bytes on every machine.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

/// Pool set text with `replicas` local replicas of `parts` parts each (16
/// MiB per part, absolute paths under `/mnt/pmem<replica>/`), the way a
/// large deployment writes it: a comment before each replica and a trailing
/// comment on its first part.
pub fn pool_set_text(replicas: usize, parts: usize) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    for replica in 0..replicas {
        if replica > 0 {
            text.push_str("REPLICA\n");
        }
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# replica {replica}");
        for part in 0..parts {
            let _ = write!(text, "16M /mnt/pmem{replica}/pool.part{part}");
            text.push_str(if part == 0 { " # first part\n" } else { "\n" });
        }
    }
    text
}

/// A 4 KiB pool header page with varied, non-zero contents (a checksum of
/// zeroes would not exercise the arithmetic).
pub fn header_page() -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_pool_set_parses_with_every_replica_and_part() {
        let set = poolsync_poolset::parse(&pool_set_text(100, 3)).expect("generated text parses");
        assert_eq!(set.replicas.len(), 100);
        assert!(set.replicas.iter().all(|r| r.parts().len() == 3));
    }

    #[test]
    fn the_header_page_is_a_page_of_varied_bytes() {
        let page = header_page();
        assert_eq!(page.len(), 4096);
        assert!(page.windows(2).filter(|w| w[0] != w[1]).count() > 4000);
    }
}

//! `--max-size` values.

use poolsync_packet::{parse_max_size, MAX_MAX_SIZE, MIN_MAX_SIZE};
use proptest::prelude::*;

proptest! {
    #[test]
    fn whole_numbers_scale_by_their_unit(n in 1u64..2_000_000, unit in 0usize..6) {
        let (letter, shift) = [("k", 10), ("m", 20), ("g", 30), ("K", 10), ("M", 20), ("G", 30)][unit];
        let bytes = u128::from(n) << shift;
        let parsed = parse_max_size(&format!("{n}{letter}"));
        if bytes < u128::from(MIN_MAX_SIZE) || bytes > u128::from(MAX_MAX_SIZE) {
            prop_assert!(parsed.is_err());
        } else {
            prop_assert_eq!(u128::from(parsed.unwrap()), bytes);
        }
    }

    #[test]
    fn fractions_round_down_to_bytes(whole in 0u64..100, frac in "[0-9]{1,6}", unit in 0usize..3) {
        let (letter, shift) = [("k", 10u32), ("m", 20), ("g", 30)][unit];
        let scale = 10u128.pow(frac.len() as u32);
        let exact = ((u128::from(whole) * scale + frac.parse::<u128>().unwrap()) << shift) / scale;
        match parse_max_size(&format!("{whole}.{frac}{letter}")) {
            Ok(bytes) => prop_assert_eq!(u128::from(bytes), exact),
            Err(_) => prop_assert!(exact < u128::from(MIN_MAX_SIZE) || exact > u128::from(MAX_MAX_SIZE)),
        }
    }

    #[test]
    fn anything_never_panics(text in ".{0,30}") {
        let _ = parse_max_size(&text);
    }
}

//! `--max-size` values, written as ClearCase MultiSite's `-maxsize` takes them.
//!
//! A value is a decimal number, which may have a fraction, followed by one
//! unit letter: `k`, `m` or `g` for KiB, MiB or GiB (1024-based; upper case
//! is accepted too). The result is rounded down to whole bytes:
//! `1.5g` is 1610612736 bytes. Nothing else is accepted: no sign, no
//! exponent, no spaces, no bare byte count.

use crate::Error;

/// The default maximum size of one physical packet file: MultiSite's
/// default `2097151k`, just under 2 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 2_097_151 * 1024;

/// The smallest maximum size accepted (64 KiB): a file must hold its header
/// (at most [`crate::FILE_HEADER_MAX_LEN`] bytes), one record and its
/// trailer.
pub const MIN_MAX_SIZE: u64 = 64 * 1024;

/// The largest maximum size accepted (1 TiB).
pub const MAX_MAX_SIZE: u64 = 1 << 40;

/// Digits accepted on either side of the decimal point; more cannot change
/// a byte count of at most [`MAX_MAX_SIZE`] meaningfully and would only risk
/// overflow.
const MAX_DIGITS: usize = 18;

/// Parses a `--max-size` value such as `500k`, `20m` or `1.5g`.
///
/// ```
/// use poolsync_packet::parse_max_size;
/// assert_eq!(parse_max_size("500k")?, 500 * 1024);
/// assert_eq!(parse_max_size("20m")?, 20 << 20);
/// assert_eq!(parse_max_size("1.5g")?, 3 << 29);
/// assert!(parse_max_size("20").is_err());
/// # Ok::<(), poolsync_packet::Error>(())
/// ```
pub fn parse_max_size(text: &str) -> Result<u64, Error> {
    let fail = |problem: &'static str| Error::MaxSize {
        text: text.to_owned(),
        problem,
    };
    let Some(unit) = text.chars().last() else {
        return Err(fail("empty; expected a number followed by k, m or g"));
    };
    let shift = match unit {
        'k' | 'K' => 10,
        'm' | 'M' => 20,
        'g' | 'G' => 30,
        c if c.is_ascii_digit() => {
            return Err(fail("no unit; add k, m or g (for example 500k, 20m, 1.5g)"))
        }
        _ => return Err(fail("unknown unit; expected k, m or g")),
    };
    let number = &text[..text.len() - unit.len_utf8()];
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    if whole.is_empty() {
        return Err(fail("expected digits before the unit"));
    }
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(whole) {
        return Err(fail("expected a decimal number such as 500 or 1.5"));
    }
    let fraction = fraction.unwrap_or_default();
    if number.contains('.') && fraction.is_empty() {
        return Err(fail("expected digits after the decimal point"));
    }
    if !digits_only(fraction) {
        return Err(fail("expected a decimal number such as 500 or 1.5"));
    }
    if whole.len() > MAX_DIGITS || fraction.len() > MAX_DIGITS {
        return Err(fail("too many digits"));
    }
    // value = (whole . fraction) * 2^shift, exactly, then rounded down.
    // With at most 18 digits on each side `scaled` is below 10^36; the
    // product overflows only for values far above MAX_MAX_SIZE.
    let parse = |s: &str| s.parse::<u128>().unwrap_or(0);
    let scale = 10u128.pow(fraction.len() as u32);
    let scaled = parse(whole) * scale
        + if fraction.is_empty() {
            0
        } else {
            parse(fraction)
        };
    let bytes = scaled
        .checked_mul(1 << shift)
        .map_or(u128::MAX, |v| v / scale);
    if bytes < u128::from(MIN_MAX_SIZE) {
        return Err(fail("below the minimum of 64k"));
    }
    if bytes > u128::from(MAX_MAX_SIZE) {
        return Err(fail("above the maximum of 1024g"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multisite_forms() {
        assert_eq!(parse_max_size("2097151k").unwrap(), DEFAULT_MAX_SIZE);
        assert_eq!(parse_max_size("64k").unwrap(), 65536);
        assert_eq!(parse_max_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_max_size("0.5m").unwrap(), 512 * 1024);
        assert_eq!(parse_max_size("1.25m").unwrap(), 1_310_720);
        // 0.1 MiB is 104857.6 bytes: rounded down.
        assert_eq!(parse_max_size("0.1m").unwrap(), 104_857);
        assert_eq!(parse_max_size("1024g").unwrap(), MAX_MAX_SIZE);
        assert_eq!(parse_max_size("007m").unwrap(), 7 << 20);
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("", "empty"),
            ("20", "no unit"),
            ("20b", "unknown unit"),
            ("20mb", "unknown unit"),
            ("m", "digits before"),
            (".5g", "digits before"),
            ("1.g", "after the decimal point"),
            ("-1m", "decimal number"),
            ("+1m", "decimal number"),
            ("1 m", "decimal number"),
            ("1.2.3m", "decimal number"),
            ("1e3k", "decimal number"),
            ("63k", "minimum"),
            ("0k", "minimum"),
            ("1025g", "maximum"),
            ("9999999999999999999g", "too many digits"),
            ("999999999999999999.999999999999999999g", "maximum"),
            ("999999999999999999.999999999999999999k", "maximum"),
            ("0.000000000000000001k", "minimum"),
            ("1.5\u{e9}", "unknown unit"),
        ];
        for (text, why) in cases {
            let err = parse_max_size(text).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(why), "{text:?}: {message}");
            assert!(message.contains(&format!("\"{text}\"")), "{message}");
        }
    }
}

//! The formatter: a [`PoolSet`] back to pool set text.

use std::fmt::Write as _;

use crate::{PartSize, PoolSet, Replica, SIGNATURE};

/// Binary units from the largest down, as the formatter writes them.
const BINARY_UNITS: [(char, u32); 5] = [('P', 50), ('T', 40), ('G', 30), ('M', 20), ('K', 10)];

impl PoolSet {
    /// Writes the set as pool set text that [`parse`](crate::parse) turns back
    /// into an equal set (line numbers aside).
    ///
    /// The layout is canonical: the `PMEMPOOLSET` line, one `OPTION` line if
    /// any option is set, then the replicas, every line ending in LF. Sizes
    /// use the largest binary unit that divides them exactly (`20M`, `3G`,
    /// `4097`), `AUTO` stays `AUTO`. A token that ends in CR gets a trailing
    /// blank so that the line end is not read as CR LF.
    ///
    /// Every set [`parse`](crate::parse) returns can be written. A set built in
    /// code can hold things no pool set text expresses (a zero size, an empty
    /// or remote replica 0, an empty local replica, a path that is relative or
    /// contains a blank, `#`, a newline or a NUL); the text written for it
    /// then does not parse, or parses differently.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(SIGNATURE);
        out.push('\n');
        if self.options.single_hdr || self.options.no_hdrs {
            out.push_str("OPTION");
            if self.options.single_hdr {
                out.push_str(" SINGLEHDR");
            }
            if self.options.no_hdrs {
                out.push_str(" NOHDRS");
            }
            out.push('\n');
        }
        for (index, replica) in self.replicas.iter().enumerate() {
            match replica {
                Replica::Local { parts, .. } => {
                    // Replica 0 is opened by the `PMEMPOOLSET` line itself.
                    if index > 0 {
                        out.push_str("REPLICA\n");
                    }
                    for part in parts {
                        push_line(&mut out, &[&format_size(part.size), &part.path]);
                    }
                }
                Replica::Remote {
                    node, descriptor, ..
                } => push_line(&mut out, &["REPLICA", node, descriptor]),
            }
        }
        out
    }
}

/// Writes blank-separated tokens and the line end.
fn push_line(out: &mut String, tokens: &[&str]) {
    out.push_str(&tokens.join(" "));
    // PMDK turns a final CR LF into LF, which would eat a CR that belongs to
    // the last token; a trailing blank keeps it.
    if out.ends_with('\r') {
        out.push(' ');
    }
    out.push('\n');
}

/// A size as the formatter writes it: `AUTO`, or the number of bytes with the
/// largest binary unit that divides it exactly.
pub(crate) fn format_size(size: PartSize) -> String {
    let PartSize::Bytes(bytes) = size else {
        return "AUTO".to_owned();
    };
    let mut text = String::new();
    let unit = BINARY_UNITS
        .iter()
        .find(|&&(_, shift)| bytes != 0 && bytes.trailing_zeros() >= shift);
    // Writing into a String cannot fail.
    let _ = match unit {
        Some(&(name, shift)) => write!(text, "{}{name}", bytes >> shift),
        None => write!(text, "{bytes}"),
    };
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_size;

    #[test]
    fn sizes_use_the_largest_exact_binary_unit() {
        let cases = [
            (20 << 20, "20M"),
            (1 << 10, "1K"),
            (3 << 30, "3G"),
            (1536 << 20, "1536M"),
            (5 << 40, "5T"),
            (16383 << 50, "16383P"),
            (4097, "4097"),
            (17_000_000, "17000000"),
            (u64::MAX, "18446744073709551615"),
            (0, "0"),
        ];
        for (bytes, text) in cases {
            assert_eq!(format_size(PartSize::Bytes(bytes)), text);
            if bytes != 0 {
                assert_eq!(parse_size(text), Some(bytes));
            }
        }
        assert_eq!(format_size(PartSize::Auto), "AUTO");
    }
}

//! The pool set parser: PMDK 1.12.1's `util_poolset_parse` (docs/format.md §13),
//! including its line reader.

use crate::{Error, Hint, Options, ParseReason, Part, PartSize, PoolSet, Replica, SIGNATURE};

/// `PARSER_MAX_LINE` on Linux: `PATH_MAX + 1024`, the first buffer size of
/// PMDK's line reader.
const FIRST_BUFFER: usize = 4096 + 1024;

/// Parses pool set text the way PMDK 1.12.1 does (docs/format.md §13).
///
/// Every text PMDK's parser accepts is accepted with the same meaning, and
/// every text it rejects is rejected with the same [`ParseReason`] at the
/// same line, with these deliberate differences:
/// * `AUTO` sizes are accepted whatever the path; PMDK probes the path at
///   parse time and rejects anything but a Device DAX ("cannot determine size
///   of a part"). The engine does that check.
/// * A size with a leading `-` (which PMDK wraps to a huge number and rejects
///   only when it creates the file) and a size that does not fit in 64 bits,
///   in its digits or after applying the unit (PMDK saturates or wraps
///   silently), are rejected with "incorrect format of size". Sizes are read
///   by [`parse_size`], C whitespace quirks included.
/// * Empty text is a first-line error here; PMDK fails to read it instead.
///
/// PMDK's line reader is reproduced byte for byte, quirks included, so that
/// a set file means here what it means to PMDK: a CR LF line end becomes LF
/// (a lone CR is an ordinary character); a NUL character ends the text of the
/// buffer chunk it is in, so the rest of that chunk is dropped and the line
/// continues with whatever follows; and lines longer than 2559 bytes are read
/// in chunks, which matters only for their CR LF handling and for a last line
/// without newline that ends exactly on a chunk boundary (PMDK ignores it).
///
/// Text that is not a pool set at all gets the first-line error; [`is_poolset`](crate::is_poolset)
/// tells a pool set file from a single-file pool before parsing.
pub fn parse(text: &str) -> Result<PoolSet, Error> {
    let mut reader = LineReader::new(text.as_bytes());

    let first = reader.next_line();
    let signature_ok = first.as_deref().is_some_and(|line| {
        line.strip_prefix(SIGNATURE.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'\n'))
    });
    if !signature_ok {
        return Err(parse_error(1, ParseReason::FirstLine, None));
    }

    let mut set = PoolSet {
        options: Options::default(),
        replicas: vec![Replica::Local {
            parts: Vec::new(),
            line: 1,
        }],
    };
    // Parts of the last *local* replica section, as PMDK counts them: a remote
    // replica does not reset the count.
    let mut nparts = 0usize;
    let mut line_no = 1usize;

    loop {
        let raw = reader.next_line();
        line_no += 1;
        let Some(mut line) = raw else {
            if nparts >= 1 {
                return Ok(set);
            }
            return Err(parse_error(line_no, no_parts_reason(&set), None));
        };

        // Chop the newline, then the comment; a line that is empty or starts
        // with `#` is skipped, but one that only becomes blank is not.
        if let Some(newline) = find(&line, b'\n') {
            if newline == 0 {
                continue;
            }
            line.truncate(newline);
        }
        if let Some(hash) = find(&line, b'#') {
            if hash == 0 {
                continue;
            }
            line.truncate(hash);
        }

        let at = |reason| parse_error(line_no, reason, hint(reason, &line));
        if let Some(rest) = line.strip_prefix(b"OPTION") {
            parse_options(rest, &mut set.options).map_err(at)?;
        } else if let Some(rest) = line.strip_prefix(b"REPLICA") {
            match rest.first() {
                None if nparts >= 1 => {
                    set.replicas.push(Replica::Local {
                        parts: Vec::new(),
                        line: line_no,
                    });
                    nparts = 0;
                }
                None => return Err(at(no_parts_reason(&set))),
                Some(&c) if !is_blank(c) => return Err(at(ParseReason::ReplicaExpected)),
                Some(_) => {
                    let (node, descriptor) = parse_remote(rest).map_err(at)?;
                    set.replicas.push(Replica::Remote {
                        node,
                        descriptor,
                        line: line_no,
                    });
                }
            }
        } else {
            match set.replicas.last_mut() {
                Some(Replica::Local { parts, .. }) => {
                    let (size, path) = parse_part(&line).map_err(at)?;
                    parts.push(Part {
                        size,
                        path,
                        line: line_no,
                    });
                    nparts += 1;
                }
                _ => return Err(at(ParseReason::UnexpectedRemoteParts)),
            }
        }
    }
}

fn parse_error(line: usize, reason: ParseReason, hint: Option<Hint>) -> Error {
    Error::Parse { line, reason, hint }
}

/// What the rejected `line` (newline and comment removed) shows was meant:
/// a misspelled keyword, or a size with an unknown unit.
fn hint(reason: ParseReason, line: &[u8]) -> Option<Hint> {
    match reason {
        ParseReason::SizeFormat => Some(Hint::SizeUnits),
        ParseReason::InvalidToken | ParseReason::RelativePath => {
            let first = tokens(line).next()?;
            close_keyword(first, &["REPLICA", "OPTION"])
        }
        ParseReason::UnknownOption => {
            let rest = line.strip_prefix(b"OPTION")?;
            let unknown = tokens(rest).find(|t| *t != b"SINGLEHDR" && *t != b"NOHDRS")?;
            close_keyword(unknown, &["SINGLEHDR", "NOHDRS"])
        }
        _ => None,
    }
}

/// The keyword `token` is a misspelling of: case ignored, at most two
/// edits away (a third of the keyword's length for long ones).
fn close_keyword(token: &[u8], keywords: &[&'static str]) -> Option<Hint> {
    let token = String::from_utf8_lossy(token).to_ascii_uppercase();
    keywords
        .iter()
        .map(|k| (edit_distance(&token, k), *k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| Hint::DidYouMean(k))
}

/// Levenshtein distance, where swapping two neighbouring characters counts
/// as one edit (`REPLCIA` is one edit from `REPLICA`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows of the classic table: the one before last, the last, the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
        }
        before = std::mem::replace(&mut last, row);
    }
    last[b.len()]
}

/// How to make `text`, which lacks the `PMEMPOOLSET` first line, a pool
/// set that [`parse`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFix {
    /// Add a `PMEMPOOLSET` line before the text.
    Insert,
    /// Replace the first line, which holds this, by `PMEMPOOLSET`.
    Replace {
        /// The first line as written (without its line end).
        first_line: String,
    },
}

/// For text that does not start with `PMEMPOOLSET` (so PMDK, and poolsync,
/// take the file for a single-file pool): the one change of its first line
/// that makes it a valid pool set, if there is one. Used to explain why a
/// file meant as a pool set is not read as one; it never changes how a
/// file is classified.
pub fn signature_fix(text: &str) -> Option<SignatureFix> {
    if crate::is_poolset(text.as_bytes()) || text.contains('\0') {
        return None;
    }
    if parse(&format!("{SIGNATURE}\n{text}")).is_ok() {
        return Some(SignatureFix::Insert);
    }
    let (first, rest) = text.split_once('\n')?;
    parse(&format!("{SIGNATURE}\n{rest}"))
        .is_ok()
        .then(|| SignatureFix::Replace {
            first_line: first.strip_suffix('\r').unwrap_or(first).to_string(),
        })
}

/// "no pool set parts" while replica 0 is the only replica, else "no replica
/// parts" (remote replicas count).
fn no_parts_reason(set: &PoolSet) -> ParseReason {
    if set.replicas.len() == 1 {
        ParseReason::NoParts
    } else {
        ParseReason::NoReplicaParts
    }
}

fn find(bytes: &[u8], wanted: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == wanted)
}

/// C's `isblank`: the token separators of every pool set line.
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// C's `isspace` in the C locale, which `sscanf` skips inside a size token.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The tokens of a line as `strtok(line, " \t")` returns them.
fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&c| is_blank(c)).filter(|t| !t.is_empty())
}

/// Text of a token. Tokens are UTF-8 unless the NUL rule of the line reader
/// cut a character in two; such bytes become U+FFFD.
fn token_text(token: &[u8]) -> String {
    String::from_utf8_lossy(token).into_owned()
}

fn parse_options(rest: &[u8], options: &mut Options) -> Result<(), ParseReason> {
    let mut count = 0usize;
    for token in tokens(rest) {
        match token {
            b"SINGLEHDR" => options.single_hdr = true,
            b"NOHDRS" => options.no_hdrs = true,
            _ => return Err(ParseReason::UnknownOption),
        }
        count += 1;
    }
    if count == 0 {
        return Err(ParseReason::MissingOptionName);
    }
    Ok(())
}

fn parse_remote(rest: &[u8]) -> Result<(String, String), ParseReason> {
    let mut tokens = tokens(rest);
    let (Some(node), Some(descriptor)) = (tokens.next(), tokens.next()) else {
        return Err(ParseReason::RemoteAddress);
    };
    if tokens.next().is_some() {
        return Err(ParseReason::InvalidToken);
    }
    if descriptor.first() == Some(&b'/') {
        return Err(ParseReason::AbsoluteDescriptor);
    }
    Ok((token_text(node), token_text(descriptor)))
}

fn parse_part(line: &[u8]) -> Result<(PartSize, String), ParseReason> {
    let mut tokens = tokens(line);
    let (Some(size), Some(path), None) = (tokens.next(), tokens.next(), tokens.next()) else {
        return Err(ParseReason::InvalidToken);
    };
    // PMDK checks the path before the size.
    if path.first() != Some(&b'/') {
        return Err(ParseReason::RelativePath);
    }
    let size = if size == b"AUTO" {
        PartSize::Auto
    } else {
        match parse_size_bytes(size) {
            Some(bytes) if bytes != 0 => PartSize::Bytes(bytes),
            _ => return Err(ParseReason::SizeFormat),
        }
    };
    Ok((size, token_text(path)))
}

/// The units PMDK's `util_parse_size` knows, matched exactly.
const UNITS: [(&[u8], u64); 16] = [
    (b"B", 1),
    (b"K", 1 << 10),
    (b"M", 1 << 20),
    (b"G", 1 << 30),
    (b"T", 1 << 40),
    (b"P", 1 << 50),
    (b"KiB", 1 << 10),
    (b"MiB", 1 << 20),
    (b"GiB", 1 << 30),
    (b"TiB", 1 << 40),
    (b"PiB", 1 << 50),
    (b"kB", 1_000),
    (b"MB", 1_000_000),
    (b"GB", 1_000_000_000),
    (b"TB", 1_000_000_000_000),
    (b"PB", 1_000_000_000_000_000),
];

/// Parses a size the way PMDK's `util_parse_size` does (`sscanf("%zu%8s")`),
/// for part lines and for command-line sizes such as `pmempool create -s`.
///
/// The text is optional C whitespace, an optional `+`, decimal digits,
/// optional C whitespace, then an optional unit of at most 8 non-space
/// characters that must be one of PMDK's units exactly (`B`, `K`…`P`,
/// `KiB`…`PiB`, `kB`…`PB`); anything after the unit's first whitespace is
/// ignored, as `sscanf` ignores it. Zero is returned as `Some(0)`: callers
/// decide whether it is allowed (part lines and `pmempool create -s` reject
/// it).
///
/// `None` for anything else, and, unlike PMDK, for a leading `-` (PMDK
/// negates modulo 2^64) and for values that do not fit in 64 bits, in the
/// digits (PMDK saturates) or after applying the unit (PMDK wraps).
pub fn parse_size(text: &str) -> Option<u64> {
    parse_size_bytes(text.as_bytes())
}

fn parse_size_bytes(token: &[u8]) -> Option<u64> {
    let skip_space = |mut i: usize| {
        while token.get(i).copied().is_some_and(is_c_space) {
            i += 1;
        }
        i
    };

    let mut i = skip_space(0);
    match token.get(i) {
        Some(b'+') => i += 1,
        // PMDK negates the value modulo 2^64; we refuse it (see `parse`).
        Some(b'-') => return None,
        _ => {}
    }
    let digits_start = i;
    let mut value: u64 = 0;
    while let Some(&digit) = token.get(i).filter(|c| c.is_ascii_digit()) {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        i += 1;
    }
    if i == digits_start {
        return None;
    }

    let unit_start = skip_space(i);
    let unit = token.get(unit_start..).unwrap_or_default();
    let unit_len = unit.iter().take(8).take_while(|&&c| !is_c_space(c)).count();
    let unit = unit.get(..unit_len).unwrap_or_default();
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS.iter().find(|(name, _)| *name == unit)?.1
    };
    value.checked_mul(multiplier)
}

/// PMDK's `util_readline`, reproduced byte for byte.
///
/// PMDK reads a line with `fgets` into a buffer of `PATH_MAX + 1024` bytes,
/// asking for half the buffer each time and doubling it until the chunk read
/// ends with a newline or the file ends. Each chunk is measured with
/// `strlen`, so a NUL hides the rest of its chunk, and each chunk has a final
/// CR LF turned into LF on its own. A read that finds the file already at its
/// end returns no line at all, even when earlier chunks of the same line were
/// read.
struct LineReader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> LineReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        LineReader { input, pos: 0 }
    }

    /// The next line with its newline (if any), or `None` at end of input.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        let mut buffer = FIRST_BUFFER;
        loop {
            let rest = self.input.get(self.pos..).unwrap_or_default();
            if rest.is_empty() {
                return None;
            }
            // `fgets(s, n)` reads at most n - 1 bytes, up to and including a
            // newline.
            let max = (buffer / 2).saturating_sub(1).max(1);
            let window = rest.get(..max).unwrap_or(rest);
            let len = find(window, b'\n').map_or(window.len(), |newline| newline + 1);
            let chunk = window.get(..len).unwrap_or(window);
            self.pos += len;
            // `fgets` stopped because the input ended, which sets `feof`.
            let at_eof = len < max && chunk.last() != Some(&b'\n');

            let visible = chunk.get(..find(chunk, 0).unwrap_or(len)).unwrap_or(chunk);
            match visible.strip_suffix(b"\r\n") {
                Some(body) => {
                    line.extend_from_slice(body);
                    line.push(b'\n');
                }
                None => line.extend_from_slice(visible),
            }
            buffer = buffer.saturating_mul(2);

            if at_eof || line.last() == Some(&b'\n') {
                return Some(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &str) -> Vec<Vec<u8>> {
        let mut reader = LineReader::new(input.as_bytes());
        std::iter::from_fn(|| reader.next_line()).collect()
    }

    #[test]
    fn reader_splits_lines_and_normalises_crlf() {
        assert_eq!(lines("a\r\nb\rc\nd"), [&b"a\n"[..], b"b\rc\n", b"d"]);
        assert!(lines("").is_empty());
        assert_eq!(lines("\n\n"), [b"\n", b"\n"]);
    }

    #[test]
    fn reader_drops_the_chunk_rest_after_nul() {
        assert_eq!(lines("ab\0cd\nef\ngh\n"), [&b"abef\n"[..], b"gh\n"]);
        assert_eq!(lines("\0x\nab\n"), [b"ab\n"]);
        assert_eq!(lines("ab\0cd"), [b"ab"]);
    }

    #[test]
    fn reader_chunk_boundaries() {
        let first = FIRST_BUFFER / 2 - 1;
        // A last line without newline that fills the first chunk exactly is lost.
        let exact = "x".repeat(first);
        assert!(lines(&exact).is_empty());
        assert_eq!(
            lines(&format!("{exact}y")),
            [format!("{exact}y").into_bytes()]
        );
        // The second chunk is 5119 bytes.
        let two = "x".repeat(first + FIRST_BUFFER - 1);
        assert!(lines(&two).is_empty());
        assert_eq!(
            lines(&format!("{two}\n")),
            [format!("{two}\n").into_bytes()]
        );
        // CR LF split over two chunks keeps the CR.
        let cr = format!("{}\r\n", "x".repeat(first - 1));
        assert_eq!(lines(&cr), [cr.clone().into_bytes()]);
        let crlf = format!("{}\r\n", "x".repeat(first - 2));
        assert_eq!(
            lines(&crlf),
            [format!("{}\n", "x".repeat(first - 2)).into_bytes()]
        );
    }

    #[test]
    fn sizes_follow_sscanf() {
        let ok = [
            ("16M", 16 << 20),
            ("0016M", 16 << 20),
            ("+16M", 16 << 20),
            ("16MiB", 16 << 20),
            ("16777216", 16 << 20),
            ("16777216B", 16 << 20),
            ("16777kB", 16_777_000),
            ("17MB", 17_000_000),
            ("1P", 1 << 50),
            ("3PB", 3_000_000_000_000_000),
            ("2TiB", 2 << 40),
            ("\x0b8M", 8 << 20),
            ("8\rM", 8 << 20),
            ("8M\r", 8 << 20),
            ("8M\x0cjunk", 8 << 20),
            ("8\r", 8),
            ("18446744073709551615", u64::MAX),
            ("16383P", 16383 << 50),
            ("0", 0),
            ("0M", 0),
        ];
        for (token, want) in ok {
            assert_eq!(parse_size(token), Some(want), "{token:?}");
        }
        let bad = [
            "",
            "\r",
            "M",
            "+",
            "+M",
            "-8M",
            "-0",
            "--8",
            "+-8",
            "16m",
            "16k",
            "16KB",
            "16Mi",
            "1.5G",
            "0x1000000",
            "8MMMMMMMM",
            "18446744073709551616",
            "16384P",
            "99999999999999999999999",
        ];
        for token in bad {
            assert_eq!(parse_size(token), None, "{token:?}");
        }
    }
}

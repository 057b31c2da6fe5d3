//! Integration tests of poolsync-poolset: a table of pool set texts with the
//! results PMDK 1.12.1 gives them, property tests of the formatter round trip
//! and of the address-space map, and a check of the table against the real
//! `pmempool` (ignored by default because it needs PMDK installed).

use poolsync_poolset::{
    map_range, page_align_down, parse, parse_size, signature_fix, Error, Hint, ParseReason, Part,
    PartSize, PoolSet, Replica, SignatureFix, OBJ_MIN_PART, OBJ_MIN_POOL, SIZE_UNITS_HELP,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The table.

/// What our parser must return.
enum Want {
    /// Accepted, with this [`shape`].
    Ok(String),
    /// Rejected at this line for this reason.
    Err(usize, ParseReason),
}

/// What PMDK 1.12.1's parser does with the same text, where it differs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pmdk {
    /// The same as `Want`.
    Same,
    /// Its parser accepts the text (we reject it deliberately).
    Accepts,
    /// It reports this reason at this line (we accept: `AUTO` needs I/O).
    Reports(&'static str, usize),
    /// The text is not a pool set file to PMDK at all (no `PMEMPOOLSET`
    /// prefix), so `pmempool` treats it as a single-file pool.
    NotASet,
}

struct Case {
    text: String,
    want: Want,
    pmdk: Pmdk,
}

fn ok(text: &str, shape: &str) -> Case {
    Case {
        text: text.to_owned(),
        want: Want::Ok(shape.to_owned()),
        pmdk: Pmdk::Same,
    }
}

fn err(text: &str, line: usize, reason: ParseReason) -> Case {
    Case {
        text: text.to_owned(),
        want: Want::Err(line, reason),
        pmdk: Pmdk::Same,
    }
}

impl Case {
    fn pmdk(mut self, pmdk: Pmdk) -> Case {
        self.pmdk = pmdk;
        self
    }

    /// Puts the directory `dir` where the case says `{D}`.
    fn at(mut self, dir: &str) -> Case {
        self.text = self.text.replace("{D}", dir);
        if let Want::Ok(shape) = &mut self.want {
            *shape = shape.replace("{D}", dir);
        }
        self
    }
}

/// A compact, complete description of a set, line numbers included:
/// options, then `L<line>[<line>:<size> <path>; …]` for a local replica and
/// `R<line>[<node> <descriptor>]` for a remote one.
fn shape(set: &PoolSet) -> String {
    let mut out = Vec::new();
    if set.options.single_hdr {
        out.push("SINGLEHDR".to_owned());
    }
    if set.options.no_hdrs {
        out.push("NOHDRS".to_owned());
    }
    for replica in &set.replicas {
        out.push(match replica {
            Replica::Local { parts, line } => {
                let parts: Vec<String> = parts
                    .iter()
                    .map(|p| {
                        let size = match p.size {
                            PartSize::Bytes(b) => b.to_string(),
                            PartSize::Auto => "AUTO".to_owned(),
                        };
                        format!("{}:{size} {}", p.line, p.path.escape_debug())
                    })
                    .collect();
                format!("L{line}[{}]", parts.join("; "))
            }
            Replica::Remote {
                node,
                descriptor,
                line,
            } => format!(
                "R{line}[{} {}]",
                node.escape_debug(),
                descriptor.escape_debug()
            ),
        });
    }
    out.join(" ")
}

/// PMDK's line reader takes the first 2559 bytes of a line, then 5119.
const FIRST_CHUNK: usize = 2559;
const SECOND_CHUNK: usize = 5119;

/// A part line of exactly `total` bytes (newline not counted) for a file in
/// `dir`, padded with `/.` so that the path stays valid, ending in `name`.
fn long_part(dir: &str, total: usize, name: &str) -> String {
    let head = format!("8M {dir}");
    let fixed = head.len() + 1 + name.len();
    let pad = total - fixed;
    let mut line = head;
    line.push_str(&"/.".repeat(pad / 2));
    if pad % 2 == 1 {
        line.push('/');
    }
    line.push('/');
    line.push_str(name);
    assert_eq!(line.len(), total);
    line
}

fn shape_path(line: &str) -> String {
    line.trim_start_matches("8M ").escape_debug().to_string()
}

/// Every parse rule of docs/format.md §13.2 to §13.7, for part files in `dir`.
/// Each case was checked against `pmempool create obj` 1.12.1
/// (`pmempool_agrees_with_the_table`).
fn cases(dir: &str) -> Vec<Case> {
    use ParseReason::*;
    let m8 = 8u64 << 20;
    let one = |size: u64| format!("L1[2:{size} {{D}}/a]");
    let mut cases = vec![
        // 1.3 first line.
        err("", 1, FirstLine).pmdk(Pmdk::NotASet),
        err("PMEMPOOLSET", 1, FirstLine),
        err("PMEMPOOLSETX\n8M {D}/a\n", 1, FirstLine),
        err("PMEMPOOLSET \n8M {D}/a\n", 1, FirstLine),
        err("PMEMPOOLSET#\n8M {D}/a\n", 1, FirstLine),
        err("PMEMPOOLSET\r8M {D}/a\n", 1, FirstLine),
        err("\nPMEMPOOLSET\n8M {D}/a\n", 1, FirstLine).pmdk(Pmdk::NotASet),
        err("pmempoolset\n8M {D}/a\n", 1, FirstLine).pmdk(Pmdk::NotASet),
        err("16M /a\n", 1, FirstLine).pmdk(Pmdk::NotASet),
        ok("PMEMPOOLSET\n8M {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\r\n8M {D}/a\r\n", &one(m8)),
        // 1.8 end of file.
        err("PMEMPOOLSET\n", 2, NoParts),
        err("PMEMPOOLSET\n\n# c\n", 4, NoParts),
        ok("PMEMPOOLSET\n8M {D}/a", &one(m8)),
        err("PMEMPOOLSET\n8M {D}/a\nREPLICA\n", 4, NoReplicaParts),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\n# only a comment",
            5,
            NoReplicaParts,
        ),
        // 1.4 comments and blank lines.
        ok("PMEMPOOLSET\n8M {D}/a # comment\n", &one(m8)),
        ok("PMEMPOOLSET\n8M {D}/a#comment\n", &one(m8)),
        ok(
            "PMEMPOOLSET\n# full line\n\n#\n8M {D}/a\n",
            "L1[5:8388608 {D}/a]",
        ),
        err("PMEMPOOLSET\n   \n8M {D}/a\n", 2, InvalidToken),
        err("PMEMPOOLSET\n\t\n8M {D}/a\n", 2, InvalidToken),
        err("PMEMPOOLSET\n   # x\n8M {D}/a\n", 2, InvalidToken),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA#x\n8M {D}/b\n",
            "L1[2:8388608 {D}/a] L3[4:8388608 {D}/b]",
        ),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA # x\n8M {D}/b\n",
            3,
            RemoteAddress,
        ),
        // 1.5 options.
        ok(
            "PMEMPOOLSET\nOPTION SINGLEHDR\n8M {D}/a\n",
            "SINGLEHDR L1[3:8388608 {D}/a]",
        ),
        ok(
            "PMEMPOOLSET\nOPTIONSINGLEHDR\n8M {D}/a\n",
            "SINGLEHDR L1[3:8388608 {D}/a]",
        ),
        ok(
            "PMEMPOOLSET\nOPTION\tSINGLEHDR\tSINGLEHDR # twice\n8M {D}/a\n",
            "SINGLEHDR L1[3:8388608 {D}/a]",
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nOPTION NOHDRS\n",
            "NOHDRS L1[2:8388608 {D}/a]",
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nOPTION SINGLEHDR NOHDRS\n",
            "SINGLEHDR NOHDRS L1[2:8388608 {D}/a]",
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\n8M {D}/b\nOPTION SINGLEHDR\n",
            "SINGLEHDR L1[2:8388608 {D}/a] L3[4:8388608 {D}/b]",
        ),
        err("PMEMPOOLSET\nOPTION\n8M {D}/a\n", 2, MissingOptionName),
        err(
            "PMEMPOOLSET\nOPTION   # c\n8M {D}/a\n",
            2,
            MissingOptionName,
        ),
        err(
            "PMEMPOOLSET\nOPTION singlehdr\n8M {D}/a\n",
            2,
            UnknownOption,
        ),
        err(
            "PMEMPOOLSET\nOPTION SINGLEHDR FOO\n8M {D}/a\n",
            2,
            UnknownOption,
        ),
        err("PMEMPOOLSET\nOPTIONS\n8M {D}/a\n", 2, UnknownOption),
        err(
            "PMEMPOOLSET\n OPTION SINGLEHDR\n8M {D}/a\n",
            2,
            RelativePath,
        ),
        // 1.6 replicas.
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICAS\n8M {D}/b\n",
            3,
            ReplicaExpected,
        ),
        err(
            "PMEMPOOLSET\n8M {D}/a\n REPLICA\n8M {D}/b\n",
            3,
            InvalidToken,
        ),
        err("PMEMPOOLSET\nREPLICA\n8M {D}/a\n", 2, NoParts),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\nREPLICA\n8M {D}/b\n",
            4,
            NoReplicaParts,
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host desc\n",
            "L1[2:8388608 {D}/a] R3[host desc]",
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\t user@host:2222 \t dir/pool.set \t# c\n",
            "L1[2:8388608 {D}/a] R3[user@host:2222 dir/pool.set]",
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host desc\nREPLICA\n8M {D}/b\nREPLICA h2 d2\n",
            "L1[2:8388608 {D}/a] R3[host desc] L4[5:8388608 {D}/b] R6[h2 d2]",
        ),
        ok(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host desc\nOPTION SINGLEHDR\n",
            "SINGLEHDR L1[2:8388608 {D}/a] R3[host desc]",
        ),
        err("PMEMPOOLSET\n8M {D}/a\nREPLICA host\n", 3, RemoteAddress),
        err("PMEMPOOLSET\n8M {D}/a\nREPLICA\t\n", 3, RemoteAddress),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host desc x\n",
            3,
            InvalidToken,
        ),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host /desc\n",
            3,
            AbsoluteDescriptor,
        ),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host desc\n8M {D}/b\n",
            4,
            UnexpectedRemoteParts,
        ),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA host desc\n   \n",
            4,
            UnexpectedRemoteParts,
        ),
        err("PMEMPOOLSET\nREPLICA host desc\n", 3, NoReplicaParts),
        err(
            "PMEMPOOLSET\nREPLICA host desc\nREPLICA\n8M {D}/b\n",
            3,
            NoReplicaParts,
        ),
        err(
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\nREPLICA host desc\n",
            5,
            NoReplicaParts,
        ),
        // 1.7 part lines: tokens and paths.
        err("PMEMPOOLSET\n8M\n", 2, InvalidToken),
        err("PMEMPOOLSET\n8M {D}/a {D}/b\n", 2, InvalidToken),
        ok("PMEMPOOLSET\n 8M\t\t{D}/a \n", &one(m8)),
        err("PMEMPOOLSET\n8M a\n", 2, RelativePath),
        err("PMEMPOOLSET\n8x a\n", 2, RelativePath),
        err("PMEMPOOLSET\nAUTO a\n", 2, RelativePath),
        ok("PMEMPOOLSET\nAUTO {D}/a\n", "L1[2:AUTO {D}/a]")
            .pmdk(Pmdk::Reports("cannot determine size of a part", 2)),
        ok(
            "PMEMPOOLSET\n8M {D}/a\n8M {D}/a\n",
            "L1[2:8388608 {D}/a; 3:8388608 {D}/a]",
        ),
        // 1.7 sizes that PMDK accepts.
        ok("PMEMPOOLSET\n00008M {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n+8M {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8MiB {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8388608 {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8388608B {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8192K {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8192KiB {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8389kB {D}/a\n", &one(8_389_000)),
        ok("PMEMPOOLSET\n9MB {D}/a\n", &one(9_000_000)),
        ok("PMEMPOOLSET\n16777217 {D}/a\n", &one(16_777_217)),
        ok("PMEMPOOLSET\n8 {D}/a\n", &one(8)),
        ok("PMEMPOOLSET\n8M\r {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8\rM {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n\x0b8M {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n8M\x0bjunk {D}/a\n", &one(m8)),
        // 1.7 sizes that PMDK rejects.
        err("PMEMPOOLSET\n8m {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n8k {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n8192KB {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n8Mi {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n8.5M {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n0x800000 {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n0 {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n0M {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n-0 {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n--8M {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n+-8M {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\nM {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n+ {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\nauto {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n8MMMMMMMM {D}/a\n", 2, SizeFormat),
        err("PMEMPOOLSET\n8MMMMMMMMM {D}/a\n", 2, SizeFormat),
        // 2^64 wraps to 0 in PMDK, which rejects that.
        err("PMEMPOOLSET\n16384P {D}/a\n", 2, SizeFormat),
        // Deliberate differences: PMDK wraps or saturates these and fails
        // only when it creates the file.
        err("PMEMPOOLSET\n-8M {D}/a\n", 2, SizeFormat).pmdk(Pmdk::Accepts),
        err("PMEMPOOLSET\n16385P {D}/a\n", 2, SizeFormat).pmdk(Pmdk::Accepts),
        err("PMEMPOOLSET\n18446744073709551616 {D}/a\n", 2, SizeFormat).pmdk(Pmdk::Accepts),
        err(
            "PMEMPOOLSET\n99999999999999999999999 {D}/a\n",
            2,
            SizeFormat,
        )
        .pmdk(Pmdk::Accepts),
        // 1.2 line reading: lone CR, NUL.
        ok("PMEMPOOLSET\n8M {D}/a\r", "L1[2:8388608 {D}/a\\r]"),
        ok("PMEMPOOLSET\n8M {D}/a\r\r\n", "L1[2:8388608 {D}/a\\r]"),
        ok("PMEMPOOLSET\0\n\n8M {D}/a\n", &one(m8)),
        ok("PMEMPOOLSET\n\08M {D}/a\n8M {D}/b\n", "L1[2:8388608 {D}/b]"),
        ok(
            "PMEMPOOLSET\n8M {D}/a\0junk\nREPLICA\n",
            "L1[2:8388608 {D}/aREPLICA]",
        ),
        err("PMEMPOOLSET\n8\0M {D}/a\n", 2, NoParts),
    ];

    // 1.2 line reading: lines longer than the reader's first chunks.
    let set = |last: &str| format!("PMEMPOOLSET\n8M {{D}}/a\nREPLICA\n{last}");
    let two = |last: &str| format!("L1[2:8388608 {{D}}/a] L3[4:8388608 {}]", shape_path(last));
    let exact = long_part(dir, FIRST_CHUNK, "bb");
    cases.push(err(&set(&exact), 4, ParseReason::NoReplicaParts));
    let longer = long_part(dir, FIRST_CHUNK + 1, "b");
    cases.push(ok(&set(&longer), &two(&longer)));
    cases.push(ok(&set(&format!("{exact}\n")), &two(&exact)));
    let two_chunks = long_part(dir, FIRST_CHUNK + SECOND_CHUNK, "b");
    cases.push(err(&set(&two_chunks), 4, ParseReason::NoReplicaParts));
    // CR LF that straddles the first chunk boundary keeps its CR.
    let straddle = long_part(dir, FIRST_CHUNK - 1, "b");
    cases.push(ok(
        &set(&format!("{straddle}\r\n")),
        &two(&format!("{straddle}\r")),
    ));
    let inside = long_part(dir, FIRST_CHUNK - 2, "b");
    cases.push(ok(&set(&format!("{inside}\r\n")), &two(&inside)));

    cases.into_iter().map(|c| c.at(dir)).collect()
}

#[test]
fn parse_table() {
    let mut failures = Vec::new();
    for case in cases("/pool") {
        let got = parse(&case.text);
        let matches = match (&case.want, &got) {
            (Want::Ok(want), Ok(set)) => *want == shape(set),
            (Want::Err(line, reason), Err(e)) => {
                e.line() == *line && e.parse_reason() == Some(*reason)
            }
            _ => false,
        };
        if !matches {
            let want = match &case.want {
                Want::Ok(shape) => format!("Ok({shape})"),
                Want::Err(line, reason) => format!("Err(line {line}: {reason})"),
            };
            let got = match &got {
                Ok(set) => format!("Ok({})", shape(set)),
                Err(e) => format!("Err({e})"),
            };
            failures.push(format!("{:?}\n  want {want}\n  got  {got}", case.text));
        }
        // Whatever the outcome, an accepted text round-trips.
        if let Ok(set) = got {
            assert_round_trip(&set);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_display_line_and_pmdk_reason() {
    let e = parse("PMEMPOOLSET\n8M /a\nREPLICA\n").unwrap_err();
    assert_eq!(e.to_string(), "line 4: no replica parts");
    assert_eq!(e.line(), 4);
    assert_eq!(e.reason(), "no replica parts");
    let e = parse("PMEMPOOLSET\n16m /a\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("line 2: incorrect format of size; {SIZE_UNITS_HELP}")
    );
    assert_eq!(e.parse_reason(), Some(ParseReason::SizeFormat));
    let e = parse("hello").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: the first line must be exactly 'PMEMPOOLSET'"
    );
}

#[test]
fn misspelled_keywords_get_a_hint_after_pmdks_reason() {
    let cases: [(&str, usize, ParseReason, Option<Hint>); 9] = [
        (
            "REPLCIA",
            3,
            ParseReason::InvalidToken,
            Some(Hint::DidYouMean("REPLICA")),
        ),
        (
            "replica",
            3,
            ParseReason::InvalidToken,
            Some(Hint::DidYouMean("REPLICA")),
        ),
        (
            "REPLIKA",
            3,
            ParseReason::InvalidToken,
            Some(Hint::DidYouMean("REPLICA")),
        ),
        (
            "RPLICA",
            3,
            ParseReason::InvalidToken,
            Some(Hint::DidYouMean("REPLICA")),
        ),
        (
            "OPTOIN SINGLEHDR",
            3,
            ParseReason::RelativePath,
            Some(Hint::DidYouMean("OPTION")),
        ),
        (
            "OPTION SINGLEHEADER",
            3,
            ParseReason::UnknownOption,
            Some(Hint::DidYouMean("SINGLEHDR")),
        ),
        (
            "OPTION NOHDR",
            3,
            ParseReason::UnknownOption,
            Some(Hint::DidYouMean("NOHDRS")),
        ),
        ("OPTION FAST", 3, ParseReason::UnknownOption, None),
        ("BANANA", 3, ParseReason::InvalidToken, None),
    ];
    for (line, at, reason, hint) in cases {
        let text = format!("PMEMPOOLSET\n16M /a\n{line}\n16M /b\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.line(), e.parse_reason(), e.hint()),
            (at, Some(reason), hint),
            "{line}: {e}"
        );
        // PMDK's reason comes first, unchanged.
        assert!(e.reason().starts_with(reason.as_str()), "{e}");
    }
    let e = parse("PMEMPOOLSET\n32m /a\n").unwrap_err();
    assert_eq!(e.hint(), Some(Hint::SizeUnits));
    for unit in [
        "B", "K", "M", "G", "T", "P", "KiB", "MiB", "GiB", "TiB", "PiB", "kB", "MB", "GB", "TB",
        "PB",
    ] {
        assert!(SIZE_UNITS_HELP.contains(unit), "{unit}");
        assert!(parse_size(&format!("1{unit}")).is_some(), "{unit}");
    }
}

#[test]
fn a_pool_set_without_its_first_line_is_recognised() {
    let body = "# my pool\n16M /pool/a.part\nREPLICA\n16M /pool/b.part\n";
    assert_eq!(signature_fix(body), Some(SignatureFix::Insert));
    let typo = format!("PMEMPOOLST\r\n{body}");
    assert_eq!(
        signature_fix(&typo),
        Some(SignatureFix::Replace {
            first_line: "PMEMPOOLST".to_string()
        })
    );
    // Text that is a pool set already, or would not be one either way.
    assert_eq!(signature_fix(&format!("PMEMPOOLSET\n{body}")), None);
    assert_eq!(signature_fix(&format!("PMEMPOOLSETX\n{body}")), None);
    assert_eq!(signature_fix("16M relative.part\n"), None);
    assert_eq!(signature_fix("hello world\n"), None);
    assert_eq!(signature_fix(""), None);
    // A single-file pool starts with its binary header.
    let mut pool = b"PMEMOBJ\0".to_vec();
    pool.extend_from_slice(&[0u8; 64]);
    assert_eq!(signature_fix(&String::from_utf8_lossy(&pool)), None);
}

#[test]
fn every_unit_is_known() {
    let units = [
        ("", 1u64),
        ("B", 1),
        ("K", 1 << 10),
        ("M", 1 << 20),
        ("G", 1 << 30),
        ("T", 1 << 40),
        ("P", 1 << 50),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("PiB", 1 << 50),
        ("kB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("PB", 1_000_000_000_000_000),
    ];
    for (unit, multiplier) in units {
        let set = parse(&format!("PMEMPOOLSET\n3{unit} /a\n")).unwrap();
        assert_eq!(
            set.replicas[0].parts()[0].size,
            PartSize::Bytes(3 * multiplier),
            "unit {unit:?}"
        );
    }
}

#[test]
fn formatter_output_is_canonical() {
    let set = parse(
        "PMEMPOOLSET\r\n# comment\n+20971520 /a\n3GiB /b\nOPTION NOHDRS SINGLEHDR\nREPLICA\nAUTO /dev/dax0.0\n4097 /c\nREPLICA  node  desc\n",
    )
    .unwrap();
    assert_eq!(
        set.to_text(),
        "PMEMPOOLSET\nOPTION SINGLEHDR NOHDRS\n20M /a\n3G /b\nREPLICA\nAUTO /dev/dax0.0\n4097 /c\nREPLICA node desc\n"
    );
    let cr = parse("PMEMPOOLSET\n8M /a\r#\nREPLICA n d\r").unwrap();
    assert_eq!(cr.to_text(), "PMEMPOOLSET\n8M /a\r \nREPLICA n d\r \n");
    assert_round_trip(&cr);
}

fn assert_round_trip(set: &PoolSet) {
    let text = set.to_text();
    let again = parse(&text).unwrap_or_else(|e| panic!("{e} in {text:?}"));
    assert_eq!(again.without_lines(), set.without_lines(), "{text:?}");
    assert_eq!(again.to_text(), text);
}

// ---------------------------------------------------------------------------
// Sizes, checked against `pmempool create obj` too.

enum SizeWant {
    Ok,
    Pool(u64),
    Part(usize, u64),
}

fn size_cases(dir: &str) -> Vec<(String, SizeWant)> {
    let m = 1u64 << 20;
    let cases = [
        ("PMEMPOOLSET\n8M {D}/a\n", SizeWant::Ok),
        (
            "PMEMPOOLSET\n2M {D}/a\n2M {D}/b\n2M {D}/c\n2M {D}/d\n2M {D}/e\n",
            SizeWant::Ok,
        ),
        (
            "PMEMPOOLSET\nOPTION SINGLEHDR\n4M {D}/a\n4M {D}/b\n",
            SizeWant::Ok,
        ),
        (
            "PMEMPOOLSET\n16M {D}/a\n8M {D}/b\nREPLICA\n24M {D}/c\n",
            SizeWant::Ok,
        ),
        (
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\n2M {D}/b\n2M {D}/c\n2M {D}/d\n2M {D}/e\n2M {D}/f\n",
            SizeWant::Ok,
        ),
        (
            "PMEMPOOLSET\n4M {D}/a\n4M {D}/b\n",
            SizeWant::Pool(8 * m - 4096),
        ),
        (
            "PMEMPOOLSET\n1M {D}/a\n4M {D}/b\n",
            SizeWant::Pool(5 * m - 4096),
        ),
        ("PMEMPOOLSET\n8 {D}/a\n", SizeWant::Pool(0)),
        (
            "PMEMPOOLSET\n4M {D}/a\n4M {D}/b\n4096 {D}/c\n",
            SizeWant::Pool(8 * m - 4096),
        ),
        (
            "PMEMPOOLSET\n2M {D}/a\n2M {D}/b\n2M {D}/c\n2M {D}/d\n8K {D}/e\n",
            SizeWant::Pool(8 * m - 8192),
        ),
        (
            "PMEMPOOLSET\n8M {D}/a\nREPLICA\n4M {D}/b\n4M {D}/c\n",
            SizeWant::Pool(8 * m - 4096),
        ),
        ("PMEMPOOLSET\n1M {D}/a\n16M {D}/b\n", SizeWant::Part(2, m)),
        (
            "PMEMPOOLSET\n16M {D}/a\nREPLICA\n1M {D}/b\n16M {D}/c\n",
            SizeWant::Part(4, m),
        ),
        (
            "PMEMPOOLSET\n100 {D}/a\n100 {D}/b\n",
            SizeWant::Part(2, 100),
        ),
        (
            "PMEMPOOLSET\n16M {D}/a\n2097151 {D}/b\n",
            SizeWant::Part(3, 2_097_151),
        ),
    ];
    cases
        .into_iter()
        .map(|(text, want)| (text.replace("{D}", dir), want))
        .collect()
}

#[test]
fn size_table() {
    for (text, want) in size_cases("/pool") {
        let set = parse(&text).unwrap();
        let got = set.validate_obj_sizes();
        match want {
            SizeWant::Ok => assert_eq!(got, Ok(()), "{text:?}"),
            SizeWant::Pool(size) => assert_eq!(
                got,
                Err(Error::PoolTooSmall {
                    size,
                    min: OBJ_MIN_POOL
                }),
                "{text:?}"
            ),
            SizeWant::Part(line, size) => {
                let e = got.unwrap_err();
                assert!(
                    matches!(e, Error::PartTooSmall { size: s, min: OBJ_MIN_PART, .. } if s == size),
                    "{text:?}: {e}"
                );
                assert_eq!(e.line(), line, "{text:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Property tests.

/// A character a path, node or descriptor token may hold: anything but the
/// blanks, `#`, the newline and NUL.
fn token_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('!', '~'),
        1 => Just('\r'),
        1 => Just('\x0b'),
        1 => any::<char>(),
    ]
    .prop_filter("not a separator", |c| {
        !matches!(c, ' ' | '\t' | '\n' | '#' | '\0')
    })
}

fn token(min: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(token_char(), min..12).prop_map(|v| v.into_iter().collect())
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => token(0).prop_map(|t| format!("/{t}")),
        // Long enough to cross the line reader's chunk boundaries.
        1 => (2540usize..7700, token(0)).prop_map(|(n, t)| format!("/{}{t}", "x".repeat(n))),
    ]
}

fn size() -> impl Strategy<Value = PartSize> {
    prop_oneof![
        4 => (1u64..1 << 13, 0u32..6).prop_map(|(n, unit)| PartSize::Bytes(n << (10 * unit))),
        2 => (1u64..=u64::MAX).prop_map(PartSize::Bytes),
        1 => Just(PartSize::Auto),
    ]
}

fn part() -> impl Strategy<Value = Part> {
    (size(), path()).prop_map(|(size, path)| Part {
        size,
        path,
        line: 0,
    })
}

fn local() -> impl Strategy<Value = Replica> {
    proptest::collection::vec(part(), 1..4).prop_map(|parts| Replica::Local { parts, line: 0 })
}

fn replica() -> impl Strategy<Value = Replica> {
    prop_oneof![
        3 => local(),
        1 => (token(1), token(1).prop_filter("relative", |d| !d.starts_with('/')))
            .prop_map(|(node, descriptor)| Replica::Remote { node, descriptor, line: 0 }),
    ]
}

fn pool_set() -> impl Strategy<Value = PoolSet> {
    (
        any::<bool>(),
        any::<bool>(),
        local(),
        proptest::collection::vec(replica(), 0..4),
    )
        .prop_map(|(single_hdr, no_hdrs, first, rest)| PoolSet {
            options: poolsync_poolset::Options {
                single_hdr,
                no_hdrs,
            },
            replicas: std::iter::once(first).chain(rest).collect(),
        })
}

/// Text made of pool-set-like lines, to drive the parser into every branch.
fn set_like_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("PMEMPOOLSET".to_owned()),
        Just("REPLICA".to_owned()),
        Just("REPLICA host desc".to_owned()),
        Just("OPTION SINGLEHDR".to_owned()),
        Just("OPTION NOHDRS".to_owned()),
        Just("8M /a".to_owned()),
        Just("AUTO /dev/dax".to_owned()),
        Just("# comment".to_owned()),
        Just(String::new()),
        Just("  ".to_owned()),
        (size(), path()).prop_map(|(s, p)| format!("{} {p}", user_size_text(s))),
        "[ -~\t\r\0\x0b]{0,20}",
    ];
    let end = prop_oneof![Just("\n"), Just("\r\n"), Just("\0"), Just("")];
    (any::<bool>(), proptest::collection::vec((line, end), 0..10)).prop_map(|(header, lines)| {
        let mut text = if header {
            "PMEMPOOLSET\n".to_owned()
        } else {
            String::new()
        };
        for (line, end) in lines {
            text.push_str(&line);
            text.push_str(end);
        }
        text
    })
}

/// A size as a user might write it (any of PMDK's spellings would do).
fn user_size_text(size: PartSize) -> String {
    match size {
        PartSize::Auto => "AUTO".to_owned(),
        PartSize::Bytes(b) if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        PartSize::Bytes(b) => b.to_string(),
    }
}

/// Sets whose every replica can be mapped: known sizes, later parts at least
/// a page.
fn mappable_set() -> impl Strategy<Value = PoolSet> {
    let part_size = prop_oneof![
        (1u64..1 << 12).prop_map(|pages| pages * 4096),
        (4096u64..1 << 34),
    ];
    (
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(part_size, 1..6), 1..3),
    )
        .prop_map(|(single_hdr, replicas)| PoolSet {
            options: poolsync_poolset::Options {
                single_hdr,
                no_hdrs: false,
            },
            replicas: replicas
                .into_iter()
                .enumerate()
                .map(|(r, sizes)| Replica::Local {
                    parts: sizes
                        .into_iter()
                        .enumerate()
                        .map(|(p, size)| Part {
                            size: PartSize::Bytes(size),
                            path: format!("/r{r}/p{p}"),
                            line: 0,
                        })
                        .collect(),
                    line: 0,
                })
                .collect(),
        })
}

/// Checks every promise of `map_range` for one range.
fn check_pieces(set: &PoolSet, replica: usize, offset: u64, len: u64) {
    let extents = set.extents(replica).unwrap();
    let total: u64 = extents.iter().map(|e| e.len).sum();
    let pieces = map_range(&extents, offset, len);
    let end = offset.saturating_add(len).min(total);
    let want = end.saturating_sub(offset);

    assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), want);
    let mut next = offset;
    let mut last_part = None;
    let parts = set.replicas[replica].parts();
    for piece in &pieces {
        assert!(piece.len > 0);
        assert_eq!(piece.logical, next, "pieces tile the range in order");
        next = piece.logical + piece.len;
        assert!(last_part < Some(piece.part), "one piece per part, in order");
        last_part = Some(piece.part);

        let extent = extents[piece.part];
        assert!(piece.logical >= extent.logical);
        assert!(piece.logical + piece.len <= extent.logical + extent.len);
        assert_eq!(
            piece.file_offset,
            extent.file_offset + (piece.logical - extent.logical)
        );
        // Inside the part file's usable bytes, and past its header page when
        // that page is not in the address space.
        let PartSize::Bytes(size) = parts[piece.part].size else {
            unreachable!("mappable sets have known sizes")
        };
        assert!(piece.file_offset + piece.len <= page_align_down(size));
        if piece.part > 0 {
            assert!(piece.file_offset >= set.header_gap());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn formatter_round_trips(set in pool_set()) {
        let text = set.to_text();
        let again = parse(&text).map(|s| s.without_lines());
        prop_assert_eq!(again, Ok(set), "{:?}", text);
    }

    #[test]
    fn parser_never_panics_and_accepted_text_round_trips(text in set_like_text()) {
        if let Ok(set) = parse(&text) {
            assert_round_trip(&set);
            for replica in 0..set.replicas.len() {
                if let Some(extents) = set.extents(replica) {
                    let total: u64 = extents.iter().map(|e| e.len).sum();
                    prop_assert_eq!(Some(total), set.replica_size(replica));
                }
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
        let _ = parse(&format!("PMEMPOOLSET\n{text}"));
    }

    #[test]
    fn extents_add_up_to_the_replica_size(set in mappable_set()) {
        for replica in 0..set.replicas.len() {
            let extents = set.extents(replica).unwrap();
            let total: u64 = extents.iter().map(|e| e.len).sum();
            prop_assert_eq!(Some(total), set.replica_size(replica));
            prop_assert_eq!(extents[0].logical, 0);
            for pair in extents.windows(2) {
                prop_assert_eq!(pair[1].logical, pair[0].logical + pair[0].len);
            }
        }
        prop_assert_eq!(
            set.pool_size(),
            (0..set.replicas.len()).filter_map(|r| set.replica_size(r)).min()
        );
    }

    #[test]
    fn map_range_tiles_the_clipped_range(
        set in mappable_set(),
        a in any::<u64>(),
        b in any::<u64>(),
        near in any::<bool>(),
    ) {
        let total = set.replica_size(0).unwrap();
        // Mostly ranges around the address space, sometimes anywhere.
        let (offset, len) = if near {
            (a % (total + 2), b % (total + 2))
        } else {
            (a, b)
        };
        check_pieces(&set, 0, offset, len);
    }

    #[test]
    fn map_range_over_everything_is_the_extents(set in mappable_set()) {
        for replica in 0..set.replicas.len() {
            let extents = set.extents(replica).unwrap();
            let total: u64 = extents.iter().map(|e| e.len).sum();
            let want: Vec<_> = extents
                .iter()
                .filter(|e| e.len > 0)
                .map(|e| poolsync_poolset::Piece {
                    part: e.part,
                    file_offset: e.file_offset,
                    logical: e.logical,
                    len: e.len,
                })
                .collect();
            prop_assert_eq!(&map_range(&extents, 0, total), &want);
            prop_assert_eq!(&map_range(&extents, 0, u64::MAX), &want);
            prop_assert!(map_range(&extents, total, u64::MAX).is_empty());
        }
    }
}

// ---------------------------------------------------------------------------
// The table against the real tool.

/// Runs `pmempool` with `args`, returning (success, stdout, stderr).
/// Whether the reference `pmempool` is on PATH. Without it the test fails
/// under `CI=true`, and otherwise records the skip in `POOLSYNC_SKIP_LOG`
/// (which `cargo xtask test` prints at the end) and is skipped.
fn pmempool_available(test: &str) -> bool {
    let found = std::process::Command::new("pmempool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let hint = "apt-get install pmdk-tools libpmemobj-dev libpmempool-dev";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: pmempool is not on PATH (CI=true makes this a failure); install it with `{hint}`"
    );
    eprintln!("skipping {test}: pmempool is not on PATH ({hint})");
    if let Ok(log) = std::env::var("POOLSYNC_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "poolset::{test}: pmempool is not on PATH");
        }
    }
    false
}

fn pmempool(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new("pmempool")
        .args(args)
        .output()
        .expect("pmempool runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The replicas `pmempool info` lists: per replica, each part's path and size.
fn info_structure(stdout: &str) -> Vec<Vec<(String, u64)>> {
    let mut replicas: Vec<Vec<(String, u64)>> = Vec::new();
    let mut path = None;
    // Not `lines()`: a path may end in CR, which `lines()` would drop.
    for line in stdout.split('\n') {
        if line.starts_with("Replica ") {
            replicas.push(Vec::new());
        } else if let Some(p) = line.strip_prefix("path                     : ") {
            path = Some(p.to_owned());
        } else if let Some(s) = line.strip_prefix("size                     : ") {
            if let (Some(replica), Some(p)) = (replicas.last_mut(), path.take()) {
                replica.push((p, s.trim().parse().unwrap()));
            }
        } else if line.starts_with("POOL Header") {
            break;
        }
    }
    replicas
}

fn info_value(stdout: &str, key: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} in pmempool info"));
    let value = line.rsplit(": ").next().unwrap().trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
        None => value.parse().unwrap(),
    }
}

/// Every table case, run through `pmempool create obj` in a fresh temporary
/// directory: PMDK must report the same reason at the same line, or no parse
/// error at all where we accept (or where the case says PMDK accepts). When
/// the pool is created, `pmempool info` must list the parts we parsed and a
/// heap that ends at our pool size.
#[test]
fn pmempool_agrees_with_the_table() {
    if !pmempool_available("pmempool_agrees_with_the_table") {
        return;
    }
    let count = cases("/pool").len();
    let mut failures = Vec::new();
    for index in 0..count {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap().to_owned();
        let case = cases(&dir).swap_remove(index);
        if case.pmdk == Pmdk::NotASet {
            continue;
        }
        let set_path = tmp.path().join("t.set");
        std::fs::write(&set_path, &case.text).unwrap();
        let (created, _, stderr) =
            pmempool(&["create".as_ref(), "obj".as_ref(), set_path.as_os_str()]);
        let set_name = set_path.to_str().unwrap();
        let expected = match (case.pmdk, &case.want) {
            (Pmdk::Reports(reason, line), _) => Some((reason.to_owned(), line)),
            (Pmdk::Same, Want::Err(line, reason)) => Some((reason.to_string(), *line)),
            _ => None,
        };
        let ok = match &expected {
            Some((reason, line)) => stderr.contains(&format!("{set_name} [{reason}:{line}]")),
            None => !stderr.contains(&format!("{set_name} [")),
        };
        if !ok {
            failures.push(format!(
                "{:?}: want {expected:?}, pmempool says {stderr}",
                case.text
            ));
            continue;
        }
        if created {
            let set = parse(&case.text).unwrap();
            let (_, stdout, _) = pmempool(&["info".as_ref(), set_path.as_os_str()]);
            let ours: Vec<Vec<(String, u64)>> = set
                .replicas
                .iter()
                .map(|r| {
                    r.parts()
                        .iter()
                        .map(|p| match p.size {
                            PartSize::Bytes(b) => (p.path.clone(), b),
                            PartSize::Auto => (p.path.clone(), 0),
                        })
                        .collect()
                })
                .collect();
            if info_structure(&stdout) != ours {
                failures.push(format!("{:?}: pmempool info lists {stdout}", case.text));
            }
            let heap_end = info_value(&stdout, "Heap offset") + info_value(&stdout, "Heap size");
            if Some(heap_end) != set.pool_size() {
                failures.push(format!("{:?}: heap ends at {heap_end}", case.text));
            }
        }
    }

    for (index, (_, want)) in size_cases("/pool").into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap().to_owned();
        let (text, _) = size_cases(&dir).swap_remove(index);
        let set_path = tmp.path().join("t.set");
        std::fs::write(&set_path, &text).unwrap();
        let (created, stdout, stderr) =
            pmempool(&["create".as_ref(), "obj".as_ref(), set_path.as_os_str()]);
        let ok = match want {
            SizeWant::Ok => created,
            SizeWant::Pool(size) => stderr.contains(&format!(
                "-- reservation pool size {size} smaller than {OBJ_MIN_POOL}"
            )),
            SizeWant::Part(_, size) => {
                stderr.contains(&format!("-- size {size} smaller than {OBJ_MIN_PART}"))
            }
        };
        if !ok {
            failures.push(format!("{text:?}: pmempool says {stdout}{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn split_remote_keeps_the_local_replicas_in_order() {
    let text = "PMEMPOOLSET\n8M /a/0\nREPLICA b.example.org standby.set\nREPLICA\n8M /a/1\nREPLICA user@c dir/c.set\n";
    let set: poolsync_poolset::PoolSet = text.parse().unwrap();
    let (local, remote) = set.split_remote();
    assert_eq!(local.replicas.len(), 2);
    assert!(local.replicas.iter().all(|r| !r.is_remote()));
    assert_eq!(local.replicas[1].parts()[0].path, "/a/1");
    assert_eq!(local.replicas[1].line(), 4);
    assert_eq!(remote.len(), 2);
    assert_eq!(remote[0].node, "b.example.org");
    assert_eq!(remote[0].descriptor, "standby.set");
    assert_eq!((remote[0].line, remote[0].position), (3, 1));
    assert_eq!(remote[1].node, "user@c");
    assert_eq!((remote[1].line, remote[1].position), (6, 3));
    assert_eq!(local.options, set.options);
}

//! The committed fuzz seeds of `wire_decode`.
//!
//! `POOLSYNC_UPDATE_SEEDS=1 cargo test -p poolsync-wire --test it seeds`
//! rewrites them; otherwise this checks that every committed seed still
//! decodes whole, so that the fuzzer starts from valid streams after a
//! protocol change. The framing is described in `fuzz/seeds/README.md`.

use std::path::PathBuf;

use poolsync_wire::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/wire_decode")
}

/// A flags byte, a greeting from `role`, then the messages' frames.
fn stream(flags: u8, role: Role, messages: &[Message]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&Hello::ours(role).encode());
    let mut codec = Codec::new();
    for m in messages {
        out.extend(codec.seal(m, MAX_PAYLOAD).unwrap());
    }
    out
}

fn page(fill: u8) -> Vec<u8> {
    let mut p = vec![0u8; HEADER_PAGE];
    p[..8].copy_from_slice(b"PMEMOBJ\0");
    p[100] = fill;
    p
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let client = vec![
        Message::Open(Open {
            path: "pools/standby.set".into(),
            write: true,
            expect_uuid: Some([7; 16]),
        }),
        Message::Digests {
            runs: vec![
                DigestRun {
                    offset: 4096,
                    piece: 65536,
                    count: 16,
                },
                DigestRun {
                    offset: 1 << 20,
                    piece: 4096,
                    count: 3,
                },
            ],
        },
        Message::WriteHeader {
            part: 0,
            write: HeaderWrite::Checksum { value: !0x1234 },
        },
        Message::Write {
            offset: 8192,
            data: (0..8192u32).map(|i| (i / 97) as u8).collect(),
        },
        Message::Flush {
            offset: 8192,
            len: 8192,
        },
        Message::Fence,
        Message::WriteHeader {
            part: 1,
            write: HeaderWrite::Whole {
                page: page(3),
                stamp_crtime: true,
            },
        },
        Message::CreatePart {
            part: 1,
            replace: false,
        },
        Message::SetMode {
            part: 1,
            mode: 0o664,
        },
        Message::Read {
            offset: 4096,
            len: 4096,
        },
        Message::Mark {
            poolset_uuid: [7; 16],
            lineage: [3; 16],
            timeline: 1,
            epoch: 5,
        },
        Message::Remove { set_file: true },
        Message::Inspect,
        Message::Close,
    ];
    let server = vec![
        Message::Opened(Box::new(Opened {
            set_path: "pools/standby.set".into(),
            set_text: "PMEMPOOLSET\n16M /srv/pools/standby.part0\n16M /srv/pools/standby.part1\n"
                .into(),
            server: "poolsync 0.1.0".into(),
            parts: vec![
                PartReport {
                    status: PartStatus::Ok,
                    size: 16 << 20,
                    mode: 0o664,
                    reason: String::new(),
                    header: HeaderPage::Read { bytes: page(1) },
                    broken: false,
                },
                PartReport {
                    status: PartStatus::Missing,
                    size: 0,
                    mode: 0,
                    reason: String::new(),
                    header: HeaderPage::NotRead,
                    broken: true,
                },
            ],
            healthy: false,
            pool_size: 0,
            verdicts: vec!["replica 0 part 1: no such file or directory".into()],
            mark: Some(SyncMark {
                poolset_uuid: [7; 16],
                lineage: [3; 16],
                timeline: 1,
                epoch: 4,
                run_id: 12,
            }),
        })),
        Message::DigestList(vec![1, 2, u128::MAX]),
        Message::Done,
        Message::Data {
            offset: 4096,
            data: vec![9; 4096],
        },
        Message::Failed(Failure {
            code: FailureCode::Io,
            message: "write of part 1: no space left on device".into(),
        }),
        Message::Removed(vec![RemovedFile {
            path: "/srv/pools/standby.part0".into(),
            removed: true,
        }]),
    ];
    vec![
        ("client-session.bin", stream(1, Role::Client, &client)),
        ("server-session.bin", stream(0, Role::Server, &server)),
        ("server-resealed.bin", stream(2, Role::Server, &server)),
        ("noise.bin", {
            let mut v = vec![0u8];
            v.extend_from_slice(b"Welcome to b.example.org\nLast login: Mon Jan 1\n");
            v
        }),
    ]
}

/// Decodes a whole seed: the greeting, then every frame.
fn decodes_whole(seed: &[u8]) -> bool {
    let role = if seed[0] & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let s = &seed[1..];
    if Hello::decode(s, role).is_err() {
        return s.starts_with(b"Welcome");
    }
    let mut at = HELLO_LEN;
    let mut codec = Codec::new();
    while at < s.len() {
        let head: [u8; FRAME_HEADER_LEN] = s[at..at + FRAME_HEADER_LEN].try_into().unwrap();
        let Ok(h) = decode_header(&head, MAX_PAYLOAD) else {
            return false;
        };
        let start = at + FRAME_HEADER_LEN;
        let end = start + h.stored_len as usize;
        if end > s.len() || codec.open(&head, &h, &s[start..end]).is_err() {
            return false;
        }
        at = end;
    }
    true
}

#[test]
fn seeds_are_current() {
    let dir = dir();
    if std::env::var_os("POOLSYNC_UPDATE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in seeds() {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("fuzz/seeds/wire_decode/{name}: {e}"));
        assert!(decodes_whole(&committed), "{name} no longer decodes whole");
        assert_eq!(committed.len(), bytes.len(), "{name} is out of date");
    }
}

#[test]
fn the_sync_mark_seed_decodes() {
    let path = dir().join("../sync_mark/mark.bin");
    let seed =
        std::fs::read(&path).unwrap_or_else(|e| panic!("fuzz/seeds/sync_mark/mark.bin: {e}"));
    let m = SyncMark::decode(&seed).unwrap();
    assert_eq!((m.epoch, m.run_id, m.timeline), (4, 12, 1));
}

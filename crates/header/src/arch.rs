//! Architecture identification flags (docs/format.md §4) and their
//! `pmempool info` wording.

use std::ffi::{c_char, c_int, c_long, c_longlong, c_short, c_void};
use std::mem::align_of;

use serde::Serialize;

/// `machine_class` for 64-bit pointers and `size_t`.
pub const MACHINE_CLASS_64: u8 = 2;
/// `data` for two's complement little endian.
pub const DATA_LE: u8 = 1;
/// `data` for two's complement big endian.
pub const DATA_BE: u8 = 2;
/// ELF machine id of x86-64.
pub const MACHINE_X86_64: u16 = 62;
/// ELF machine id of AArch64.
pub const MACHINE_AARCH64: u16 = 183;
/// ELF machine id of 64-bit PowerPC.
pub const MACHINE_PPC64: u16 = 21;
/// ELF machine id of RISC-V.
pub const MACHINE_RISCV64: u16 = 243;

/// Number of C types described by `alignment_desc`, one nibble each.
pub const ALIGNMENT_TYPE_COUNT: usize = 11;

/// The C types of `alignment_desc`, nibble 0 first, named as `pmempool info -v` names them.
pub const ALIGNMENT_TYPES: [&str; ALIGNMENT_TYPE_COUNT] = [
    "char",
    "short",
    "int",
    "long",
    "long long",
    "size_t",
    "os_off_t",
    "float",
    "double",
    "long double",
    "void *",
];

/// Alignments of the running target's C types in [`ALIGNMENT_TYPES`] order.
///
/// Rust has no `long double`; `u128` stands in for it because on every
/// target PMDK supports (x86-64, AArch64, RISC-V 64, ppc64) both are 16-byte
/// aligned. `off_t` is 64 bits wide on those Linux targets.
const CURRENT_ALIGNMENTS: [usize; ALIGNMENT_TYPE_COUNT] = [
    align_of::<c_char>(),
    align_of::<c_short>(),
    align_of::<c_int>(),
    align_of::<c_long>(),
    align_of::<c_longlong>(),
    align_of::<usize>(),
    align_of::<i64>(),
    align_of::<f32>(),
    align_of::<f64>(),
    align_of::<u128>(),
    align_of::<*const c_void>(),
];

/// Packs alignments into a descriptor: nibble `i` holds `(align[i] - 1) & 0xF`.
pub const fn alignment_desc_from(aligns: &[usize; ALIGNMENT_TYPE_COUNT]) -> u64 {
    let mut desc = 0u64;
    let mut i = 0;
    while i < ALIGNMENT_TYPE_COUNT {
        let nibble = (aligns[i] as u64).wrapping_sub(1) & 0xF;
        desc |= nibble << (4 * i);
        i += 1;
    }
    desc
}

/// The alignment (in bytes) that nibble `index` of `desc` records.
///
/// Indices past the last type read as 1 (a zero nibble).
pub fn alignment_of_type(desc: u64, index: usize) -> u64 {
    let shift = index.saturating_mul(4);
    if shift >= 64 {
        return 1;
    }
    ((desc >> shift) & 0xF) + 1
}

/// The `arch_flags` of a pool header (docs/format.md §4), at header offsets
/// 128..144.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArchFlags {
    /// Packed alignments of 11 C types, see [`alignment_desc_from`].
    pub alignment_desc: u64,
    /// 2 for 64-bit.
    pub machine_class: u8,
    /// 1 little endian, 2 big endian.
    pub data: u8,
    /// Must be zero.
    pub reserved: [u8; 4],
    /// ELF machine id.
    pub machine: u16,
}

impl ArchFlags {
    /// The flags of the running machine, as PMDK built for it would write them.
    ///
    /// The alignment descriptor is computed from the target's real type
    /// alignments. On targets PMDK does not support the machine id is 0.
    pub fn current() -> ArchFlags {
        ArchFlags {
            alignment_desc: alignment_desc_from(&CURRENT_ALIGNMENTS),
            machine_class: if cfg!(target_pointer_width = "64") {
                MACHINE_CLASS_64
            } else {
                1
            },
            data: if cfg!(target_endian = "little") {
                DATA_LE
            } else {
                DATA_BE
            },
            reserved: [0; 4],
            machine: current_machine(),
        }
    }

    /// The flags PMDK writes on x86-64 Linux, for checking pools made there
    /// independently of the machine running the check.
    pub fn x86_64() -> ArchFlags {
        ArchFlags {
            alignment_desc: 0x0000_07F7_3777_7310,
            machine_class: MACHINE_CLASS_64,
            data: DATA_LE,
            reserved: [0; 4],
            machine: MACHINE_X86_64,
        }
    }
}

fn current_machine() -> u16 {
    if cfg!(target_arch = "x86_64") {
        MACHINE_X86_64
    } else if cfg!(target_arch = "aarch64") {
        MACHINE_AARCH64
    } else if cfg!(target_arch = "powerpc64") {
        MACHINE_PPC64
    } else if cfg!(target_arch = "riscv64") {
        MACHINE_RISCV64
    } else {
        0
    }
}

/// The `Machine` value of `pmempool info`, e.g. `AMD X86-64` for 62.
pub fn machine_name(machine: u16) -> String {
    match machine {
        MACHINE_X86_64 => "AMD X86-64".to_owned(),
        MACHINE_AARCH64 => "Aarch64".to_owned(),
        MACHINE_PPC64 => "PPC64".to_owned(),
        MACHINE_RISCV64 => "RISCV".to_owned(),
        other => format!("unknown {other}"),
    }
}

/// The `Class` value of `pmempool info`: `64` for class 2.
pub fn machine_class_name(machine_class: u8) -> &'static str {
    match machine_class {
        MACHINE_CLASS_64 => "64",
        _ => "unknown",
    }
}

/// The `Data` value of `pmempool info`.
pub fn data_name(data: u8) -> &'static str {
    match data {
        DATA_LE => "2's complement, little endian",
        DATA_BE => "2's complement, big endian",
        _ => "unknown",
    }
}

/// The `Alignment Descriptor` value of `pmempool info`, judged against `current`.
///
/// Note the missing space before `[OK]`: pmempool prints it that way.
pub fn format_alignment_desc(desc: u64, current: u64) -> String {
    if desc == current {
        format!("{desc:#018x}[OK]")
    } else {
        format!("{desc:#018x} [wrong! should be {current:#018x}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x86_64_flags_match_pmdk() {
        assert_eq!(ArchFlags::current(), ArchFlags::x86_64());
        assert_eq!(ArchFlags::current().alignment_desc, 0x0000_07F7_3777_7310);
    }

    #[test]
    fn lp64_alignments_give_the_documented_descriptor() {
        let lp64 = [1, 2, 4, 8, 8, 8, 8, 4, 8, 16, 8];
        assert_eq!(alignment_desc_from(&lp64), 0x0000_07F7_3777_7310);
        for (i, a) in lp64.iter().enumerate() {
            assert_eq!(alignment_of_type(0x0000_07F7_3777_7310, i), *a as u64);
        }
        assert_eq!(alignment_of_type(0x0000_07F7_3777_7310, 99), 1);
    }

    #[test]
    fn info_strings() {
        assert_eq!(machine_name(62), "AMD X86-64");
        assert_eq!(machine_name(183), "Aarch64");
        assert_eq!(machine_name(21), "PPC64");
        assert_eq!(machine_name(243), "RISCV");
        assert_eq!(machine_name(7), "unknown 7");
        assert_eq!(machine_class_name(2), "64");
        assert_eq!(machine_class_name(1), "unknown");
        assert_eq!(data_name(1), "2's complement, little endian");
        assert_eq!(data_name(2), "2's complement, big endian");
        assert_eq!(data_name(0), "unknown");
        assert_eq!(
            format_alignment_desc(0x7f737777310, 0x7f737777310),
            "0x000007f737777310[OK]"
        );
        assert_eq!(
            format_alignment_desc(0x10, 0x7f737777310),
            "0x0000000000000010 [wrong! should be 0x000007f737777310]"
        );
    }
}

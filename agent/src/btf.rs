//! Reads a few facts from the kernel's BTF: where struct members sit.
//!
//! The unwinder needs the user registers of samples taken in kernel mode (a syscall, a page
//! fault). They sit at the top of the task's kernel stack, so the kernel side needs the offset
//! of `task_struct.stack`, which differs between builds. The exec hook reads the new image's
//! executable (its file's device and inode, where its code was loaded) through `task_struct.mm`,
//! `mm_struct`, `file`, `inode` and `super_block`, so that a process that exits before its
//! mappings are read is still named. `/sys/kernel/btf/vmlinux` says where all of these are.
//! Without BTF those samples keep their frame-pointer stacks, and such processes go unnamed
//! (counted).
//!
//! The format (Documentation/bpf/btf.rst): a header, then a type section whose entries are a
//! 12-byte common part followed by data whose size depends on the kind, then a string section.
//! Type ids count entries from 1 (0 is `void`).

use std::path::Path;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
/// How deep anonymous structs and unions are looked into (the kernel nests two or three).
const MAX_ANONYMOUS_DEPTH: usize = 8;

/// A BTF blob with its type entries indexed by id.
pub struct Btf<'a> {
    blob: &'a [u8],
    strings: &'a [u8],
    /// Byte position of each type entry's common part, by id - 1.
    types: Vec<usize>,
}

impl<'a> Btf<'a> {
    /// Indexes a blob; None when it is not BTF or is malformed.
    pub fn parse(blob: &'a [u8]) -> Option<Self> {
        let u16_at = |at: usize| Some(u16::from_le_bytes(blob.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(blob.get(at..at + 4)?.try_into().ok()?));
        if u16_at(0)? != BTF_MAGIC {
            return None;
        }
        let header_len = usize::try_from(u32_at(4)?).ok()?;
        let type_off = usize::try_from(u32_at(8)?).ok()?;
        let type_len = usize::try_from(u32_at(12)?).ok()?;
        let str_off = usize::try_from(u32_at(16)?).ok()?;
        let str_len = usize::try_from(u32_at(20)?).ok()?;
        let types_start = header_len.checked_add(type_off)?;
        let types_end = types_start.checked_add(type_len)?;
        if types_end > blob.len() {
            return None;
        }
        let strings_start = header_len.checked_add(str_off)?;
        let strings = blob.get(strings_start..strings_start.checked_add(str_len)?)?;
        let mut types = Vec::new();
        let mut at = types_start;
        while at < types_end {
            let info = u32_at(at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = usize::try_from(info & 0xffff).ok()?;
            let data_len = match kind {
                // INT, VAR, DECL_TAG: one u32.
                1 | 14 | 17 => 4,
                // ARRAY: three u32.
                3 => 12,
                // STRUCT, UNION, DATASEC, ENUM64: vlen entries of three u32.
                4 | 5 | 15 | 19 => 12 * vlen,
                // ENUM, FUNC_PROTO: vlen entries of two u32.
                6 | 13 => 8 * vlen,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: nothing.
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                _ => return None,
            };
            types.push(at);
            at = at.checked_add(12)?.checked_add(data_len)?;
        }
        Some(Btf {
            blob,
            strings,
            types,
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.blob.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    fn string(&self, off: u32) -> Option<&[u8]> {
        let rest = self.strings.get(usize::try_from(off).ok()?..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    }

    /// (name offset, kind, vlen, kind_flag, data position) of type `id`.
    fn entry(&self, id: u32) -> Option<(u32, u32, usize, bool, usize)> {
        let at = *self.types.get(usize::try_from(id).ok()?.checked_sub(1)?)?;
        let info = self.u32_at(at + 4)?;
        Some((
            self.u32_at(at)?,
            (info >> 24) & 0x1f,
            usize::try_from(info & 0xffff).ok()?,
            info >> 31 != 0,
            at + 12,
        ))
    }

    /// The byte offset of `member` in `struct name`, looking into its anonymous structs and
    /// unions. None when either is absent or the member is a bitfield.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let (bits, bitfield) = self.member_bits(name, member)?;
        (bitfield == 0 && bits % 8 == 0).then_some(bits / 8)
    }

    /// The bit offset of `member` in `struct name`, bitfields included: a one-bit flag is read
    /// as its byte at `bits / 8`, bit `bits % 8` (little-endian).
    pub fn member_bit_offset(&self, name: &str, member: &str) -> Option<u32> {
        Some(self.member_bits(name, member)?.0)
    }

    /// (bit offset, bitfield size or 0) of `member` in `struct name`.
    fn member_bits(&self, name: &str, member: &str) -> Option<(u32, u32)> {
        (1..=u32::try_from(self.types.len()).ok()?).find_map(|id| {
            let (name_off, kind, vlen, ..) = self.entry(id)?;
            // A declaration without members (an empty struct) cannot hold it.
            if kind != KIND_STRUCT || vlen == 0 || self.string(name_off)? != name.as_bytes() {
                return None;
            }
            self.find_member(id, member, 0)
        })
    }

    /// (bit offset, bitfield size or 0) of `member` inside struct or union `id`.
    fn find_member(&self, id: u32, member: &str, depth: usize) -> Option<(u32, u32)> {
        let (_, kind, vlen, kind_flag, data) = self.entry(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = data + 12 * i;
            let (name_off, ty, offset) =
                (self.u32_at(m)?, self.u32_at(m + 4)?, self.u32_at(m + 8)?);
            // With kind_flag, the offset holds a bitfield size in its top 8 bits.
            let (bits, bitfield) = if kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            if name_off == 0 {
                if depth < MAX_ANONYMOUS_DEPTH && bits % 8 == 0 {
                    if let Some((inner, size)) = self.find_member(ty, member, depth + 1) {
                        return Some((inner.checked_add(bits)?, size));
                    }
                }
                continue;
            }
            if self.string(name_off)? == member.as_bytes() {
                return Some((bits, bitfield));
            }
        }
        None
    }
}

/// The byte offset of `member` in `struct name`, from a BTF blob (see [`Btf::member_offset`]).
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Option<u32> {
    Btf::parse(btf)?.member_offset(name, member)
}

/// The running kernel's BTF.
fn vmlinux() -> Option<Vec<u8>> {
    std::fs::read(Path::new("/sys/kernel/btf/vmlinux")).ok()
}

/// What the BPF programs read of the running kernel's `task_struct` and the structs it leads to,
/// from one parse of `/sys/kernel/btf/vmlinux`. A member BTF does not place is None.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskLayout {
    /// `task_struct.stack`: where kernel-mode samples find the user registers.
    pub stack: Option<u32>,
    /// Where the exec hook finds the new image's executable: the offsets of [`EXE_MEMBERS`], in
    /// the order of [`agent_common::config::EXE_OFFSETS`]; all of them or none.
    pub exe: Option<[u32; agent_common::config::EXE_OFFSETS_LEN]>,
    /// `task_struct.in_execve`'s bit offset (a one-bit flag set from the start of execve until
    /// its new image runs).
    pub in_execve_bit: Option<u32>,
}

impl TaskLayout {
    /// The layout of the running kernel; every member None without BTF.
    pub fn running_kernel() -> TaskLayout {
        vmlinux()
            .and_then(|blob| Some(TaskLayout::from_btf(&Btf::parse(&blob)?)))
            .unwrap_or_default()
    }

    fn from_btf(btf: &Btf<'_>) -> TaskLayout {
        TaskLayout {
            stack: btf.member_offset("task_struct", "stack"),
            exe: exe_offsets(btf),
            in_execve_bit: btf.member_bit_offset("task_struct", "in_execve"),
        }
    }
}

/// The offsets of [`EXE_MEMBERS`], in their order; None when BTF lacks one of them.
fn exe_offsets(btf: &Btf<'_>) -> Option<[u32; agent_common::config::EXE_OFFSETS_LEN]> {
    let mut out = [0; agent_common::config::EXE_OFFSETS_LEN];
    for (slot, (name, member)) in out.iter_mut().zip(EXE_MEMBERS) {
        *slot = btf.member_offset(name, member)?;
    }
    Some(out)
}

/// The members of [`TaskLayout::exe`], in its order.
const EXE_MEMBERS: [(&str, &str); agent_common::config::EXE_OFFSETS_LEN] = [
    ("task_struct", "mm"),
    ("mm_struct", "exe_file"),
    ("mm_struct", "start_code"),
    ("mm_struct", "end_code"),
    ("file", "f_inode"),
    ("inode", "i_ino"),
    ("inode", "i_sb"),
    ("super_block", "s_dev"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `int`, `struct task_struct { int a; int b : 3; void *stack; }` and
    /// `struct mm_struct { int x; struct { int y; union { int z; }; }; }` (anonymous members at
    /// 4 and, inside, at 4 again).
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0task_struct\0a\0b\0stack\0mm_struct\0x\0y\0z\0".to_vec();
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            u32::try_from(
                strings
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                    .unwrap()
                    + 1,
            )
            .unwrap()
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // [1] int: INT, size 4, encoding.
        push(&[s("int"), 1 << 24, 4, 32]);
        // [2] void *: PTR to 0.
        push(&[0, 2 << 24, 0]);
        // [3] struct task_struct, kind_flag set (bitfield member), 3 members, size 16.
        push(&[s("task_struct"), (1 << 31) | (4 << 24) | 3, 16]);
        push(&[s("a"), 1, 0]);
        push(&[s("b"), 1, (3 << 24) | 32]);
        push(&[s("stack"), 2, 64]);
        // [4] union { int z; }, size 4.
        push(&[0, (5 << 24) | 1, 4]);
        push(&[s("z"), 1, 0]);
        // [5] struct { int y; union; }, size 8.
        push(&[0, (4 << 24) | 2, 8]);
        push(&[s("y"), 1, 0]);
        push(&[0, 4, 32]);
        // [6] struct mm_struct { int x; struct; }, size 12.
        push(&[s("mm_struct"), (4 << 24) | 2, 12]);
        push(&[s("x"), 1, 0]);
        push(&[0, 5, 32]);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        out.extend_from_slice(&24u32.to_le_bytes()); // header length
        out.extend_from_slice(&0u32.to_le_bytes()); // type offset
        out.extend_from_slice(&u32::try_from(types.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&u32::try_from(types.len()).unwrap().to_le_bytes()); // str offset
        out.extend_from_slice(&u32::try_from(strings.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_a_member_and_refuses_bitfields_and_damage() {
        let b = blob();
        assert_eq!(member_offset(&b, "task_struct", "stack"), Some(8));
        assert_eq!(member_offset(&b, "task_struct", "a"), Some(0));
        assert_eq!(member_offset(&b, "task_struct", "b"), None, "bitfield");
        let btf = Btf::parse(&b).unwrap();
        assert_eq!(btf.member_bit_offset("task_struct", "b"), Some(32));
        assert_eq!(btf.member_bit_offset("task_struct", "stack"), Some(64));
        assert_eq!(btf.member_bit_offset("mm_struct", "z"), Some(64));
        assert_eq!(btf.member_bit_offset("task_struct", "nope"), None);
        assert_eq!(member_offset(&b, "task_struct", "nope"), None);
        assert_eq!(member_offset(&b, "mm_struct", "stack"), None);
        assert_eq!(member_offset(&b, "mm_struct", "x"), Some(0));
        assert_eq!(
            member_offset(&b, "mm_struct", "y"),
            Some(4),
            "inside an anonymous struct"
        );
        assert_eq!(
            member_offset(&b, "mm_struct", "z"),
            Some(8),
            "and a union inside that"
        );
        for cut in 0..b.len() {
            // Any truncation: an answer or None, never a panic.
            let _ = member_offset(&b[..cut], "task_struct", "stack");
        }
        assert_eq!(
            member_offset(b"not btf at all", "task_struct", "stack"),
            None
        );
    }

    #[test]
    fn this_kernel_says_where_the_task_stack_is() {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            assert!(
                std::env::var("CI").is_err(),
                "this machine kind has BTF; CI must find it"
            );
            eprintln!("skipping: no /sys/kernel/btf/vmlinux");
            return;
        }
        let layout = TaskLayout::running_kernel();
        let offset = layout.stack.expect("task_struct.stack in vmlinux BTF");
        assert!(offset > 0 && offset.is_multiple_of(8), "{offset}");
        let exe = layout.exe.expect("the exec hook's members in vmlinux BTF");
        assert!(exe[0] > 0, "task_struct.mm is not first: {exe:?}");
        assert!(
            exe[2].is_multiple_of(8) && exe[3] == exe[2] + 8,
            "mm_struct.end_code follows start_code: {exe:?}"
        );
        let in_execve = layout
            .in_execve_bit
            .expect("task_struct.in_execve in vmlinux BTF");
        assert!(
            in_execve > exe[0] * 8,
            "in_execve ({in_execve}) sits after task_struct.mm ({})",
            exe[0]
        );
    }
}

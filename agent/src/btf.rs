//! Reads one fact from the kernel's BTF: where a struct member sits.
//!
//! The unwinder needs the user registers of samples taken in kernel mode (a syscall, a page
//! fault). They sit at the top of the task's kernel stack, so the kernel side needs the offset
//! of `task_struct.stack`, which differs between builds; `/sys/kernel/btf/vmlinux` says it.
//! Without BTF those samples keep their frame-pointer stacks (counted).
//!
//! The format (Documentation/bpf/btf.rst): a header, then a type section whose entries are a
//! 12-byte common part followed by data whose size depends on the kind, then a string section.

use std::path::Path;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// The byte offset of `member` in `struct name`, from a BTF blob. None when either is absent,
/// the member is a bitfield, or the blob is malformed.
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Option<u32> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(btf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(btf.get(at..at + 4)?.try_into().ok()?));
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
    let strings_start = header_len.checked_add(str_off)?;
    let strings = btf.get(strings_start..strings_start.checked_add(str_len)?)?;
    let string = |off: u32| -> Option<&[u8]> {
        let rest = strings.get(usize::try_from(off).ok()?..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    };
    let mut at = types_start;
    while at < types_end {
        let name_off = u32_at(at)?;
        let info = u32_at(at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = usize::try_from(info & 0xffff).ok()?;
        let kind_flag = info >> 31 != 0;
        let data = at + 12;
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
        if kind == KIND_STRUCT && string(name_off)? == name.as_bytes() {
            for i in 0..vlen {
                let m = data + 12 * i;
                if string(u32_at(m)?)? == member.as_bytes() {
                    let offset = u32_at(m + 8)?;
                    // With kind_flag, the offset holds a bitfield size in its top 8 bits.
                    let (bits, bitfield) = if kind_flag {
                        (offset & 0x00ff_ffff, offset >> 24 != 0)
                    } else {
                        (offset, false)
                    };
                    return (!bitfield && bits % 8 == 0).then_some(bits / 8);
                }
            }
        }
        at = data.checked_add(data_len)?;
    }
    None
}

/// `task_struct.stack`'s offset on the running kernel, from `/sys/kernel/btf/vmlinux`.
pub fn task_stack_offset() -> Option<u32> {
    let btf = std::fs::read(Path::new("/sys/kernel/btf/vmlinux")).ok()?;
    member_offset(&btf, "task_struct", "stack")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `int`, and `struct task_struct { int a; int b : 3; void *stack; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0task_struct\0a\0b\0stack\0".to_vec();
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
        assert_eq!(member_offset(&b, "task_struct", "nope"), None);
        assert_eq!(member_offset(&b, "mm_struct", "stack"), None);
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
        let offset = task_stack_offset().expect("task_struct.stack in vmlinux BTF");
        assert!(offset > 0 && offset.is_multiple_of(8), "{offset}");
    }
}

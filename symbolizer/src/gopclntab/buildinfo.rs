//! The Go version recorded in `.go.buildinfo`.

use object::{Object, ObjectSection};

use super::reader::{uvarint, Bytes};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Bits of the flags byte: the pointers are big-endian; the version and module strings follow
/// the header inline (Go 1.18+).
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE: u8 = 2;

/// The Go release that built the binary (e.g. `go1.22.10`), when it carries build info. Some
/// binaries carry none; callers must not rely on it.
pub fn build_info_version(data: &[u8]) -> Option<String> {
    build_info_version_in(&object::File::parse(data).ok()?, data)
}

/// [`build_info_version`] of an ELF file already parsed from `data`.
pub(crate) fn build_info_version_in(obj: &object::File<'_>, data: &[u8]) -> Option<String> {
    let section = obj.section_by_name(".go.buildinfo")?;
    let (off, size) = section.file_range()?;
    let start = usize::try_from(off).ok()?;
    let blob = data.get(start..start.checked_add(usize::try_from(size).ok()?)?)?;
    if !blob.starts_with(MAGIC) || blob.len() < 32 {
        return None;
    }
    let ptr_size = usize::from(blob[14]);
    let flags = blob[15];
    if flags & FLAG_INLINE != 0 {
        let (len, n) = uvarint(blob, 32, blob.len())?;
        let s = 32usize.checked_add(n)?;
        let bytes = blob.get(s..s.checked_add(usize::try_from(len).ok()?)?)?;
        return std::str::from_utf8(bytes).ok().map(str::to_string);
    }
    // Before Go 1.18: a pointer to a Go string header (pointer, length).
    let big_endian = flags & FLAG_BIG_ENDIAN != 0;
    let b = Bytes(blob, big_endian);
    let header_va = b.word(16, ptr_size)?;
    let file_off = |va: u64| {
        use object::ObjectSegment;
        obj.segments().find_map(|s| {
            let (o, sz) = s.file_range();
            (va >= s.address() && va - s.address() < sz)
                .then(|| usize::try_from((va - s.address()).checked_add(o)?).ok())
                .flatten()
        })
    };
    let d = Bytes(data, big_endian);
    let header = file_off(header_va)?;
    let str_va = d.word(header, ptr_size)?;
    let len = usize::try_from(d.word(header + ptr_size, ptr_size)?).ok()?;
    if len > 64 {
        return None;
    }
    let s = file_off(str_va)?;
    let bytes = data.get(s..s.checked_add(len)?)?;
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

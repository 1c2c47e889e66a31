//! Finding the table in an ELF image, validating its header, and resolving what lives outside
//! it: the text start (Go 1.26 writes 0 in the header) and `moduledata.gofunc` (inline trees).
//!
//! Header (all versions): `magic u32, 0, 0, pc quantum u8, pointer size u8`, then pointer-sized
//! words. Go 1.18+: nfunc, nfiles, textStart, then the offsets of funcnametab, cutab, filetab,
//! pctab and functab. Go 1.16–1.17: the same without textStart. Go 1.2–1.15: nfunc, then the
//! functab at once, then a `u32` offset of the file table; everything else counts from the
//! section start.
//!
//! In a PIE, pointer words (the text start, moduledata's pointers) are filled by the dynamic
//! loader: on disk they may be 0, and the value is the addend of the `R_*_RELATIVE` relocation
//! at that word. We read those from `PT_DYNAMIC`'s `DT_RELA` table in at most two linear passes
//! that keep only the handful of words we ask about.

use object::{
    elf::{DT_NULL, DT_RELA, DT_RELASZ, PF_X, PT_DYNAMIC},
    read::elf::{ElfFile64, ProgramHeader},
    Endianness, Object, ObjectSection, ObjectSegment, ObjectSymbol, SegmentFlags,
};

use super::{pcvalue::PcTab, reader::Bytes, GoTable, GoTableVersion};
use crate::Error;

/// Sections that may hold the table: internal linking, then PIE / external linking before 1.26.
const TABLE_SECTIONS: &[&str] = &[".gopclntab", ".data.rel.ro.gopclntab"];
/// Sections only Go's linker writes: a file with one of them but no table section had its table
/// merged into another section by an external linker (cgo, `-linkmode=external`).
const GO_SECTIONS: &[&str] = &[
    ".go.buildinfo",
    ".note.go.buildid",
    ".go.module",
    ".gosymtab",
];
/// Functions of a table found without its section that must decode, spread over the table.
const PLAUSIBLE_SAMPLES: usize = 16;
/// Sections that may hold `runtime.firstmoduledata` when no symbol or `.go.module` says where.
const MODULEDATA_SECTIONS: &[&str] = &[".noptrdata", ".data.rel.ro", ".data"];
/// Word indices of `moduledata`: funcnametab and cutab pointers, text, and `gofunc` (Go
/// 1.18–1.19 / Go 1.20–1.26 / Go 1.27).
const MD_FUNCNAMETAB: u64 = 1;
const MD_CUTAB: u64 = 4;
const MD_TEXT: u64 = 22;
const MD_GOFUNC_V118: u64 = 38;
const MD_GOFUNC_V120: u64 = 40;
const MD_GOFUNC_V127: u64 = 43;
/// Words of `moduledata` whose relocations we keep, and the last word searched for `gofunc`.
const MD_WORDS: u64 = 56;
/// moduledata candidates (words pointing at the table) we validate at most.
const MAX_CANDIDATES: usize = 32;
/// The RELATIVE relocation type of a machine, None for machines Go PIEs are not read on.
fn relative_type(arch: object::Architecture) -> Option<u32> {
    use object::Architecture as A;
    match arch {
        A::X86_64 => Some(8),
        A::Aarch64 => Some(1027),
        A::S390x => Some(12),
        A::PowerPc64 => Some(22),
        _ => None,
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadGoTable {
        path: "ELF image".to_string(),
        reason: reason.into(),
    }
}

/// File offset of `va` in one of `loads` (vaddr, file offset, file size).
pub(super) fn file_offset(loads: &[(u64, u64, u64)], va: u64) -> Option<usize> {
    loads
        .iter()
        .find(|&&(v, _, size)| va >= v && va - v < size)
        .and_then(|&(v, off, _)| usize::try_from((va - v).checked_add(off)?).ok())
}

/// The ELF image as the loaded program sees its words.
struct Image<'a> {
    data: &'a [u8],
    big_endian: bool,
    ptr_size: usize,
    /// (vaddr, file offset, file size) of every loadable segment.
    loads: Vec<(u64, u64, u64)>,
    /// The raw `Elf64_Rela` array (24-byte entries), empty when there is none.
    rela: &'a [u8],
    /// The machine's RELATIVE relocation type.
    relative: Option<u32>,
    /// Words we asked about that a RELATIVE relocation fills: (va, value).
    relocated: Vec<(u64, u64)>,
}

impl<'a> Image<'a> {
    /// The word at `va` after relocation.
    fn word(&self, va: u64) -> Option<u64> {
        if let Some(&(_, v)) = self.relocated.iter().find(|&&(at, _)| at == va) {
            return Some(v);
        }
        Bytes(self.data, self.big_endian).word(file_offset(&self.loads, va)?, self.ptr_size)
    }

    /// Calls `f(offset, addend)` for every RELATIVE relocation.
    fn for_each_relative(&self, mut f: impl FnMut(u64, u64)) {
        let b = Bytes(self.rela, self.big_endian);
        for at in (0..self.rela.len() / 24).map(|i| i * 24) {
            let (Some(offset), Some(info), Some(addend)) =
                (b.u64(at), b.u64(at + 8), b.u64(at + 16))
            else {
                return;
            };
            if self.relative == Some((info & 0xffff_ffff) as u32) {
                f(offset, addend);
            }
        }
    }

    /// Remembers the relocated value of every word in `ranges` (VA ranges).
    fn keep_relocated(&mut self, ranges: &[std::ops::Range<u64>]) {
        let mut found = Vec::new();
        self.for_each_relative(|offset, addend| {
            if ranges.iter().any(|r| r.contains(&offset)) {
                found.push((offset, addend));
            }
        });
        self.relocated.extend(found);
    }
}

/// The raw RELA table of an ELF64 file, through `PT_DYNAMIC` (present with or without
/// section headers).
fn rela_table<'a>(data: &'a [u8], loads: &[(u64, u64, u64)]) -> &'a [u8] {
    let Ok(elf) = ElfFile64::<Endianness>::parse(data) else {
        return &[];
    };
    let endian = elf.endian();
    let b = Bytes(data, endian == Endianness::Big);
    for ph in elf.elf_program_headers() {
        if ph.p_type(endian) != PT_DYNAMIC {
            continue;
        }
        let Ok(start) = usize::try_from(ph.p_offset(endian)) else {
            continue;
        };
        let Ok(size) = usize::try_from(ph.p_filesz(endian)) else {
            continue;
        };
        let (mut rela, mut relasz) = (None, None);
        for at in (0..size / 16).map(|i| start.saturating_add(i * 16)) {
            let (Some(tag), Some(val)) = (b.u64(at), b.u64(at.saturating_add(8))) else {
                break;
            };
            match tag as i64 {
                DT_NULL => break,
                DT_RELA => rela = Some(val),
                DT_RELASZ => relasz = Some(val),
                _ => {}
            }
        }
        if let (Some(va), Some(size)) = (rela, relasz) {
            let table = file_offset(loads, va)
                .zip(usize::try_from(size).ok())
                .and_then(|(off, size)| data.get(off..off.checked_add(size)?));
            if let Some(table) = table {
                return table;
            }
        }
    }
    &[]
}

/// Where the table is: its file range and virtual address.
struct Found {
    start: usize,
    end: usize,
    va: u64,
}

pub(super) fn locate(data: &[u8]) -> Result<Option<GoTable>, Error> {
    let Ok(obj) = object::File::parse(data) else {
        return Ok(None);
    };
    locate_in(&obj, data)
}

/// [`locate`] in an ELF file already parsed from `data`.
pub(super) fn locate_in(obj: &object::File<'_>, data: &[u8]) -> Result<Option<GoTable>, Error> {
    let loads: Vec<(u64, u64, u64)> = obj
        .segments()
        .map(|s| {
            let (off, size) = s.file_range();
            (s.address(), off, size)
        })
        .collect();
    if let Some(section) = TABLE_SECTIONS
        .iter()
        .find_map(|name| obj.section_by_name(name))
    {
        let Some((off, size)) = section.file_range() else {
            return Err(bad("the table section has no file data"));
        };
        let found = usize::try_from(off)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(start, size)| Some((start, start.checked_add(size)?)))
            .filter(|&(_, end)| end <= data.len())
            .map(|(start, end)| Found {
                start,
                end,
                va: section.address(),
            })
            .ok_or_else(|| bad("table extends past the end of the file"))?;
        return parse(obj, data, loads, &found).map(Some);
    }
    if obj.sections().next().is_some() {
        if !GO_SECTIONS
            .iter()
            .any(|name| obj.section_by_name(name).is_some())
        {
            // Section headers, no table section and nothing else of Go's linker: not Go.
            return Ok(None);
        }
        // Linked externally: the table sits inside a data section (`.data.rel.ro` in a PIE).
        // The `runtime.pclntab` symbol says where, unless the binary was stripped.
        let by_symbol = symbol_address(obj, "runtime.pclntab").and_then(|va| {
            let (start, end) = segment_range(&loads, va)?;
            let table = parse(obj, data, loads.clone(), &Found { start, end, va }).ok()?;
            table.plausible(data).then_some(table)
        });
        if let Some(table) = by_symbol {
            return Ok(Some(table));
        }
    }
    // No section says where (section headers gone, or a stripped external link): look for the
    // header in the non-executable loadable segments, at pointer-aligned offsets.
    Ok(scan(obj, data, &loads))
}

/// The file range from `va` to the end of the loadable segment holding it.
fn segment_range(loads: &[(u64, u64, u64)], va: u64) -> Option<(usize, usize)> {
    let &(v, off, size) = loads
        .iter()
        .find(|&&(v, _, size)| va >= v && va - v < size)?;
    let start = usize::try_from(off.checked_add(va - v)?).ok()?;
    let end = usize::try_from(off.checked_add(size)?).ok()?;
    Some((start, end))
}

/// The first plausible table whose header lies at a pointer-aligned offset of a
/// non-executable loadable segment.
fn scan(obj: &object::File<'_>, data: &[u8], loads: &[(u64, u64, u64)]) -> Option<GoTable> {
    for segment in obj.segments() {
        if matches!(segment.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0) {
            continue;
        }
        let (off, size) = segment.file_range();
        let (Ok(off), Ok(size)) = (usize::try_from(off), usize::try_from(size)) else {
            continue;
        };
        let Some(bytes) = off.checked_add(size).and_then(|end| data.get(off..end)) else {
            continue;
        };
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let magic = Bytes(chunk, !obj.is_little_endian()).u32(0);
            if magic.and_then(GoTableVersion::from_magic).is_none()
                || chunk[4] != 0
                || chunk[5] != 0
                || !matches!(chunk[6], 1 | 2 | 4)
                || !matches!(chunk[7], 4 | 8)
            {
                continue;
            }
            let found = Found {
                start: off + i * 8,
                end: off + size,
                va: segment.address().wrapping_add((i * 8) as u64),
            };
            if let Ok(table) = parse(obj, data, loads.to_vec(), &found) {
                if table.plausible(data) {
                    return Some(table);
                }
            }
        }
    }
    None
}

impl GoTable {
    /// A check that a table found without its section is one: functions spread over the table
    /// (the first and the last among them) decode, with names, in address order.
    fn plausible(&self, data: &[u8]) -> bool {
        let b = self.bytes(data);
        let Some(last) = self.nfunc.checked_sub(1) else {
            return false;
        };
        let samples = PLAUSIBLE_SAMPLES.min(self.nfunc);
        let mut previous_end = 0;
        for k in 0..samples {
            // Evenly spread, from 0 to `last` inclusive.
            let i = if samples > 1 {
                k * last / (samples - 1)
            } else {
                0
            };
            let Some(f) = self.record(b, i) else {
                return false;
            };
            if f.entry > f.end || f.entry < previous_end || self.name(data, f.name_off).is_none() {
                return false;
            }
            previous_end = f.end;
        }
        true
    }
}

/// Validates the header at `found` and builds the table.
fn parse(
    obj: &object::File<'_>,
    data: &[u8],
    loads: Vec<(u64, u64, u64)>,
    found: &Found,
) -> Result<GoTable, Error> {
    let big_endian = !obj.is_little_endian();
    let b = Bytes(data, big_endian);
    let (sec_off, sec_end, table_va) = (found.start, found.end, found.va);
    let sec_size = sec_end - sec_off;
    let magic = b.u32(sec_off).ok_or_else(|| bad("truncated header"))?;
    let version = GoTableVersion::from_magic(magic)
        .ok_or_else(|| bad(format!("unknown magic {magic:#x}")))?;
    if b.u8(sec_off + 4) != Some(0) || b.u8(sec_off + 5) != Some(0) {
        return Err(bad("bad header padding"));
    }
    let quantum = match b.u8(sec_off + 6) {
        Some(q @ (1 | 2 | 4)) => u64::from(q),
        _ => return Err(bad("bad pc quantum")),
    };
    let ptr_size = match b.u8(sec_off + 7) {
        Some(p @ (4 | 8)) => usize::from(p),
        _ => return Err(bad("bad pointer size")),
    };
    let ptr = ptr_size as u64;
    let mut image = Image {
        data,
        big_endian,
        ptr_size,
        rela: rela_table(data, &loads),
        relative: relative_type(obj.architecture()),
        loads,
        relocated: Vec::new(),
    };
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| bad("value out of range"));
    let section = sec_off..sec_end;

    if version == GoTableVersion::V12 {
        let nfunc = to_usize(
            b.word(sec_off + 8, ptr_size)
                .ok_or_else(|| bad("truncated header"))?,
        )?;
        let functab = sec_off + 8 + ptr_size;
        let functab_len = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ptr_size))
            .filter(|&n| {
                functab
                    .checked_add(n)
                    .and_then(|e| e.checked_add(4))
                    .is_some_and(|e| e <= sec_end)
            })
            .ok_or_else(|| bad("function count larger than the table"))?;
        let filetab_off = b
            .u32(functab + functab_len)
            .ok_or_else(|| bad("truncated file table offset"))? as usize;
        let filetab_start = sec_off
            .checked_add(filetab_off)
            .filter(|&s| s.checked_add(4).is_some_and(|e| e <= sec_end))
            .ok_or_else(|| bad("file table past the section"))?;
        let nfiles = b.u32(filetab_start).unwrap_or(0) as usize;
        let filetab_end = nfiles
            .checked_mul(4)
            .and_then(|n| filetab_start.checked_add(n))
            .filter(|&e| e <= sec_end)
            .ok_or_else(|| bad("file count larger than the table"))?;
        let mut table = GoTable {
            version,
            ptr_size,
            nfunc,
            text_start: 0,
            section: section.clone(),
            func_base: sec_off,
            loads: image.loads,
            funcnametab: section.clone(),
            cutab: 0..0,
            filetab: filetab_start..filetab_end,
            pctab: PcTab {
                range: section,
                quantum,
            },
            functab: functab..sec_end,
            gofunc: None,
            big_endian,
            inline_trees: true,
        };
        table.settle_inline_trees(data, &[]);
        return Ok(table);
    }

    // Go 1.16+. The header's words may be relocated in a PIE; ask for them and for the first
    // words of `.go.module` (Go 1.26+), and collect the words that point at the table: each may
    // be `moduledata.pcHeader`.
    let header_words = table_va..table_va.saturating_add(8 + 8 * ptr);
    let go_module = obj.section_by_name(".go.module").map(|s| s.address());
    let md_range = |md: u64| md..md.saturating_add(MD_WORDS * ptr);
    let mut candidates = Vec::new();
    {
        let mut ranges = vec![header_words];
        ranges.extend(go_module.map(md_range));
        let mut found = Vec::new();
        image.for_each_relative(|offset, addend| {
            if ranges.iter().any(|r| r.contains(&offset)) {
                found.push((offset, addend));
            } else if addend == table_va && candidates.len() < MAX_CANDIDATES {
                candidates.push(offset);
            }
        });
        image.relocated = found;
    }
    let header_word = |image: &Image<'_>, k: u64| {
        image
            .word(table_va.wrapping_add(8 + k * ptr))
            .ok_or_else(|| bad("truncated header"))
    };
    let relative = version != GoTableVersion::V116;
    let nfunc = to_usize(header_word(&image, 0)?)?;
    let text_start_header = if relative { header_word(&image, 2)? } else { 0 };
    let first_offset = if relative { 3 } else { 2 };
    // funcnametab, cutab, filetab, pctab, functab: in this order, inside the section.
    let mut bounds = [0usize; 6];
    for i in 0..5 {
        let o = to_usize(header_word(&image, first_offset + i as u64)?)?;
        if o > sec_size || o < bounds[i] {
            return Err(bad("table offsets out of order or past the section"));
        }
        bounds[i + 1] = o;
    }
    let range = |i: usize| {
        let end = if i < 4 { bounds[i + 2] } else { sec_size };
        (sec_off + bounds[i + 1])..(sec_off + end)
    };
    let functab = range(4);
    let entry_size = if relative { 4 } else { ptr_size };
    let functab_bytes = nfunc
        .checked_mul(2 * entry_size)
        .and_then(|n| n.checked_add(entry_size))
        .ok_or_else(|| bad("function count out of range"))?;
    if functab_bytes > functab.len() {
        return Err(bad("function count larger than the table"));
    }

    let (text_start, gofunc_candidates) = if relative {
        if !candidates.is_empty() {
            let ranges: Vec<_> = candidates.iter().map(|&c| md_range(c)).collect();
            image.keep_relocated(&ranges);
        }
        let md = find_moduledata(obj, &image, table_va, &bounds, go_module, &candidates);
        let text_start = if text_start_header != 0 {
            text_start_header
        } else if let Some(text) = md
            .and_then(|md| image.word(md.wrapping_add(MD_TEXT * ptr)))
            .filter(|&t| t != 0)
        {
            text
        } else if let Some(text) = symbol_address(obj, "runtime.text") {
            text
        } else {
            // Last resort: right for pure-Go binaries (internal linking puts Go text first),
            // wrong when C code precedes it.
            obj.section_by_name(".text")
                .map(|s| s.address())
                .ok_or_else(|| bad("cannot find the start of Go text"))?
        };
        // `gofunc` moves when the runtime's moduledata changes (Go 1.27 did): take the symbols,
        // then the words where releases have kept it, then every later word; the caller keeps
        // the first whose inline trees decode.
        let expected = match version {
            GoTableVersion::V118 => MD_GOFUNC_V118,
            _ => MD_GOFUNC_V120,
        };
        // Known places first: a wrong word can pass validation by chance, more easily in a
        // big-endian file, whose pointers' high bytes read as zero padding.
        let known = [expected, MD_GOFUNC_V127];
        let words = known
            .into_iter()
            .chain((MD_GOFUNC_V118..MD_WORDS).filter(|w| !known.contains(w)))
            .filter_map(|w| md.and_then(|md| image.word(md.wrapping_add(w * ptr))));
        let symbols = ["go:func.*", "go.func.*"]
            .into_iter()
            .filter_map(|name| symbol_address(obj, name));
        let mut candidates: Vec<usize> = Vec::new();
        for va in symbols.chain(words) {
            if let Some(off) = file_offset(&image.loads, va) {
                if !candidates.contains(&off) {
                    candidates.push(off);
                }
            }
        }
        (text_start, candidates)
    } else {
        (0, Vec::new())
    };

    let mut table = GoTable {
        version,
        ptr_size,
        nfunc,
        text_start,
        func_base: functab.start,
        section,
        loads: image.loads,
        funcnametab: range(0),
        cutab: range(1),
        filetab: range(2),
        pctab: PcTab {
            range: range(3),
            quantum,
        },
        functab,
        gofunc: None,
        big_endian,
        inline_trees: true,
    };
    table.settle_inline_trees(data, &gofunc_candidates);
    Ok(table)
}

fn symbol_address(obj: &object::File<'_>, name: &str) -> Option<u64> {
    obj.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .filter(|&a| a != 0)
}

/// VA of `runtime.firstmoduledata`: `.go.module` (Go 1.26+), the symbol, a relocated word
/// pointing at the table (PIE), or a scan of the data for such a word. A candidate must point at
/// the table and at its function name and CU tables.
fn find_moduledata(
    obj: &object::File<'_>,
    image: &Image<'_>,
    table_va: u64,
    bounds: &[usize; 6],
    go_module: Option<u64>,
    candidates: &[u64],
) -> Option<u64> {
    let ptr = image.ptr_size as u64;
    let at = |k: usize| table_va.checked_add(bounds[k] as u64);
    let valid = |md: u64| {
        image.word(md) == Some(table_va)
            && image.word(md.wrapping_add(MD_FUNCNAMETAB * ptr)) == at(1)
            && image.word(md.wrapping_add(MD_CUTAB * ptr)) == at(2)
    };
    if let Some(md) = go_module.filter(|&md| valid(md)) {
        return Some(md);
    }
    if let Some(md) = symbol_address(obj, "runtime.firstmoduledata").filter(|&md| valid(md)) {
        return Some(md);
    }
    if let Some(&md) = candidates.iter().find(|&&md| valid(md)) {
        return Some(md);
    }
    // Scan for an aligned word equal to the table's address: the named data sections, or every
    // non-executable segment of a file without section headers.
    let mut areas: Vec<(u64, u64, u64)> = MODULEDATA_SECTIONS
        .iter()
        .filter_map(|name| obj.section_by_name(name))
        .filter_map(|s| Some((s.address(), s.file_range()?.0, s.file_range()?.1)))
        .collect();
    if obj.sections().next().is_none() {
        areas.extend(
            obj.segments()
                .filter(
                    |s| !matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0),
                )
                .map(|s| (s.address(), s.file_range().0, s.file_range().1)),
        );
    }
    for (va, off, size) in areas {
        let (Ok(off), Ok(size)) = (usize::try_from(off), usize::try_from(size)) else {
            continue;
        };
        let Some(bytes) = off
            .checked_add(size)
            .and_then(|end| image.data.get(off..end))
        else {
            continue;
        };
        // Keep file offsets and addresses congruent: start at the first aligned address.
        let skip = (va.wrapping_neg() % ptr) as usize;
        let Some(bytes) = bytes.get(skip..) else {
            continue;
        };
        for (i, chunk) in bytes.chunks_exact(image.ptr_size).enumerate() {
            let Some(word) = Bytes(chunk, image.big_endian).word(0, image.ptr_size) else {
                continue;
            };
            if word != table_va {
                continue;
            }
            let md = va.wrapping_add((skip + i * image.ptr_size) as u64);
            if valid(md) {
                return Some(md);
            }
        }
    }
    None
}

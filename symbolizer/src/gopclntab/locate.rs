//! Finding the pclntab, the text start and `gofunc` in an ELF image, stripped or PIE.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, RelocationFlags};

use super::{reader::Bytes, GoTable, GoTableVersion};
use crate::Error;

/// Sections that may hold the table: internal linking, then PIE / external linking before 1.26.
const TABLE_SECTIONS: &[&str] = &[".gopclntab", ".data.rel.ro.gopclntab"];
/// Sections that may hold `runtime.firstmoduledata` when no symbol or `.go.module` says where.
const MODULEDATA_SECTIONS: &[&str] = &[".noptrdata", ".data.rel.ro", ".data"];
/// Word index of `moduledata.text`.
const MODULEDATA_TEXT: usize = 22;

/// The parts of the ELF image we read words through: loadable segments and the relocations that
/// fill words of a PIE at load time.
struct Image<'a> {
    data: &'a [u8],
    ptr_size: usize,
    /// (vaddr, file offset, file size)
    loads: Vec<(u64, u64, u64)>,
    /// VA of a word → value written there at load time (RELATIVE relocations).
    relative: HashMap<u64, u64>,
}

impl Image<'_> {
    fn file_offset(&self, va: u64) -> Option<usize> {
        self.loads
            .iter()
            .find(|&&(v, _, size)| va >= v && va - v < size)
            .and_then(|&(v, off, _)| usize::try_from((va - v).checked_add(off)?).ok())
    }

    /// The word at `va` as the loaded program sees it.
    fn word(&self, va: u64) -> Option<u64> {
        if let Some(&v) = self.relative.get(&va) {
            return Some(v);
        }
        Bytes(self.data).word(self.file_offset(va)?, self.ptr_size)
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadGoTable {
        path: String::new(),
        reason: reason.into(),
    }
}

pub(super) fn locate(data: &[u8]) -> Result<Option<GoTable>, Error> {
    let Ok(obj) = object::File::parse(data) else {
        return Ok(None);
    };
    let Some(section) = TABLE_SECTIONS
        .iter()
        .find_map(|name| obj.section_by_name(name))
    else {
        return Ok(None);
    };
    let Some((sec_off, sec_size)) = section.file_range() else {
        return Ok(None);
    };
    let (sec_off, sec_size) = (
        usize::try_from(sec_off).ok(),
        usize::try_from(sec_size).ok(),
    );
    let (Some(sec_off), Some(sec_size)) = (sec_off, sec_size) else {
        return Err(bad("table offset out of range"));
    };
    let sec_end = sec_off
        .checked_add(sec_size)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| bad("table extends past the end of the file"))?;
    let table_va = section.address();
    let b = Bytes(data);

    let magic = b.u32(sec_off).ok_or_else(|| bad("truncated header"))?;
    let Some(version) = GoTableVersion::from_magic(magic) else {
        return Err(bad(format!("unknown magic {magic:#x}")));
    };
    let (pad1, pad2, quantum, ptr_size) = (
        b.u8(sec_off + 4),
        b.u8(sec_off + 5),
        b.u8(sec_off + 6),
        b.u8(sec_off + 7),
    );
    if pad1 != Some(0) || pad2 != Some(0) {
        return Err(bad("bad header padding"));
    }
    let quantum = match quantum {
        Some(q @ (1 | 2 | 4)) => u64::from(q),
        _ => return Err(bad("bad pc quantum")),
    };
    let ptr_size = match ptr_size {
        Some(p @ (4 | 8)) => usize::from(p),
        _ => return Err(bad("bad pointer size")),
    };
    let image = Image {
        data,
        ptr_size,
        loads: obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (s.address(), off, size)
            })
            .collect(),
        relative: relative_relocations(&obj),
    };
    let header_word = |k: usize| -> Result<u64, Error> {
        let offset = 8 + k * ptr_size;
        let va = table_va + offset as u64;
        if let Some(&v) = image.relative.get(&va) {
            return Ok(v);
        }
        b.word(sec_off + offset, ptr_size)
            .ok_or_else(|| bad("truncated header"))
    };
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| bad("value out of range"));
    let section = sec_off..sec_end;
    let loads = image.loads.clone();

    if version == GoTableVersion::V12 {
        // Go 1.2: nfunc, then the functab right after the header, then a u32 offset of the
        // file table; every other offset counts from the section start.
        let nfunc = to_usize(header_word(0)?)?;
        let functab = sec_off + 8 + ptr_size;
        let functab_len = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ptr_size))
            .filter(|&n| functab.checked_add(n + 4).is_some_and(|e| e <= sec_end))
            .ok_or_else(|| bad("function count larger than the table"))?;
        let filetab_off = b
            .u32(functab + functab_len)
            .ok_or_else(|| bad("truncated file table offset"))? as usize;
        let filetab_start = sec_off
            .checked_add(filetab_off)
            .filter(|&s| s + 4 <= sec_end)
            .ok_or_else(|| bad("file table past the section"))?;
        let nfiles = b.u32(filetab_start).unwrap_or(0) as usize;
        let filetab_end = nfiles
            .checked_mul(4)
            .and_then(|n| filetab_start.checked_add(n))
            .filter(|&e| e <= sec_end)
            .ok_or_else(|| bad("file count larger than the table"))?;
        return Ok(Some(GoTable {
            version,
            quantum,
            ptr_size,
            nfunc,
            text_start: 0,
            section: section.clone(),
            func_base: sec_off,
            loads,
            funcnametab: section.clone(),
            cutab: 0..0,
            filetab: filetab_start..filetab_end,
            pctab: section.clone(),
            pclntab: functab..sec_end,
            gofunc: None,
        }));
    }

    // Go 1.16+: nfunc, nfiles, [textStart (1.18+)], then offsets of the sub-tables.
    let relative = version != GoTableVersion::V116;
    let first_offset = if relative { 3 } else { 2 };
    let nfunc = header_word(0)?;
    let text_start_header = if relative { header_word(2)? } else { 0 };
    let mut offsets = [0u64; 5]; // funcnametab, cutab, filetab, pctab, functab
    for (i, o) in offsets.iter_mut().enumerate() {
        *o = header_word(first_offset + i)?;
    }
    let mut bounds = [0usize; 6];
    for (i, &o) in offsets.iter().enumerate() {
        let o = to_usize(o)?;
        if o > sec_size || (i > 0 && o < bounds[i]) {
            return Err(bad("table offsets out of order or past the section"));
        }
        bounds[i + 1] = o;
    }
    let range = |i: usize| {
        (sec_off + bounds[i + 1])..(if i < 4 {
            sec_off + bounds[i + 2]
        } else {
            sec_end
        })
    };
    let pclntab = range(4);
    let nfunc = to_usize(nfunc)?;
    let entry_size = if relative { 4 } else { ptr_size };
    let functab_bytes = nfunc
        .checked_mul(2 * entry_size)
        .and_then(|n| n.checked_add(entry_size))
        .ok_or_else(|| bad("function count out of range"))?;
    if functab_bytes > pclntab.len() {
        return Err(bad("function count larger than the table"));
    }

    let (text_start, gofunc) = if relative {
        let funcname_offset = offsets[0];
        let moduledata = find_moduledata(&obj, &image, table_va, funcname_offset);
        let text_start = if text_start_header != 0 {
            text_start_header
        } else if let Some(text) = moduledata
            .and_then(|md| image.word(md + (MODULEDATA_TEXT * ptr_size) as u64))
            .filter(|&t| t != 0)
        {
            text
        } else if let Some(text) = symbol_address(&obj, "runtime.text") {
            text
        } else {
            obj.section_by_name(".text")
                .map(|s| s.address())
                .ok_or_else(|| bad("cannot find the start of Go text"))?
        };
        let gofunc_word = match version {
            GoTableVersion::V118 => 38,
            _ => 40,
        };
        let gofunc = moduledata
            .and_then(|md| image.word(md + (gofunc_word * ptr_size) as u64))
            .and_then(|va| image.file_offset(va));
        (text_start, gofunc)
    } else {
        (0, None)
    };

    Ok(Some(GoTable {
        version,
        quantum,
        ptr_size,
        nfunc,
        text_start,
        func_base: pclntab.start,
        section,
        loads,
        funcnametab: range(0),
        cutab: range(1),
        filetab: range(2),
        pctab: range(3),
        pclntab,
        gofunc,
    }))
}

fn symbol_address(obj: &object::File<'_>, name: &str) -> Option<u64> {
    obj.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .filter(|&a| a != 0)
}

/// RELATIVE relocations (x86-64 and arm64): the word at `offset` becomes `addend` (plus the load
/// bias, which we do not apply: we work in link-time addresses).
fn relative_relocations(obj: &object::File<'_>) -> HashMap<u64, u64> {
    const R_X86_64_RELATIVE: u32 = 8;
    const R_AARCH64_RELATIVE: u32 = 1027;
    let mut out = HashMap::new();
    let Some(relocs) = obj.dynamic_relocations() else {
        return out;
    };
    for (offset, r) in relocs {
        if let RelocationFlags::Elf { r_type } = r.flags() {
            if r_type == R_X86_64_RELATIVE || r_type == R_AARCH64_RELATIVE {
                out.insert(offset, r.addend() as u64);
            }
        }
    }
    out
}

/// VA of `runtime.firstmoduledata`: the `.go.module` section (Go 1.26+), the symbol, or a scan
/// of the data sections for a word pointing at the table whose next word points at its name
/// table.
fn find_moduledata(
    obj: &object::File<'_>,
    image: &Image<'_>,
    table_va: u64,
    funcname_offset: u64,
) -> Option<u64> {
    let ptr = image.ptr_size as u64;
    let valid = |va: u64| {
        image.word(va) == Some(table_va)
            && image.word(va + ptr) == table_va.checked_add(funcname_offset)
    };
    if let Some(s) = obj.section_by_name(".go.module") {
        if valid(s.address()) {
            return Some(s.address());
        }
    }
    if let Some(va) = symbol_address(obj, "runtime.firstmoduledata") {
        if valid(va) {
            return Some(va);
        }
    }
    for name in MODULEDATA_SECTIONS {
        let Some(s) = obj.section_by_name(name) else {
            continue;
        };
        let (start, size) = (s.address(), s.size());
        let mut va = start.next_multiple_of(ptr);
        while va + 2 * ptr <= start.saturating_add(size) {
            if valid(va) {
                return Some(va);
            }
            va += ptr;
        }
    }
    None
}

//! Go's `.gopclntab`: function names, files, lines and inlined frames, read from the table the
//! Go runtime itself uses. It survives `-ldflags=-s -w`, so stripped Go binaries symbolize fully.
//!
//! Every layout since Go 1.2: Go 1.2–1.15 ([`GoTableVersion::V12`]), Go 1.16–1.17
//! ([`GoTableVersion::V116`]), Go 1.18–1.19 ([`GoTableVersion::V118`]) and Go 1.20 onwards
//! ([`GoTableVersion::V120`], including Go 1.26's relocated module data). Nothing depends on the
//! Go runtime's struct layouts beyond the table format itself, except finding `moduledata` for
//! the inline trees of Go 1.18+.
//!
//! Every read is bounds-checked against the file: the input is untrusted. Lookups never panic
//! and never loop without bound; a damaged entry gives `Symbolized::Unknown(Reason::Malformed)`.

mod buildinfo;
mod locate;
mod reader;

use std::ops::Range;

pub use buildinfo::build_info_version;

use crate::{Error, Frame, Reason, Symbolized};
use reader::Bytes;

/// `PCDATA_InlTreeIndex`, stable since Go 1.12.
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// Inlining depth we follow at most (real code rarely exceeds 10).
const MAX_INLINE_DEPTH: usize = 64;
/// Longest name or file path we read.
const MAX_STRING: usize = 64 * 1024;

/// Table layout class, from the table's magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoTableVersion {
    /// Go 1.2–1.15 (magic `0xfffffffb`).
    V12,
    /// Go 1.16–1.17 (magic `0xfffffffa`).
    V116,
    /// Go 1.18–1.19 (magic `0xfffffff0`).
    V118,
    /// Go 1.20 and later (magic `0xfffffff1`).
    V120,
}

impl GoTableVersion {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffb => Some(Self::V12),
            0xffff_fffa => Some(Self::V116),
            0xffff_fff0 => Some(Self::V118),
            0xffff_fff1 => Some(Self::V120),
            _ => None,
        }
    }

    /// `FUNCDATA_InlTree`: 4 in Go 1.12–1.15 (after RegPointerMaps and StackObjects), 3 since
    /// Go 1.16 dropped RegPointerMaps.
    fn funcdata_inl_tree(self) -> u32 {
        match self {
            Self::V12 => 4,
            _ => 3,
        }
    }

    /// True for layouts whose functab holds 32-bit offsets from the text start (Go 1.18+);
    /// older ones hold pointer-sized absolute addresses.
    fn relative_entries(self) -> bool {
        matches!(self, Self::V118 | Self::V120)
    }

    /// Size of one `inlinedCall` record.
    fn inlined_call_size(self) -> usize {
        match self {
            Self::V120 => 16,
            _ => 20,
        }
    }
}

/// A located, validated pclntab. Owns no bytes: it stores file offsets, and every query takes
/// the whole file again (the owner keeps it mapped).
#[derive(Debug, Clone)]
pub struct GoTable {
    version: GoTableVersion,
    quantum: u64,
    ptr_size: usize,
    nfunc: usize,
    text_start: u64,
    /// The whole table section.
    section: Range<usize>,
    /// Where `_func` offsets count from: the functab (Go 1.16+) or the section (Go 1.2).
    func_base: usize,
    /// Loadable segments (vaddr, file offset, file size): Go ≤ 1.17 funcdata are addresses.
    loads: Vec<(u64, u64, u64)>,
    /// File ranges of the sub-tables (all inside the pclntab section).
    funcnametab: Range<usize>,
    /// File-index table of each compilation unit (Go 1.16+; empty before).
    cutab: Range<usize>,
    /// File names (Go 1.16+), or the file-offset index (Go 1.2, names in the section).
    filetab: Range<usize>,
    pctab: Range<usize>,
    /// functab followed by the `_func` records.
    pclntab: Range<usize>,
    /// File offset of `moduledata.gofunc`, the base of funcdata offsets (inline trees).
    gofunc: Option<usize>,
}

/// One function of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc<'a> {
    /// Entry address (ELF virtual address).
    pub entry: u64,
    /// First address past the function.
    pub end: u64,
    pub name: &'a str,
}

impl GoTable {
    /// Finds and validates the table in an ELF image. `Ok(None)`: not a Go binary, or a table
    /// layout this version does not decode. `Err`: a Go table that is damaged beyond use.
    pub fn from_elf(data: &[u8]) -> Result<Option<GoTable>, Error> {
        locate::locate(data)
    }

    /// The table's layout class.
    pub fn version(&self) -> GoTableVersion {
        self.version
    }

    /// Number of functions in the table.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// The address the functab's entry offsets are relative to.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Frames for a virtual address (as in the ELF file): innermost inlined frame first, the
    /// physical function last. Callers pass `return address - 1` for non-leaf frames.
    pub fn symbolize(&self, data: &[u8], va: u64) -> Symbolized {
        let b = Bytes(data);
        let Some(index) = self.find_func(b, va) else {
            return Symbolized::Unknown(Reason::NoFunction);
        };
        match self.frames(b, index, va) {
            Some(frames) if !frames.is_empty() => Symbolized::Sym(frames),
            _ => Symbolized::Unknown(Reason::Malformed),
        }
    }

    /// Every function: entry, end and name. Damaged entries are skipped.
    pub fn functions<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = GoFunc<'a>> + 'a {
        let b = Bytes(data);
        (0..self.nfunc).filter_map(move |i| {
            let (entry, end) = self.func_range(b, i)?;
            let func = self.func_offset(b, i)?;
            let name_off = b.i32(func + self.entry_size())?;
            let name = self.name(data, name_off)?;
            Some(GoFunc { entry, end, name })
        })
    }

    /// Size of an entry or offset field of the functab and of `_func.entry`.
    fn entry_size(&self) -> usize {
        if self.version.relative_entries() {
            4
        } else {
            self.ptr_size
        }
    }

    /// Size of the fixed part of `_func`, before the pcdata offsets.
    fn func_fixed_size(&self) -> usize {
        match self.version {
            GoTableVersion::V120 => 44,
            GoTableVersion::V118 => 40,
            GoTableVersion::V116 => self.ptr_size + 36,
            GoTableVersion::V12 => self.ptr_size + 32,
        }
    }

    /// A functab word: an entry (offset or address) or a `_func` offset.
    fn functab_word(&self, b: Bytes<'_>, index: usize) -> Option<u64> {
        let e = self.entry_size();
        let at = self.pclntab.start.checked_add(index.checked_mul(e)?)?;
        if at.checked_add(e)? > self.pclntab.end {
            return None;
        }
        b.word(at, e)
    }

    /// Absolute address of a functab entry value.
    fn entry_address(&self, raw: u64) -> Option<u64> {
        if self.version.relative_entries() {
            self.text_start.checked_add(raw)
        } else {
            Some(raw)
        }
    }

    fn func_range(&self, b: Bytes<'_>, i: usize) -> Option<(u64, u64)> {
        let start = self.functab_word(b, i.checked_mul(2)?)?;
        // The entry after the last function holds the end of the text.
        let end = self.functab_word(b, i.checked_add(1)?.checked_mul(2)?)?;
        Some((self.entry_address(start)?, self.entry_address(end)?))
    }

    /// Binary search for the function holding `va`.
    fn find_func(&self, b: Bytes<'_>, va: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.nfunc);
        // Invariant: the answer, if any, is in [lo, hi).
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self.entry_address(self.functab_word(b, mid * 2)?)?;
            if entry <= va {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        let (_, end) = self.func_range(b, i)?;
        (va < end).then_some(i)
    }

    /// File offset of function `i`'s `_func`.
    fn func_offset(&self, b: Bytes<'_>, i: usize) -> Option<usize> {
        let funcoff =
            usize::try_from(self.functab_word(b, i.checked_mul(2)?.checked_add(1)?)?).ok()?;
        let at = self.func_base.checked_add(funcoff)?;
        (at >= self.section.start && at.checked_add(self.func_fixed_size())? <= self.section.end)
            .then_some(at)
    }

    fn name<'a>(&self, data: &'a [u8], name_off: i32) -> Option<&'a str> {
        let off = usize::try_from(name_off).ok()?;
        let start = self.funcnametab.start.checked_add(off)?;
        reader::cstr(data, start, self.funcnametab.end, MAX_STRING)
    }

    fn file_name<'a>(&self, data: &'a [u8], cu_offset: u32, file_no: i32) -> Option<&'a str> {
        let b = Bytes(data);
        if self.version == GoTableVersion::V12 {
            // Go 1.2: the file number indexes offsets of names in the section.
            let at = self
                .filetab
                .start
                .checked_add(usize::try_from(file_no).ok()?.checked_mul(4)?)?;
            if at.checked_add(4)? > self.filetab.end {
                return None;
            }
            let start = self.section.start.checked_add(b.u32(at)? as usize)?;
            return reader::cstr(data, start, self.section.end, MAX_STRING);
        }
        let index = (cu_offset as usize).checked_add(usize::try_from(file_no).ok()?)?;
        let at = self.cutab.start.checked_add(index.checked_mul(4)?)?;
        if at.checked_add(4)? > self.cutab.end {
            return None;
        }
        let off = b.u32(at)?;
        if off == u32::MAX {
            return None;
        }
        let start = self.filetab.start.checked_add(off as usize)?;
        reader::cstr(data, start, self.filetab.end, MAX_STRING)
    }

    /// Decodes a pc-value table (`off` into pctab) at `target`, for a function starting at
    /// `entry`. None when the table has no value there or is damaged.
    fn pcvalue(&self, b: Bytes<'_>, off: u32, entry: u64, target: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.pctab.start.checked_add(off as usize)?;
        let end = self.pctab.end;
        let mut val: i32 = -1;
        let mut pc = entry;
        let mut first = true;
        // Each step consumes at least two bytes, so this is bounded by the table size.
        loop {
            let (uvdelta, n) = reader::uvarint(b.0, p, end)?;
            p += n;
            if uvdelta == 0 && !first {
                return None;
            }
            first = false;
            let delta = if uvdelta & 1 != 0 {
                !((uvdelta >> 1) as i32)
            } else {
                (uvdelta >> 1) as i32
            };
            val = val.wrapping_add(delta);
            let (pcdelta, n) = reader::uvarint(b.0, p, end)?;
            p += n;
            pc = pc.checked_add(pcdelta.checked_mul(self.quantum)?)?;
            if target < pc {
                return Some(val);
            }
        }
    }

    /// The frames for `va` in function `i`.
    fn frames(&self, b: Bytes<'_>, i: usize, va: u64) -> Option<Vec<Frame>> {
        let data = b.0;
        let f = self.func_offset(b, i)?;
        let (entry, _) = self.func_range(b, i)?;
        let e = self.entry_size();
        let name_off = b.i32(f + e)?;
        let pcfile = b.u32(f + e + 16)?;
        let pcln = b.u32(f + e + 20)?;
        let npcdata = b.u32(f + e + 24)?;
        let cu_offset = if self.version == GoTableVersion::V12 {
            0
        } else {
            b.u32(f + e + 28)?
        };
        let nfuncdata = b.u8(f + self.func_fixed_size() - 1)?;
        let position = |pc: u64| -> (Option<String>, Option<u32>) {
            let file = self
                .pcvalue(b, pcfile, entry, pc)
                .filter(|&n| n >= 0)
                .and_then(|n| self.file_name(data, cu_offset, n))
                .map(str::to_string);
            let line = self
                .pcvalue(b, pcln, entry, pc)
                .and_then(|l| u32::try_from(l).ok())
                .filter(|&l| l > 0);
            (file, line)
        };

        let mut frames = Vec::new();
        let mut cur = va;
        if let Some(tree) = self.inline_tree(b, f, npcdata, nfuncdata) {
            let pcdata_off = f + self.func_fixed_size();
            let index_table = b.u32(pcdata_off + 4 * PCDATA_INL_TREE_INDEX as usize)?;
            let size = self.version.inlined_call_size();
            while frames.len() < MAX_INLINE_DEPTH {
                let Some(idx) = self.pcvalue(b, index_table, entry, cur) else {
                    break;
                };
                let Ok(idx) = usize::try_from(idx) else {
                    break; // -1: not inlined at this pc
                };
                let call = tree.checked_add(idx.checked_mul(size)?)?;
                let (name_off, parent_pc) = match self.version {
                    GoTableVersion::V120 => (b.i32(call + 4)?, b.i32(call + 8)?),
                    _ => (b.i32(call + 12)?, b.i32(call + 16)?),
                };
                let (file, line) = position(cur);
                frames.push(Frame {
                    function: self.name(data, name_off)?.to_string(),
                    file,
                    line,
                    inlined: true,
                });
                // Continue at the call site in the caller.
                let next = entry.checked_add(u64::try_from(parent_pc).ok()?)?;
                if next == cur {
                    break;
                }
                cur = next;
            }
        }
        let (file, line) = position(cur);
        frames.push(Frame {
            function: self.name(data, name_off)?.to_string(),
            file,
            line,
            inlined: false,
        });
        Some(frames)
    }

    /// File offset of a function's inline tree, if it has one.
    fn inline_tree(&self, b: Bytes<'_>, f: usize, npcdata: u32, nfuncdata: u8) -> Option<usize> {
        let inl_tree = self.version.funcdata_inl_tree();
        if npcdata <= PCDATA_INL_TREE_INDEX || u32::from(nfuncdata) <= inl_tree {
            return None;
        }
        let funcdata = f
            .checked_add(self.func_fixed_size())?
            .checked_add((npcdata as usize).checked_mul(4)?)?;
        if self.version.relative_entries() {
            // Go 1.18+: 32-bit offsets from moduledata.gofunc.
            let gofunc = self.gofunc?;
            let off = b.u32(funcdata.checked_add(4 * inl_tree as usize)?)?;
            if off == u32::MAX {
                return None;
            }
            return gofunc.checked_add(off as usize);
        }
        // Go ≤ 1.17: pointer-aligned absolute addresses (the section keeps file offsets and
        // addresses congruent modulo the pointer size).
        let funcdata = funcdata.checked_next_multiple_of(self.ptr_size)?;
        let at = funcdata.checked_add(self.ptr_size.checked_mul(inl_tree as usize)?)?;
        let va = b.word(at, self.ptr_size)?;
        if va == 0 {
            return None;
        }
        self.loads
            .iter()
            .find(|&&(v, _, size)| va >= v && va - v < size)
            .and_then(|&(v, off, _)| usize::try_from((va - v).checked_add(off)?).ok())
    }
}

#[cfg(test)]
mod tests;

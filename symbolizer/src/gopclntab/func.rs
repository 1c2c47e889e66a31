//! The functab (sorted entry points) and the `_func` record of each function.
//!
//! Layouts, by table version (offsets in bytes; `P` = pointer size):
//! - Go 1.18+: functab `{entryoff u32, funcoff u32}` × nfunc + end `u32`, entries relative to
//!   the text start. `_func`: `entryOff u32, nameOff i32, args, deferreturn, pcsp, pcfile, pcln,
//!   npcdata, cuOffset u32`, `startLine i32` (1.20+ only), then `funcID, flag, _, nfuncdata u8`,
//!   `pcdata [npcdata]u32`, `funcdata [nfuncdata]u32` (offsets from `moduledata.gofunc`).
//! - Go 1.16–1.17: functab words are pointer-sized absolute addresses; `_func` starts with
//!   `entry uintptr`, then the same fields without `startLine`; funcdata are pointer-aligned
//!   absolute pointers.
//! - Go 1.2–1.15: like 1.16 but without `cuOffset`; offsets count from the section start.

use super::{reader::Bytes, GoTable, GoTableVersion};

/// The fields of one function's `_func` record that symbolization needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct FuncRecord {
    /// File offset of the record.
    pub at: usize,
    pub entry: u64,
    /// First address past the function (the next functab entry).
    pub end: u64,
    pub name_off: i32,
    /// pc-value table of the stack-pointer delta (0: none).
    pub pcsp: u32,
    pub pcfile: u32,
    pub pcln: u32,
    pub npcdata: u32,
    /// Index of the function's compilation unit in `cutab` (Go 1.16+; 0 before).
    pub cu_offset: u32,
    pub nfuncdata: u8,
    /// `_func.flag` (Go 1.17+; the padding byte, zero, in Go 1.16; 0 before).
    pub flag: u8,
    /// `_func.startLine` (Go 1.20+ tables; None before, or when not positive).
    pub start_line: Option<u32>,
}

impl GoTable {
    /// Size of a functab field and of `_func.entry`.
    pub(super) fn entry_size(&self) -> usize {
        if self.version.relative_entries() {
            4
        } else {
            self.ptr_size
        }
    }

    /// Size of the fixed part of `_func`, before the pcdata offsets.
    pub(super) fn func_fixed_size(&self) -> usize {
        match self.version {
            GoTableVersion::V120 => 44,
            GoTableVersion::V118 => 40,
            GoTableVersion::V116 => self.ptr_size + 36,
            GoTableVersion::V12 => self.ptr_size + 32,
        }
    }

    /// Functab field `index` (entries at even, `_func` offsets at odd indices).
    fn functab_word(&self, b: Bytes<'_>, index: usize) -> Option<u64> {
        let e = self.entry_size();
        let at = self.functab.start.checked_add(index.checked_mul(e)?)?;
        if at.checked_add(e)? > self.functab.end {
            return None;
        }
        b.word(at, e)
    }

    /// Entry address of function `i` (`i == nfunc`: the end of the last function).
    pub(super) fn entry(&self, b: Bytes<'_>, i: usize) -> Option<u64> {
        let raw = self.functab_word(b, i.checked_mul(2)?)?;
        if self.version.relative_entries() {
            self.text_start.checked_add(raw)
        } else {
            Some(raw)
        }
    }

    /// Binary search of the functab for the function holding `va`.
    pub(super) fn find(&self, b: Bytes<'_>, va: u64) -> Option<usize> {
        let i = if self.version.relative_entries() {
            // The hot path: compare raw 32-bit offsets from the text start.
            let target = va.checked_sub(self.text_start)?;
            let len = self.nfunc.checked_mul(8)?.checked_add(4)?;
            let functab = Bytes(
                b.0.get(self.functab.start..self.functab.start.checked_add(len)?)?,
                b.1,
            );
            let entry_off = |i: usize| functab.u32(i.checked_mul(8)?).map(u64::from);
            partition(self.nfunc, |i| Some(entry_off(i)? <= target))?
        } else {
            partition(self.nfunc, |i| Some(self.entry(b, i)? <= va))?
        };
        let i = i.checked_sub(1)?;
        (va < self.entry(b, i + 1)?).then_some(i)
    }

    /// The `_func` record of function `i`.
    pub(super) fn record(&self, b: Bytes<'_>, i: usize) -> Option<FuncRecord> {
        let entry = self.entry(b, i)?;
        let end = self.entry(b, i.checked_add(1)?)?;
        let funcoff = self.functab_word(b, i.checked_mul(2)?.checked_add(1)?)?;
        let at = self.func_base.checked_add(usize::try_from(funcoff).ok()?)?;
        let fixed = self.func_fixed_size();
        if at < self.section.start || at.checked_add(fixed)? > self.section.end {
            return None;
        }
        // The u32 fields after `entry`.
        let e = self.entry_size();
        let field = |k: usize| b.u32(at + e + 4 * k);
        Some(FuncRecord {
            at,
            entry,
            end,
            name_off: field(0)? as i32,
            pcsp: field(3)?,
            pcfile: field(4)?,
            pcln: field(5)?,
            npcdata: field(6)?,
            cu_offset: if self.version == GoTableVersion::V12 {
                0
            } else {
                field(7)?
            },
            nfuncdata: b.u8(at + fixed - 1)?,
            flag: if self.version == GoTableVersion::V12 {
                0
            } else {
                b.u8(at + fixed - 3)?
            },
            start_line: if self.version == GoTableVersion::V120 {
                field(8)
                    .and_then(|l| u32::try_from(l as i32).ok())
                    .filter(|&l| l > 0)
            } else {
                None
            },
        })
    }

    /// The pcdata table offset `index` of a record, if it has one.
    pub(super) fn pcdata(&self, b: Bytes<'_>, f: &FuncRecord, index: u32) -> Option<u32> {
        if index >= f.npcdata {
            return None;
        }
        let at =
            f.at.checked_add(self.func_fixed_size())?
                .checked_add(4 * index as usize)?;
        b.u32(at).filter(|&off| off != 0)
    }

    /// File offset of funcdata `index` of a record: Go 1.18+ offsets from `gofunc`, older
    /// absolute pointers mapped through the load segments. None when absent or nil.
    pub(super) fn funcdata(&self, b: Bytes<'_>, f: &FuncRecord, index: u32) -> Option<usize> {
        self.funcdata_from(b, f, index, self.gofunc)
    }

    /// [`Self::funcdata`] with Go 1.18+ offsets taken from `gofunc`.
    pub(super) fn funcdata_from(
        &self,
        b: Bytes<'_>,
        f: &FuncRecord,
        index: u32,
        gofunc: Option<usize>,
    ) -> Option<usize> {
        if index >= u32::from(f.nfuncdata) {
            return None;
        }
        let pcdata_end =
            f.at.checked_add(self.func_fixed_size())?
                .checked_add((f.npcdata as usize).checked_mul(4)?)?;
        if self.version.relative_entries() {
            let off = b.u32(pcdata_end.checked_add(4 * index as usize)?)?;
            if off == u32::MAX {
                return None;
            }
            return gofunc?.checked_add(off as usize);
        }
        // Go ≤ 1.17: pointer-aligned absolute addresses. The section keeps file offsets and
        // addresses congruent modulo the pointer size, so aligning the offset aligns the address.
        let base = pcdata_end.checked_next_multiple_of(self.ptr_size)?;
        let at = base.checked_add(self.ptr_size.checked_mul(index as usize)?)?;
        let va = b.word(at, self.ptr_size)?;
        if va == 0 {
            return None;
        }
        self.file_offset(va)
    }

    /// Name at `off` in the function name table.
    pub(super) fn name<'a>(&self, data: &'a [u8], off: i32) -> Option<&'a str> {
        let start = self
            .funcnametab
            .start
            .checked_add(usize::try_from(off).ok()?)?;
        super::reader::cstr(data, start, self.funcnametab.end, super::MAX_STRING)
    }

    /// Name of file number `file_no` of a function in compilation unit `cu_offset`.
    pub(super) fn file_name<'a>(
        &self,
        data: &'a [u8],
        cu_offset: u32,
        file_no: i32,
    ) -> Option<&'a str> {
        let b = self.bytes(data);
        let file_no = usize::try_from(file_no).ok()?;
        let (start, limit) = if self.version == GoTableVersion::V12 {
            // Go 1.2: the file number indexes a flat table of name offsets from the section
            // start (entry 0 is the table's length).
            let at = self.filetab.start.checked_add(file_no.checked_mul(4)?)?;
            if file_no == 0 || at.checked_add(4)? > self.filetab.end {
                return None;
            }
            let start = self.section.start.checked_add(b.u32(at)? as usize)?;
            (start, self.section.end)
        } else {
            let index = (cu_offset as usize).checked_add(file_no)?;
            let at = self.cutab.start.checked_add(index.checked_mul(4)?)?;
            if at.checked_add(4)? > self.cutab.end {
                return None;
            }
            let off = b.u32(at)?;
            if off == u32::MAX {
                return None;
            }
            (
                self.filetab.start.checked_add(off as usize)?,
                self.filetab.end,
            )
        };
        super::reader::cstr(data, start, limit, super::MAX_STRING)
    }
}

/// The number of leading indices in `0..n` for which `below` holds (it must hold for a prefix),
/// by binary search; None when a probe cannot be read.
fn partition(n: usize, below: impl Fn(usize) -> Option<bool>) -> Option<usize> {
    // Invariant: `below` holds before `lo` and fails at and after `hi`.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

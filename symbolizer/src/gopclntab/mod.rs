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
mod func;
mod header;
mod inline;
mod pcvalue;
mod reader;
#[cfg(any(test, feature = "seeds"))]
pub mod write;

use std::ops::Range;

pub use buildinfo::build_info_version;
pub(crate) use buildinfo::build_info_version_in;
pub use pcvalue::{DamagedTable, PcRun, PcRuns};

use crate::{Error, Reason, Symbolized};
use inline::FramesError;
use pcvalue::PcTab;
use reader::Bytes;

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

    /// True for layouts whose functab holds 32-bit offsets from the text start (Go 1.18+);
    /// older ones hold pointer-sized absolute addresses.
    fn relative_entries(self) -> bool {
        matches!(self, Self::V118 | Self::V120)
    }
}

/// A located, validated pclntab. Owns no bytes: it stores file offsets, and every query takes
/// the whole file again (the owner keeps it mapped). Building one reads the header and a few
/// words of `moduledata`; nothing is allocated per function.
#[derive(Debug, Clone)]
pub struct GoTable {
    version: GoTableVersion,
    ptr_size: usize,
    nfunc: usize,
    /// What Go 1.18+ functab entries are relative to (0 before Go 1.18).
    text_start: u64,
    /// File range of the whole table.
    section: Range<usize>,
    /// Where `_func` offsets count from: the functab (Go 1.16+) or the section (Go 1.2).
    func_base: usize,
    /// Loadable segments (vaddr, file offset, file size): Go ≤ 1.17 funcdata are addresses.
    loads: Vec<(u64, u64, u64)>,
    /// Function names (Go 1.16+), or the whole section (Go 1.2).
    funcnametab: Range<usize>,
    /// File-index table of each compilation unit (Go 1.16+; empty before).
    cutab: Range<usize>,
    /// File names (Go 1.16+), or the file-offset index (Go 1.2, names in the section).
    filetab: Range<usize>,
    /// pc-value tables.
    pctab: PcTab,
    /// The functab, followed by the `_func` records.
    functab: Range<usize>,
    /// File offset of `moduledata.gofunc`, the base of Go 1.18+ funcdata (inline trees).
    gofunc: Option<usize>,
    /// The file's byte order is big-endian (s390x, ppc64): the table's words follow it.
    big_endian: bool,
    /// Inline trees are read: false when sampled trees do not decode (Go 1.9–1.11's layout).
    inline_trees: bool,
}

/// One function of the table, as listed by [`GoTable::functions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc<'a> {
    /// Entry address (ELF virtual address).
    pub entry: u64,
    /// First address past the function: the next function's entry, so alignment padding after
    /// the last instruction is included.
    pub end: u64,
    /// Full Go name, e.g. `main.(*T).Run` or `main.Sum[...]`.
    pub name: &'a str,
}

/// One function's stack-pointer deltas, as listed by [`GoTable::sp_deltas`].
#[derive(Debug, Clone)]
pub struct GoFuncSp<'a> {
    /// The function: entry, end (the next function's entry) and name.
    pub func: GoFunc<'a>,
    /// The runtime stops tracebacks here (`runtime.goexit`, `runtime.mstart`, `runtime.rt0_go`):
    /// `_func.flag`'s TOPFRAME bit (Go 1.17+), or one of those names; and the g0 stack's roots
    /// `runtime.mcall` and `runtime.morestack` (see [`TOP_FRAMES`]).
    pub top_frame: bool,
    /// The function writes rsp with more than a constant push or pop (it switches stacks, as
    /// `runtime.asmcgocall` and `runtime.systemstack` do), so its `pcsp` deltas hold only until
    /// then: `_func.flag`'s SPWRITE bit (Go 1.17+), or one of [`SP_WRITERS`].
    pub sp_write: bool,
    /// The `pcsp` table: bytes the function has pushed below its return address, per pc range,
    /// from the entry. None when the function has no table.
    pub runs: Option<PcRuns<'a>>,
}

/// `_func.flag` bit: traceback stops at this function.
const FUNC_FLAG_TOPFRAME: u8 = 1;
/// Functions that end every stack, for tables without `_func.flag`; and the two that begin the
/// g0 stack after a switch from a goroutine's (`mcall` into the scheduler, `morestack` into
/// `newstack`), where Go's own profiles root those stacks too: the goroutine's side is in its
/// saved context, not on this stack.
const TOP_FRAMES: &[&str] = &[
    "runtime.goexit",
    "runtime.mstart",
    "runtime.rt0_go",
    "runtime.mcall",
    "runtime.morestack",
];
/// `_func.flag` bit: the function writes the stack pointer arbitrarily.
const FUNC_FLAG_SPWRITE: u8 = 2;
/// The stack switchers of every Go release whose frame pointer leads back to the goroutine's
/// stack, for tables without `_func.flag`.
const SP_WRITERS: &[&str] = &["runtime.asmcgocall", "runtime.systemstack"];

impl GoTable {
    /// Finds and validates the table in an ELF image: the `.gopclntab` or
    /// `.data.rel.ro.gopclntab` section, or, in a file without section headers, a table header
    /// found in a non-executable loadable segment. Then resolves the text start (header; Go
    /// 1.26+: `moduledata.text` or `runtime.text`) and `gofunc` (inline trees), reading PIE
    /// words through their `R_*_RELATIVE` relocations.
    ///
    /// `Ok(None)`: not a Go binary (or not an ELF file). `Err`: a Go table damaged beyond use,
    /// or one with an unknown magic.
    pub fn from_elf(data: &[u8]) -> Result<Option<GoTable>, Error> {
        header::locate(data)
    }

    /// [`Self::from_elf`] for an ELF file already parsed from `data` (which the table's
    /// lookups then read).
    pub(crate) fn from_object(
        obj: &object::File<'_>,
        data: &[u8],
    ) -> Result<Option<GoTable>, Error> {
        header::locate_in(obj, data)
    }

    /// The table's layout class.
    pub fn version(&self) -> GoTableVersion {
        self.version
    }

    /// Number of functions in the table.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// True for a table without functions.
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// The address Go 1.18+ functab entries are relative to (`runtime.text`); 0 for older
    /// tables, whose entries are absolute.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Frames for a virtual address (as in the ELF file): innermost inlined frame first, the
    /// physical function last. Callers pass `return address - 1` for non-leaf frames.
    ///
    /// An address outside every function gives `Unknown(NoFunction)`; a function whose record,
    /// name or inline tree is damaged gives `Unknown(Malformed)`. Never panics, whatever the
    /// bytes.
    pub fn symbolize(&self, data: &[u8], va: u64) -> Symbolized {
        let b = self.bytes(data);
        let Some(index) = self.find(b, va) else {
            return Symbolized::Unknown(Reason::NoFunction);
        };
        let Some(record) = self.record(b, index) else {
            return Symbolized::Unknown(Reason::Malformed);
        };
        match self.frames(b, &record, va) {
            Ok(frames) => Symbolized::Sym(frames),
            Err(FramesError::Damaged | FramesError::TooDeep) => {
                Symbolized::Unknown(Reason::Malformed)
            }
        }
    }

    /// Every function in address order: entry, end and name. Damaged entries are skipped.
    pub fn functions<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = GoFunc<'a>> + 'a {
        let b = self.bytes(data);
        (0..self.nfunc).filter_map(move |i| {
            let f = self.record(b, i)?;
            Some(GoFunc {
                entry: f.entry,
                end: f.end,
                name: self.name(data, f.name_off)?,
            })
        })
    }

    /// Every function in address order with its stack-pointer delta table (`pcsp`), the
    /// source of Go unwind rows. Damaged entries are skipped.
    pub fn sp_deltas<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = GoFuncSp<'a>> + 'a {
        let b = self.bytes(data);
        (0..self.nfunc).filter_map(move |i| {
            let f = self.record(b, i)?;
            let name = self.name(data, f.name_off)?;
            Some(GoFuncSp {
                func: GoFunc {
                    entry: f.entry,
                    end: f.end,
                    name,
                },
                top_frame: f.flag & FUNC_FLAG_TOPFRAME != 0 || TOP_FRAMES.contains(&name),
                sp_write: f.flag & FUNC_FLAG_SPWRITE != 0 || SP_WRITERS.contains(&name),
                runs: self.pctab.runs(data, f.pcsp, f.entry, f.end),
            })
        })
    }

    /// Reads of `data` in the table's byte order.
    fn bytes<'a>(&self, data: &'a [u8]) -> Bytes<'a> {
        Bytes(data, self.big_endian)
    }

    /// File offset of a virtual address inside a loadable segment.
    fn file_offset(&self, va: u64) -> Option<usize> {
        header::file_offset(&self.loads, va)
    }
}

#[cfg(test)]
mod tests;

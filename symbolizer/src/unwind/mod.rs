//! Unwind tables for x86_64 binaries, built in userspace: for every address of a file's code,
//! how to find the caller's frame without frame pointers. A BPF unwinder walks stacks with
//! compact rows derived from these tables.
//!
//! Sources, in order of preference for an address:
//! 1. `.gopclntab`'s `pcsp` tables for Go functions ([`go`]): CFA = rsp + spdelta + 8, for every
//!    table layout the symbolizer reads (Go 1.2 onwards, stripped and PIE builds alike);
//! 2. `.eh_frame` ([`cfi`], through gimli);
//! 3. `.debug_frame` of the file, then of its separate debug file.
//!
//! A whole FDE is dropped when a preferred source already covers any of its addresses (or an
//! earlier FDE of the same section does). Addresses that no source covers, between and after
//! the covered ranges, get [`Cfa::Unknown`] rows: the unwinder falls back to frame pointers.
//!
//! Binaries come from containers: the input is untrusted. Parsing never panics, memory is
//! bounded by [`UnwindLimits`] (rows kept and CFI bytes read), and nothing recurses.

mod cfi;
mod go;

use std::borrow::Cow;

use object::{Object, ObjectSection};

use crate::gopclntab::GoTable;

/// How to compute the canonical frame address (CFA): the value of rsp just before the call
/// that entered the function, so the return address is at CFA-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cfa {
    /// CFA = rsp + n.
    Rsp(i32),
    /// CFA = rbp + n.
    Rbp(i32),
    /// A `.plt`/`.plt.sec` stub, as gcc and ld describe it with a `DW_CFA_def_cfa_expression`:
    /// CFA = rsp + 8 + ((rip & 15) >= 11 ? 8 : 0).
    Plt,
    /// A signal trampoline (an FDE with augmentation `S`, e.g. glibc's `__restore_rt`): the
    /// interrupted frame's registers are in the `ucontext` on the stack.
    Signal,
    /// The return address is undefined here: the outermost frame (`_start`, Go's
    /// `runtime.goexit`); the stack is complete.
    Undefined,
    /// No usable rule: no source covers the address, or its rule is one we do not evaluate (an
    /// expression, another base register, a return address not at CFA-8). The unwinder falls
    /// back to frame pointers.
    Unknown,
}

/// Where the caller's rbp is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rbp {
    /// rbp still holds the caller's value (not yet saved, or already restored).
    Unchanged,
    /// The caller's rbp is saved at CFA + n (e.g. `At(-16)` after `push %rbp`).
    At(i32),
}

/// One row: the rule for `[pc, next row's pc)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// First address of the row (ELF virtual address).
    pub pc: u64,
    /// How to find the CFA.
    pub cfa: Cfa,
    /// Where the caller's rbp is.
    pub rbp: Rbp,
}

/// Bounds on the work and memory of building one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindLimits {
    /// Most rows a table may have, counted before equal neighbours merge (24 bytes each, plus
    /// 32 while building).
    pub max_rows: usize,
    /// Most bytes of CFI (`.eh_frame` and `.debug_frame`s together, after decompression) read.
    pub max_cfi_bytes: u64,
}

impl Default for UnwindLimits {
    /// 4 Mi rows (ClickHouse, among the largest binaries around, has about 2.8 M) and 256 MiB
    /// of CFI.
    fn default() -> Self {
        UnwindLimits {
            max_rows: 4 << 20,
            max_cfi_bytes: 256 << 20,
        }
    }
}

/// Why a table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    /// The bytes are not an ELF file `object` can read.
    #[error("not a readable ELF file: {0}")]
    BadElf(#[source] object::Error),
    /// Only x86_64 rules are derived.
    #[error("unwind tables are built for x86_64 only, not {0:?}")]
    UnsupportedArchitecture(object::Architecture),
    /// More rows than [`UnwindLimits::max_rows`]: raise the limit or leave the binary to frame
    /// pointers.
    #[error("more than {limit} unwind rows (raise UnwindLimits::max_rows)")]
    TooManyRows {
        /// The limit that was reached.
        limit: usize,
    },
    /// More CFI than [`UnwindLimits::max_cfi_bytes`].
    #[error("{section} brings CFI to {total} bytes, over the limit of {limit} (raise UnwindLimits::max_cfi_bytes)")]
    CfiTooLarge {
        /// The section that went over.
        section: &'static str,
        /// CFI bytes counted with it.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A compressed CFI section could not be decompressed.
    #[error("cannot decompress {section}: {source}")]
    Decompress {
        /// The section.
        section: &'static str,
        /// What object reported.
        #[source]
        source: object::Error,
    },
}

/// What went into a table: functions and FDEs read, dropped and damaged. For tests, tools and
/// metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Go functions whose `pcsp` table was used.
    pub go_functions: usize,
    /// Go-table functions without a `pcsp` table: C code of cgo binaries (left to other sources).
    pub go_without_table: usize,
    /// Go functions whose `pcsp` table is damaged (left to other sources).
    pub go_damaged: usize,
    /// The Go table itself was present but unreadable.
    pub go_table_damaged: bool,
    /// FDEs read, per source: `.eh_frame`, `.debug_frame`, the debug file's `.debug_frame`
    /// (including those then dropped as covered).
    pub fdes: [usize; 3],
    /// FDEs dropped because a preferred source (or an earlier FDE) already covers them.
    pub fdes_covered: usize,
    /// FDEs whose CIE or instructions gimli could not read.
    pub fdes_damaged: usize,
    /// CFI sections whose entry list ended in damage (later entries unread).
    pub sections_truncated: usize,
}

/// An unwind table of one ELF file: rows sorted by pc, equal neighbours merged, gaps marked
/// [`Cfa::Unknown`], and a final `Unknown` row after the last covered address.
#[derive(Debug, Clone, Default)]
pub struct UnwindTable {
    rows: Vec<UnwindRow>,
    stats: UnwindStats,
}

impl UnwindTable {
    /// Builds the table of an ELF image (`data`, the whole file), with the `.debug_frame` of its
    /// separate debug file (`debug_file`, e.g. found through `.gnu_debuglink` or the build id)
    /// as the last source.
    ///
    /// Damaged Go tables, FDEs and CIEs are skipped (and counted in [`Self::stats`]); errors are
    /// for files that are not x86_64 ELF and for inputs over `limits`.
    pub fn from_elf(
        data: &[u8],
        debug_file: Option<&[u8]>,
        limits: &UnwindLimits,
    ) -> Result<UnwindTable, UnwindError> {
        let obj = object::File::parse(data).map_err(UnwindError::BadElf)?;
        if obj.architecture() != object::Architecture::X86_64 {
            return Err(UnwindError::UnsupportedArchitecture(obj.architecture()));
        }
        let debug = debug_file
            .map(object::File::parse)
            .transpose()
            .map_err(UnwindError::BadElf)?;
        let mut b = Builder::new(limits.max_rows);
        let mut stats = UnwindStats::default();
        let mut cfi_bytes = 0u64;

        match GoTable::from_elf(data) {
            Ok(Some(table)) => go::collect(data, &obj, &table, &mut b, &mut stats)?,
            Ok(None) => {}
            Err(_) => stats.go_table_damaged = true,
        }
        b.end_source();

        if let Some(section) = obj.section_by_name(".eh_frame") {
            let bytes = section_bytes(&section, ".eh_frame", &mut cfi_bytes, limits)?;
            let bases = gimli::BaseAddresses::default()
                .set_eh_frame(section.address())
                .set_text(obj.section_by_name(".text").map_or(0, |s| s.address()))
                .set_got(obj.section_by_name(".got").map_or(0, |s| s.address()));
            let mut eh = gimli::EhFrame::new(&bytes, gimli::LittleEndian);
            eh.set_address_size(8);
            stats.fdes[0] = cfi::collect(&eh, &bases, &mut b, &mut stats)?;
        }
        b.end_source();

        let debug_frames = [(Some(&obj), 1), (debug.as_ref(), 2)];
        for (file, slot) in debug_frames {
            let Some(section) = file.and_then(|f| f.section_by_name(".debug_frame")) else {
                continue;
            };
            let name = if slot == 1 {
                ".debug_frame"
            } else {
                ".debug_frame (debug file)"
            };
            let bytes = section_bytes(&section, name, &mut cfi_bytes, limits)?;
            let mut df = gimli::DebugFrame::new(&bytes, gimli::LittleEndian);
            df.set_address_size(8);
            stats.fdes[slot] =
                cfi::collect(&df, &gimli::BaseAddresses::default(), &mut b, &mut stats)?;
            b.end_source();
        }

        stats.fdes_covered = b.dropped;
        let rows = b.finish()?;
        Ok(UnwindTable { rows, stats })
    }

    /// The rows, sorted by pc; each holds up to the next row's pc.
    pub fn rows(&self) -> &[UnwindRow] {
        &self.rows
    }

    /// The row covering `pc` (by binary search); None before the first row. Past the last
    /// covered address the row is `Unknown`.
    pub fn lookup(&self, pc: u64) -> Option<&UnwindRow> {
        let i = self.rows.partition_point(|r| r.pc <= pc);
        self.rows.get(i.checked_sub(1)?)
    }

    /// What went into the table.
    pub fn stats(&self) -> &UnwindStats {
        &self.stats
    }
}

/// A section's bytes, decompressed if need be, counted against the CFI limit before any
/// allocation.
fn section_bytes<'a>(
    section: &object::Section<'a, '_>,
    name: &'static str,
    total: &mut u64,
    limits: &UnwindLimits,
) -> Result<Cow<'a, [u8]>, UnwindError> {
    let compressed = section
        .compressed_data()
        .map_err(|source| UnwindError::Decompress {
            section: name,
            source,
        })?;
    let size = if compressed.format == object::CompressionFormat::None {
        compressed.data.len() as u64
    } else {
        compressed.uncompressed_size
    };
    *total = total.saturating_add(size);
    if *total > limits.max_cfi_bytes {
        return Err(UnwindError::CfiTooLarge {
            section: name,
            total: *total,
            limit: limits.max_cfi_bytes,
        });
    }
    compressed
        .decompress()
        .map_err(|source| UnwindError::Decompress {
            section: name,
            source,
        })
}

/// One rule over `[start, end)`, before rows are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u64,
    end: u64,
    cfa: Cfa,
    rbp: Rbp,
}

/// The address range a source describes as a unit (a Go function, an FDE), and its runs.
#[derive(Debug, Clone)]
struct Block {
    start: u64,
    end: u64,
    runs: std::ops::Range<usize>,
}

/// Collects runs source by source and keeps, per address, the first source's block.
struct Builder {
    max_rows: usize,
    runs: Vec<Run>,
    /// Blocks of the current source.
    pending: Vec<Block>,
    /// Kept blocks of earlier sources, sorted by start, disjoint.
    kept: Vec<Block>,
    /// Start of the current block in `runs`, and its range.
    open: Option<(usize, u64, u64)>,
    /// Blocks dropped because an earlier one covers some of their addresses.
    dropped: usize,
}

impl Builder {
    fn new(max_rows: usize) -> Self {
        Builder {
            max_rows,
            runs: Vec::new(),
            pending: Vec::new(),
            kept: Vec::new(),
            open: None,
            dropped: 0,
        }
    }

    /// True when an earlier source's kept block overlaps `[start, end)`: the block would be
    /// dropped, so its rows need not be evaluated. Counts it as dropped.
    fn covered(&mut self, start: u64, end: u64) -> bool {
        let i = self.kept.partition_point(|k| k.end <= start);
        let covered = self.kept.get(i).is_some_and(|k| k.start < end);
        self.dropped += usize::from(covered);
        covered
    }

    /// Starts a block over `[start, end)`.
    fn begin(&mut self, start: u64, end: u64) {
        self.open = Some((self.runs.len(), start, end));
    }

    /// Adds a run to the open block, merging it into the previous one when they touch and
    /// agree. Runs outside the block or before the previous run are clipped.
    fn push(&mut self, start: u64, end: u64, cfa: Cfa, rbp: Rbp) -> Result<(), UnwindError> {
        let Some((first, bstart, bend)) = self.open else {
            return Ok(());
        };
        let floor = match self.runs.get(first..).and_then(|r| r.last()) {
            Some(last) => last.end,
            None => bstart,
        };
        let (start, end) = (start.max(floor), end.min(bend));
        if start >= end {
            return Ok(());
        }
        if self.runs.len() > first {
            if let Some(last) = self.runs.last_mut() {
                if last.end == start && last.cfa == cfa && last.rbp == rbp {
                    last.end = end;
                    return Ok(());
                }
            }
        }
        if self.runs.len() >= self.max_rows {
            return Err(UnwindError::TooManyRows {
                limit: self.max_rows,
            });
        }
        self.runs.push(Run {
            start,
            end,
            cfa,
            rbp,
        });
        Ok(())
    }

    /// Ends the open block; a block without runs is forgotten.
    fn end(&mut self) {
        if let Some((first, start, end)) = self.open.take() {
            if self.runs.len() > first {
                self.pending.push(Block {
                    start,
                    end,
                    runs: first..self.runs.len(),
                });
            }
        }
    }

    /// Abandons the open block (damaged input), dropping its runs.
    fn abandon(&mut self) {
        if let Some((first, _, _)) = self.open.take() {
            self.runs.truncate(first);
        }
    }

    /// Keeps the current source's blocks that overlap neither an earlier source's nor an
    /// earlier block of their own.
    fn end_source(&mut self) {
        self.end();
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|b| (b.start, b.end));
        let mut fresh: Vec<Block> = Vec::with_capacity(pending.len());
        for block in pending {
            let own = fresh.last().is_some_and(|last| last.end > block.start);
            let i = self.kept.partition_point(|k| k.end <= block.start);
            let earlier = self.kept.get(i).is_some_and(|k| k.start < block.end);
            if own || earlier {
                self.dropped += 1;
            } else {
                fresh.push(block);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(self.kept.len() + fresh.len());
        let (mut a, mut b) = (
            std::mem::take(&mut self.kept).into_iter().peekable(),
            fresh.into_iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.start <= y.start => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(block) => kept.push(block),
                None => break,
            }
        }
        self.kept = kept;
    }

    /// The rows: every kept run, `Unknown` in the gaps and after the end, equal neighbours
    /// merged.
    fn finish(mut self) -> Result<Vec<UnwindRow>, UnwindError> {
        self.end_source();
        let mut rows: Vec<UnwindRow> = Vec::new();
        let mut cursor: Option<u64> = None;
        let max_rows = self.max_rows;
        let emit = |rows: &mut Vec<UnwindRow>, pc: u64, cfa: Cfa, rbp: Rbp| {
            if let Some(last) = rows.last_mut() {
                if last.cfa == cfa && last.rbp == rbp {
                    return Ok(());
                }
                if last.pc == pc {
                    *last = UnwindRow { pc, cfa, rbp };
                    return Ok(());
                }
            }
            if rows.len() >= max_rows {
                return Err(UnwindError::TooManyRows { limit: max_rows });
            }
            rows.push(UnwindRow { pc, cfa, rbp });
            Ok(())
        };
        for block in &self.kept {
            for run in &self.runs[block.runs.clone()] {
                if let Some(c) = cursor {
                    if run.start > c {
                        emit(&mut rows, c, Cfa::Unknown, Rbp::Unchanged)?;
                    }
                }
                emit(&mut rows, run.start, run.cfa, run.rbp)?;
                cursor = Some(run.end);
            }
        }
        if let Some(c) = cursor {
            emit(&mut rows, c, Cfa::Unknown, Rbp::Unchanged)?;
        }
        // A merge can leave two equal rows around a replaced one; a last pass settles it.
        rows.dedup_by(|next, prev| next.cfa == prev.cfa && next.rbp == prev.rbp);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests;

//! ELF files: Go's pclntab when present, then DWARF (lines and inlined frames, through
//! `addr2line`), then the symbol tables; build id; file offset → virtual address.
//!
//! One job per file: [`ElfResolver`] here opens a file and answers lookups in that order;
//! `symbols` indexes the symbol tables, `debug_file` finds symbols and DWARF kept outside the
//! binary (separate debug files, MiniDebugInfo), and `dwarf` owns the DWARF context's lifecycle
//! (sized at open, built on first use, released under a budget).

mod debug_file;
mod dwarf;
mod dwarf_index;
mod symbols;

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use memmap2::Mmap;

use object::{Object, ObjectSegment};

use crate::{gopclntab::GoTable, Error, Frame, Reason, Result, Symbolized};

pub use debug_file::{separate_debug_file, DEFAULT_DEBUG_ROOT};
pub(crate) use dwarf::DwarfClock;
pub use symbols::demangle;

use dwarf::DwarfState;
use symbols::{SymbolIndex, SymbolSource};

/// A loadable segment: file range ↔ virtual address range.
#[derive(Debug, Clone, Copy)]
struct Load {
    file_offset: u64,
    file_size: u64,
    vaddr: u64,
}

/// Symbolizes addresses of one ELF file.
///
/// The file is memory-mapped. The map is read-only and private; a file truncated while mapped
/// would fault (SIGBUS) on access, a risk we accept because we read files through descriptors
/// we hold and binaries of running processes are not truncated in place (the kernel refuses to
/// write to a running executable: ETXTBSY).
pub struct ElfResolver {
    data: Arc<Mmap>,
    display: String,
    symbols: SymbolIndex,
    loads: Vec<Load>,
    build_id: Option<Vec<u8>>,
    go: Option<GoTable>,
    go_version: Option<String>,
    /// The file has a Go table too damaged to use.
    go_table_damaged: bool,
    /// The DWARF in use: the binary's own, else its separate debug file's.
    dwarf: DwarfState,
    /// A separate debug file, when the binary's own DWARF is absent.
    debug_file: Option<(PathBuf, Arc<Mmap>)>,
    /// The decompressed MiniDebugInfo (`.gnu_debugdata`), when its symbols are the ones used.
    mini_debuginfo: Option<Vec<u8>>,
}

impl std::fmt::Debug for ElfResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfResolver")
            .field("file", &self.display)
            .field("symbols", &self.symbols.len())
            .field("go", &self.go.is_some())
            .finish()
    }
}

impl ElfResolver {
    /// Opens and indexes the file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let display = path.display().to_string();
        let file = File::open(path).map_err(|source| Error::Io {
            path: display.clone(),
            source,
        })?;
        Self::from_file(file, &display)
    }

    /// Indexes an already opened file (e.g. through `/proc/PID/map_files`). `display` names it
    /// in errors and profiles.
    pub fn from_file(file: File, display: &str) -> Result<Self> {
        Self::from_file_with_debug_root(file, display, Path::new(DEFAULT_DEBUG_ROOT))
    }

    /// [`Self::from_file`], looking for separate debug files under `debug_root` instead of
    /// `/usr/lib/debug`.
    pub fn from_file_with_debug_root(file: File, display: &str, debug_root: &Path) -> Result<Self> {
        let data = map_file(&file, display)?;
        let obj = parse_elf(&data, display)?;
        Ok(Self::from_parsed(&data, &obj, display, debug_root))
    }

    /// Indexes an ELF file mapped as `data` and parsed from it as `obj`: everything read at
    /// open comes from this one parse (the debug file and MiniDebugInfo are parsed once each).
    pub(crate) fn from_parsed(
        data: &Arc<Mmap>,
        obj: &object::File<'_>,
        display: &str,
        debug_root: &Path,
    ) -> Self {
        let build_id = obj.build_id().ok().flatten().map(<[u8]>::to_vec);
        let own = debug_file::Own {
            symbols: SymbolIndex::build(obj, data, SymbolSource::Binary),
            dwarf: DwarfState::new(data, obj),
        };
        let found = debug_file::complete(own, obj, build_id.as_deref(), display, debug_root);
        let (go, go_table_damaged) = match GoTable::from_object(obj, data) {
            Ok(go) => (go, false),
            Err(err) => {
                // A damaged Go table still leaves the ELF symbols usable. Said once per file:
                // a file is opened once (per identity and build id) by a symbolizer.
                let file = display;
                tracing::warn!(file, "{err}; naming its code from the ELF symbols");
                (None, true)
            }
        };
        let go_version = go
            .as_ref()
            .and_then(|_| crate::gopclntab::build_info_version_in(obj, data));
        ElfResolver {
            data: Arc::clone(data),
            display: display.to_string(),
            symbols: found.symbols,
            loads: loads(obj),
            build_id,
            go,
            go_version,
            go_table_damaged,
            dwarf: found.dwarf,
            debug_file: found.debug_file,
            mini_debuginfo: found.mini_debuginfo,
        }
    }

    /// The separate debug file in use, if any.
    pub fn debug_file(&self) -> Option<&Path> {
        self.debug_file.as_ref().map(|(p, _)| p.as_path())
    }

    /// The name this file was opened under.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The GNU build id, when present.
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// The build id as lowercase hex.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id().map(|b| {
            b.iter()
                .fold(String::with_capacity(b.len() * 2), |mut s, x| {
                    use std::fmt::Write as _;
                    let _ = write!(s, "{x:02x}");
                    s
                })
        })
    }

    /// True when the file has a Go pclntab.
    pub fn is_go(&self) -> bool {
        self.go.is_some()
    }

    /// True when the file has a Go table too damaged to use (its code is then named from the
    /// ELF symbols, when it has any).
    pub fn go_table_damaged(&self) -> bool {
        self.go_table_damaged
    }

    /// The Go release that built the file, from its build info (e.g. `go1.22.5`).
    pub fn go_version(&self) -> Option<&str> {
        self.go_version.as_deref()
    }

    /// Size of the mapped file in bytes.
    pub fn mapped_bytes(&self) -> usize {
        self.data.len()
    }

    /// Heap bytes used by the indexes: symbols, segments, decompressed MiniDebugInfo and DWARF
    /// sections (once loaded). The DWARF index is counted in [`Self::dwarf_bytes`].
    pub fn index_bytes(&self) -> usize {
        self.symbols.heap_bytes()
            + self.loads.capacity() * std::mem::size_of::<Load>()
            + self.mini_debuginfo.as_ref().map_or(0, Vec::capacity)
            + self.dwarf.decompressed_bytes()
    }

    /// Bytes of DWARF sections behind the loaded DWARF index (decompressed or mapped) and of
    /// the index's tables; 0 when none is loaded. What [`crate::Symbolizer::set_dwarf_budget`]
    /// bounds.
    pub fn dwarf_bytes(&self) -> usize {
        self.dwarf.loaded_bytes()
    }

    /// What [`Self::dwarf_bytes`] would be once DWARF is loaded: 0 without DWARF, or when its
    /// size refuses it.
    pub fn dwarf_size(&self) -> usize {
        self.dwarf.size()
    }

    /// When DWARF was last used, on the clock of the [`crate::Symbolizer`] that opened this file
    /// (larger is later); 0 for never.
    pub fn dwarf_last_used(&self) -> u64 {
        self.dwarf.last_used()
    }

    /// How many times this resolver built its DWARF context (more than once after releases).
    pub fn dwarf_loads(&self) -> u64 {
        self.dwarf.loads()
    }

    /// Drops the DWARF index and every unit table built into it, and lets the kernel
    /// reclaim the file's pages from this process; the next lookup that needs DWARF builds it
    /// again. Returns the [`Self::dwarf_bytes`] released.
    pub fn release_dwarf(&self) -> usize {
        let Some(bytes) = self.dwarf.release() else {
            return 0;
        };
        for map in std::iter::once(&self.data).chain(self.debug_file.as_ref().map(|(_, m)| m)) {
            // SAFETY: the map is private and read-only: nothing was written to it, so dropping
            // its pages loses nothing, and later reads fault them in again from the file.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
        bytes
    }

    /// The virtual address (as in the ELF file) of a file offset, through the loadable
    /// segments (`PT_LOAD`). For a sampled address: `offset = addr - map.start + map.offset`.
    pub fn file_offset_to_va(&self, offset: u64) -> Option<u64> {
        offset_to_va(&self.loads, offset)
    }

    /// True when the file carries DWARF debug information.
    pub fn has_dwarf(&self) -> bool {
        self.dwarf.present()
    }

    /// Frames for a virtual address: the Go table first (with inlined frames and lines), then
    /// DWARF (lines and inlined frames of native code), then the ELF symbol tables (cgo and
    /// assembly code, binaries without debug information).
    ///
    /// In a Go binary, an address the Go table misses (C code linked in by cgo) is named from
    /// the ELF symbols when they know it: a Go binary's DWARF is large and compressed by
    /// default, and loading all of it for a few C frames costs more than their lines are worth.
    pub fn symbolize(&self, va: u64) -> Symbolized {
        let mut go_miss = None;
        if let Some(go) = &self.go {
            match go.symbolize(&self.data, va) {
                found @ Symbolized::Sym(_) => return found,
                Symbolized::Unknown(reason) => go_miss = Some(reason),
            }
        }
        let named_cheaply = self.go.is_some() && self.symbol_at(va).is_some();
        if self.dwarf.present() && !named_cheaply {
            let symbol = || self.symbol_at(va).map(|n| demangle(&n));
            let loads = self.dwarf.loads();
            let frames = self.dwarf.frames(va, symbol);
            if self.dwarf.loads() != loads {
                tracing::debug!(
                    file = self.display,
                    va = format_args!("{va:#x}"),
                    bytes = self.dwarf.loaded_bytes(),
                    "DWARF loaded"
                );
            }
            if let Some(frames) = frames {
                return Symbolized::Sym(frames);
            }
        }
        match self.symbol_at(va) {
            Some(name) => Symbolized::Sym(vec![Frame {
                function: demangle(&name),
                file: None,
                line: None,
                inlined: false,
                start_line: None,
            }]),
            None if self.symbols.is_empty() && self.go.is_none() => {
                Symbolized::Unknown(Reason::NoSymbols)
            }
            None => Symbolized::Unknown(go_miss.unwrap_or(Reason::NoFunction)),
        }
    }

    /// [`Self::symbolize`] for many addresses, answered in order. They are looked up in address
    /// order, on several threads, once the DWARF tables they need are built (on several threads
    /// too): the same answers, sooner.
    pub fn symbolize_batch(&self, vas: &[u64]) -> Vec<Symbolized> {
        let mut order: Vec<(u64, usize)> = vas.iter().copied().zip(0..).collect();
        order.sort_unstable();
        // A Go binary's addresses are answered by its Go table.
        if self.go.is_none() && self.dwarf.present() && !vas.is_empty() {
            let sorted: Vec<u64> = order.iter().map(|&(va, _)| va).collect();
            self.dwarf.prepare(&sorted);
        }
        let pieces: Vec<&[(u64, usize)]> = order.chunks(BATCH_PIECE).collect();
        let answered = crate::parallel::map(&pieces, |piece| {
            piece
                .iter()
                .map(|&(va, _)| self.symbolize(va))
                .collect::<Vec<_>>()
        });
        let mut answers = vec![Symbolized::Unknown(Reason::NoFunction); vas.len()];
        for (piece, piece_answers) in pieces.into_iter().zip(answered) {
            for (&(_, i), answer) in piece.iter().zip(piece_answers) {
                answers[i] = answer;
            }
        }
        answers
    }

    /// Uses DWARF only when its sections take at most `bytes` (default 1 GiB): a bound on the
    /// memory one binary may cost. Larger DWARF leaves names from the ELF symbols, without
    /// lines or inlined frames. Applies before the first lookup.
    pub fn with_max_dwarf_bytes(mut self, bytes: u64) -> Self {
        self.dwarf.set_max_bytes(bytes);
        self
    }

    /// Orders this file's DWARF uses with those of the other files on `clock`.
    pub(crate) fn with_dwarf_clock(mut self, clock: Arc<DwarfClock>) -> Self {
        self.dwarf.set_clock(clock);
        self
    }

    /// True once a lookup needed DWARF that was refused for its size.
    pub fn dwarf_too_large(&self) -> bool {
        self.dwarf.too_large()
    }

    /// The name of the symbol covering `va`.
    fn symbol_at(&self, va: u64) -> Option<std::borrow::Cow<'_, str>> {
        let names: &[u8] = match (
            self.symbols.source(),
            &self.debug_file,
            &self.mini_debuginfo,
        ) {
            (SymbolSource::DebugFile, Some((_, debug)), _) => debug,
            (SymbolSource::MiniDebugInfo, _, Some(mini)) => mini,
            _ => &self.data,
        };
        self.symbols.name_at(va, names)
    }
}

/// Addresses of a batch that one thread answers in a row (see
/// [`ElfResolver::symbolize_batch`]).
const BATCH_PIECE: usize = 64;

/// Maps an opened file.
pub(crate) fn map_file(file: &File, display: &str) -> Result<Arc<Mmap>> {
    // SAFETY: see [`ElfResolver`]'s documentation: read-only private map of a file we hold open.
    let map = unsafe { Mmap::map(file) }.map_err(|source| Error::Io {
        path: display.to_string(),
        source,
    })?;
    Ok(Arc::new(map))
}

/// Parses mapped bytes as ELF (and nothing else).
pub(crate) fn parse_elf<'d>(data: &'d [u8], display: &str) -> Result<object::File<'d>> {
    let bad = |reason: String| Error::BadElf {
        path: display.to_string(),
        reason,
    };
    let obj = object::File::parse(data).map_err(|e| bad(e.to_string()))?;
    if !matches!(obj.format(), object::BinaryFormat::Elf) {
        return Err(bad("not ELF".into()));
    }
    Ok(obj)
}

/// The loadable segments with file data.
fn loads(obj: &object::File<'_>) -> Vec<Load> {
    obj.segments()
        .map(|s| {
            let (file_offset, file_size) = s.file_range();
            Load {
                file_offset,
                file_size,
                vaddr: s.address(),
            }
        })
        .filter(|l| l.file_size > 0)
        .collect()
}

/// [`ElfResolver::file_offset_to_va`] over a list of loadable segments: the first segment
/// whose file range holds `offset`.
fn offset_to_va(loads: &[Load], offset: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| offset >= l.file_offset && offset - l.file_offset < l.file_size)
        .and_then(|l| (offset - l.file_offset).checked_add(l.vaddr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn elf_test_marker() -> u32 {
        std::hint::black_box(7)
    }

    fn own_va(addr: u64) -> (ElfResolver, u64) {
        let maps = crate::process::ProcessMaps::read(std::process::id()).unwrap();
        let m = maps.find(addr).unwrap();
        let r = ElfResolver::open(&std::env::current_exe().unwrap()).unwrap();
        let va = r.file_offset_to_va(m.file_offset(addr).unwrap()).unwrap();
        (r, va)
    }

    #[test]
    fn symbolizes_own_function_through_offsets() {
        elf_test_marker();
        let (r, va) = own_va(elf_test_marker as fn() -> u32 as usize as u64);
        let before = r.index_bytes();
        let frames = r.symbolize(va);
        // The physical function is the outermost frame (black_box may be inlined into it when
        // the crate is optimised).
        let name = &frames.frames().last().unwrap().function;
        assert!(name.ends_with("elf_test_marker"), "{frames:?}");
        assert!(r.build_id().is_some());
        assert!(!r.is_go());
        // Plain DWARF sections are read in place: loading them adds nothing to the heap.
        assert!(r.has_dwarf());
        assert!(frames.frames()[0].line.is_some(), "{frames:?}");
        assert_eq!(r.index_bytes(), before);
    }

    fn load(file_offset: u64, file_size: u64, vaddr: u64) -> Load {
        Load {
            file_offset,
            file_size,
            vaddr,
        }
    }

    #[test]
    fn offsets_map_through_the_segment_that_holds_them() {
        // A typical non-PIE layout: headers+rodata, text, data (file and memory offsets differ
        // by a page in the last one); then a PIE layout based at 0.
        let exec = [
            load(0, 0x5f0, 0x40_0000),
            load(0x1000, 0x2345, 0x40_1000),
            load(0x3e10, 0x230, 0x40_4e10),
        ];
        assert_eq!(offset_to_va(&exec, 0), Some(0x40_0000));
        assert_eq!(offset_to_va(&exec, 0x5ef), Some(0x40_05ef));
        assert_eq!(offset_to_va(&exec, 0x5f0), None, "between segments");
        assert_eq!(offset_to_va(&exec, 0x1000), Some(0x40_1000));
        assert_eq!(offset_to_va(&exec, 0x1234), Some(0x40_1234));
        assert_eq!(offset_to_va(&exec, 0x3344), Some(0x40_3344), "last byte");
        assert_eq!(offset_to_va(&exec, 0x3345), None, "end is exclusive");
        assert_eq!(offset_to_va(&exec, 0x3e20), Some(0x40_4e20));
        assert_eq!(offset_to_va(&exec, 0x4040), None);
        let pie = [load(0, 0x1000, 0), load(0x1000, 0x800, 0x1000)];
        assert_eq!(offset_to_va(&pie, 0x1010), Some(0x1010));
        assert_eq!(offset_to_va(&[], 0x1010), None);
    }

    #[test]
    fn hostile_segments_do_not_overflow() {
        let bad = [
            load(u64::MAX - 1, 10, 0x1000),
            load(0x100, 0x100, u64::MAX - 0x10),
            load(0x1000, 0, 0x1000),
        ];
        assert_eq!(offset_to_va(&bad, u64::MAX), Some(0x1001));
        assert_eq!(offset_to_va(&bad, 0x100), Some(u64::MAX - 0x10));
        assert_eq!(offset_to_va(&bad, 0x1ff), None, "past u64::MAX");
        assert_eq!(offset_to_va(&bad, 0x1000), None, "empty segment");
    }

    #[test]
    fn rejects_non_elf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(ElfResolver::open(&p), Err(Error::BadElf { .. })));
        assert!(matches!(
            ElfResolver::open(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }

    /// Random corruption of a real ELF never panics, in open or in lookups (deterministic
    /// xorshift, so a failure replays).
    #[test]
    fn corrupted_elf_never_panics() {
        let original = std::fs::read("/bin/true").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut bytes = original.clone();
            let edits = 1 + next() % 64;
            for _ in 0..edits {
                // Bias towards the headers, where the damage is interesting.
                let limit = if next() % 2 == 0 { 4096 } else { bytes.len() };
                let i = (next() as usize) % limit.min(bytes.len());
                bytes[i] = next() as u8;
            }
            if round % 10 == 0 {
                bytes.truncate((next() as usize) % bytes.len());
            }
            // One path, rewritten: the previous round's map is gone by now.
            let p = dir.path().join("f");
            std::fs::write(&p, &bytes).unwrap();
            if let Ok(r) = ElfResolver::open(&p) {
                for _ in 0..50 {
                    let _ = r.symbolize(next() % 0x40_0000);
                    let _ = r.file_offset_to_va(next() % 0x40_0000);
                }
            }
        }
    }
}

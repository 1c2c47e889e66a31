//! ELF files: Go's pclntab when present, then DWARF (lines and inlined frames, through
//! `addr2line`), then the symbol tables; build id; file offset → virtual address.

use std::{
    borrow::Cow,
    fs::File,
    ops::Deref,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use memmap2::Mmap;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::{gopclntab::GoTable, Error, Frame, Reason, Result, Symbolized};

/// Most symbols indexed per file: bounds memory on hostile inputs (real binaries have far fewer).
const MAX_SYMBOLS: usize = 8 << 20;
/// Most DWARF bytes (decompressed) loaded per file; larger debug info is not used.
const MAX_DWARF_BYTES: u64 = 1 << 30;
/// Where separate debug files are looked for (by build id, and by debuglink).
pub const DEFAULT_DEBUG_ROOT: &str = "/usr/lib/debug";

/// Largest MiniDebugInfo we decompress (real ones are a few MiB at most).
const MAX_MINI_DEBUGINFO: usize = 64 << 20;

/// Which file's symbol table was indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SymbolSource {
    Binary,
    DebugFile,
    MiniDebugInfo,
}

/// Deepest inlining reported for one address.
const MAX_INLINE_FRAMES: usize = 64;

/// The bytes of one DWARF section: borrowed from the mapped file when stored plainly (no copy),
/// on the heap when it had to be decompressed.
#[derive(Clone)]
enum SectionBytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // The range was checked against the map when this was built.
            SectionBytes::Mapped { map, start, len } => {
                map.get(*start..start.saturating_add(*len)).unwrap_or(&[])
            }
            SectionBytes::Owned(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for SectionBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SectionBytes::Mapped { start, len, .. } => write!(f, "Mapped({start:#x}+{len:#x})"),
            SectionBytes::Owned(b) => write!(f, "Owned({:#x})", b.len()),
        }
    }
}

// SAFETY: both variants point into memory owned through an `Arc` (the map, or the heap slice):
// moving or cloning the handle never moves the bytes, and neither is ever mutated.
unsafe impl gimli::StableDeref for SectionBytes {}
// SAFETY: as above; a clone shares the same `Arc` and so derefs to the same bytes.
unsafe impl gimli::CloneStableDeref for SectionBytes {}

type DwarfReader = gimli::EndianReader<gimli::RunTimeEndian, SectionBytes>;

/// DWARF of one file, parsed on first use. addr2line's context memoises per unit and function
/// as it is asked; the mutex lets a resolver be shared between threads.
struct Dwarf {
    context: Mutex<addr2line::Context<DwarfReader>>,
    /// Bytes of sections decompressed onto the heap (plain sections stay in the map).
    decompressed_bytes: usize,
    /// Bytes of all DWARF sections as they are in memory (decompressed or mapped): what the
    /// context may come to cost, charged against a [`crate::Symbolizer`]'s DWARF budget.
    section_bytes: usize,
}

/// Where a resolver's DWARF stands: not tried yet (or released), loaded, or unusable (absent,
/// damaged or too large).
#[derive(Default)]
struct DwarfSlot {
    loaded: Option<Arc<Dwarf>>,
    tried: bool,
    too_large: bool,
}

/// Orders DWARF uses across all resolvers, for least-recently-used release.
static DWARF_CLOCK: AtomicU64 = AtomicU64::new(1);

/// DWARF contexts built by all resolvers: loaded DWARF only grows when this does.
static DWARF_LOADS: AtomicU64 = AtomicU64::new(0);

/// [`DWARF_LOADS`], for [`crate::Symbolizer::enforce_budget`].
pub(crate) fn dwarf_loads_everywhere() -> u64 {
    DWARF_LOADS.load(Ordering::Relaxed)
}

/// One function symbol; its name stays in the mapped file.
#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u64,
    end: u64,
    name_off: u32,
    name_len: u32,
}

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
    symbols: Vec<Sym>,
    loads: Vec<Load>,
    build_id: Option<Vec<u8>>,
    go: Option<GoTable>,
    go_version: Option<String>,
    has_dwarf: bool,
    /// Bytes of the DWARF sections a context would read (see [`Self::dwarf_bytes`]).
    dwarf_size: usize,
    /// The DWARF context, built at the first lookup that needs it; released under memory
    /// pressure and built again when needed again.
    dwarf: Mutex<DwarfSlot>,
    /// [`DWARF_CLOCK`] at the last DWARF lookup; 0 for never.
    dwarf_used: AtomicU64,
    /// How many times the DWARF context was built.
    dwarf_loads: AtomicU64,
    /// DWARF larger than this (in memory) is not used: lookups fall back to ELF symbols.
    max_dwarf_bytes: u64,
    /// A separate debug file, when the binary's own DWARF is absent.
    debug_file: Option<(PathBuf, Arc<Mmap>)>,
    /// Where the indexed symbols' names live.
    symbol_source: SymbolSource,
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
        // SAFETY: see the type's documentation: read-only private map of a file we hold open.
        let data = Arc::new(unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: display.to_string(),
            source,
        })?);
        let bad = |reason: String| Error::BadElf {
            path: display.to_string(),
            reason,
        };
        let obj = object::File::parse(&data[..]).map_err(|e| bad(e.to_string()))?;
        if !matches!(obj.format(), object::BinaryFormat::Elf) {
            return Err(bad("not ELF".into()));
        }
        let loads: Vec<Load> = obj
            .segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                Load {
                    file_offset,
                    file_size,
                    vaddr: s.address(),
                }
            })
            .filter(|l| l.file_size > 0)
            .collect();
        let build_id = obj.build_id().ok().flatten().map(<[u8]>::to_vec);
        let mut symbols = index_symbols(&obj, &data);
        let mut has_dwarf = obj.section_by_name(".debug_info").is_some();
        let mut dwarf_size = if has_dwarf {
            dwarf_section_bytes(&obj)
        } else {
            0
        };
        let debuglink = obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (name.to_vec(), crc));
        // MiniDebugInfo: an xz-compressed ELF holding the symbols a stripped binary lost
        // (Fedora, RHEL). Only needed when the binary has no symbol table of its own.
        let mut mini_debuginfo = if symbols.is_empty() {
            decompress_mini_debuginfo(&obj)
        } else {
            None
        };
        drop(obj);
        let mut debug_file = None;
        let mut symbol_source = SymbolSource::Binary;
        if !has_dwarf {
            debug_file = find_debug_file(
                build_id.as_deref(),
                debuglink.as_ref().map(|(n, c)| (n.as_slice(), *c)),
                Path::new(display).parent(),
                debug_root,
            );
            if let Some((_, debug)) = &debug_file {
                if let Ok(dobj) = object::File::parse(&debug[..]) {
                    has_dwarf = dobj.section_by_name(".debug_info").is_some();
                    dwarf_size = dwarf_section_bytes(&dobj);
                    if symbols.is_empty() {
                        symbols = index_symbols(&dobj, debug);
                        if !symbols.is_empty() {
                            symbol_source = SymbolSource::DebugFile;
                        }
                    }
                }
            }
        }
        if symbols.is_empty() {
            if let Some(mini) = &mini_debuginfo {
                if let Ok(mobj) = object::File::parse(&mini[..]) {
                    symbols = index_symbols(&mobj, mini);
                    if !symbols.is_empty() {
                        symbol_source = SymbolSource::MiniDebugInfo;
                    }
                }
            }
        }
        if symbol_source != SymbolSource::MiniDebugInfo {
            mini_debuginfo = None;
        }
        let go = GoTable::from_elf(&data).unwrap_or_else(|err| {
            // A damaged Go table still leaves the ELF symbols usable.
            let _ = err;
            None
        });
        let go_version = if go.is_some() {
            crate::gopclntab::build_info_version(&data)
        } else {
            None
        };
        Ok(ElfResolver {
            data,
            display: display.to_string(),
            symbols,
            loads,
            build_id,
            go,
            go_version,
            has_dwarf,
            dwarf_size: usize::try_from(dwarf_size).unwrap_or(usize::MAX),
            dwarf: Mutex::default(),
            dwarf_used: AtomicU64::new(0),
            dwarf_loads: AtomicU64::new(0),
            max_dwarf_bytes: MAX_DWARF_BYTES,
            debug_file,
            symbol_source,
            mini_debuginfo,
        })
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

    /// The Go release that built the file, from its build info (e.g. `go1.22.5`).
    pub fn go_version(&self) -> Option<&str> {
        self.go_version.as_deref()
    }

    /// Size of the mapped file in bytes.
    pub fn mapped_bytes(&self) -> usize {
        self.data.len()
    }

    /// Heap bytes used by the indexes: symbols, segments, decompressed MiniDebugInfo and DWARF
    /// sections (once loaded). addr2line's own memoised units are not counted.
    pub fn index_bytes(&self) -> usize {
        self.symbols.capacity() * std::mem::size_of::<Sym>()
            + self.loads.capacity() * std::mem::size_of::<Load>()
            + self.mini_debuginfo.as_ref().map_or(0, Vec::capacity)
            + self.loaded_dwarf().map_or(0, |d| d.decompressed_bytes)
    }

    fn loaded_dwarf(&self) -> Option<Arc<Dwarf>> {
        self.dwarf.lock().ok()?.loaded.clone()
    }

    /// Bytes of DWARF sections behind the loaded DWARF context (decompressed or mapped); 0
    /// when none is loaded. What [`crate::Symbolizer::set_dwarf_budget`] bounds.
    pub fn dwarf_bytes(&self) -> usize {
        self.loaded_dwarf().map_or(0, |d| d.section_bytes)
    }

    /// What [`Self::dwarf_bytes`] would be once DWARF is loaded: 0 without DWARF, or when its
    /// size refuses it.
    pub fn dwarf_size(&self) -> usize {
        if !self.has_dwarf || self.dwarf_too_big() {
            0
        } else {
            self.dwarf_size
        }
    }

    /// The DWARF sections exceed the per-file limit (see [`Self::with_max_dwarf_bytes`]).
    fn dwarf_too_big(&self) -> bool {
        self.dwarf_size as u64 > self.max_dwarf_bytes
    }

    /// When DWARF was last used, on a clock shared by all resolvers (larger is later); 0 for
    /// never.
    pub fn dwarf_last_used(&self) -> u64 {
        self.dwarf_used.load(Ordering::Relaxed)
    }

    /// How many times this resolver built its DWARF context (more than once after releases).
    pub fn dwarf_loads(&self) -> u64 {
        self.dwarf_loads.load(Ordering::Relaxed)
    }

    /// Drops the DWARF context and every unit addr2line parsed into it, and lets the kernel
    /// reclaim the file's pages from this process; the next lookup that needs DWARF builds it
    /// again. Returns the [`Self::dwarf_bytes`] released.
    pub fn release_dwarf(&self) -> usize {
        let Ok(mut slot) = self.dwarf.lock() else {
            return 0;
        };
        let Some(dwarf) = slot.loaded.take() else {
            return 0;
        };
        slot.tried = false;
        drop(slot);
        let bytes = dwarf.section_bytes;
        drop(dwarf);
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
        self.has_dwarf
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
        if self.has_dwarf && !named_cheaply {
            if let Some(frames) = self.dwarf_frames(va) {
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

    /// [`Self::symbolize`] for many addresses.
    pub fn symbolize_batch(&self, vas: &[u64]) -> Vec<Symbolized> {
        vas.iter().map(|&va| self.symbolize(va)).collect()
    }

    fn dwarf(&self) -> Option<Arc<Dwarf>> {
        let mut slot = self.dwarf.lock().ok()?;
        if !slot.tried {
            slot.tried = true;
            let map = match &self.debug_file {
                Some((_, debug)) => debug,
                None => &self.data,
            };
            // The sections' size, read at open, decides before anything is loaded.
            slot.too_large = self.dwarf_too_big();
            if !slot.too_large {
                slot.loaded = load_dwarf(map, self.dwarf_size).map(Arc::new);
            }
            if slot.loaded.is_some() {
                self.dwarf_loads.fetch_add(1, Ordering::Relaxed);
                DWARF_LOADS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let dwarf = slot.loaded.clone()?;
        self.dwarf_used.store(
            DWARF_CLOCK.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(dwarf)
    }

    /// Uses DWARF only when its sections take at most `bytes` (default 1 GiB): a bound on the
    /// memory one binary may cost. Larger DWARF leaves names from the ELF symbols, without
    /// lines or inlined frames. Applies before the first lookup.
    pub fn with_max_dwarf_bytes(mut self, bytes: u64) -> Self {
        self.max_dwarf_bytes = bytes.min(MAX_DWARF_BYTES);
        self
    }

    /// True once a lookup needed DWARF that was refused for its size.
    pub fn dwarf_too_large(&self) -> bool {
        self.dwarf.lock().is_ok_and(|slot| slot.too_large)
    }

    /// DWARF frames for `va`, innermost first; None when DWARF does not cover it.
    fn dwarf_frames(&self, va: u64) -> Option<Vec<Frame>> {
        let dwarf = self.dwarf()?;
        let context = dwarf.context.lock().ok()?;
        let mut iter = context.find_frames(va).skip_all_loads().ok()?;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let name = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok())
                .map(|n| demangle(n.as_ref()))
                .or_else(|| self.symbol_at(va).map(|n| demangle(&n)));
            let Some(function) = name else { break };
            let (file, line) = frame
                .location
                .map(|l| (l.file.map(str::to_string), l.line))
                .unwrap_or_default();
            frames.push(Frame {
                function,
                file,
                line,
                inlined: true,
                start_line: None,
            });
            if frames.len() >= MAX_INLINE_FRAMES {
                break;
            }
        }
        let last = frames.last_mut()?;
        last.inlined = false;
        Some(frames)
    }

    /// The name of the symbol covering `va` (invalid UTF-8 replaced, names come from untrusted
    /// files).
    fn symbol_at(&self, va: u64) -> Option<Cow<'_, str>> {
        let i = self.symbols.partition_point(|s| s.start <= va);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        if va >= s.end {
            return None;
        }
        let start = s.name_off as usize;
        let names: &[u8] = match (self.symbol_source, &self.debug_file, &self.mini_debuginfo) {
            (SymbolSource::DebugFile, Some((_, debug)), _) => debug,
            (SymbolSource::MiniDebugInfo, _, Some(mini)) => mini,
            _ => &self.data,
        };
        let bytes = names.get(start..start.checked_add(s.name_len as usize)?)?;
        Some(String::from_utf8_lossy(bytes))
    }
}

/// [`ElfResolver::file_offset_to_va`] over a list of loadable segments: the first segment
/// whose file range holds `offset`.
fn offset_to_va(loads: &[Load], offset: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| offset >= l.file_offset && offset - l.file_offset < l.file_size)
        .and_then(|l| (offset - l.file_offset).checked_add(l.vaddr))
}

/// The decompressed `.gnu_debugdata` section, if present, valid and within
/// [`MAX_MINI_DEBUGINFO`].
fn decompress_mini_debuginfo(obj: &object::File<'_>) -> Option<Vec<u8>> {
    /// A writer that refuses to grow past a limit: bounds a decompression bomb.
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > MAX_MINI_DEBUGINFO {
                return Err(std::io::Error::other("MiniDebugInfo too large"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let compressed = obj.section_by_name(".gnu_debugdata")?.data().ok()?;
    let mut out = Bounded(Vec::new());
    lzma_rs::xz_decompress(&mut &compressed[..], &mut out).ok()?;
    Some(out.0)
}

/// A separate debug file: by build id under `root/.build-id/`, else by debuglink next to the
/// binary, in its `.debug/` directory, or under `root` + the binary's directory; a debuglink
/// match must also match its CRC-32.
fn find_debug_file(
    build_id: Option<&[u8]>,
    debuglink: Option<(&[u8], u32)>,
    binary_dir: Option<&Path>,
    root: &Path,
) -> Option<(PathBuf, Arc<Mmap>)> {
    let map = |path: &Path| -> Option<Arc<Mmap>> {
        let file = File::open(path).ok()?;
        // SAFETY: as for the binary itself: a read-only private map of a file we hold open.
        unsafe { Mmap::map(&file) }.ok().map(Arc::new)
    };
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let path = root
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if let Some(m) = map(&path) {
            return Some((path, m));
        }
    }
    let (name, crc) = debuglink?;
    let name = std::str::from_utf8(name).ok()?;
    if name.contains('/') {
        return None;
    }
    let dir = binary_dir.unwrap_or(Path::new("/"));
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    for candidate in [
        dir.join(name),
        dir.join(".debug").join(name),
        root.join(rel).join(name),
    ] {
        if let Some(m) = map(&candidate) {
            if crc32(&m) == crc {
                return Some((candidate, m));
            }
        }
    }
    None
}

/// CRC-32 (IEEE), as `.gnu_debuglink` records it.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Bytes of an object's DWARF sections as they will be in memory: a compressed section's header
/// states its size (that claim is checked again before anything is allocated for it).
fn dwarf_section_bytes(obj: &object::File<'_>) -> u64 {
    obj.sections()
        .filter(|s| {
            s.name()
                .is_ok_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_"))
        })
        .map(|s| {
            s.compressed_data()
                .map_or(s.size(), |c| c.uncompressed_size.max(s.size()))
        })
        .fold(0u64, u64::saturating_add)
}

/// Builds an addr2line context over the file's DWARF sections (plain ones read in place from
/// the map, compressed ones decompressed onto the heap), which take `section_bytes` in memory
/// ([`dwarf_section_bytes`]); None when they are absent or damaged.
fn load_dwarf(map: &Arc<Mmap>, section_bytes: usize) -> Option<Dwarf> {
    let data: &[u8] = map;
    let obj = object::File::parse(data).ok()?;
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let base = data.as_ptr() as usize;
    let mut decompressed_bytes = 0usize;
    let mut load = |id: gimli::SectionId| -> Result<DwarfReader, gimli::Error> {
        let bytes = obj
            .section_by_name(id.name())
            .and_then(|s| {
                let compressed = s.compressed_data().ok()?;
                if compressed.uncompressed_size > MAX_DWARF_BYTES {
                    return None;
                }
                compressed.decompress().ok()
            })
            .unwrap_or(Cow::Borrowed(&[]));
        let section = match bytes {
            // Stored plainly: a window on the map. object hands out sub-slices of `data`, so
            // the position is the pointer difference; checked all the same.
            Cow::Borrowed(b) => {
                let start = (b.as_ptr() as usize).wrapping_sub(base);
                if b.is_empty() || data.get(start..start.saturating_add(b.len())).is_none() {
                    SectionBytes::Owned(Arc::from(&[][..]))
                } else {
                    SectionBytes::Mapped {
                        map: Arc::clone(map),
                        start,
                        len: b.len(),
                    }
                }
            }
            Cow::Owned(v) => {
                decompressed_bytes = decompressed_bytes.saturating_add(v.len());
                SectionBytes::Owned(Arc::from(v))
            }
        };
        Ok(gimli::EndianReader::new(section, endian))
    };
    let dwarf = gimli::Dwarf::load(&mut load).ok()?;
    let context = addr2line::Context::from_dwarf(dwarf).ok()?;
    Some(Dwarf {
        context: Mutex::new(context),
        decompressed_bytes,
        section_bytes,
    })
}

/// Function symbols of `.symtab` and `.dynsym`, sorted, deduplicated, with sizes: a symbol
/// without a size reaches to the next symbol, never past the end of its section.
fn index_symbols(obj: &object::File<'_>, data: &[u8]) -> Vec<Sym> {
    let base = data.as_ptr() as usize;
    let mut raw: Vec<(u64, u64, u64, u32, u32)> = Vec::new(); // start, size, section end, name
    for sym in obj.symbols().chain(obj.dynamic_symbols()) {
        if raw.len() >= MAX_SYMBOLS {
            break;
        }
        if sym.kind() != SymbolKind::Text || sym.address() == 0 || sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name_bytes() else { continue };
        if name.is_empty() {
            continue;
        }
        // Names are borrowed from the map: keep their position instead of copying them.
        let Some(off) = (name.as_ptr() as usize).checked_sub(base) else {
            continue;
        };
        let (Ok(name_off), Ok(name_len)) = (u32::try_from(off), u32::try_from(name.len())) else {
            continue;
        };
        let section_end = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
            .map(|s| s.address().saturating_add(s.size()))
            .unwrap_or(u64::MAX);
        raw.push((sym.address(), sym.size(), section_end, name_off, name_len));
    }
    // Prefer sized symbols at the same address, then the first name.
    raw.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    raw.dedup_by_key(|s| s.0);
    let mut out = Vec::with_capacity(raw.len());
    for (i, &(start, size, section_end, name_off, name_len)) in raw.iter().enumerate() {
        let next = raw.get(i + 1).map_or(u64::MAX, |n| n.0);
        let end = if size > 0 {
            start.saturating_add(size)
        } else {
            next.min(section_end)
        };
        if end > start {
            out.push(Sym {
                start,
                end,
                name_off,
                name_len,
            });
        }
    }
    out
}

/// Rust (legacy and v0) and C++ (Itanium) names demangled; anything else as is.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    name.to_string()
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
        let name = &frames.frames()[0].function;
        assert!(name.ends_with("elf_test_marker"), "{name}");
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
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(demangle("_ZN3foo3barE"), "foo::bar");
        assert_eq!(demangle("_Z3addii"), "add(int, int)");
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_Znot valid"), "_Znot valid");
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

//! The [`Symbolizer`]: resolvers cached by file identity.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::{elf::DwarfClock, ElfResolver, Error, KernelResolver, Result};

/// What makes two opened files the same file: device, inode, size and modification time.
/// Paths are not identity: the same binary is seen through many paths (containers, map_files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl FileIdentity {
    /// The identity of an open file (`fstat`).
    pub fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// Memory held by a [`Symbolizer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes of files mapped (page cache, shared with other readers; mostly not resident).
    pub mapped: usize,
    /// Heap bytes of indexes.
    pub heap: usize,
    /// Files whose DWARF was not used because it exceeded the size limit.
    pub dwarf_too_large: usize,
    /// Bytes of DWARF sections behind the DWARF contexts loaded now (see
    /// [`ElfResolver::dwarf_bytes`]).
    pub dwarf: usize,
    /// DWARF contexts released to stay within the budget, since the start.
    pub dwarf_released: u64,
    /// DWARF contexts built again after a release, since the start: a budget too small for
    /// the binaries in use shows here.
    pub dwarf_reloads: u64,
    /// Files opened since the start whose Go table was too damaged to use (their code was
    /// named from ELF symbols, if at all); each file counted once.
    pub go_tables_damaged: u64,
}

/// Owns the resolvers of every file and the kernel, each parsed once.
#[derive(Debug, Default)]
pub struct Symbolizer {
    elfs: HashMap<FileIdentity, Arc<ElfResolver>>,
    /// The same resolvers by (build id, file size): identical binaries at different paths or
    /// inodes (one image's layers in several containers) are parsed once.
    by_build_id: HashMap<(Vec<u8>, u64), Arc<ElfResolver>>,
    /// Files found through `by_build_id` instead of being parsed again.
    build_id_hits: u64,
    kernel: Option<Arc<KernelResolver>>,
    vdso: Option<Arc<ElfResolver>>,
    /// Applied to every file opened from now on; None for the resolver's default.
    max_dwarf_bytes: Option<u64>,
    /// Bound on [`MemoryUse::dwarf`] across all files, enforced by [`Self::enforce_budget`].
    dwarf_budget: Option<usize>,
    dwarf_released: AtomicU64,
    /// Orders the DWARF uses of this symbolizer's files and counts the contexts they build:
    /// each symbolizer's budget is its own.
    dwarf_clock: Arc<DwarfClock>,
    /// DWARF loads ([`Self::dwarf_clock`]) when the budget was last enforced.
    enforced_at: AtomicU64,
    /// DWARF reloads of resolvers no longer cached, so that the total never goes down.
    reloads_forgotten: u64,
    /// Files parsed whose Go table was damaged ([`MemoryUse::go_tables_damaged`]).
    go_tables_damaged: u64,
}

impl Symbolizer {
    /// An empty symbolizer: nothing is read until asked for.
    pub fn new() -> Self {
        Self::default()
    }

    /// The resolver for an opened file, parsing it on first sight of its identity.
    /// The resolver of `file` if it was parsed already (by identity); never parses.
    pub fn parsed(&self, file: &File) -> Option<Arc<ElfResolver>> {
        let id = FileIdentity::of(file).ok()?;
        self.elfs.get(&id).map(Arc::clone)
    }

    pub fn elf(&mut self, file: File, display: &str) -> Result<Arc<ElfResolver>> {
        let id = FileIdentity::of(&file).map_err(|source| Error::Io {
            path: display.to_string(),
            source,
        })?;
        if let Some(r) = self.elfs.get(&id) {
            return Ok(Arc::clone(r));
        }
        // Mapped and parsed once: the build id comes from the same parse that indexes the file.
        let data = crate::elf::map_file(&file, display)?;
        let obj = crate::elf::parse_elf(&data, display)?;
        let build_id = {
            use object::Object;
            obj.build_id().ok().flatten().map(|b| (b.to_vec(), id.size))
        };
        if let Some(r) = build_id.as_ref().and_then(|k| self.by_build_id.get(k)) {
            let r = Arc::clone(r);
            self.build_id_hits += 1;
            self.elfs.insert(id, Arc::clone(&r));
            return Ok(r);
        }
        let debug_root = std::path::Path::new(crate::elf::DEFAULT_DEBUG_ROOT);
        let mut r = ElfResolver::from_parsed(&data, &obj, display, debug_root)
            .with_dwarf_clock(Arc::clone(&self.dwarf_clock));
        drop(obj);
        if let Some(max) = self.max_dwarf_bytes {
            r = r.with_max_dwarf_bytes(max);
        }
        self.go_tables_damaged += u64::from(r.go_table_damaged());
        let r = Arc::new(r);
        self.elfs.insert(id, Arc::clone(&r));
        if let Some(key) = build_id {
            self.by_build_id.insert(key, Arc::clone(&r));
        }
        Ok(r)
    }

    /// Files that were found by build id rather than parsed again.
    pub fn build_id_hits(&self) -> u64 {
        self.build_id_hits
    }

    /// Kernel symbols, read from `/proc/kallsyms` once.
    pub fn kernel(&mut self) -> Result<Arc<KernelResolver>> {
        if let Some(k) = &self.kernel {
            return Ok(Arc::clone(k));
        }
        let k = Arc::new(KernelResolver::from_proc()?);
        self.kernel = Some(Arc::clone(&k));
        Ok(k)
    }

    /// Kernel symbols if [`Self::kernel`] read them.
    pub(crate) fn kernel_symbols(&self) -> Option<&KernelResolver> {
        self.kernel.as_deref()
    }

    /// The vDSO. Every process of this kernel (and ABI) maps the same image, so ours serves
    /// for all: read once from our own memory, then parsed like any ELF file.
    pub fn vdso(&mut self) -> Result<Arc<ElfResolver>> {
        if let Some(v) = &self.vdso {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(load_own_vdso()?.with_dwarf_clock(Arc::clone(&self.dwarf_clock)));
        self.vdso = Some(Arc::clone(&v));
        Ok(v)
    }

    /// Forgets one file (its resolver lives on while others hold it).
    pub fn evict(&mut self, id: &FileIdentity) -> bool {
        match self.elfs.remove(id) {
            Some(r) => {
                self.by_build_id.retain(|_, b| !Arc::ptr_eq(b, &r));
                if !self.elfs.values().any(|e| Arc::ptr_eq(e, &r)) {
                    self.reloads_forgotten += reloads(&r);
                }
                true
            }
            None => false,
        }
    }

    /// Bounds the DWARF any one file may use (see [`ElfResolver::with_max_dwarf_bytes`]), for
    /// files opened from now on.
    pub fn set_max_dwarf_bytes(&mut self, bytes: u64) {
        self.max_dwarf_bytes = Some(bytes);
    }

    /// Bounds the DWARF loaded across all files: [`Self::symbolize`] releases the least recently
    /// used DWARF contexts beyond `bytes` (making room before a binary's DWARF may be built, and
    /// checking after every lookup). Files stay open, with their symbols and Go tables; a
    /// released context is built again when an address needs it. Lookups made on a resolver
    /// directly ([`ElfResolver::symbolize`]) are outside the budget.
    pub fn set_dwarf_budget(&mut self, bytes: u64) {
        self.dwarf_budget = Some(usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    /// Releases DWARF contexts, least recently used first, until the loaded DWARF fits the
    /// budget (see [`Self::set_dwarf_budget`]); the most recently used context stays even when
    /// it alone exceeds the budget (the per-file limit bounds that one). Returns how many
    /// were released.
    ///
    /// Cheap when no DWARF was loaded since the last call (one atomic load), so
    /// [`Self::symbolize`] calls it after every lookup: loaded DWARF then never exceeds the
    /// budget by more than the context just built.
    pub(crate) fn enforce_budget(&self) -> usize {
        let Some(budget) = self.dwarf_budget else {
            return 0;
        };
        let loads = self.dwarf_clock.loads();
        if self.enforced_at.swap(loads, Ordering::Relaxed) == loads {
            return 0;
        }
        self.release_until(budget, 1)
    }

    /// Releases the least recently used DWARF contexts until at most `limit` bytes stay
    /// loaded, always keeping the `keep` most recently used.
    fn release_until(&self, limit: usize, keep: usize) -> usize {
        let mut loaded: Vec<(u64, usize, &Arc<ElfResolver>)> = self
            .distinct_files()
            .filter_map(|r| {
                let bytes = r.dwarf_bytes();
                (bytes > 0).then(|| (r.dwarf_last_used(), bytes, r))
            })
            .collect();
        let mut total: usize = loaded.iter().map(|l| l.1).sum();
        if total <= limit {
            return 0;
        }
        loaded.sort_by_key(|l| l.0);
        let mut released = 0;
        for (_, _, r) in &loaded[..loaded.len().saturating_sub(keep)] {
            if total <= limit {
                break;
            }
            total -= r.release_dwarf().min(total);
            released += 1;
        }
        self.dwarf_released
            .fetch_add(released as u64, Ordering::Relaxed);
        released
    }

    /// Makes room for `next`'s DWARF before a lookup may build it: releases the least recently
    /// used contexts of other files until the loaded DWARF plus `next`'s would fit the budget.
    /// Releasing first keeps two large contexts from being held at once. Returns how many were
    /// released.
    pub(crate) fn make_room_for(&self, next: &ElfResolver) -> usize {
        let Some(budget) = self.dwarf_budget else {
            return 0;
        };
        if next.dwarf_bytes() > 0 || next.dwarf_size() == 0 {
            return 0;
        }
        self.release_until(budget.saturating_sub(next.dwarf_size()), 0)
    }

    /// Forgets every file no caller holds any more (for a profiler: binaries of processes that
    /// exited). Returns how many were released.
    pub fn evict_unused(&mut self) -> usize {
        // A resolver is unused when only this cache holds it (once per index it is in).
        let before = self.elfs.len();
        let held = |r: &Arc<ElfResolver>, cached: usize| Arc::strong_count(r) > cached;
        let counts: HashMap<*const ElfResolver, usize> = self
            .elfs
            .values()
            .chain(self.by_build_id.values())
            .fold(HashMap::new(), |mut m, r| {
                *m.entry(Arc::as_ptr(r)).or_default() += 1;
                m
            });
        let cached = |r: &Arc<ElfResolver>| counts.get(&Arc::as_ptr(r)).copied().unwrap_or(0);
        let mut gone = std::collections::HashSet::new();
        self.elfs.retain(|_, r| {
            let keep = held(r, cached(r));
            if !keep && gone.insert(Arc::as_ptr(r)) {
                self.reloads_forgotten += reloads(r);
            }
            keep
        });
        self.by_build_id.retain(|_, r| held(r, cached(r)));
        before - self.elfs.len()
    }

    /// Forgets every file and the kernel symbols.
    pub fn clear(&mut self) {
        self.reloads_forgotten += self.distinct_files().map(reloads).sum::<u64>();
        self.elfs.clear();
        self.by_build_id.clear();
        self.kernel = None;
    }

    /// Files cached.
    pub fn len(&self) -> usize {
        self.elfs.len()
    }

    /// True when no file is cached.
    pub fn is_empty(&self) -> bool {
        self.elfs.is_empty()
    }

    /// Each cached file's resolver once, although one resolver may serve several identities
    /// (paths, inodes) of the same binary.
    fn distinct_files(&self) -> impl Iterator<Item = &Arc<ElfResolver>> {
        let mut seen = std::collections::HashSet::new();
        self.elfs
            .values()
            .filter(move |r| seen.insert(Arc::as_ptr(r)))
    }

    /// Memory held by the cached resolvers: files, the vDSO and the kernel symbols.
    pub fn memory(&self) -> MemoryUse {
        let kernel = self.kernel.as_ref().map_or(0, |k| k.heap_bytes());
        self.distinct_files().chain(&self.vdso).fold(
            MemoryUse {
                heap: kernel,
                dwarf_released: self.dwarf_released.load(Ordering::Relaxed),
                dwarf_reloads: self.reloads_forgotten,
                go_tables_damaged: self.go_tables_damaged,
                ..MemoryUse::default()
            },
            |m, r| MemoryUse {
                mapped: m.mapped + r.mapped_bytes(),
                heap: m.heap + r.index_bytes(),
                dwarf_too_large: m.dwarf_too_large + usize::from(r.dwarf_too_large()),
                dwarf: m.dwarf + r.dwarf_bytes(),
                dwarf_reloads: m.dwarf_reloads + reloads(r),
                ..m
            },
        )
    }
}

/// Times a resolver built its DWARF context again after a release.
fn reloads(r: &Arc<ElfResolver>) -> u64 {
    r.dwarf_loads().saturating_sub(1)
}

/// Copies this process's vDSO image (found in /proc/self/maps, read through /proc/self/mem)
/// into an anonymous in-memory file and parses it.
fn load_own_vdso() -> Result<ElfResolver> {
    ElfResolver::from_file(own_vdso_image()?, "[vdso]")
}

/// This process's vDSO image, copied into an anonymous file (every process on this kernel maps
/// the same image): for readers that want the vDSO as a file, such as unwind tables.
pub fn own_vdso_image() -> Result<File> {
    use std::{io::Write, os::unix::fs::FileExt};
    let io = |source| Error::Io {
        path: "[vdso]".into(),
        source,
    };
    let maps = crate::process::ProcessMaps::read(std::process::id()).map_err(io)?;
    let vdso = maps
        .entries
        .iter()
        .find(|e| e.path == crate::process::MapPath::Vdso)
        .ok_or_else(|| io(std::io::Error::other("no [vdso] mapping")))?;
    let len = usize::try_from(vdso.end - vdso.start)
        .ok()
        .filter(|&l| l <= 1 << 20)
        .ok_or_else(|| io(std::io::Error::other("implausible [vdso] size")))?;
    let mut image = vec![0u8; len];
    File::open("/proc/self/mem")
        .and_then(|mem| mem.read_exact_at(&mut image, vdso.start))
        .map_err(io)?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"bellows-vdso".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and nothing else owns it.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(&image).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdso_symbols_resolve() {
        use object::{Object, ObjectSymbol};
        let mut s = Symbolizer::new();
        let vdso = s.vdso().unwrap();
        assert!(Arc::ptr_eq(&vdso, &s.vdso().unwrap()), "loaded once");
        // Every exported vDSO function resolves to its own name (or an alias at its address).
        let maps = crate::process::ProcessMaps::read(std::process::id()).unwrap();
        let entry = maps
            .entries
            .iter()
            .find(|e| e.path == crate::process::MapPath::Vdso)
            .unwrap();
        let mut bytes = vec![0u8; (entry.end - entry.start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            &File::open("/proc/self/mem").unwrap(),
            &mut bytes,
            entry.start,
        )
        .unwrap();
        let obj = object::File::parse(&*bytes).unwrap();
        let mut checked = 0;
        for sym in obj.dynamic_symbols() {
            if sym.kind() == object::SymbolKind::Text && sym.size() > 0 {
                let frames = vdso.symbolize(sym.address() + sym.size() / 2);
                let name = &frames.frames()[0].function;
                let same_or_alias = name == sym.name().unwrap()
                    || vdso.symbolize(sym.address()).frames()[0].function == *name;
                assert!(same_or_alias, "{} vs {name}", sym.name().unwrap());
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} vDSO functions");
    }

    #[test]
    fn same_file_through_two_paths_is_parsed_once() {
        let exe = std::env::current_exe().unwrap();
        let mut s = Symbolizer::new();
        let a = s.elf(File::open(&exe).unwrap(), "a").unwrap();
        let via_proc = format!("/proc/{}/exe", std::process::id());
        let b = s.elf(File::open(via_proc).unwrap(), "b").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(s.len(), 1);
        assert!(s.memory().mapped > 0);
        let id = FileIdentity::of(&File::open(&exe).unwrap()).unwrap();
        assert!(s.evict(&id));
        assert!(s.is_empty());
    }

    #[test]
    fn unused_files_are_released_and_held_ones_kept() {
        let exe = std::env::current_exe().unwrap();
        let mut s = Symbolizer::new();
        let held = s.elf(File::open(&exe).unwrap(), "exe").unwrap();
        assert_eq!(s.evict_unused(), 0, "a caller still holds it");
        assert_eq!(s.len(), 1);
        drop(held);
        assert_eq!(s.evict_unused(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn dwarf_over_the_limit_is_not_used_and_is_counted() {
        use object::{Object, ObjectSymbol};
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let addrs: Vec<u64> = obj
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 16)
            .take(50)
            .map(|s| s.address() + 4)
            .collect();
        let lines = |s: &mut Symbolizer| {
            let r = s.elf(File::open(&exe).unwrap(), "exe").unwrap();
            addrs
                .iter()
                .filter(|&&a| r.symbolize(a).frames().iter().any(|f| f.line.is_some()))
                .count()
        };
        let mut unbounded = Symbolizer::new();
        assert!(lines(&mut unbounded) > 0, "the test binary has DWARF");
        assert_eq!(unbounded.memory().dwarf_too_large, 0);

        let mut bounded = Symbolizer::new();
        bounded.set_max_dwarf_bytes(1);
        assert_eq!(lines(&mut bounded), 0, "DWARF over the limit is not read");
        assert_eq!(bounded.memory().dwarf_too_large, 1);
        // Names still come from the symbol table.
        let r = bounded.elf(File::open(&exe).unwrap(), "exe").unwrap();
        assert!(!r.symbolize(addrs[0]).frames().is_empty());
    }

    #[test]
    fn dwarf_beyond_the_budget_is_released_least_recently_used_first() {
        use object::{Object, ObjectSymbol};
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        // A second file with the same DWARF but another size: not shared by build id.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4096]);
        std::fs::write(&other, &longer).unwrap();
        let obj = object::File::parse(&*bytes).unwrap();
        let addr = obj
            .symbols()
            .find(|s| s.kind() == object::SymbolKind::Text && s.size() > 64)
            .map(|s| s.address() + 8)
            .unwrap();

        let mut s = Symbolizer::new();
        s.set_dwarf_budget(1);
        let a = s.elf(File::open(&exe).unwrap(), "a").unwrap();
        let b = s.elf(File::open(&other).unwrap(), "b").unwrap();
        let answer = a.symbolize(addr);
        assert!(
            answer.frames().iter().any(|f| f.line.is_some()),
            "{answer:?}"
        );
        assert_eq!(b.symbolize(addr), answer);
        let both = s.memory().dwarf;
        assert_eq!(both, a.dwarf_bytes() + b.dwarf_bytes());
        assert!(a.dwarf_bytes() > 0);

        // Over budget: `a`, used first, goes; `b` stays although it alone exceeds the budget.
        assert_eq!(s.enforce_budget(), 1);
        assert_eq!(a.dwarf_bytes(), 0);
        assert_eq!(s.memory().dwarf, b.dwarf_bytes());
        assert_eq!(s.memory().dwarf_released, 1);
        assert_eq!(s.enforce_budget(), 0, "one context is kept");

        // `a` is built again when asked, with the same answer; now `b` is the older one.
        assert_eq!(a.symbolize(addr), answer);
        assert_eq!(s.memory().dwarf_reloads, 1);
        assert_eq!(s.enforce_budget(), 1);
        assert_eq!(b.dwarf_bytes(), 0);
        assert!(a.dwarf_bytes() > 0);

        // Room is made before a lookup: `b`'s context goes before `a`'s would be built.
        assert!(b.dwarf_size() > 0);
        b.symbolize(addr);
        s.enforce_budget();
        assert_eq!((a.dwarf_bytes(), b.dwarf_bytes() > 0), (0, true));
        assert_eq!(s.make_room_for(&a), 1);
        assert_eq!(s.memory().dwarf, 0);
        assert_eq!(s.make_room_for(&a), 0, "nothing left to release");
        a.symbolize(addr);
        assert_eq!(s.make_room_for(&a), 0, "its own context stays");

        // Reloads stay counted after the file is forgotten: `a` twice, `b` once.
        assert_eq!(s.memory().dwarf_reloads, 3);
        drop((a, b));
        assert_eq!(s.evict_unused(), 2);
        assert_eq!(s.memory().dwarf_reloads, 3);
        assert_eq!(s.memory().dwarf, 0);

        // Without a budget nothing is released.
        let mut unbounded = Symbolizer::new();
        let c = unbounded.elf(File::open(&exe).unwrap(), "c").unwrap();
        c.symbolize(addr);
        assert_eq!(unbounded.enforce_budget(), 0);
        assert!(c.dwarf_bytes() > 0);
    }

    #[test]
    fn each_symbolizer_keeps_its_own_dwarf_clock() {
        use object::{Object, ObjectSymbol};
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let obj = object::File::parse(&*bytes).unwrap();
        let addr = obj
            .symbols()
            .find(|s| s.kind() == object::SymbolKind::Text && s.size() > 64)
            .map(|s| s.address() + 8)
            .unwrap();
        let mut first = Symbolizer::new();
        first.set_dwarf_budget(1);
        let a = first.elf(File::open(&exe).unwrap(), "a").unwrap();
        a.symbolize(addr);
        let mut second = Symbolizer::new();
        second.set_dwarf_budget(1);
        let b = second.elf(File::open(&exe).unwrap(), "b").unwrap();
        b.symbolize(addr);
        b.symbolize(addr);
        // Each clock starts at the first use, whatever other symbolizers (or tests) did.
        assert_eq!(a.dwarf_last_used(), 1);
        assert_eq!(b.dwarf_last_used(), 2);
        // DWARF built by one symbolizer's files is no work for the other's budget.
        assert_eq!(first.enforce_budget(), 0);
        assert_eq!(second.enforce_budget(), 0);
        assert!(a.dwarf_bytes() > 0 && b.dwarf_bytes() > 0);
    }

    #[test]
    fn identical_binaries_at_different_inodes_share_one_resolver_by_build_id() {
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let has_build_id = {
            use object::Object;
            object::File::parse(&*bytes)
                .unwrap()
                .build_id()
                .unwrap()
                .is_some()
        };
        assert!(has_build_id, "the test binary carries a GNU build id");
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &bytes).unwrap();
        let mut s = Symbolizer::new();
        let a = s.elf(File::open(&exe).unwrap(), "a").unwrap();
        let mapped = s.memory().mapped;
        let b = s.elf(File::open(&copy).unwrap(), "b").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "parsed once");
        assert_eq!(s.build_id_hits(), 1);
        assert_eq!(s.len(), 2, "both identities are known");
        assert_eq!(s.memory().mapped, mapped, "counted once");
        // A different file with the same build id but another size is parsed on its own.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4096]);
        let other = dir.path().join("longer");
        std::fs::write(&other, &longer).unwrap();
        let c = s.elf(File::open(&other).unwrap(), "c").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b, c));
        assert_eq!(s.evict_unused(), 3);
        assert!(s.is_empty());
    }
}

//! Unwind tables for the kernel's stack walker: built per binary, loaded off the event loop.
//!
//! At first sight of a process, its executable mappings (files already opened by the process
//! table) are handed to [`TableLoader`]'s thread. For each file not seen before (by identity:
//! device, inode, size, mtime) it builds the table with [`symbolizer::unwind`], converts it to
//! the kernel's page-indexed rows ([`KernelTable`]), and writes it into the unwind maps once;
//! then it writes the process's mappings (address range, bias, file id). Every process and
//! container that maps the same file shares its rows. What does not fit, or has no table, is
//! left to frame pointers, and counted.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt,
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agent_common::unwind::{
    kind, Mapping, PageKey, PageRows, ProcessMappings, Row, MAX_MAPPINGS, MAX_PAGE_ROWS, PAGE_SHIFT,
};
use symbolizer::{
    process::MapPath,
    unwind::{Cfa, Rbp, UnwindLimits, UnwindRow, UnwindTable},
};

use crate::{
    ebpf::UnwindMaps,
    process::{ProcessInfo, ProcessKey},
};

/// A binary's table in the kernel's layout: rows grouped by 64 KiB page, each page's rows sorted
/// and starting at `pc_low` 0, pages that only say "unknown" left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelTable {
    pub rows: Vec<Row>,
    /// (page, index of its first row in `rows`, number of rows), by page.
    pub pages: Vec<(u32, u32, u32)>,
}

/// Converts one row's rule; rules the kernel cannot express become [`kind::UNKNOWN`].
fn kernel_rule(row: &UnwindRow) -> (u8, i32, i8) {
    let rbp_slot = match row.rbp {
        Rbp::Unchanged => Some(0),
        Rbp::At(offset) if offset % 8 == 0 && offset != 0 => i8::try_from(offset / 8).ok(),
        Rbp::At(_) => None,
    };
    let Some(rbp_slot) = rbp_slot else {
        return (kind::UNKNOWN, 0, 0);
    };
    match row.cfa {
        Cfa::Rsp(n) => (kind::CFA_RSP, n, rbp_slot),
        Cfa::Rbp(n) => (kind::CFA_RBP, n, rbp_slot),
        Cfa::Plt => (kind::PLT, 0, 0),
        Cfa::Signal => (kind::SIGNAL, 0, 0),
        Cfa::Undefined => (kind::END, 0, 0),
        Cfa::Unknown => (kind::UNKNOWN, 0, 0),
    }
}

impl KernelTable {
    /// Lays out `rows` (sorted by pc, each holding until the next) page by page.
    pub fn from_rows(rows: &[UnwindRow]) -> Self {
        let mut out = KernelTable::default();
        // The page being filled: its number and rows.
        let mut current: Option<(u64, Vec<Row>)> = None;
        let flush = |out: &mut KernelTable, page: u64, rows: Vec<Row>| {
            let useful = rows.iter().any(|r| r.kind != kind::UNKNOWN);
            let (Ok(page), Ok(first), Ok(count)) = (
                u32::try_from(page),
                u32::try_from(out.rows.len()),
                u32::try_from(rows.len()),
            ) else {
                return;
            };
            if useful && count <= MAX_PAGE_ROWS {
                out.pages.push((page, first, count));
                out.rows.extend(rows);
            }
        };
        for (i, row) in rows.iter().enumerate() {
            let (kind, cfa_offset, rbp_slot) = kernel_rule(row);
            let start = row.pc;
            // The last row holds to the end of its page.
            let end = rows
                .get(i + 1)
                .map_or((start | ((1 << PAGE_SHIFT) - 1)).saturating_add(1), |r| {
                    r.pc
                });
            if end <= start {
                continue;
            }
            let first_page = start >> PAGE_SHIFT;
            let last_page = (end - 1) >> PAGE_SHIFT;
            // A rule over many whole pages is written into each of them, unless it says
            // nothing: then only its partial first and last pages need it.
            let pages: &mut dyn Iterator<Item = u64> = if kind == kind::UNKNOWN {
                &mut [first_page, last_page].into_iter().filter({
                    let mut last = None;
                    move |p| last.replace(*p) != Some(*p)
                })
            } else {
                &mut (first_page..=last_page)
            };
            for page in pages {
                let pc_low = if page == first_page {
                    (start & ((1 << PAGE_SHIFT) - 1)) as u16
                } else {
                    0
                };
                let entry = Row {
                    pc_low,
                    kind,
                    rbp_slot,
                    cfa_offset,
                };
                if current.as_ref().is_some_and(|(p, _)| *p != page) {
                    let (p, r) = current.take().expect("checked");
                    flush(&mut out, p, r);
                }
                let (_, page_rows) = current.get_or_insert_with(|| {
                    // A page begins at pc_low 0: before its first rule, nothing is known.
                    let mut v = Vec::new();
                    if pc_low != 0 {
                        v.push(Row {
                            pc_low: 0,
                            kind: kind::UNKNOWN,
                            ..Row::default()
                        });
                    }
                    (page, v)
                });
                match page_rows.last_mut() {
                    // Two rules at one address: the later one holds.
                    Some(last) if last.pc_low == pc_low => *last = entry,
                    Some(last)
                        if (last.kind, last.cfa_offset, last.rbp_slot)
                            == (kind, cfa_offset, rbp_slot) => {}
                    _ => page_rows.push(entry),
                }
            }
        }
        if let Some((p, r)) = current.take() {
            flush(&mut out, p, r);
        }
        out
    }
}

/// One executable mapping handed to the loader.
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub image: Image,
}

/// What a mapping maps.
pub enum Image {
    /// A file, opened at first sight.
    File(File),
    /// The vDSO: the same image in every process, read once from our own.
    Vdso,
    /// Anonymous code (a JIT), or a file that could not be opened: no table.
    None,
}

/// A sender of requests to the loader's thread, for the intake thread.
#[derive(Clone)]
pub struct LoaderHandle {
    tx: mpsc::Sender<Request>,
}

impl LoaderHandle {
    /// Hands a captured process's executable mappings to the loader (which replaces an earlier
    /// capture's, after exec).
    pub fn load(&self, info: &ProcessInfo) {
        let mappings = info
            .process
            .mappings()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let image = match &m.path {
                    MapPath::Vdso => Image::Vdso,
                    _ => info
                        .process
                        .pinned_file(i)
                        .and_then(|f| f.try_clone().ok())
                        .map_or(Image::None, Image::File),
                };
                ExecMapping {
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    image,
                }
            })
            .collect();
        // The thread only ends when every sender is dropped.
        let _ = self.tx.send(Request::Process {
            key: info.key(),
            mappings,
        });
    }
}

/// What the loader did; reported at the end of `record` and in `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoaderStats {
    /// Binaries whose tables are in the kernel.
    pub tables_loaded: u64,
    /// Rows they take.
    pub rows_loaded: u64,
    /// Binaries with no usable table (not ELF, not x86_64, no CFI, over the limits).
    pub tables_unavailable: u64,
    /// Binaries whose tables did not fit in the row array: frame pointers for them.
    pub tables_not_fitting: u64,
    /// Processes whose mappings the kernel was given.
    pub processes_loaded: u64,
    /// Mappings left out because a process had more than the kernel's per-process limit.
    pub mappings_over_limit: u64,
    /// Writes to the maps that failed (full maps).
    pub map_errors: u64,
    /// Time spent building and loading tables.
    pub build_time: Duration,
}

enum Request {
    Process {
        key: ProcessKey,
        mappings: Vec<ExecMapping>,
    },
    Exited(ProcessKey),
    Preload(File),
}

/// The table loader's thread: build and load requests go in; it never blocks the caller.
pub struct TableLoader {
    tx: mpsc::Sender<Request>,
    handle: JoinHandle<LoaderStats>,
    /// The thread's counters, published after every request (for /metrics).
    stats: Arc<Mutex<LoaderStats>>,
}

impl TableLoader {
    /// Starts the loader's thread, which owns the unwind maps.
    pub fn start(maps: UnwindMaps, limits: UnwindLimits) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(LoaderStats::default()));
        let published = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("bellows-unwind".into())
            .spawn(move || {
                let mut state = LoaderState::new(maps, limits);
                while let Ok(request) = rx.recv() {
                    match request {
                        Request::Process { key, mappings } => state.load_process(key, mappings),
                        Request::Exited(key) => state.maps.remove_process(key),
                        Request::Preload(file) => state.ensure_loaded(&file),
                    }
                    if let Ok(mut s) = published.lock() {
                        *s = state.stats;
                    }
                }
                state.stats
            })?;
        Ok(TableLoader { tx, handle, stats })
    }

    /// The counters as of the last request the thread finished.
    pub fn stats(&self) -> LoaderStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// A sender for another thread (the intake's).
    pub fn handle(&self) -> LoaderHandle {
        LoaderHandle {
            tx: self.tx.clone(),
        }
    }

    /// Loads a binary's table before any process of it is seen (the command `record` starts),
    /// so that its first samples already find it.
    pub fn preload(&self, file: File) {
        let _ = self.tx.send(Request::Preload(file));
    }

    /// Forgets an exited process (its mappings stay if a later incarnation's replaced them).
    pub fn exited(&self, key: ProcessKey) {
        let _ = self.tx.send(Request::Exited(key));
    }

    /// Waits for the requests sent so far and ends the thread (once every [`LoaderHandle`]
    /// is dropped too).
    pub fn finish(self) -> LoaderStats {
        drop(self.tx);
        self.handle.join().unwrap_or_default()
    }
}

/// A file's identity: the same binary seen through any path, container or process.
type FileKey = (u64, u64, u64, i64);

fn file_key(file: &File) -> Option<FileKey> {
    let m = file.metadata().ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime()))
}

struct LoadedFile {
    file_id: u32,
    /// Executable loadable segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
}

impl LoadedFile {
    /// The bias of an executable mapping of this file at `start` from file offset `offset`: ELF
    /// virtual address = address - bias, through the executable segment the mapping was made
    /// from. The kernel maps whole pages, so `offset` is the segment's offset rounded down to a
    /// page, which may lie inside the segment before it (lld starts the code segment mid-page
    /// after the read-only one: offset 0x13cd0, mapped from 0x13000).
    fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        const PAGE: u64 = 4096;
        let &(seg_offset, _, vaddr) = self.segments.iter().find(|&&(off, size, _)| {
            off & !(PAGE - 1) <= offset && offset < off.saturating_add(size.max(1))
        })?;
        Some(
            start
                .wrapping_sub(offset)
                .wrapping_add(seg_offset)
                .wrapping_sub(vaddr),
        )
    }
}

struct LoaderState {
    maps: UnwindMaps,
    limits: UnwindLimits,
    /// Files seen: Some when their table is loaded, None when they have none.
    files: HashMap<FileKey, Option<LoadedFile>>,
    next_file_id: u32,
    /// Rows in use: a bump allocator over the row array.
    next_row: u32,
    /// Our vDSO image, once made (None inside: it could not be read).
    vdso: Option<Option<File>>,
    stats: LoaderStats,
}

impl LoaderState {
    fn new(maps: UnwindMaps, limits: UnwindLimits) -> Self {
        LoaderState {
            maps,
            limits,
            files: HashMap::new(),
            next_file_id: 1,
            next_row: 0,
            vdso: None,
            stats: LoaderStats::default(),
        }
    }

    fn load_process(&mut self, key: ProcessKey, mappings: Vec<ExecMapping>) {
        let pid = key.pid;
        let mut value = ProcessMappings {
            incarnation: key.incarnation,
            ..ProcessMappings::default()
        };
        let mut entries: Vec<Mapping> = Vec::new();
        for m in &mappings {
            // Every executable mapping goes in, with file id 0 where there is no table: then
            // a pc outside them all really is new code (see `REFRESH_FLAG`).
            let (file_id, bias) = self.table_of(m).unwrap_or((0, 0));
            tracing::trace!(
                pid,
                start = m.start,
                offset = m.offset,
                file_id,
                bias,
                "mapping"
            );
            entries.push(Mapping {
                start: m.start,
                end: m.end,
                bias,
                file_id,
                _pad: 0,
            });
        }
        entries.sort_by_key(|e| e.start);
        if entries.len() > MAX_MAPPINGS {
            self.stats.mappings_over_limit += (entries.len() - MAX_MAPPINGS) as u64;
            entries.truncate(MAX_MAPPINGS);
        }
        if entries.is_empty() {
            self.maps.remove_process(key);
            return;
        }
        tracing::debug!(
            pid,
            mappings = entries.len(),
            with_tables = entries.iter().filter(|e| e.file_id != 0).count(),
            "process mappings for unwinding"
        );
        value.len = entries.len() as u32;
        value.entries[..entries.len()].copy_from_slice(&entries);
        match self.maps.set_process(pid, &value) {
            Ok(()) => self.stats.processes_loaded += 1,
            Err(err) => {
                self.stats.map_errors += 1;
                tracing::debug!(pid, "cannot load mappings for unwinding: {err}");
            }
        }
    }

    /// The file id and bias of a mapping's loaded table, loading it first if it is new.
    fn table_of(&mut self, m: &ExecMapping) -> Option<(u32, u64)> {
        let file = match &m.image {
            Image::File(file) => file.try_clone().ok()?,
            Image::Vdso => self.vdso()?.try_clone().ok()?,
            Image::None => return None,
        };
        let key = file_key(&file)?;
        self.ensure_loaded(&file);
        let loaded = self.files.get(&key)?.as_ref()?;
        Some((loaded.file_id, loaded.bias(m.start, m.offset)?))
    }

    /// Our vDSO image as a file, made once.
    fn vdso(&mut self) -> Option<&File> {
        if self.vdso.is_none() {
            self.vdso = Some(symbolizer::own_vdso_image().ok());
        }
        self.vdso.as_ref()?.as_ref()
    }

    /// Loads a file's table unless it was tried before.
    fn ensure_loaded(&mut self, file: &File) {
        let Some(key) = file_key(file) else {
            return;
        };
        if !self.files.contains_key(&key) {
            let started = Instant::now();
            let loaded = self.load_file(file);
            let elapsed = started.elapsed();
            tracing::debug!(
                inode = key.1,
                size = key.2,
                file_id = loaded.as_ref().map(|l| l.file_id),
                elapsed_us = elapsed.as_micros() as u64,
                "unwind table built"
            );
            self.files.insert(key, loaded);
            self.stats.build_time += elapsed;
        }
    }

    /// Builds and writes one file's table; None when it has none or it does not fit.
    fn load_file(&mut self, file: &File) -> Option<LoadedFile> {
        // SAFETY: the file is mapped read-only; another process truncating it meanwhile would
        // fault (SIGBUS), a risk every reader of mapped binaries takes.
        let data = match unsafe { memmap2::Mmap::map(file) } {
            Ok(d) => d,
            Err(_) => {
                self.stats.tables_unavailable += 1;
                return None;
            }
        };
        // `.debug_frame` from a separate debug file (a -dbgsym package's, by build id), as the
        // last source, for code the binary's own CFI does not cover. The host's debug root:
        // the loader knows files, not the processes (and roots) that map them.
        let debug = symbolizer::separate_debug_file(
            &data,
            None,
            std::path::Path::new(symbolizer::DEFAULT_DEBUG_ROOT),
        );
        let table =
            match UnwindTable::from_elf(&data, debug.as_deref().map(|m| &m[..]), &self.limits) {
                Ok(t) => t,
                Err(err) => {
                    tracing::debug!("no unwind table: {err}");
                    self.stats.tables_unavailable += 1;
                    return None;
                }
            };
        let segments = match object::File::parse(&*data) {
            Ok(obj) => {
                use object::{Object, ObjectSegment, SegmentFlags};
                // Only code is mapped executable, and only code is unwound.
                obj.segments()
                    .filter(|s| {
                        matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0)
                    })
                    .map(|s| {
                        let (off, size) = s.file_range();
                        (off, size, s.address())
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let kernel = KernelTable::from_rows(table.rows());
        if kernel.rows.is_empty() {
            self.stats.tables_unavailable += 1;
            return None;
        }
        let count = u32::try_from(kernel.rows.len()).ok()?;
        let first = self.next_row;
        if first
            .checked_add(count)
            .is_none_or(|end| end > self.maps.row_capacity())
        {
            self.stats.tables_not_fitting += 1;
            return None;
        }
        let file_id = self.next_file_id;
        if let Err(err) = self.maps.write_rows(first, &kernel.rows) {
            tracing::debug!("cannot load unwind rows: {err}");
            self.stats.map_errors += 1;
            return None;
        }
        self.next_row += count;
        for &(page, rel, n) in &kernel.pages {
            let key = PageKey { file_id, page };
            if let Err(err) = self.maps.insert_page(
                key,
                PageRows {
                    first: first + rel,
                    count: n,
                },
            ) {
                tracing::debug!("cannot load unwind pages: {err}");
                self.stats.map_errors += 1;
                for &(page, _, _) in &kernel.pages {
                    self.maps.remove_page(&PageKey { file_id, page });
                }
                return None;
            }
        }
        self.next_file_id += 1;
        self.stats.tables_loaded += 1;
        self.stats.rows_loaded += u64::from(count);
        Some(LoadedFile { file_id, segments })
    }
}

/// Writes the unwinder's traced steps ([`agent_common::unwind::TraceStep`]) as text, a line
/// each, for `record --trace-unwind`.
pub struct TraceWriter {
    out: std::io::BufWriter<File>,
    /// Steps written, and walks ended (complete or truncated).
    pub steps: u64,
    pub walks: u64,
}

impl TraceWriter {
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        let mut out = std::io::BufWriter::new(File::create(path)?);
        use std::io::Write;
        writeln!(
            out,
            "# tid depth ip sp bp rule outcome (rule: how the frame was stepped; nothing is \
             symbolized here: `bellows symbolize --pid PID ADDR` names an ip)"
        )?;
        Ok(TraceWriter {
            out,
            steps: 0,
            walks: 0,
        })
    }

    /// Writes every step waiting in the ring buffer.
    pub fn drain(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    ) -> std::io::Result<()> {
        use agent_common::unwind::{TraceBatch, TRACE_COMPLETE, TRACE_NEXT};
        use std::io::Write;
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<TraceBatch>() {
                continue;
            }
            // SAFETY: the item holds a TraceBatch, plain data of any bit pattern.
            let batch: TraceBatch = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let count = (batch.count as usize).min(batch.steps.len());
            for step in &batch.steps[..count] {
                let rule = match step.kind {
                    kind::CFA_RSP => "cfa=rsp+n",
                    kind::CFA_RBP => "cfa=rbp+n",
                    kind::PLT => "plt",
                    kind::SIGNAL => "signal-frame",
                    kind::END => "outermost",
                    kind::UNKNOWN => "no-rule:frame-pointer",
                    kind::NO_ROW => "no-row:frame-pointer",
                    _ => "?",
                };
                let outcome = match step.outcome {
                    TRACE_NEXT => "next",
                    TRACE_COMPLETE => "complete",
                    _ => "truncated",
                };
                writeln!(
                    self.out,
                    "{} {} {:#x} {:#x} {:#x} {rule} {outcome}",
                    batch.tid, step.depth, step.ip, step.sp, step.bp
                )?;
                self.steps += 1;
                if step.outcome != TRACE_NEXT {
                    self.walks += 1;
                }
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<(u64, u64)> {
        use std::io::Write;
        self.out.flush()?;
        Ok((self.steps, self.walks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code segment of a binary linked by lld (rustc's default) starts mid-page, after the
    /// read-only segment: its mapping's page-aligned offset lies inside that segment's range.
    #[test]
    fn bias_of_a_code_segment_that_starts_mid_page() {
        // readelf -l of a Rust binary: R at offset 0 (0x13cc4 bytes), R E at offset 0x13cd0,
        // vaddr 0x14cd0. Only the executable one is kept.
        let file = LoadedFile {
            file_id: 1,
            segments: vec![(0x13cd0, 0x3f830, 0x14cd0)],
        };
        // Mapped at 0x5555_5556_8000 from offset 0x13000: vaddr 0x14cd0 is at 0x5555_5556_8cd0.
        let bias = file.bias(0x5555_5556_8000, 0x13000).unwrap();
        assert_eq!(0x5555_5556_8cd0 - bias, 0x14cd0);
        assert_eq!(
            file.bias(0x5555_5556_8000, 0x12000),
            None,
            "not this segment's page"
        );
    }

    fn row(pc: u64, cfa: Cfa, rbp: Rbp) -> UnwindRow {
        UnwindRow { pc, cfa, rbp }
    }

    fn find(t: &KernelTable, vaddr: u64) -> Option<&Row> {
        let page = u32::try_from(vaddr >> PAGE_SHIFT).unwrap();
        let &(_, first, count) = t.pages.iter().find(|p| p.0 == page)?;
        let rows = &t.rows[first as usize..(first + count) as usize];
        let low = (vaddr & 0xffff) as u16;
        rows.iter().rev().find(|r| r.pc_low <= low)
    }

    #[test]
    fn rows_are_laid_out_by_page_and_found_at_every_address() {
        let rows = [
            row(0x1_0010, Cfa::Rsp(8), Rbp::Unchanged),
            row(0x1_0011, Cfa::Rsp(16), Rbp::At(-16)),
            row(0x1_0014, Cfa::Rbp(16), Rbp::At(-16)),
            // A function spanning three pages.
            row(0x1_fff0, Cfa::Rsp(8), Rbp::Unchanged),
            row(0x3_0004, Cfa::Unknown, Rbp::Unchanged),
            row(0x9_0000, Cfa::Plt, Rbp::Unchanged),
            row(0x9_0040, Cfa::Undefined, Rbp::Unchanged),
            row(0x9_0050, Cfa::Unknown, Rbp::Unchanged),
        ];
        let t = KernelTable::from_rows(&rows);
        let pages: Vec<u32> = t.pages.iter().map(|p| p.0).collect();
        assert_eq!(pages, [1, 2, 3, 9], "the unknown gap's pages are left out");
        for &(_, first, _) in &t.pages {
            assert_eq!(t.rows[first as usize].pc_low, 0, "each page starts at 0");
        }
        let k = |vaddr| find(&t, vaddr).map(|r| (r.kind, r.cfa_offset, r.rbp_slot));
        assert_eq!(k(0x1_0000), Some((kind::UNKNOWN, 0, 0)));
        assert_eq!(k(0x1_0010), Some((kind::CFA_RSP, 8, 0)));
        assert_eq!(k(0x1_0012), Some((kind::CFA_RSP, 16, -2)));
        assert_eq!(k(0x1_8000), Some((kind::CFA_RBP, 16, -2)));
        assert_eq!(k(0x1_fff8), Some((kind::CFA_RSP, 8, 0)));
        assert_eq!(k(0x2_8000), Some((kind::CFA_RSP, 8, 0)));
        assert_eq!(k(0x3_0003), Some((kind::CFA_RSP, 8, 0)));
        assert_eq!(k(0x3_0004), Some((kind::UNKNOWN, 0, 0)));
        assert_eq!(k(0x5_0000), None);
        assert_eq!(k(0x9_0010), Some((kind::PLT, 0, 0)));
        assert_eq!(k(0x9_0048), Some((kind::END, 0, 0)));
    }

    #[test]
    fn equal_neighbours_merge_and_inexpressible_rules_are_unknown() {
        let rows = [
            row(0x100, Cfa::Rsp(8), Rbp::Unchanged),
            row(0x104, Cfa::Rsp(8), Rbp::Unchanged),
            row(0x108, Cfa::Rsp(8), Rbp::At(-12)),
            row(0x10c, Cfa::Rsp(8), Rbp::At(-8 * 200)),
            row(0x110, Cfa::Unknown, Rbp::Unchanged),
        ];
        let t = KernelTable::from_rows(&rows);
        let kinds: Vec<(u16, u8)> = t.rows.iter().map(|r| (r.pc_low, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0, kind::UNKNOWN),
                (0x100, kind::CFA_RSP),
                (0x108, kind::UNKNOWN)
            ]
        );
    }
}

//! DWARF of one file and its lifecycle: sized at open, its index ([`super::dwarf_index`]) built
//! at the first lookup that needs it, released under memory pressure (least recently used first, by
//! [`crate::Symbolizer`]) and built again when needed again.

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use memmap2::Mmap;
use object::{CompressedFileRange, Object, ObjectSection};

use crate::Frame;

use super::dwarf_index::DwarfIndex;

/// Most DWARF bytes (decompressed) loaded per file; larger debug info is not used.
pub(super) const MAX_DWARF_BYTES: u64 = 1 << 30;

/// Deepest inlining reported for one address.
const MAX_INLINE_FRAMES: usize = 64;

/// DWARF of one file, indexed on first use. The index builds each unit's tables the first time
/// an address falls in it, and can be shared between threads.
///
/// gimli reads the sections through plain slices: a reader that owns its bytes (an `Arc` per
/// clone) costs an atomic count on every one of the many copies the line and entry parsers
/// make. The slices are made `'static` here and kept valid by this struct, which owns what they
/// point into.
struct Dwarf {
    /// Declared first, so dropped first: it borrows from the two fields below.
    index: DwarfIndex,
    /// The file, which plainly stored sections are windows on.
    _map: Arc<Mmap>,
    /// Sections that had to be decompressed onto the heap.
    decompressed: Vec<Box<[u8]>>,
}

/// Where a file's DWARF stands: not tried yet (or released), loaded, or unusable (absent,
/// damaged or too large).
#[derive(Default)]
struct DwarfSlot {
    loaded: Option<Arc<Dwarf>>,
    tried: bool,
    too_large: bool,
}

/// The DWARF clock of one [`crate::Symbolizer`], shared by the resolvers it opens: it orders
/// their DWARF uses (for least-recently-used release) and counts the contexts they build (loaded
/// DWARF only grows when that count does). A resolver opened on its own has a clock of its own.
#[derive(Debug, Default)]
pub(crate) struct DwarfClock {
    /// The last time handed out; 0 before the first use.
    now: AtomicU64,
    /// DWARF contexts built by the resolvers on this clock.
    loads: AtomicU64,
}

impl DwarfClock {
    /// The next time: later than every earlier one, never 0.
    fn tick(&self) -> u64 {
        self.now.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// DWARF contexts built so far by the resolvers on this clock.
    pub(crate) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }
}

/// Where each DWARF section is in its file (and how it is compressed), read at open so that
/// building a context never parses the file again; None for a section that is absent.
type SectionRanges = gimli::DwarfSections<Option<CompressedFileRange>>;

/// The DWARF of one file (the binary's own, or its separate debug file's) and its lifecycle.
pub(super) struct DwarfState {
    /// The file holding the sections.
    map: Arc<Mmap>,
    /// The sections' places in [`Self::map`].
    ranges: SectionRanges,
    endian: gimli::RunTimeEndian,
    /// True when the file has `.debug_info`.
    present: bool,
    /// Bytes of the DWARF sections as they will be in memory (see [`section_bytes`]).
    size: usize,
    /// DWARF larger than this (in memory) is not used: lookups fall back to ELF symbols.
    max_bytes: u64,
    /// The context, built at the first lookup that needs it.
    slot: Mutex<DwarfSlot>,
    /// Orders uses and counts builds with the other files of the same symbolizer.
    clock: Arc<DwarfClock>,
    /// [`Self::clock`] at the last DWARF lookup; 0 for never.
    used: AtomicU64,
    /// How many times the context was built.
    loads: AtomicU64,
}

impl DwarfState {
    /// The DWARF of `obj`, parsed from `map`; none when `obj` has no `.debug_info`.
    pub(super) fn new(map: &Arc<Mmap>, obj: &object::File<'_>) -> Self {
        let present = obj.section_by_name(".debug_info").is_some();
        let size = if present { section_bytes(obj) } else { 0 };
        let ranges = SectionRanges::load(|id| {
            Ok::<_, std::convert::Infallible>(
                present
                    .then(|| obj.section_by_name(id.name()))
                    .flatten()
                    .and_then(|s| s.compressed_file_range().ok()),
            )
        });
        let ranges = match ranges {
            Ok(ranges) => ranges,
            Err(never) => match never {},
        };
        DwarfState {
            map: Arc::clone(map),
            ranges,
            endian: if obj.is_little_endian() {
                gimli::RunTimeEndian::Little
            } else {
                gimli::RunTimeEndian::Big
            },
            present,
            size: usize::try_from(size).unwrap_or(usize::MAX),
            max_bytes: MAX_DWARF_BYTES,
            slot: Mutex::default(),
            clock: Arc::default(),
            used: AtomicU64::new(0),
            loads: AtomicU64::new(0),
        }
    }

    /// Puts this file's DWARF on `clock` (that of the symbolizer that opened it).
    pub(super) fn set_clock(&mut self, clock: Arc<DwarfClock>) {
        self.clock = clock;
    }

    pub(super) fn present(&self) -> bool {
        self.present
    }

    /// See [`super::ElfResolver::with_max_dwarf_bytes`].
    pub(super) fn set_max_bytes(&mut self, bytes: u64) {
        self.max_bytes = bytes.min(MAX_DWARF_BYTES);
    }

    /// The sections exceed the per-file limit.
    fn too_big(&self) -> bool {
        self.size as u64 > self.max_bytes
    }

    /// What [`Self::loaded_bytes`] would be once loaded: 0 without DWARF, or when its size
    /// refuses it.
    pub(super) fn size(&self) -> usize {
        if !self.present || self.too_big() {
            0
        } else {
            self.size
        }
    }

    fn loaded(&self) -> Option<Arc<Dwarf>> {
        self.slot.lock().ok()?.loaded.clone()
    }

    /// Bytes of the sections behind the loaded index and of the index itself (it grows as
    /// units are built); 0 when none is loaded.
    pub(super) fn loaded_bytes(&self) -> usize {
        self.loaded()
            .map_or(0, |d| self.size + d.index.heap_bytes())
    }

    /// Heap bytes of sections decompressed for the loaded context.
    pub(super) fn decompressed_bytes(&self) -> usize {
        self.loaded()
            .map_or(0, |d| d.decompressed.iter().map(|b| b.len()).sum())
    }

    /// True once a lookup needed DWARF that was refused for its size.
    pub(super) fn too_large(&self) -> bool {
        self.slot.lock().is_ok_and(|slot| slot.too_large)
    }

    pub(super) fn last_used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Drops the context; returns the [`Self::loaded_bytes`] released, None when none was
    /// loaded.
    pub(super) fn release(&self) -> Option<usize> {
        let mut slot = self.slot.lock().ok()?;
        let dwarf = slot.loaded.take()?;
        slot.tried = false;
        drop(slot);
        let bytes = self.size + dwarf.index.heap_bytes();
        drop(dwarf);
        Some(bytes)
    }

    /// The context, built on first use (or first use since a release).
    fn context(&self) -> Option<Arc<Dwarf>> {
        if !self.present {
            return None;
        }
        let mut slot = self.slot.lock().ok()?;
        if !slot.tried {
            slot.tried = true;
            // The sections' size, read at open, decides before anything is loaded.
            slot.too_large = self.too_big();
            if !slot.too_large {
                slot.loaded = self.load().map(Arc::new);
            }
            if slot.loaded.is_some() {
                self.loads.fetch_add(1, Ordering::Relaxed);
                self.clock.loads.fetch_add(1, Ordering::Relaxed);
            }
        }
        let dwarf = slot.loaded.clone()?;
        self.used.store(self.clock.tick(), Ordering::Relaxed);
        Some(dwarf)
    }

    /// Loads the DWARF if needed, and builds the index's tables for `vas` ahead of their
    /// lookups, on several threads (see [`DwarfIndex::prepare`]).
    pub(super) fn prepare(&self, vas: &[u64]) {
        if let Some(dwarf) = self.context() {
            dwarf.index.prepare(vas);
        }
    }

    /// Indexes the DWARF sections (plain ones read in place from the
    /// map, compressed ones decompressed onto the heap); None when they are damaged.
    fn load(&self) -> Option<Dwarf> {
        let data: &[u8] = &self.map;
        let mut decompressed: Vec<Box<[u8]>> = Vec::new();
        let dwarf = self.ranges.borrow(|range| {
            let bytes = range
                .and_then(|range| {
                    let compressed = range.data(data).ok()?;
                    if compressed.uncompressed_size > MAX_DWARF_BYTES {
                        return None;
                    }
                    compressed.decompress().ok()
                })
                .unwrap_or(Cow::Borrowed(&[]));
            let section: &[u8] = match bytes {
                Cow::Borrowed(b) => b,
                Cow::Owned(v) => {
                    decompressed.push(v.into_boxed_slice());
                    decompressed.last().map_or(&[], |b| &b[..])
                }
            };
            // SAFETY: `section` lies in the map or in a boxed slice; the `Dwarf` built below
            // owns both (an `Arc` of the map, the boxes), neither moves its bytes when moved,
            // neither is mutated, and its context, which holds the slices, is dropped first.
            let section: &'static [u8] =
                unsafe { std::slice::from_raw_parts(section.as_ptr(), section.len()) };
            gimli::EndianSlice::new(section, self.endian)
        });
        let index = DwarfIndex::new(dwarf).ok()?;
        Some(Dwarf {
            index,
            _map: Arc::clone(&self.map),
            decompressed,
        })
    }

    /// DWARF frames for `va`, innermost first; None when DWARF does not cover it. A frame
    /// without a DWARF name is named by `symbol` (the ELF symbol at `va`).
    pub(super) fn frames(
        &self,
        va: u64,
        symbol: impl Fn() -> Option<String>,
    ) -> Option<Vec<Frame>> {
        let dwarf = self.context()?;
        let frames = dwarf.index.frames(va, MAX_INLINE_FRAMES)?;
        let mut out = Vec::with_capacity(frames.len());
        for frame in frames {
            let Some(function) = frame
                .name
                .map(|n| String::from(&*n.demangled))
                .or_else(&symbol)
            else {
                break;
            };
            out.push(Frame {
                function,
                file: frame.file,
                line: frame.line,
                inlined: true,
                start_line: None,
            });
        }
        let last = out.last_mut()?;
        last.inlined = false;
        Some(out)
    }
}

/// Bytes of an object's DWARF sections as they will be in memory: a compressed section's header
/// states its size (that claim is checked again before anything is allocated for it).
fn section_bytes(obj: &object::File<'_>) -> u64 {
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

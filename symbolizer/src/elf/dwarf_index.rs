//! Our own index of a file's DWARF. Opening it lists the compilation units and their address
//! ranges, reading no more of each than its root entry. A unit is read and its tables built
//! (address-sorted function ranges and line rows, in one pass over its entries) the first time
//! an address falls in it; a profile needs few of a large binary's units. A function's inlined
//! calls, most of what a unit's entries hold, are read the first time an address falls in that
//! function. Names, call sites and file names are read only for the frames of an answer.
//!
//! The answers are those of `addr2line` (the tests compare both on real binaries): the same unit
//! order, the same choice between identical ranges, the same naming rules. What differs is the
//! work done for them: one walk of a unit's entries instead of one for its function list and one
//! more per function asked for, no unit read that no address needs, no name chased for an
//! inlined call that is never in an answer, and no file name rendered for a file that never is.
//! Units can be built on several threads at once.

use std::{
    cmp::Ordering,
    collections::HashMap,
    sync::{
        atomic::{self, AtomicUsize},
        Arc, Mutex, OnceLock,
    },
};

use gimli::AttributeValue;

/// gimli reads the sections through plain slices made `'static` by their owner (see
/// [`super::dwarf`]).
pub(super) type DwarfReader = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// Bytes a cached name costs beyond its key, value and text: the map's control byte and
/// spare capacity, the `Arc`'s counts, the allocator's rounding.
const NAME_ENTRY_OVERHEAD: usize = 32;

/// How far a chain of `DW_AT_abstract_origin` / `DW_AT_specification` is followed for a name.
const NAME_DEPTH: usize = 16;

/// Deepest nesting of entries walked in one unit; deeper entries are skipped.
const MAX_DEPTH: usize = 1024;

/// An address range, end excluded.
#[derive(Debug, Clone, Copy)]
struct Span {
    begin: u64,
    end: u64,
}

/// The name of a function as its entry gives it, resolved when it is part of an answer.
#[derive(Debug, Clone, Copy, Default)]
enum Name {
    #[default]
    None,
    /// The linkage name, else the plain name.
    Str(&'static [u8]),
    /// The name of another entry (an abstract origin or specification), by `.debug_info`
    /// offset; `fallback` is a plain name seen after the reference, used if it names nothing.
    Ref {
        offset: usize,
        fallback: Option<&'static [u8]>,
    },
}

/// A function's address range, pointing at the function.
#[derive(Debug, Clone, Copy)]
struct FuncRange {
    span: Span,
    func: u32,
}

/// A physical function (`DW_TAG_subprogram` with code).
#[derive(Debug)]
struct Function {
    /// Its entry (unit offset), read again for its name when it is part of an answer.
    entry: u32,
    /// The unit offset just past its children: its inlined calls lie in `entry..end`.
    end: u32,
    /// Its inlined calls' ranges, sorted by depth then start: read from `entry..end` the first
    /// time an address falls in the function. Most functions of a unit never need them, and
    /// they are most of what a unit's entries hold.
    inlines: OnceLock<Box<[InlineRange]>>,
}

/// What an answer reads of a function's or an inlined call's entry.
#[derive(Debug, Default)]
struct EntryInfo {
    name: Name,
    /// For an inlined call: the caller's file (an index of the unit's line table) and line.
    call_file: Option<u64>,
    call_line: u32,
}

/// An inlined call's range at its depth (0 for a call inlined straight into the function).
#[derive(Debug, Clone, Copy)]
struct InlineRange {
    span: Span,
    depth: u32,
    /// The `DW_TAG_inlined_subroutine` entry (unit offset), read again for its name and call
    /// site when it is part of an answer.
    entry: u32,
}

/// A line-table row: from `address` up to the next row (or its sequence's end).
#[derive(Debug, Clone, Copy)]
struct Row {
    address: u64,
    file: u32,
    line: u32,
}

/// A contiguous run of rows: `rows[rows.0..rows.1]`.
#[derive(Debug, Clone, Copy)]
struct Sequence {
    span: Span,
    rows: (u32, u32),
}

/// What one unit holds for lookups, built on first use.
#[derive(Debug, Default)]
struct Parsed {
    /// Sorted by start.
    func_ranges: Vec<FuncRange>,
    functions: Vec<Function>,
    /// Sorted by start.
    sequences: Vec<Sequence>,
    rows: Vec<Row>,
    /// File names by line-table index, rendered when first answered.
    files: Vec<OnceLock<Option<String>>>,
}

/// A compilation unit: its header, and once needed, the unit (abbreviations, line-table header)
/// and its lookup tables. Most units of a large binary are never needed by a profile.
struct IndexedUnit {
    /// Its place in [`DwarfIndex::units`].
    id: usize,
    /// Its `.debug_info` offset.
    offset: usize,
    header: gimli::UnitHeader<DwarfReader>,
    unit: OnceLock<Option<gimli::Unit<DwarfReader>>>,
    parsed: OnceLock<Option<Parsed>>,
}

/// A unit's address range; `min_begin` is the least start of this and every later range (in
/// end order), which bounds the scan for the units holding an address.
#[derive(Debug, Clone, Copy)]
struct UnitRange {
    span: Span,
    unit: usize,
    min_begin: u64,
}

/// One frame of an answer, innermost first: function name and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawFrame {
    pub name: Option<FrameName>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A function's name in an answer: as DWARF gives it, and demangled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FrameName {
    pub raw: &'static [u8],
    pub demangled: Arc<str>,
}

/// A DWARF name, demangled; bytes that are not UTF-8 are replaced.
fn demangle(raw: &[u8]) -> Arc<str> {
    super::symbols::demangle(&String::from_utf8_lossy(raw)).into()
}

/// Shards of [`NameCache`], so that threads answering at once seldom wait for each other.
const NAME_SHARDS: usize = 8;

/// Names answered so far, demangled, by where the name lies in the sections (the linker
/// merges equal strings of `.debug_str`, so a name lies in one place whichever unit gives
/// it). The addresses of a profile fall in the same functions, and the same small functions
/// are inlined everywhere: a name is demangled once per index, not once per frame.
#[derive(Default)]
struct NameCache {
    shards: [Mutex<HashMap<usize, Arc<str>, BuildAddressHasher>>; NAME_SHARDS],
}

/// Hashes an address by one multiplication: the keys of [`NameCache`] are already unique and
/// well spread, and SipHash's defence against chosen keys buys nothing here.
#[derive(Default, Clone, Copy)]
struct BuildAddressHasher;

impl std::hash::BuildHasher for BuildAddressHasher {
    type Hasher = AddressHasher;
    fn build_hasher(&self) -> AddressHasher {
        AddressHasher(0)
    }
}

#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Which shard of [`NameCache`] holds the name at `at`.
fn name_shard(at: usize) -> usize {
    let mixed = at.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize);
    mixed >> (usize::BITS - NAME_SHARDS.trailing_zeros())
}

/// The index of one file's DWARF.
pub(super) struct DwarfIndex {
    dwarf: gimli::Dwarf<DwarfReader>,
    /// Sorted by offset.
    units: Vec<IndexedUnit>,
    /// Sorted by end.
    ranges: Vec<UnitRange>,
    /// Function names answered so far.
    names: NameCache,
    /// Heap bytes of the unit tables built and of the names cached so far.
    built_bytes: AtomicUsize,
}

/// The ranges of an entry, from its attributes.
#[derive(Default)]
struct RangeAttrs {
    low_pc: Option<u64>,
    high_pc: Option<u64>,
    size: Option<u64>,
    ranges: Option<gimli::RangeListsOffset<usize>>,
}

impl RangeAttrs {
    /// Takes the attribute if it is one of the range attributes; true when it was.
    fn take(
        &mut self,
        unit: gimli::UnitRef<'_, DwarfReader>,
        attr: &gimli::Attribute<DwarfReader>,
    ) -> gimli::Result<bool> {
        match attr.name() {
            gimli::DW_AT_low_pc => match attr.value() {
                AttributeValue::Addr(a) => self.low_pc = Some(a),
                AttributeValue::DebugAddrIndex(i) => self.low_pc = Some(unit.address(i)?),
                _ => {}
            },
            gimli::DW_AT_high_pc => match attr.value() {
                AttributeValue::Addr(a) => self.high_pc = Some(a),
                AttributeValue::DebugAddrIndex(i) => self.high_pc = Some(unit.address(i)?),
                AttributeValue::Udata(n) => self.size = Some(n),
                _ => {}
            },
            gimli::DW_AT_ranges => self.ranges = unit.attr_ranges_offset(attr.value())?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Reads an entry's range attributes and skips the others unparsed (names, types, call
    /// sites: most of a function's or an inlined call's attributes).
    fn read(
        unit: gimli::UnitRef<'_, DwarfReader>,
        entries: &mut gimli::EntriesRaw<'_, DwarfReader>,
        abbrev: &gimli::Abbreviation,
    ) -> gimli::Result<Self> {
        let mut attrs = RangeAttrs::default();
        let specs = abbrev.attributes();
        // Runs of other attributes are skipped in one call, which adds up their fixed sizes.
        let mut skipped = 0;
        for (i, spec) in specs.iter().enumerate() {
            if matches!(
                spec.name(),
                gimli::DW_AT_low_pc | gimli::DW_AT_high_pc | gimli::DW_AT_ranges
            ) {
                entries.skip_attributes(&specs[skipped..i])?;
                let attr = entries.read_attribute(*spec)?;
                attrs.take(unit, &attr)?;
                skipped = i + 1;
            }
        }
        entries.skip_attributes(&specs[skipped..])?;
        Ok(attrs)
    }

    /// Calls `f` for every non-empty range; true when there was one.
    fn each(
        &self,
        unit: gimli::UnitRef<'_, DwarfReader>,
        mut f: impl FnMut(Span),
    ) -> gimli::Result<bool> {
        let mut any = false;
        let mut add = |begin: u64, end: u64| {
            if begin < end {
                f(Span { begin, end });
                any = true;
            }
        };
        if let Some(offset) = self.ranges {
            let mut list = unit.ranges(offset)?;
            while let Some(r) = list.next()? {
                add(r.begin, r.end);
            }
        } else if let (Some(begin), Some(end)) = (self.low_pc, self.high_pc) {
            add(begin, end);
        } else if let (Some(begin), Some(size)) = (self.low_pc, self.size) {
            // A -1 tombstone wraps to below its start and is dropped.
            add(begin, begin.wrapping_add(size));
        }
        Ok(any)
    }
}

/// Takes a naming attribute into `name`: a linkage name wins, else the first of a plain name
/// and a reference.
fn take_name(
    unit: gimli::UnitRef<'_, DwarfReader>,
    attr: &gimli::Attribute<DwarfReader>,
    name: &mut Name,
    linkage: &mut bool,
) {
    match attr.name() {
        gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
            if let Some(s) = attr_str(unit, attr.value()) {
                *name = Name::Str(s);
                *linkage = true;
            }
        }
        gimli::DW_AT_name if !*linkage => match name {
            Name::None => {
                if let Some(s) = attr_str(unit, attr.value()) {
                    *name = Name::Str(s);
                }
            }
            Name::Ref { fallback, .. } if fallback.is_none() => {
                if let Some(s) = attr_str(unit, attr.value()) {
                    *fallback = Some(s);
                }
            }
            _ => {}
        },
        gimli::DW_AT_abstract_origin | gimli::DW_AT_specification if !*linkage => {
            if let (Name::None, Some(offset)) = (*name, die_offset(unit, attr.value())) {
                *name = Name::Ref {
                    offset,
                    fallback: None,
                };
            }
        }
        _ => {}
    }
}

/// A string attribute's bytes. Strings in `.debug_str` (nearly all names) are measured here
/// with the standard library's word-at-a-time search for their end rather than gimli's byte
/// loop: names of Rust and C++ functions run to hundreds of bytes, and measuring them was the
/// largest cost of an answer.
fn attr_str(
    unit: gimli::UnitRef<'_, DwarfReader>,
    value: AttributeValue<DwarfReader>,
) -> Option<&'static [u8]> {
    use gimli::Section as _;
    let until_nul = |section: &'static [u8], at: usize| {
        std::ffi::CStr::from_bytes_until_nul(section.get(at..)?)
            .ok()
            .map(std::ffi::CStr::to_bytes)
    };
    match value {
        AttributeValue::DebugStrRef(at) => until_nul(unit.dwarf.debug_str.reader().slice(), at.0),
        AttributeValue::DebugLineStrRef(at) => {
            until_nul(unit.dwarf.debug_line_str.reader().slice(), at.0)
        }
        value => unit.attr_string(value).ok().map(|s| s.slice()),
    }
}

/// The `.debug_info` offset a reference attribute points at.
fn die_offset(
    unit: gimli::UnitRef<'_, DwarfReader>,
    value: AttributeValue<DwarfReader>,
) -> Option<usize> {
    match value {
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header).map(|o| o.0),
        AttributeValue::DebugInfoRef(o) => Some(o.0),
        _ => None,
    }
}

/// A unit as [`DwarfIndex::new`] lists it, and its address ranges.
type ListedUnit = (IndexedUnit, Vec<Span>);

impl DwarfIndex {
    /// Lists the units and their ranges; nothing inside a unit is read yet. Units are listed
    /// on several threads when there are many.
    pub(super) fn new(dwarf: gimli::Dwarf<DwarfReader>) -> gimli::Result<Self> {
        let mut aranges = Vec::new();
        let mut headers = dwarf.debug_aranges.headers();
        while let Some(header) = headers.next()? {
            aranges.push((header.debug_info_offset().0, header.offset()));
        }
        aranges.sort_unstable_by_key(|a| a.0);

        let mut headers = Vec::new();
        let mut iter = dwarf.units();
        while let Some(header) = iter.next()? {
            headers.push(header);
        }
        let listed = crate::parallel::map(&headers, |header| list_unit(&dwarf, &aranges, *header));

        let mut units = Vec::with_capacity(listed.len());
        let mut ranges = Vec::new();
        for listed in listed {
            let Some((indexed, spans)) = listed? else {
                continue;
            };
            let id = units.len();
            let unit_range = |span| UnitRange {
                span,
                unit: id,
                min_begin: 0,
            };
            ranges.extend(spans.into_iter().map(unit_range));
            units.push(IndexedUnit { id, ..indexed });
        }
        ranges.sort_unstable_by_key(|r| (r.span.end, r.unit));
        let mut min = u64::MAX;
        for r in ranges.iter_mut().rev() {
            min = min.min(r.span.begin);
            r.min_begin = min;
        }
        Ok(DwarfIndex {
            dwarf,
            units,
            ranges,
            names: NameCache::default(),
            built_bytes: AtomicUsize::new(0),
        })
    }

    /// Builds, on several threads, the tables of the units that `probes` fall in (the first
    /// unit tried for each), so that the lookups that follow find them built.
    pub(super) fn prepare(&self, probes: &[u64]) {
        let mut todo: Vec<usize> = probes
            .iter()
            .filter_map(|&probe| self.units_at(probe).next())
            .filter(|unit| unit.parsed.get().is_none())
            .map(|unit| unit.id)
            .collect();
        todo.sort_unstable();
        todo.dedup();
        // Largest first: the threads finish together.
        todo.sort_by_key(|&id| std::cmp::Reverse(self.units[id].header.unit_length()));
        crate::parallel::map(&todo, |&id| {
            self.parsed(&self.units[id]);
        });
    }

    /// The units whose ranges hold `probe`, in the order they are tried.
    fn units_at(&self, probe: u64) -> impl Iterator<Item = &IndexedUnit> + '_ {
        let first = self.ranges.partition_point(|r| r.span.end <= probe);
        self.ranges[first..]
            .iter()
            .take_while(move |r| probe >= r.min_begin)
            .filter(move |r| r.span.begin <= probe && probe < r.span.end)
            .map(|r| &self.units[r.unit])
    }

    /// Heap bytes of the index: its lists of units and ranges, and the tables of the units
    /// built so far (gimli's own abbreviations and line-table headers are not counted).
    pub(super) fn heap_bytes(&self) -> usize {
        self.units.capacity() * std::mem::size_of::<IndexedUnit>()
            + self.ranges.capacity() * std::mem::size_of::<UnitRange>()
            + self.built_bytes.load(atomic::Ordering::Relaxed)
    }

    /// The tables of `unit`, built on first use (and counted in [`Self::heap_bytes`]); None
    /// when the unit cannot be read.
    fn parsed<'a>(&'a self, unit: &'a IndexedUnit) -> Option<&'a Parsed> {
        unit.parsed
            .get_or_init(|| {
                let parsed =
                    Parsed::build(gimli::UnitRef::new(&self.dwarf, unit.unit(&self.dwarf)?))
                        .ok()?;
                self.built_bytes
                    .fetch_add(parsed.heap_bytes(), atomic::Ordering::Relaxed);
                Some(parsed)
            })
            .as_ref()
    }

    /// Frames for `probe`, innermost first; None when no unit knows it. A frame's name is None
    /// when DWARF gives none.
    pub(super) fn frames(&self, probe: u64, max: usize) -> Option<Vec<RawFrame>> {
        for unit in self.units_at(probe) {
            let Some(parsed) = self.parsed(unit) else {
                continue;
            };
            let func = parsed.find_function(probe);
            let row = parsed.find_row(probe);
            if func.is_none() && row.is_none() {
                continue;
            }
            let mut location = row.map(|r| {
                (
                    self.file(unit, parsed, u64::from(r.file)),
                    (r.line != 0).then_some(r.line),
                )
            });
            let Some(func) = func else {
                let (file, line) = location.unwrap_or_default();
                return Some(vec![RawFrame {
                    name: None,
                    file,
                    line,
                }]);
            };
            let mut frames = Vec::new();
            let chain = Parsed::inline_chain(self.inlines(unit, parsed, func), probe);
            for &entry in chain.iter().rev() {
                let call = self.entry(unit, entry).unwrap_or_default();
                let (file, line) = location.take().unwrap_or_default();
                frames.push(RawFrame {
                    name: self.cached_name(call.name),
                    file,
                    line,
                });
                location = Some((
                    call.call_file.and_then(|f| self.file(unit, parsed, f)),
                    (call.call_line != 0).then_some(call.call_line),
                ));
                if frames.len() + 1 >= max {
                    break;
                }
            }
            let (file, line) = location.take().unwrap_or_default();
            let function = self
                .entry(unit, parsed.functions[func].entry)
                .unwrap_or_default();
            frames.push(RawFrame {
                name: self.cached_name(function.name),
                file,
                line,
            });
            return Some(frames);
        }
        None
    }

    /// The inlined calls of `parsed.functions[func]`, read on first use (and counted in
    /// [`Self::heap_bytes`]); none when they cannot be read.
    fn inlines<'a>(
        &self,
        unit: &IndexedUnit,
        parsed: &'a Parsed,
        func: usize,
    ) -> &'a [InlineRange] {
        let function = &parsed.functions[func];
        function.inlines.get_or_init(|| {
            let ranges = unit
                .unit(&self.dwarf)
                .and_then(|u| {
                    read_inlines(
                        gimli::UnitRef::new(&self.dwarf, u),
                        function.entry,
                        function.end,
                    )
                    .ok()
                })
                .unwrap_or_default()
                .into_boxed_slice();
            self.built_bytes.fetch_add(
                ranges.len() * std::mem::size_of::<InlineRange>(),
                atomic::Ordering::Relaxed,
            );
            ranges
        })
    }

    /// What an answer needs of a function's or an inlined call's entry, at unit offset `at`.
    fn entry(&self, unit: &IndexedUnit, at: u32) -> Option<EntryInfo> {
        let unit_ref = gimli::UnitRef::new(&self.dwarf, unit.unit(&self.dwarf)?);
        let mut entries = unit_ref
            .entries_raw(Some(gimli::UnitOffset(at as usize)))
            .ok()?;
        let abbrev = entries.read_abbreviation().ok()??;
        let mut info = EntryInfo::default();
        let mut linkage = false;
        for spec in abbrev.attributes() {
            let attr = entries.read_attribute(*spec).ok()?;
            match attr.name() {
                gimli::DW_AT_call_file => {
                    // In DWARF 5, file 0 is a real file.
                    if let AttributeValue::FileIndex(f) = attr.value() {
                        if f > 0 || unit.header.version() >= 5 {
                            info.call_file = Some(f);
                        }
                    }
                }
                gimli::DW_AT_call_line => {
                    info.call_line = attr.udata_value().unwrap_or(0) as u32;
                }
                _ => take_name(unit_ref, &attr, &mut info.name, &mut linkage),
            }
        }
        Some(info)
    }

    /// The file at line-table index `index` of `unit`, rendered once.
    fn file(&self, unit: &IndexedUnit, parsed: &Parsed, index: u64) -> Option<String> {
        let slot = parsed.files.get(usize::try_from(index).ok()?)?;
        slot.get_or_init(|| {
            let program = unit.unit(&self.dwarf)?.line_program.as_ref()?;
            let header = program.header();
            let unit_ref = gimli::UnitRef::new(&self.dwarf, unit.unit(&self.dwarf)?);
            match header.file(index) {
                Some(file) => render_file(unit_ref, file, header).ok(),
                // DWARF 4 and older may have no file 0.
                None if index == 0 => Some(String::new()),
                None => None,
            }
        })
        .clone()
    }

    /// [`Self::name`], demangled through the cache (its growth counted in
    /// [`Self::heap_bytes`]).
    fn cached_name(&self, name: Name) -> Option<FrameName> {
        let raw = self.name(name)?;
        let at = raw.as_ptr() as usize;
        let shard = &self.names.shards[name_shard(at)];
        if let Some(known) = shard.lock().ok()?.get(&at) {
            return Some(FrameName {
                raw,
                demangled: Arc::clone(known),
            });
        }
        // Demangled outside the lock: another thread may demangle the same name meanwhile, to
        // the same text.
        let demangled = demangle(raw);
        let bytes =
            demangled.len() + std::mem::size_of::<(usize, Arc<str>)>() + NAME_ENTRY_OVERHEAD;
        if shard
            .lock()
            .ok()?
            .insert(at, Arc::clone(&demangled))
            .is_none()
        {
            self.built_bytes.fetch_add(bytes, atomic::Ordering::Relaxed);
        }
        Some(FrameName { raw, demangled })
    }

    /// Resolves a name, following references across units; a plain name seen after the first
    /// reference is used when the whole chain names nothing.
    fn name(&self, name: Name) -> Option<&'static [u8]> {
        let (mut offset, fallback) = match name {
            Name::None => return None,
            Name::Str(s) => return Some(s),
            Name::Ref { offset, fallback } => (offset, fallback),
        };
        for _ in 0..NAME_DEPTH {
            match self.name_at(offset) {
                Some(Name::Str(s)) => return Some(s),
                Some(Name::Ref { offset: next, .. }) => offset = next,
                Some(Name::None) | None => break,
            }
        }
        fallback
    }

    /// The naming attributes of the entry at `.debug_info` offset `offset`.
    fn name_at(&self, offset: usize) -> Option<Name> {
        let i = self.units.partition_point(|u| u.offset < offset);
        let unit = self.units[i.checked_sub(1)?].unit(&self.dwarf)?;
        let unit_ref = gimli::UnitRef::new(&self.dwarf, unit);
        let at = gimli::DebugInfoOffset(offset).to_unit_offset(&unit.header)?;
        let mut entries = unit_ref.entries_raw(Some(at)).ok()?;
        let abbrev = entries.read_abbreviation().ok()??;
        // An entry naming another: its own linkage name wins, then its own plain name, and only
        // then the one it refers to.
        let mut linkage = None;
        let mut plain = None;
        let mut next = None;
        for spec in abbrev.attributes() {
            let attr = entries.read_attribute(*spec).ok()?;
            match attr.name() {
                gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                    if let Some(s) = attr_str(unit_ref, attr.value()) {
                        linkage.get_or_insert(s);
                    }
                }
                gimli::DW_AT_name => {
                    if let Some(s) = attr_str(unit_ref, attr.value()) {
                        plain = Some(s);
                    }
                }
                gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                    next = die_offset(unit_ref, attr.value());
                }
                _ => {}
            }
        }
        Some(match (linkage.or(plain), next) {
            (Some(s), _) => Name::Str(s),
            (None, Some(offset)) => Name::Ref {
                offset,
                fallback: None,
            },
            (None, None) => Name::None,
        })
    }

    /// Builds every unit's tables now (benchmarks and tests).
    #[cfg(test)]
    pub(super) fn build_all(&self) -> usize {
        self.units
            .iter()
            .filter(|u| self.parsed(u).is_some())
            .count()
    }
}

impl IndexedUnit {
    /// The unit, read on first use; None when it cannot be.
    fn unit(&self, dwarf: &gimli::Dwarf<DwarfReader>) -> Option<&gimli::Unit<DwarfReader>> {
        self.unit
            .get_or_init(|| dwarf.unit(self.header).ok())
            .as_ref()
    }
}

impl Parsed {
    /// Heap bytes of the tables (file names rendered later are not counted).
    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.func_ranges.capacity() * size_of::<FuncRange>()
            + self.functions.capacity() * size_of::<Function>()
            + self.sequences.capacity() * size_of::<Sequence>()
            + self.rows.capacity() * size_of::<Row>()
            + self.files.capacity() * size_of::<OnceLock<Option<String>>>()
    }

    fn build(unit: gimli::UnitRef<'_, DwarfReader>) -> gimli::Result<Self> {
        let mut parsed = Parsed::default();
        parsed.read_lines(unit)?;
        parsed.read_entries(unit)?;
        Ok(parsed)
    }

    /// The line table: sequences of rows, a row per address (the last one given for it).
    fn read_lines(&mut self, unit: gimli::UnitRef<'_, DwarfReader>) -> gimli::Result<()> {
        let Some(program) = unit.line_program.clone() else {
            return Ok(());
        };
        // Line-table file indexes: DWARF 4 and older count from 1, DWARF 5 from 0.
        let file_slots = |header: &gimli::LineProgramHeader<DwarfReader>| match header.version() {
            ..=4 => header.file_names().len() + 1,
            _ => header.file_names().len().max(1),
        };
        let mut start = self.rows.len();
        let count = if fast_rows(program.header(), |row| self.add_row(&mut start, row)).is_some() {
            file_slots(program.header())
        } else {
            // What the fast reader leaves to gimli: start again from the top.
            self.rows.clear();
            self.sequences.clear();
            start = 0;
            let mut rows = program.rows();
            while let Some((_, row)) = rows.next_row()? {
                self.add_row(&mut start, LineRow::of(row));
            }
            // `DW_LNE_define_file` may have added files.
            file_slots(rows.header())
        };
        // Rows of a sequence that never ended are not used.
        self.rows.truncate(start);
        self.sequences.sort_unstable_by_key(|s| s.span.begin);
        self.files = (0..count).map(|_| OnceLock::new()).collect();
        Ok(())
    }

    /// Takes the next row of the line program; `start` is where the current sequence's rows
    /// begin.
    fn add_row(&mut self, start: &mut usize, row: LineRow) {
        if row.end_sequence {
            let end = row.address;
            match self.rows.get(*start) {
                Some(first) if first.address < end => {
                    self.sequences.push(Sequence {
                        span: Span {
                            begin: first.address,
                            end,
                        },
                        rows: (index(*start), index(self.rows.len())),
                    });
                }
                _ => self.rows.truncate(*start),
            }
            *start = self.rows.len();
            return;
        }
        let next = Row {
            address: row.address,
            file: u32::try_from(row.file).unwrap_or(u32::MAX),
            line: row.line as u32,
        };
        let in_sequence = self.rows.len() > *start;
        match self.rows.last_mut() {
            Some(last) if in_sequence && last.address == next.address => {
                *last = next;
            }
            _ => self.rows.push(next),
        }
    }

    /// One walk over the unit's entries for its functions with code: their ranges, and where
    /// each one's children end. Everything else, inlined calls included, is skipped unread.
    fn read_entries(&mut self, unit: gimli::UnitRef<'_, DwarfReader>) -> gimli::Result<()> {
        // Entries with children, and the function (if any) that ends when the walk leaves them.
        let mut open: Vec<(isize, Option<u32>)> = Vec::new();
        let mut entries = unit.entries_raw(None)?;
        while !entries.is_empty() {
            let entry = index(entries.next_offset().0);
            let depth = entries.next_depth();
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            self.close(&mut open, depth, entry);
            let func = if abbrev.tag() == gimli::DW_TAG_subprogram {
                let ranges = RangeAttrs::read(unit, &mut entries, abbrev)?;
                let func = index(self.functions.len());
                let has_code = ranges.each(unit, |span| {
                    self.func_ranges.push(FuncRange { span, func });
                })?;
                has_code.then(|| {
                    self.functions.push(Function {
                        entry,
                        end: index(entries.next_offset().0),
                        inlines: OnceLock::new(),
                    });
                    func
                })
            } else {
                entries.skip_attributes(abbrev.attributes())?;
                None
            };
            if abbrev.has_children() && open.len() < MAX_DEPTH {
                open.push((depth, func));
            }
        }
        self.close(&mut open, isize::MIN, index(entries.next_offset().0));
        self.func_ranges.sort_unstable_by_key(|r| r.span.begin);
        self.func_ranges.shrink_to_fit();
        self.functions.shrink_to_fit();
        Ok(())
    }

    /// Leaves the open entries at `depth` or deeper, an entry at `at` being next: a function
    /// among them has its children end there.
    fn close(&mut self, open: &mut Vec<(isize, Option<u32>)>, depth: isize, at: u32) {
        while open.last().is_some_and(|(d, _)| *d >= depth) {
            if let Some((_, Some(func))) = open.pop() {
                self.functions[func as usize].end = at;
            }
        }
    }

    /// The function whose range holds `probe`.
    fn find_function(&self, probe: u64) -> Option<usize> {
        let i = self
            .func_ranges
            .binary_search_by(|r| span_order(r.span, probe))
            .ok()?;
        Some(self.func_ranges[i].func as usize)
    }

    /// The line row for `probe`.
    fn find_row(&self, probe: u64) -> Option<Row> {
        let s = self
            .sequences
            .binary_search_by(|s| span_order(s.span, probe))
            .ok()?;
        let rows = &self.rows[self.sequences[s].rows.0 as usize..self.sequences[s].rows.1 as usize];
        let i = match rows.binary_search_by(|r| r.address.cmp(&probe)) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        Some(rows[i])
    }

    /// The entries of the inlined calls among `ranges` (a function's) that hold `probe`,
    /// outermost first.
    fn inline_chain(ranges: &[InlineRange], probe: u64) -> Vec<u32> {
        let mut ranges = ranges;
        let mut chain = Vec::new();
        loop {
            let depth = index(chain.len());
            let found = ranges
                .binary_search_by(|r| r.depth.cmp(&depth).then_with(|| span_order(r.span, probe)));
            let Ok(i) = found else { break };
            chain.push(ranges[i].entry);
            ranges = &ranges[i + 1..];
        }
        chain
    }
}

/// The inlined calls of the function at `entry`, whose children end at `end`, sorted by depth
/// then start. Calls inside a function nested in it are that function's; calls inside a
/// function without code, or outside every function, are not kept.
fn read_inlines(
    unit: gimli::UnitRef<'_, DwarfReader>,
    entry: u32,
    end: u32,
) -> gimli::Result<Vec<InlineRange>> {
    // What encloses an entry: the function itself, an inlined call at that depth below it, or
    // anything whose inlined calls are not the function's.
    #[derive(Clone, Copy)]
    enum Scope {
        Ours(Option<u32>),
        NotOurs,
    }
    let mut ranges = Vec::new();
    let mut entries = unit.entries_raw(Some(gimli::UnitOffset(entry as usize)))?;
    let Some(abbrev) = entries.read_abbreviation()? else {
        return Ok(ranges);
    };
    entries.skip_attributes(abbrev.attributes())?;
    let mut scopes: Vec<(isize, Scope)> = vec![(0, Scope::Ours(None))];
    while entries.next_offset().0 < end as usize && !entries.is_empty() {
        let at = index(entries.next_offset().0);
        let depth = entries.next_depth();
        let Some(abbrev) = entries.read_abbreviation()? else {
            continue;
        };
        while scopes.last().is_some_and(|(d, _)| *d >= depth) {
            scopes.pop();
        }
        let outer = scopes.last().map_or(Scope::NotOurs, |s| s.1);
        let scope = match (abbrev.tag(), outer) {
            (gimli::DW_TAG_inlined_subroutine, Scope::Ours(parent)) => {
                let depth = parent.map_or(0, |d| d + 1);
                let attrs = RangeAttrs::read(unit, &mut entries, abbrev)?;
                attrs.each(unit, |span| {
                    ranges.push(InlineRange {
                        span,
                        depth,
                        entry: at,
                    });
                })?;
                Scope::Ours(Some(depth))
            }
            (tag, outer) => {
                entries.skip_attributes(abbrev.attributes())?;
                // Lexical blocks and the like are transparent. A nested function's inlined
                // calls are its own; those of an inlined call outside every function are
                // nobody's.
                match tag {
                    gimli::DW_TAG_subprogram | gimli::DW_TAG_inlined_subroutine => Scope::NotOurs,
                    _ => outer,
                }
            }
        };
        if abbrev.has_children() && scopes.len() < MAX_DEPTH {
            scopes.push((depth, scope));
        }
    }
    // The same choice between identical ranges as addr2line: its sort, over the same order
    // (the function's inlined calls in walk order).
    ranges.sort_unstable_by_key(|r| (r.depth, r.span.begin));
    Ok(ranges)
}

/// A row of a line program, as [`Parsed::add_row`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineRow {
    address: u64,
    file: u64,
    line: u64,
    end_sequence: bool,
}

impl LineRow {
    /// What [`Parsed::add_row`] keeps of a row of gimli's `LineRows`.
    fn of(row: &gimli::LineRow) -> Self {
        LineRow {
            address: row.address(),
            file: row.file_index(),
            line: row.line().map_or(0, |l| l.get()),
            end_sequence: row.end_sequence(),
        }
    }
}

/// Runs a line program to `row` for each row, as gimli's `LineRows` would give them (the same
/// tombstone rule, the same saturating line arithmetic), keeping only the registers an answer
/// uses. gimli spends about 350 instructions on a row in general-purpose code; this loop's
/// common case is one byte and a few additions. None, perhaps after some rows, for what it
/// leaves to gimli: VLIW operation indexes, `DW_LNE_define_file` (it changes the file table),
/// addresses of other than 4 or 8 bytes, and anything malformed or overflowing.
fn fast_rows(
    header: &gimli::LineProgramHeader<DwarfReader>,
    mut row: impl FnMut(LineRow),
) -> Option<()> {
    use gimli::Reader as _;
    let min_length = u64::from(header.minimum_instruction_length());
    let line_base = i64::from(header.line_base());
    let line_range = header.line_range();
    let opcode_base = header.opcode_base();
    let address_size = header.address_size();
    if header.maximum_operations_per_instruction() != 1
        || line_range == 0
        || opcode_base == 0
        || !matches!(address_size, 4 | 8)
    {
        return None;
    }
    let mask = if address_size == 8 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    let min_tombstone = mask - 1;
    let lengths = header.standard_opcode_lengths().slice();
    let mut input = header.raw_program_buf();
    let advance = |address: u64, by: u64| -> Option<u64> {
        address.checked_add(by).filter(|a| a & !mask == 0)
    };
    let (mut address, mut file, mut line, mut tombstone) = (0u64, 1u64, 1u64, false);
    let add_line = |line: u64, by: i64| -> u64 {
        if by < 0 {
            line.saturating_sub(by.unsigned_abs())
        } else {
            line.wrapping_add(by as u64)
        }
    };
    while !input.is_empty() {
        let opcode = input.read_u8().ok()?;
        if opcode >= opcode_base {
            let adjusted = opcode - opcode_base;
            line = add_line(line, line_base + i64::from(adjusted % line_range));
            if !tombstone {
                address = advance(address, min_length * u64::from(adjusted / line_range))?;
                row(LineRow {
                    address,
                    file,
                    line,
                    end_sequence: false,
                });
            }
            continue;
        }
        match gimli::DwLns(opcode) {
            gimli::DwLns(0) => {
                let length = usize::try_from(input.read_uleb128().ok()?).ok()?;
                let mut rest = input.split(length).ok()?;
                match gimli::DwLne(rest.read_u8().ok()?) {
                    gimli::DW_LNE_end_sequence => {
                        if !tombstone {
                            row(LineRow {
                                address,
                                file,
                                line,
                                end_sequence: true,
                            });
                        }
                        (address, file, line, tombstone) = (0, 1, 1, false);
                    }
                    gimli::DW_LNE_set_address => {
                        let to = rest.read_address(address_size).ok()?;
                        tombstone = to < address || to >= min_tombstone;
                        if !tombstone {
                            address = to;
                        }
                    }
                    gimli::DW_LNE_define_file => return None,
                    // Discriminators and unknown extended opcodes change nothing kept here.
                    _ => {}
                }
            }
            gimli::DW_LNS_copy => {
                if !tombstone {
                    row(LineRow {
                        address,
                        file,
                        line,
                        end_sequence: false,
                    });
                }
            }
            gimli::DW_LNS_advance_pc => {
                let by = input.read_uleb128().ok()?;
                if !tombstone {
                    address = advance(address, min_length.wrapping_mul(by))?;
                }
            }
            gimli::DW_LNS_advance_line => line = add_line(line, input.read_sleb128().ok()?),
            gimli::DW_LNS_set_file => file = input.read_uleb128().ok()?,
            gimli::DW_LNS_set_column | gimli::DW_LNS_set_isa => {
                input.read_uleb128().ok()?;
            }
            gimli::DW_LNS_negate_stmt
            | gimli::DW_LNS_set_basic_block
            | gimli::DW_LNS_set_prologue_end
            | gimli::DW_LNS_set_epilogue_begin => {}
            gimli::DW_LNS_const_add_pc => {
                if !tombstone {
                    let by = u64::from((255 - opcode_base) / line_range);
                    address = advance(address, min_length * by)?;
                }
            }
            gimli::DW_LNS_fixed_advance_pc => {
                let by = input.read_u16().ok()?;
                if !tombstone {
                    address = advance(address, u64::from(by))?;
                }
            }
            _ => {
                // An opcode this reader does not know: its operands, as the header counts them.
                let count = *lengths.get(usize::from(opcode) - 1)?;
                for _ in 0..count {
                    input.read_uleb128().ok()?;
                }
            }
        }
    }
    Some(())
}

/// Where `span` lies relative to `probe`, for binary searches.
fn span_order(span: Span, probe: u64) -> Ordering {
    if probe < span.begin {
        Ordering::Greater
    } else if probe >= span.end {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

/// One unit of [`DwarfIndex::new`]: None for a unit that holds no code of its own (type units)
/// or whose root cannot be read.
fn list_unit(
    dwarf: &gimli::Dwarf<DwarfReader>,
    aranges: &[(usize, gimli::DebugArangesOffset<usize>)],
    header: gimli::UnitHeader<DwarfReader>,
) -> gimli::Result<Option<ListedUnit>> {
    let Some(offset) = header.debug_info_offset() else {
        return Ok(None);
    };
    let need_range = match header.type_() {
        gimli::UnitType::Type { .. } | gimli::UnitType::SplitType { .. } => return Ok(None),
        gimli::UnitType::Partial => false,
        _ => true,
    };
    let mut spans = Vec::new();
    if need_range {
        let Ok(root) = root_unit(dwarf, header) else {
            return Ok(None);
        };
        let unit_ref = gimli::UnitRef::new(dwarf, &root.unit);
        let mut attrs = RangeAttrs::default();
        for attr in &root.attrs {
            attrs.take(unit_ref, attr)?;
        }
        if attrs.ranges.is_none() {
            let first = aranges.partition_point(|a| a.0 < offset.0);
            for (_, at) in aranges[first..].iter().take_while(|a| a.0 == offset.0) {
                let mut entries = dwarf.debug_aranges.header(*at)?.entries();
                while let Some(entry) = entries.next().transpose() {
                    // An entry that overflows is skipped; others end the list.
                    let Ok(entry) = entry else { continue };
                    if entry.length() != 0 {
                        let r = entry.range();
                        spans.push(Span {
                            begin: r.begin,
                            end: r.end,
                        });
                    }
                }
            }
        }
        if spans.is_empty() && !attrs.each(unit_ref, |span| spans.push(span))? {
            // No ranges declared: the line table's sequences say where the unit is.
            match line_spans(dwarf, &root) {
                Ok(lines) => spans = lines,
                Err(_) => return Ok(None),
            }
        }
    }
    let indexed = IndexedUnit {
        id: 0,
        offset: offset.0,
        header,
        unit: OnceLock::new(),
        parsed: OnceLock::new(),
    };
    Ok(Some((indexed, spans)))
}

/// A unit read only as far as its root entry: enough to resolve the root's address and range
/// attributes, without the line-table header that a full [`gimli::Unit`] parses.
struct RootUnit {
    unit: gimli::Unit<DwarfReader>,
    attrs: Vec<gimli::Attribute<DwarfReader>>,
}

fn root_unit(
    dwarf: &gimli::Dwarf<DwarfReader>,
    header: gimli::UnitHeader<DwarfReader>,
) -> gimli::Result<RootUnit> {
    let (attrs_at, specs) = root_abbreviation(dwarf, &header)?;
    let encoding = header.encoding();
    let mut unit = gimli::Unit {
        // Not needed for the root's attributes, which are read by `specs`.
        abbreviations: Arc::default(),
        name: None,
        comp_dir: None,
        low_pc: 0,
        str_offsets_base: gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
            encoding,
            dwarf.file_type,
        ),
        addr_base: gimli::DebugAddrBase(0),
        loclists_base: gimli::DebugLocListsBase::default_for_encoding_and_file(
            encoding,
            dwarf.file_type,
        ),
        rnglists_base: gimli::DebugRngListsBase::default_for_encoding_and_file(
            encoding,
            dwarf.file_type,
        ),
        line_program: None,
        dwo_id: None,
        header,
    };
    let mut attrs = Vec::new();
    {
        let mut entries = unit
            .header
            .entries_raw(&unit.abbreviations, Some(attrs_at))?;
        for spec in specs {
            attrs.push(entries.read_attribute(spec)?);
        }
    }
    // The bases first: the root's own address and range attributes may be relative to them.
    for attr in &attrs {
        match (attr.name(), attr.value()) {
            (
                gimli::DW_AT_addr_base | gimli::DW_AT_GNU_addr_base,
                AttributeValue::DebugAddrBase(base),
            ) => {
                unit.addr_base = base;
            }
            (
                gimli::DW_AT_rnglists_base | gimli::DW_AT_GNU_ranges_base,
                AttributeValue::DebugRngListsBase(base),
            ) => unit.rnglists_base = base,
            (gimli::DW_AT_str_offsets_base, AttributeValue::DebugStrOffsetsBase(base)) => {
                unit.str_offsets_base = base;
            }
            _ => {}
        }
    }
    Ok(RootUnit { unit, attrs })
}

/// The attribute specifications of a unit's root entry, and where the root's attributes begin.
/// `.debug_abbrev` is read only as far as the root's declaration: a unit's table declares
/// hundreds of entry kinds, and parsing every unit's whole table was most of the cost of
/// listing the units. The table is parsed in full if the unit is ever built.
fn root_abbreviation(
    dwarf: &gimli::Dwarf<DwarfReader>,
    header: &gimli::UnitHeader<DwarfReader>,
) -> gimli::Result<(gimli::UnitOffset, Vec<gimli::AttributeSpecification>)> {
    use gimli::{Reader as _, Section as _};
    let first = gimli::UnitOffset(header.header_size());
    let mut root = header.range_from(first..)?;
    let before = root.len();
    let code = root.read_uleb128()?;
    if code == 0 {
        return Err(gimli::Error::MissingUnitDie);
    }
    let attrs_at = gimli::UnitOffset(first.0 + (before - root.len()));
    let mut table = *dwarf.debug_abbrev.reader();
    table.skip(header.debug_abbrev_offset().0)?;
    loop {
        let declared = table.read_uleb128()?;
        if declared == 0 {
            return Err(gimli::Error::InvalidAbbreviationCode(code));
        }
        table.read_uleb128()?; // tag
        table.read_u8()?; // children
        let mut specs = Vec::new();
        loop {
            let name = table.read_uleb128_u16()?;
            let form = table.read_uleb128_u16()?;
            if name == 0 && form == 0 {
                break;
            }
            let form = gimli::DwForm(form);
            let implicit = if form == gimli::DW_FORM_implicit_const {
                Some(table.read_sleb128()?)
            } else {
                None
            };
            if declared == code {
                specs.push(gimli::AttributeSpecification::new(
                    gimli::DwAt(name),
                    form,
                    implicit,
                ));
            }
        }
        if declared == code {
            return Ok((attrs_at, specs));
        }
    }
}

/// The spans of a unit's line sequences (as [`Parsed::read_lines`] keeps them), read without
/// the rest of the unit.
fn line_spans(dwarf: &gimli::Dwarf<DwarfReader>, root: &RootUnit) -> gimli::Result<Vec<Span>> {
    let mut spans = Vec::new();
    let stmt_list = root.attrs.iter().find_map(|attr| match attr.value() {
        AttributeValue::DebugLineRef(offset) if attr.name() == gimli::DW_AT_stmt_list => {
            Some(offset)
        }
        _ => None,
    });
    let Some(offset) = stmt_list else {
        return Ok(spans);
    };
    let program = dwarf
        .debug_line
        .program(offset, root.unit.header.address_size(), None, None)?;
    let mut rows = program.rows();
    let mut first = None;
    while let Some((_, row)) = rows.next_row()? {
        if row.end_sequence() {
            if let Some(begin) = first.take().filter(|&begin| begin < row.address()) {
                spans.push(Span {
                    begin,
                    end: row.address(),
                });
            }
        } else if first.is_none() {
            first = Some(row.address());
        }
    }
    Ok(spans)
}

/// A count or position that fits the tables' u32 fields (a unit is far smaller than 4 Gi).
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A line-table file's full path: the unit's directory, the file's directory (unless it is the
/// unit's), the file's name; an absolute part replaces what is before it.
fn render_file(
    unit: gimli::UnitRef<'_, DwarfReader>,
    file: &gimli::FileEntry<DwarfReader>,
    header: &gimli::LineProgramHeader<DwarfReader>,
) -> gimli::Result<String> {
    let mut path = match unit.comp_dir {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => String::new(),
    };
    if file.directory_index() != 0 {
        if let Some(dir) = file.directory(header) {
            push_path(&mut path, &unit.attr_string(dir)?.to_string_lossy());
        }
    }
    push_path(
        &mut path,
        &unit.attr_string(file.path_name())?.to_string_lossy(),
    );
    Ok(path)
}

fn push_path(path: &mut String, part: &str) {
    let rooted = |p: &str| {
        p.starts_with('/')
            || p.starts_with('\\')
            || p.get(1..3).is_some_and(|d| d == ":/" || d == ":\\")
    };
    if rooted(part) {
        *path = part.to_string();
        return;
    }
    let windows = path.starts_with('\\') || path.get(1..3) == Some(":\\");
    let sep = if windows { '\\' } else { '/' };
    if !path.is_empty() && !path.ends_with(sep) {
        path.push(sep);
    }
    path.push_str(part);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use object::{Object, ObjectSection};

    use super::*;

    /// The DWARF of the file at `path`, its sections leaked so that they are `'static`.
    fn load(path: &std::path::Path) -> gimli::Dwarf<DwarfReader> {
        let data: &'static [u8] = Vec::leak(std::fs::read(path).expect("read binary"));
        let obj = object::File::parse(data).expect("parse binary");
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let section = |id: gimli::SectionId| -> Result<DwarfReader, gimli::Error> {
            let bytes: &'static [u8] = match obj.section_by_name(id.name()) {
                Some(s) => match s.uncompressed_data().expect("section data") {
                    Cow::Borrowed(b) => b,
                    Cow::Owned(v) => Vec::leak(v),
                },
                None => &[],
            };
            Ok(gimli::EndianSlice::new(bytes, endian))
        };
        gimli::Dwarf::load(section).expect("load DWARF")
    }

    /// addr2line's frames for `probe`, in the same shape as ours.
    fn reference(ctx: &addr2line::Context<DwarfReader>, probe: u64) -> Option<Vec<RawFrame>> {
        let mut iter = ctx.find_frames(probe).skip_all_loads().ok()?;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let (file, line) = frame
                .location
                .map(|l| (l.file.map(str::to_string), l.line))
                .unwrap_or_default();
            frames.push(RawFrame {
                name: frame.function.map(|f| FrameName {
                    raw: f.name.slice(),
                    demangled: demangle(f.name.slice()),
                }),
                file,
                line,
            });
        }
        (!frames.is_empty()).then_some(frames)
    }

    /// Compares the index with addr2line at the start, middle and last byte of every function
    /// range of every unit, and at every line row; returns how many addresses were compared.
    fn compare(path: &std::path::Path) -> usize {
        let index = DwarfIndex::new(load(path)).expect("index");
        let ctx = addr2line::Context::from_dwarf(load(path)).expect("addr2line");
        index.build_all();
        let mut probes = Vec::new();
        for unit in &index.units {
            let Some(Some(parsed)) = unit.parsed.get() else {
                continue;
            };
            for r in &parsed.func_ranges {
                probes.extend([
                    r.span.begin,
                    r.span.begin + (r.span.end - r.span.begin) / 2,
                    r.span.end - 1,
                ]);
            }
            for func in 0..parsed.functions.len() {
                let inlines = index.inlines(unit, parsed, func);
                probes.extend(inlines.iter().map(|r| r.span.begin));
            }
            probes.extend(parsed.rows.iter().step_by(7).map(|r| r.address));
        }
        // Only addresses of code: ranges of functions the linker dropped lie at 0 and overlap,
        // and no sample is ever there.
        let data = std::fs::read(path).expect("read binary");
        let obj = object::File::parse(&*data).expect("parse binary");
        let code: Vec<(u64, u64)> = obj
            .sections()
            .filter(|s| s.kind() == object::SectionKind::Text)
            .map(|s| (s.address(), s.address() + s.size()))
            .collect();
        probes.retain(|p| code.iter().any(|(start, end)| (*start..*end).contains(p)));
        probes.sort_unstable();
        probes.dedup();
        let mut differ = Vec::new();
        for &probe in &probes {
            let ours = index.frames(probe, usize::MAX);
            let theirs = reference(&ctx, probe);
            if ours != theirs {
                differ.push((probe, ours, theirs));
            }
        }
        let show = |frames: &Option<Vec<RawFrame>>| -> Vec<String> {
            frames
                .iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{} {:?}:{:?}",
                        f.name
                            .as_ref()
                            .map(|n| String::from_utf8_lossy(n.raw))
                            .unwrap_or_default(),
                        f.file,
                        f.line
                    )
                })
                .collect()
        };
        assert!(
            differ.is_empty(),
            "{} of {} addresses differ from addr2line in {}; first: {:#x}\nours:   {:#?}\ntheirs: {:#?}",
            differ.len(),
            probes.len(),
            path.display(),
            differ[0].0,
            show(&differ[0].1),
            show(&differ[0].2),
        );
        probes.len()
    }

    /// Runs every unit's line program through [`fast_rows`] and through gimli's `LineRows`;
    /// returns how many units the fast reader ran to the end (all of them gave the same rows).
    fn compare_line_programs(path: &std::path::Path) -> usize {
        let index = DwarfIndex::new(load(path)).expect("index");
        let mut fast_units = 0;
        for unit in &index.units {
            let Some(program) = unit.unit(&index.dwarf).and_then(|u| u.line_program.clone()) else {
                continue;
            };
            let mut fast = Vec::new();
            let finished = fast_rows(program.header(), |row| fast.push(row)).is_some();
            let mut theirs = Vec::new();
            let mut rows = program.rows();
            while let Ok(Some((_, row))) = rows.next_row() {
                theirs.push(LineRow::of(row));
            }
            if finished {
                fast_units += 1;
                assert_eq!(
                    fast,
                    theirs,
                    "unit at {:#x} of {}",
                    unit.offset,
                    path.display()
                );
            } else {
                // Rows given before the fast reader stopped are still gimli's.
                assert_eq!(fast[..], theirs[..fast.len().min(theirs.len())]);
            }
        }
        fast_units
    }

    #[test]
    fn root_abbreviations_are_gimlis() {
        let exe = std::env::current_exe().expect("current exe");
        let dwarf = load(&exe);
        let mut units = dwarf.units();
        let mut compared = 0;
        while let Some(header) = units.next().expect("unit header") {
            let (at, specs) = root_abbreviation(&dwarf, &header).expect("root abbreviation");
            let abbrevs = dwarf.abbreviations(&header).expect("abbreviations");
            let mut entries = header.entries_raw(&abbrevs, None).expect("entries");
            let root = entries
                .read_abbreviation()
                .expect("root")
                .expect("root entry");
            assert_eq!(specs[..], root.attributes()[..]);
            assert_eq!(at, entries.next_offset());
            compared += 1;
        }
        assert!(compared > 10, "only {compared} units");
    }

    #[test]
    fn fast_line_rows_are_gimlis() {
        let exe = std::env::current_exe().expect("current exe");
        for path in std::iter::once(exe).chain(compared_binaries()) {
            let units = compare_line_programs(&path);
            assert!(
                units > 0,
                "{}: no line program read to its end",
                path.display()
            );
            println!("{}: {units} line programs agree", path.display());
        }
    }

    #[test]
    fn answers_as_addr2line_on_this_test_binary() {
        let exe = std::env::current_exe().expect("current exe");
        let compared = compare(&exe);
        assert!(compared > 10_000, "only {compared} addresses compared");
    }

    /// The same comparison on the native fixtures (C, optimized, with inlined calls; one with
    /// compressed sections), and on any binaries named by `BELLOWS_DWARF_COMPARE=PATH[:PATH]`
    /// (a release build of bellows, say).
    #[test]
    fn answers_as_addr2line_on_fixtures() {
        for path in compared_binaries() {
            let compared = compare(&path);
            assert!(
                compared > 10,
                "{}: only {compared} addresses compared",
                path.display()
            );
            println!("{}: {compared} addresses agree", path.display());
        }
    }

    /// The native fixtures, and any binaries named by `BELLOWS_DWARF_COMPARE`.
    fn compared_binaries() -> Vec<std::path::PathBuf> {
        let mut paths = Vec::new();
        match std::env::var_os("BELLOWS_FIXTURES") {
            Some(dir) => {
                let native = std::path::Path::new(&dir).join("native");
                paths.extend(["dwarf", "zdwarf"].map(|name| native.join(name)));
            }
            None if std::env::var_os("CI").is_some() => {
                panic!("BELLOWS_FIXTURES is not set: run `cargo xtask test`")
            }
            None => eprintln!("BELLOWS_FIXTURES is not set: fixtures not compared"),
        }
        if let Some(given) = std::env::var_os("BELLOWS_DWARF_COMPARE") {
            paths.extend(std::env::split_paths(&given));
        }
        paths
    }
}

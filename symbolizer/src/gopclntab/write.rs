//! Writers of small Go tables and of the ELF images around them: the seeds of the fuzz targets
//! (`cargo xtask fuzz`), built from a description ([`synthetic`]) or cut from a real binary
//! ([`GoTable::excerpt`]). Behind the `seeds` feature; nothing here reads untrusted input
//! except the excerpt, which goes through the decoder.
//!
//! A [`Table`] describes functions in the decoder's terms (names, sizes, pc-value runs, files,
//! inline trees); [`Table::encode`] lays them out in one of the four table versions, and
//! [`go_image`] wraps the bytes in an ELF file where the decoder finds them: by section name,
//! without section headers, by the `runtime.pclntab` symbol (external linking), or in a PIE whose
//! pointers are `R_*_RELATIVE` relocations.

use std::collections::HashMap;

use super::{GoTable, GoTableVersion};
use crate::Symbolized;

/// One run of a pc-value table: `value` over `len` bytes (a multiple of the pc quantum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The table's value over the run.
    pub value: i32,
    /// Length of the run in bytes.
    pub len: u64,
}

/// One entry of a function's inline tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inlined {
    /// The inlined function.
    pub name: String,
    /// The call site: an offset from the physical function's entry.
    pub parent_pc: i32,
    /// `inlinedCall.funcID`.
    pub func_id: u8,
    /// The inlined function's start line (Go 1.20+ records).
    pub start_line: i32,
    /// Parent index, file and line (Go 1.12–1.19 records; the decoder ignores them).
    pub parent: i16,
    /// See [`Self::parent`].
    pub file: i32,
    /// See [`Self::parent`].
    pub line: i32,
}

/// One function of a [`Table`]; it starts where the previous one ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Func {
    /// Full Go name.
    pub name: String,
    /// Size in bytes, to the next function's entry.
    pub size: u64,
    /// `_func.args`.
    pub args: u32,
    /// `_func.funcID`.
    pub func_id: u8,
    /// `_func.flag` (written where the layout has it: Go 1.16+).
    pub flag: u8,
    /// `_func.startLine` (Go 1.20+).
    pub start_line: i32,
    /// The files of the function's compilation unit: `pcfile` values index them.
    pub files: Vec<String>,
    /// Stack-pointer deltas (`pcsp`); None: no table.
    pub pcsp: Option<Vec<Run>>,
    /// File numbers into [`Self::files`] (`pcfile`).
    pub pcfile: Option<Vec<Run>>,
    /// Lines (`pcln`).
    pub pcln: Option<Vec<Run>>,
    /// Inline tree indices (`pcdata[2]`): -1 outside inlined code.
    pub inline_index: Option<Vec<Run>>,
    /// The inline tree that [`Self::inline_index`] indexes.
    pub inlined: Vec<Inlined>,
}

/// A Go table, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Layout.
    pub version: GoTableVersion,
    /// Pointer size, 4 or 8.
    pub ptr_size: u8,
    /// Pc quantum: 1 (amd64), 2 (s390x) or 4 (arm64).
    pub quantum: u8,
    /// Address of the first function (`runtime.text`).
    pub text: u64,
    /// The functions, in address order, back to back from `text`.
    pub funcs: Vec<Func>,
    /// Machine code from `text` on; shorter than the functions: the rest is `int3`.
    pub code: Vec<u8>,
}

/// A table laid out in bytes, and where its parts are.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The table (the section's contents).
    pub bytes: Vec<u8>,
    /// Offsets in `bytes` of the function name table and the CU table (what `moduledata`
    /// points at besides the header), and of the functab.
    pub funcnametab: usize,
    /// See [`Self::funcnametab`].
    pub cutab: usize,
    /// See [`Self::funcnametab`].
    pub functab: usize,
    /// Offset in `bytes` of `moduledata.gofunc`, where Go 1.18+ funcdata count from: the
    /// inline trees sit there.
    pub gofunc: usize,
    /// Offset of the header's text start word (Go 1.18+).
    pub text_word: Option<usize>,
}

/// Bytes in one byte order.
#[derive(Debug, Clone, Default)]
struct Out {
    buf: Vec<u8>,
    big: bool,
}

impl Out {
    fn new(big: bool) -> Self {
        Out {
            buf: Vec::new(),
            big,
        }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    fn u64(&mut self, v: u64) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    fn word(&mut self, v: u64, ptr_size: usize) {
        if ptr_size == 4 {
            self.u32(v as u32);
        } else {
            self.u64(v);
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn align(&mut self, to: usize) {
        while !self.buf.len().is_multiple_of(to) {
            self.buf.push(0);
        }
    }

    fn put_u32(&mut self, at: usize, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf[at..at + 4].copy_from_slice(&b);
    }

    fn put_word(&mut self, at: usize, v: u64, ptr_size: usize) {
        if ptr_size == 4 {
            self.put_u32(at, v as u32);
        } else {
            let b = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.buf[at..at + 8].copy_from_slice(&b);
        }
    }
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A pc-value table: zig-zag value deltas from -1 and pc deltas in quanta, then a zero.
/// Neighbouring runs of one value are merged (a zero delta would end the table), empty runs
/// dropped.
fn encode_runs(runs: &[Run], quantum: u64, map: impl Fn(i32) -> i32) -> Vec<u8> {
    let mut merged: Vec<Run> = Vec::new();
    for r in runs.iter().filter(|r| r.len > 0) {
        let value = map(r.value);
        match merged.last_mut() {
            Some(last) if last.value == value => last.len += r.len,
            _ => merged.push(Run { value, len: r.len }),
        }
    }
    let mut out = Vec::new();
    let mut prev = -1i32;
    for r in &merged {
        let delta = r.value.wrapping_sub(prev);
        let uv = if delta < 0 {
            (u64::from(!delta as u32) << 1) | 1
        } else {
            u64::from(delta as u32) << 1
        };
        uvarint(&mut out, uv);
        uvarint(&mut out, r.len / quantum);
        prev = r.value;
    }
    out.push(0);
    out
}

/// NUL-terminated strings, each stored once.
#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    at: HashMap<String, usize>,
}

impl Strings {
    fn add(&mut self, s: &str) -> usize {
        if let Some(&at) = self.at.get(s) {
            return at;
        }
        let at = self.bytes.len();
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.at.insert(s.to_string(), at);
        at
    }
}

impl Table {
    /// Entry address of every function, and the end of the last.
    pub fn entries(&self) -> Vec<u64> {
        let mut pc = self.text;
        let mut out = vec![pc];
        for f in &self.funcs {
            pc += f.size;
            out.push(pc);
        }
        out
    }

    /// The machine code of all functions: [`Self::code`], then `int3` to the last function's
    /// end.
    pub fn text_bytes(&self) -> Vec<u8> {
        let len = self.funcs.iter().map(|f| f.size).sum::<u64>() as usize;
        let mut code = self.code.clone();
        code.resize(len.max(code.len()), 0xcc);
        code
    }

    /// The table's bytes for a section at `table_va` (Go ≤ 1.17 funcdata are addresses), in
    /// one byte order. `text_in_header`: Go 1.18–1.25 write the text start into the header,
    /// Go 1.26+ write 0 there (it is then read from `moduledata`).
    pub fn encode(&self, table_va: u64, big_endian: bool, text_in_header: bool) -> Encoded {
        let v = self.version;
        let p = usize::from(self.ptr_size);
        let q = u64::from(self.quantum);
        let entries = self.entries();
        let mut names = Strings::default();
        let mut files = Strings::default();
        let mut t = Out::new(big_endian);
        let magic: u32 = match v {
            GoTableVersion::V12 => 0xffff_fffb,
            GoTableVersion::V116 => 0xffff_fffa,
            GoTableVersion::V118 => 0xffff_fff0,
            GoTableVersion::V120 => 0xffff_fff1,
        };
        t.u32(magic);
        t.bytes(&[0, 0, self.quantum, self.ptr_size]);
        if v == GoTableVersion::V12 {
            return self.encode_v12(t, table_va, &entries);
        }
        let relative = v.relative_entries();
        let header_words = if relative { 8 } else { 7 };
        t.bytes(&vec![0; header_words * p]);

        // Names (physical and inlined), then each function's CU, then file names.
        let funcnametab = t.len();
        let name_offs: Vec<usize> = self.funcs.iter().map(|f| names.add(&f.name)).collect();
        for f in &self.funcs {
            for i in &f.inlined {
                names.add(&i.name);
            }
        }
        t.bytes(&names.bytes);
        let cutab = t.len();
        let mut cu_offsets = Vec::new();
        let mut cu_count = 0u32;
        for f in &self.funcs {
            cu_offsets.push(cu_count);
            for name in &f.files {
                t.u32(files.add(name) as u32);
                cu_count += 1;
            }
        }
        let filetab = t.len();
        t.bytes(&files.bytes);

        // pc-value tables; offset 0 means "none".
        let pctab = t.len();
        t.u8(0);
        let mut tables = Vec::new();
        for f in &self.funcs {
            let mut put = |runs: &Option<Vec<Run>>| -> u32 {
                let Some(runs) = runs else { return 0 };
                let off = (t.len() - pctab) as u32;
                t.bytes(&encode_runs(runs, q, |x| x));
                off
            };
            tables.push([
                put(&f.pcsp),
                put(&f.pcfile),
                put(&f.pcln),
                put(&f.inline_index),
            ]);
        }

        // functab, then the `_func` records, then the inline trees (`gofunc`).
        t.align(p.max(4));
        let functab = t.len();
        let e = if relative { 4 } else { p };
        let n = self.funcs.len();
        t.bytes(&vec![0; (2 * n + 1) * e]);
        let mut tree_fixups = Vec::new();
        let mut func_offs = Vec::new();
        for (i, f) in self.funcs.iter().enumerate() {
            t.align(if relative { 4 } else { p });
            func_offs.push(t.len() - functab);
            if relative {
                t.u32((entries[i] - self.text) as u32);
            } else {
                t.word(entries[i], p);
            }
            let [pcsp, pcfile, pcln, inl] = tables[i];
            let npcdata: u32 = if inl != 0 { 3 } else { 2 };
            for w in [name_offs[i] as u32, f.args, 0, pcsp, pcfile, pcln, npcdata] {
                t.u32(w);
            }
            t.u32(cu_offsets[i]);
            if v == GoTableVersion::V120 {
                t.u32(f.start_line as u32);
            }
            let tree_index = v.funcdata_inl_tree() as usize;
            let nfuncdata = if f.inlined.is_empty() {
                0
            } else {
                tree_index + 1
            };
            t.bytes(&[f.func_id, f.flag, 0, nfuncdata as u8]);
            for k in 0..npcdata {
                t.u32(if k == 2 { inl } else { 0 });
            }
            if nfuncdata == 0 {
                continue;
            }
            if relative {
                for k in 0..nfuncdata {
                    tree_fixups.push((i, t.len(), k == tree_index));
                    t.u32(u32::MAX);
                }
            } else {
                t.align(p);
                for k in 0..nfuncdata {
                    tree_fixups.push((i, t.len(), k == tree_index));
                    t.word(0, p);
                }
            }
        }
        t.align(8);
        let gofunc = t.len();
        let mut tree_at = vec![0usize; n];
        for (i, f) in self.funcs.iter().enumerate() {
            tree_at[i] = t.len();
            for c in &f.inlined {
                let name = names.add(&c.name) as i32;
                if v == GoTableVersion::V120 {
                    t.bytes(&[c.func_id, 0, 0, 0]);
                    for w in [name, c.parent_pc, c.start_line] {
                        t.u32(w as u32);
                    }
                } else {
                    t.u16(c.parent as u16);
                    t.bytes(&[c.func_id, 0]);
                    for w in [c.file, c.line, name, c.parent_pc] {
                        t.u32(w as u32);
                    }
                }
            }
        }
        for (i, at, is_tree) in tree_fixups {
            if !is_tree {
                continue;
            }
            if relative {
                t.put_u32(at, (tree_at[i] - gofunc) as u32);
            } else {
                t.put_word(at, table_va + tree_at[i] as u64, p);
            }
        }
        for i in 0..n {
            let field = functab + 2 * i * e;
            let entry = if relative {
                entries[i] - self.text
            } else {
                entries[i]
            };
            t.put_word(field, entry, e);
            t.put_word(field + e, func_offs[i] as u64, e);
        }
        let end = if relative {
            entries[n] - self.text
        } else {
            entries[n]
        };
        t.put_word(functab + 2 * n * e, end, e);

        let mut words = vec![n as u64, files.at.len() as u64];
        let text_word = if relative {
            words.push(if text_in_header { self.text } else { 0 });
            Some(8 + 2 * p)
        } else {
            None
        };
        words.extend([funcnametab, cutab, filetab, pctab, functab].map(|o| o as u64));
        for (k, w) in words.into_iter().enumerate() {
            t.put_word(8 + k * p, w, p);
        }
        Encoded {
            bytes: t.buf,
            funcnametab,
            cutab,
            functab,
            gofunc,
            text_word,
        }
    }

    /// Go 1.2–1.15: functab right after `nfunc`, a file table of name offsets, everything
    /// counted from the section start, and one global file numbering (from 1).
    fn encode_v12(&self, mut t: Out, table_va: u64, entries: &[u64]) -> Encoded {
        let p = usize::from(self.ptr_size);
        let q = u64::from(self.quantum);
        let n = self.funcs.len();
        t.word(n as u64, p);
        let functab = t.len();
        t.bytes(&vec![0; (2 * n + 1) * p]);
        let filetab_word = t.len();
        t.u32(0);
        // Global file numbers, from 1.
        let mut global: Vec<&str> = Vec::new();
        let file_maps: Vec<Vec<i32>> = self
            .funcs
            .iter()
            .map(|f| {
                f.files
                    .iter()
                    .map(|name| {
                        let g = global.iter().position(|x| x == name).unwrap_or_else(|| {
                            global.push(name);
                            global.len() - 1
                        });
                        g as i32 + 1
                    })
                    .collect()
            })
            .collect();
        // Strings, counted from the section start: names first.
        let mut strings = Strings {
            bytes: Vec::new(),
            at: HashMap::new(),
        };
        let strings_at = {
            let base = t.len();
            for f in &self.funcs {
                strings.add(&f.name);
                for c in &f.inlined {
                    strings.add(&c.name);
                }
            }
            for name in &global {
                strings.add(name);
            }
            t.bytes(&strings.bytes);
            base
        };
        let sym = |s: &str| (strings_at + strings.at[s]) as u32;
        let mut tables = Vec::new();
        for (f, map) in self.funcs.iter().zip(&file_maps) {
            let mut put = |runs: &Option<Vec<Run>>, files: bool| -> u32 {
                let Some(runs) = runs else { return 0 };
                let off = t.len() as u32;
                let bytes = if files {
                    encode_runs(runs, q, |x| {
                        usize::try_from(x)
                            .ok()
                            .and_then(|x| map.get(x))
                            .copied()
                            .unwrap_or(-1)
                    })
                } else {
                    encode_runs(runs, q, |x| x)
                };
                t.bytes(&bytes);
                off
            };
            tables.push([
                put(&f.pcsp, false),
                put(&f.pcfile, true),
                put(&f.pcln, false),
                put(&f.inline_index, false),
            ]);
        }
        t.align(4);
        let filetab = t.len();
        t.u32(global.len() as u32 + 1);
        for name in &global {
            t.u32(sym(name));
        }
        let filetab_off = filetab as u32;
        t.put_u32(filetab_word, filetab_off);
        let tree_index = GoTableVersion::V12.funcdata_inl_tree() as usize;
        let mut func_offs = Vec::new();
        let mut tree_fixups = Vec::new();
        for (i, f) in self.funcs.iter().enumerate() {
            t.align(p);
            func_offs.push(t.len());
            t.word(entries[i], p);
            let [pcsp, pcfile, pcln, inl] = tables[i];
            let npcdata: u32 = if inl != 0 { 3 } else { 2 };
            for w in [sym(&f.name), f.args, 0, pcsp, pcfile, pcln, npcdata] {
                t.u32(w);
            }
            let nfuncdata = if f.inlined.is_empty() {
                0
            } else {
                tree_index + 1
            };
            t.bytes(&[f.func_id, 0, 0, nfuncdata as u8]);
            for k in 0..npcdata {
                t.u32(if k == 2 { inl } else { 0 });
            }
            t.align(p);
            for k in 0..nfuncdata {
                if k == tree_index {
                    tree_fixups.push((i, t.len()));
                }
                t.word(0, p);
            }
        }
        t.align(8);
        let gofunc = t.len();
        for (i, at) in tree_fixups {
            let tree = t.len();
            for c in &self.funcs[i].inlined {
                t.u16(c.parent as u16);
                t.bytes(&[c.func_id, 0]);
                for w in [c.file, c.line, sym(&c.name) as i32, c.parent_pc] {
                    t.u32(w as u32);
                }
            }
            t.put_word(at, table_va + tree as u64, p);
        }
        for i in 0..n {
            t.put_word(functab + 2 * i * p, entries[i], p);
            t.put_word(functab + (2 * i + 1) * p, func_offs[i] as u64, p);
        }
        t.put_word(functab + 2 * n * p, entries[n], p);
        Encoded {
            bytes: t.buf,
            funcnametab: 0,
            cutab: 0,
            functab,
            gofunc,
            text_word: None,
        }
    }
}

/// The machine of an image: its ELF `e_machine` and byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86-64, little-endian.
    X86_64,
    /// arm64, little-endian.
    Aarch64,
    /// s390x, big-endian.
    S390x,
}

impl Machine {
    fn e_machine(self) -> u16 {
        match self {
            Machine::X86_64 => 62,
            Machine::Aarch64 => 183,
            Machine::S390x => 22,
        }
    }

    fn big_endian(self) -> bool {
        self == Machine::S390x
    }

    fn relative_type(self) -> u64 {
        match self {
            Machine::X86_64 => 8,
            Machine::Aarch64 => 1027,
            Machine::S390x => 12,
        }
    }
}

/// What a section of an [`Elf`] image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Loaded, executable.
    Text,
    /// Loaded, read-only.
    ReadOnly,
    /// Loaded, writable.
    Data,
    /// A note (`SHT_NOTE`), loaded read-only.
    Note,
}

/// A section of an [`Elf`] image, loaded at `addr` (each in its own segment).
#[derive(Debug, Clone)]
pub struct Section {
    /// Name, e.g. `.gopclntab`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Virtual address.
    pub addr: u64,
    /// Contents.
    pub data: Vec<u8>,
}

/// A symbol of an [`Elf`] image's `.symtab`.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// A function (`STT_FUNC`) or data (`STT_OBJECT`).
    pub func: bool,
    /// `STB_LOCAL` (as Go's linker writes `runtime.*`) or `STB_GLOBAL`.
    pub local: bool,
}

/// A minimal ELF64 image: loaded sections, each in its own `PT_LOAD`; optional symbols,
/// relocations (a PIE) and section headers.
#[derive(Debug, Clone)]
pub struct Elf {
    /// Machine and byte order.
    pub machine: Machine,
    /// `ET_DYN` with `PT_DYNAMIC` and `.rela.dyn` holding [`Self::relocations`], or `ET_EXEC`.
    pub pie: bool,
    /// Write section headers (and so `.symtab`); without them only segments remain.
    pub section_headers: bool,
    /// Loaded sections.
    pub sections: Vec<Section>,
    /// `.symtab` entries.
    pub symbols: Vec<Symbol>,
    /// `R_*_RELATIVE` relocations: (address of the word, addend). PIE only.
    pub relocations: Vec<(u64, u64)>,
    /// `e_entry`.
    pub entry: u64,
}

/// Segments are aligned this much (file offsets congruent to addresses modulo it), as with
/// `ld -n`: pages would make every seed 4 KiB per segment.
const SEGMENT_ALIGN: u64 = 16;

impl Elf {
    /// The file.
    pub fn write(&self) -> Vec<u8> {
        let big = self.machine.big_endian();
        let mut sections = self.sections.clone();
        let mut dynamic_index = None;
        if self.pie {
            // `.rela.dyn` and `.dynamic` after the highest loaded address.
            let top = sections
                .iter()
                .map(|s| s.addr + s.data.len() as u64)
                .max()
                .unwrap_or(0x1000)
                .next_multiple_of(0x1000);
            let mut rela = Out::new(big);
            for &(at, addend) in &self.relocations {
                rela.u64(at);
                rela.u64(self.machine.relative_type());
                rela.u64(addend);
            }
            let rela_len = rela.len() as u64;
            let mut dynamic = Out::new(big);
            for (tag, val) in [(7u64, top), (8, rela_len), (9, 24), (0, 0)] {
                dynamic.u64(tag);
                dynamic.u64(val);
            }
            sections.push(Section {
                name: ".rela.dyn".into(),
                kind: Kind::ReadOnly,
                addr: top,
                data: rela.buf,
            });
            dynamic_index = Some(sections.len());
            sections.push(Section {
                name: ".dynamic".into(),
                kind: Kind::Data,
                addr: (top + rela_len).next_multiple_of(16),
                data: dynamic.buf,
            });
        }
        let phnum = sections.len() + usize::from(dynamic_index.is_some());
        let mut f = Out::new(big);
        f.bytes(&[0; 64]);
        f.bytes(&vec![0; phnum * 56]);
        let mut placed = Vec::new();
        for s in &sections {
            while f.len() as u64 % SEGMENT_ALIGN != s.addr % SEGMENT_ALIGN {
                f.u8(0);
            }
            placed.push(f.len() as u64);
            f.bytes(&s.data);
        }
        // Program headers.
        let mut ph = Out::new(big);
        let segment = |ph: &mut Out, kind: u32, flags: u32, off: u64, addr: u64, len: u64| {
            ph.u32(kind);
            ph.u32(flags);
            for w in [off, addr, addr, len, len, SEGMENT_ALIGN] {
                ph.u64(w);
            }
        };
        for (s, &off) in sections.iter().zip(&placed) {
            let flags = match s.kind {
                Kind::Text => 5,
                Kind::ReadOnly | Kind::Note => 4,
                Kind::Data => 6,
            };
            segment(&mut ph, 1, flags, off, s.addr, s.data.len() as u64);
        }
        if let Some(i) = dynamic_index {
            let s = &sections[i];
            segment(&mut ph, 2, 6, placed[i], s.addr, s.data.len() as u64);
        }
        f.buf[64..64 + ph.len()].copy_from_slice(&ph.buf);

        let (shoff, shnum, shstrndx) = if self.section_headers {
            self.section_headers(&mut f, &sections, &placed)
        } else {
            (0, 0, 0)
        };
        let mut h = Out::new(big);
        h.bytes(b"\x7fELF\x02");
        h.u8(if big { 2 } else { 1 });
        h.bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.u16(if self.pie { 3 } else { 2 });
        h.u16(self.machine.e_machine());
        h.u32(1);
        h.u64(self.entry);
        h.u64(64);
        h.u64(shoff);
        h.u32(0);
        for v in [64, 56, phnum as u16, 64, shnum, shstrndx] {
            h.u16(v);
        }
        f.buf[..64].copy_from_slice(&h.buf);
        f.buf
    }

    /// Appends `.symtab`, `.strtab`, `.shstrtab` and the section header table; returns
    /// (e_shoff, e_shnum, e_shstrndx).
    fn section_headers(
        &self,
        f: &mut Out,
        sections: &[Section],
        placed: &[u64],
    ) -> (u64, u16, u16) {
        let big = f.big;
        let mut shstrtab = Strings::default();
        shstrtab.add("");
        let mut headers = vec![Shdr::default()];
        for (s, &off) in sections.iter().zip(placed) {
            let (kind, flags) = match s.kind {
                Kind::Text => (1, 6),
                Kind::ReadOnly => (1, 2),
                Kind::Data => (1, 3),
                Kind::Note => (7, 2),
            };
            let (kind, entsize, link) = match s.name.as_str() {
                ".rela.dyn" => (4, 24, 0),
                ".dynamic" => (6, 16, 0),
                _ => (kind, 0, 0),
            };
            headers.push(Shdr {
                name: shstrtab.add(&s.name),
                kind,
                flags,
                addr: s.addr,
                offset: off,
                size: s.data.len() as u64,
                link,
                align: SEGMENT_ALIGN,
                entsize,
                ..Shdr::default()
            });
        }
        if !self.symbols.is_empty() {
            let mut strtab = Strings::default();
            strtab.add("");
            let mut symtab = Out::new(big);
            symtab.bytes(&[0; 24]);
            let mut sorted: Vec<&Symbol> = self.symbols.iter().collect();
            sorted.sort_by_key(|s| !s.local);
            let first_global = 1 + sorted.iter().filter(|s| s.local).count();
            for s in sorted {
                let shndx = sections
                    .iter()
                    .position(|x| s.addr >= x.addr && s.addr < x.addr + x.data.len() as u64)
                    .map_or(0xfff1, |i| i as u16 + 1);
                symtab.u32(strtab.add(&s.name) as u32);
                let bind = if s.local { 0 } else { 1 };
                symtab.u8((bind << 4) | if s.func { 2 } else { 1 });
                symtab.u8(0);
                symtab.u16(shndx);
                symtab.u64(s.addr);
                symtab.u64(s.size);
            }
            f.align(8);
            let symtab_index = headers.len() as u32;
            headers.push(Shdr {
                name: shstrtab.add(".symtab"),
                kind: 2,
                offset: f.len() as u64,
                size: symtab.len() as u64,
                link: symtab_index + 1,
                info: first_global as u32,
                align: 8,
                entsize: 24,
                ..Shdr::default()
            });
            f.bytes(&symtab.buf);
            headers.push(Shdr {
                name: shstrtab.add(".strtab"),
                kind: 3,
                offset: f.len() as u64,
                size: strtab.bytes.len() as u64,
                align: 1,
                ..Shdr::default()
            });
            f.bytes(&strtab.bytes);
        }
        let shstrndx = headers.len() as u16;
        let name = shstrtab.add(".shstrtab");
        headers.push(Shdr {
            name,
            kind: 3,
            offset: f.len() as u64,
            size: shstrtab.bytes.len() as u64,
            align: 1,
            ..Shdr::default()
        });
        f.bytes(&shstrtab.bytes);
        f.align(8);
        let shoff = f.len() as u64;
        for h in &headers {
            f.u32(h.name as u32);
            f.u32(h.kind);
            for w in [h.flags, h.addr, h.offset, h.size] {
                f.u64(w);
            }
            f.u32(h.link);
            f.u32(h.info);
            f.u64(h.align);
            f.u64(h.entsize);
        }
        (shoff, headers.len() as u16, shstrndx)
    }
}

/// One section header (`Elf64_Shdr`).
#[derive(Debug, Clone, Copy, Default)]
struct Shdr {
    name: usize,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

/// Where an image's table is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In `.gopclntab`.
    Section,
    /// In `.gopclntab`, with section headers removed: found by scanning the segments.
    NoSectionHeaders,
    /// Inside `.data.rel.ro` (an external link): found through the `runtime.pclntab` symbol.
    ExternalLink,
    /// A PIE: `.data.rel.ro.gopclntab`, pointers (the header's text start, `moduledata`'s
    /// words) zero on disk and filled by `R_*_RELATIVE` relocations.
    Pie,
}

/// How [`go_image`] wraps a table.
#[derive(Debug, Clone)]
pub struct GoImage {
    /// Machine and byte order.
    pub machine: Machine,
    /// Where the table is found.
    pub placement: Placement,
    /// Address of the table.
    pub table_va: u64,
    /// The header holds the text start (Go 1.18–1.25); false: 0 there, `moduledata` in
    /// `.go.module` (Go 1.26+).
    pub text_in_header: bool,
    /// Word of `moduledata` that holds `gofunc`: 38 (Go 1.18–1.19), 40 (Go 1.20–1.26) or 43
    /// (Go 1.27).
    pub gofunc_word: usize,
    /// A `.go.buildinfo` naming this Go release (e.g. `go1.22.10`).
    pub go_version: Option<String>,
    /// `.symtab` with the functions and the runtime's symbols.
    pub symbols: bool,
}

impl GoImage {
    /// x86-64, `.gopclntab` at 0x4c0000, the text start in the header, `gofunc` where the
    /// table's version keeps it, no build info, no symbols.
    pub fn new(version: GoTableVersion) -> Self {
        GoImage {
            machine: Machine::X86_64,
            placement: Placement::Section,
            table_va: 0x4c_0000,
            text_in_header: true,
            gofunc_word: if version == GoTableVersion::V118 {
                38
            } else {
                40
            },
            go_version: None,
            symbols: false,
        }
    }
}

/// Words of the `moduledata` written.
const MD_WORDS: usize = 48;

/// An ELF image holding `table`: the table, its text, `moduledata` (Go 1.18+), build info and
/// symbols as `opts` say.
pub fn go_image(table: &Table, opts: &GoImage) -> Vec<u8> {
    let big = opts.machine.big_endian();
    let p = usize::from(table.ptr_size);
    let pie = opts.placement == Placement::Pie;
    let enc = table.encode(opts.table_va, big, opts.text_in_header && !pie);
    let table_va = opts.table_va;
    let table_end = table_va + enc.bytes.len() as u64;
    let text = table.text_bytes();
    let etext = table.text + text.len() as u64;
    let mut relocations = Vec::new();
    if pie {
        if let (Some(at), true) = (enc.text_word, opts.text_in_header) {
            relocations.push((table_va + at as u64, table.text));
        }
    }
    let mut sections = vec![Section {
        name: ".text".into(),
        kind: Kind::Text,
        addr: table.text,
        data: text,
    }];
    let table_section = match opts.placement {
        Placement::Section | Placement::NoSectionHeaders => ".gopclntab",
        Placement::ExternalLink => ".data.rel.ro",
        Placement::Pie => ".data.rel.ro.gopclntab",
    };
    sections.push(Section {
        name: table_section.into(),
        kind: Kind::ReadOnly,
        addr: table_va,
        data: enc.bytes.clone(),
    });
    let mut next_va = table_end.next_multiple_of(0x1000);
    let mut md_va = None;
    if table.version.relative_entries() {
        let va = next_va;
        md_va = Some(va);
        let at = |off: usize| table_va + off as u64;
        let md = Moduledata {
            table: table_va,
            funcnametab: at(enc.funcnametab),
            cutab: at(enc.cutab),
            functab: at(enc.functab),
            text: table.text,
            etext,
            gofunc: at(enc.gofunc),
        }
        .array(opts.gofunc_word);
        let mut words = Out::new(big);
        for (k, &w) in md.iter().enumerate() {
            if pie && w != 0 {
                relocations.push((va + (k * p) as u64, w));
                words.word(0, p);
            } else {
                words.word(w, p);
            }
        }
        let name = if !opts.text_in_header {
            ".go.module"
        } else if pie {
            ".data.rel.ro"
        } else {
            ".noptrdata"
        };
        sections.push(Section {
            name: name.into(),
            kind: if name == ".noptrdata" {
                Kind::Data
            } else {
                Kind::ReadOnly
            },
            addr: va,
            data: words.buf,
        });
        next_va += 0x1000;
    }
    if let Some(version) = &opts.go_version {
        sections.push(Section {
            name: ".go.buildinfo".into(),
            kind: Kind::Data,
            addr: next_va,
            data: build_info(version, p, big, next_va, table.version.relative_entries()),
        });
        next_va += 0x1000;
    }
    if opts.placement == Placement::ExternalLink {
        // What makes the file Go's when the table has no section of its own.
        let mut note = Out::new(big);
        for w in [4u32, 8, 4] {
            note.u32(w);
        }
        note.bytes(b"Go\0\0fuzzseed");
        sections.push(Section {
            name: ".note.go.buildid".into(),
            kind: Kind::Note,
            addr: next_va,
            data: note.buf,
        });
    }
    let mut symbols = Vec::new();
    if opts.symbols || opts.placement == Placement::ExternalLink {
        let local = |name: &str, addr: u64, size: u64, func: bool| Symbol {
            name: name.into(),
            addr,
            size,
            func,
            local: true,
        };
        symbols.push(local("runtime.text", table.text, 0, true));
        symbols.push(local("runtime.etext", etext, 0, true));
        symbols.push(local("runtime.pclntab", table_va, 0, false));
        symbols.push(local("runtime.epclntab", table_end, 0, false));
        if let Some(md) = md_va {
            symbols.push(local(
                "runtime.firstmoduledata",
                md,
                (MD_WORDS * p) as u64,
                false,
            ));
            symbols.push(local("go:func.*", table_va + enc.gofunc as u64, 0, false));
        }
        if opts.symbols {
            for (f, entry) in table.funcs.iter().zip(table.entries()) {
                symbols.push(Symbol {
                    name: f.name.clone(),
                    addr: entry,
                    size: f.size,
                    func: true,
                    local: false,
                });
            }
        }
    }
    Elf {
        machine: opts.machine,
        pie,
        section_headers: opts.placement != Placement::NoSectionHeaders,
        sections,
        symbols,
        relocations,
        entry: table.text,
    }
    .write()
}

/// Bytes before the table in a [`table_image`] input: the text start (u64) and the offset of
/// `gofunc` in the table (u32), little-endian.
pub const TABLE_INPUT_PREFIX: usize = 12;

/// The input of the table-only fuzz target for `table`: [`TABLE_INPUT_PREFIX`], then the table
/// as [`go_image`] writes it with [`GoImage::new`] (x86-64, text start in the header).
pub fn table_input(table: &Table) -> Vec<u8> {
    let opts = GoImage::new(table.version);
    let enc = table.encode(opts.table_va, false, true);
    let mut out = table.text.to_le_bytes().to_vec();
    out.extend_from_slice(&(enc.gofunc as u32).to_le_bytes());
    out.extend_from_slice(&enc.bytes);
    out
}

/// An x86-64 ELF image around raw table bytes, for fuzzing the decoder on tables alone: the
/// table in `.gopclntab` at [`GoImage::new`]'s address (where Go ≤ 1.17 funcdata point), and for
/// Go 1.18+ magics a `moduledata` pointing at the parts the header names and at `gofunc` (in
/// `.go.module` when the header's text start is 0, as in Go 1.26+). `input` is
/// [`table_input`]'s format; None when it is shorter than the prefix.
pub fn table_image(input: &[u8]) -> Option<Vec<u8>> {
    let (prefix, bytes) = input.split_at_checked(TABLE_INPUT_PREFIX)?;
    let text = u64::from_le_bytes(prefix[..8].try_into().ok()?);
    let gofunc = u32::from_le_bytes(prefix[8..].try_into().ok()?);
    let magic = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let version = GoTableVersion::from_magic(magic).unwrap_or(GoTableVersion::V120);
    let opts = GoImage::new(version);
    let p = if bytes.get(7) == Some(&4) { 4 } else { 8 };
    let word = |k: usize| {
        let at = 8 + k * p;
        let b = bytes.get(at..at + p)?;
        Some(if p == 4 {
            u64::from(u32::from_le_bytes(b.try_into().ok()?))
        } else {
            u64::from_le_bytes(b.try_into().ok()?)
        })
    };
    let table_va = opts.table_va;
    let at = |off: Option<u64>| table_va.wrapping_add(off.unwrap_or(0));
    let mut sections = vec![Section {
        name: ".gopclntab".into(),
        kind: Kind::ReadOnly,
        addr: table_va,
        data: bytes.to_vec(),
    }];
    if version.relative_entries() {
        let md = Moduledata {
            table: table_va,
            funcnametab: at(word(3)),
            cutab: at(word(4)),
            functab: at(word(7)),
            text,
            etext: text,
            gofunc: at(Some(u64::from(gofunc))),
        };
        let in_header = word(2).is_some_and(|t| t != 0);
        sections.push(Section {
            name: if in_header {
                ".noptrdata"
            } else {
                ".go.module"
            }
            .into(),
            kind: Kind::Data,
            addr: (table_va + bytes.len() as u64).next_multiple_of(0x1000),
            data: md.words(opts.gofunc_word, p, false),
        });
    }
    Some(
        Elf {
            machine: Machine::X86_64,
            pie: false,
            section_headers: true,
            sections,
            symbols: Vec::new(),
            relocations: Vec::new(),
            entry: text,
        }
        .write(),
    )
}

/// The words of `moduledata` the decoder reads, and the slices and bounds around them.
struct Moduledata {
    table: u64,
    funcnametab: u64,
    cutab: u64,
    functab: u64,
    text: u64,
    etext: u64,
    gofunc: u64,
}

impl Moduledata {
    fn array(&self, gofunc_word: usize) -> Vec<u64> {
        let mut md = vec![0u64; MD_WORDS];
        md[0] = self.table;
        md[1] = self.funcnametab;
        md[4] = self.cutab;
        md[13] = self.functab;
        md[16] = self.functab;
        md[20] = self.text;
        md[21] = self.etext;
        md[22] = self.text;
        md[23] = self.etext;
        md[gofunc_word] = self.gofunc;
        md
    }

    fn words(&self, gofunc_word: usize, p: usize, big: bool) -> Vec<u8> {
        let mut out = Out::new(big);
        for w in self.array(gofunc_word) {
            out.word(w, p);
        }
        out.buf
    }
}

/// `.go.buildinfo`: Go 1.18+ write the version inline after the 32-byte header, older
/// releases a pointer to a Go string header.
fn build_info(version: &str, p: usize, big: bool, va: u64, inline: bool) -> Vec<u8> {
    let mut b = Out::new(big);
    b.bytes(b"\xff Go buildinf:");
    b.u8(p as u8);
    b.u8(if inline { 2 } else { u8::from(big) });
    if inline {
        b.bytes(&[0; 16]);
        for s in [version, "path\tfuzz/seed\n"] {
            uvarint(&mut b.buf, s.len() as u64);
            b.bytes(s.as_bytes());
        }
    } else {
        // Two pointers (version, module info) to string headers at 48, the string at 64.
        let header = va + 48;
        b.word(header, p);
        b.word(0, p);
        b.align(16);
        b.bytes(&[0; 16]);
        b.buf.resize(48, 0);
        b.word(va + 64, p);
        b.word(version.len() as u64, p);
        b.buf.resize(64, 0);
        b.bytes(version.as_bytes());
    }
    b.buf
}

/// `sub $8, %rsp; mov %rbp, (%rsp)`: Go ≤ 1.20's prologue for an 8-byte frame.
const OLD_PROLOGUE: &[u8] = &[0x48, 0x83, 0xec, 0x08, 0x48, 0x89, 0x2c, 0x24];
/// `push %rbp; mov %rsp, %rbp; sub $0x10, %rsp`: Go ≥ 1.21's.
const NEW_PROLOGUE: &[u8] = &[0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10];

/// A small table of `version` shaped like a real one: a top frame (`runtime.goexit`), a stack
/// switcher (`runtime.asmcgocall`), `main.main` with a two-deep inline chain over two files,
/// a method with the old prologue, and a generic wrapper whose name has spaces. Amd64 code
/// (quantum 1) unless `quantum` says otherwise, in which case every length is scaled by it.
pub fn synthetic(version: GoTableVersion, quantum: u8) -> Table {
    let q = u64::from(quantum);
    let run = |value: i32, len: u64| Run {
        value,
        len: len * q,
    };
    let v120 = version == GoTableVersion::V120;
    let flags = |f: u8| if version == GoTableVersion::V12 { 0 } else { f };
    let line = |l: i32| if v120 { l } else { 0 };
    let main_files = vec![
        "/src/cpuburn/main.go".to_string(),
        "/usr/lib/go/src/fmt/print.go".to_string(),
    ];
    let funcs = vec![
        Func {
            name: "runtime.goexit".into(),
            size: 16 * q,
            func_id: 4,
            flag: flags(1),
            files: vec!["/usr/lib/go/src/runtime/asm_amd64.s".into()],
            pcsp: Some(vec![run(0, 16)]),
            pcfile: Some(vec![run(0, 16)]),
            pcln: Some(vec![run(1650, 1), run(1652, 15)]),
            ..Func::default()
        },
        Func {
            name: "main.main".into(),
            size: 64 * q,
            args: 0,
            start_line: line(12),
            files: main_files.clone(),
            // push, mov, sub $0x10; ...; add $0x10, pop; ret.
            pcsp: Some(vec![
                run(0, 1),
                run(8, 7),
                run(24, 50),
                run(8, 5),
                run(0, 1),
            ]),
            pcfile: Some(vec![run(0, 28), run(1, 10), run(0, 26)]),
            pcln: Some(vec![
                run(12, 8),
                run(13, 8),
                run(31, 12),
                run(273, 10),
                run(14, 10),
                run(15, 16),
            ]),
            // sum inlined at pc 10, Println inlined into it at pc 18.
            inline_index: Some(vec![run(-1, 16), run(0, 12), run(1, 10), run(-1, 26)]),
            inlined: vec![
                Inlined {
                    name: "main.sum[go.shape.int]".into(),
                    parent_pc: 10 * q as i32,
                    start_line: line(30),
                    parent: -1,
                    line: 13,
                    ..Inlined::default()
                },
                Inlined {
                    name: "fmt.Println".into(),
                    parent_pc: 18 * q as i32,
                    start_line: line(272),
                    parent: 0,
                    file: 1,
                    line: 31,
                    ..Inlined::default()
                },
            ],
            ..Func::default()
        },
        Func {
            name: "runtime.asmcgocall".into(),
            size: 32 * q,
            args: 16,
            flag: flags(2),
            files: vec!["/usr/lib/go/src/runtime/asm_amd64.s".into()],
            pcsp: Some(vec![run(0, 4), run(8, 28)]),
            pcfile: Some(vec![run(0, 32)]),
            pcln: Some(vec![run(840, 4), run(841, 28)]),
            ..Func::default()
        },
        Func {
            name: "main.(*Burner).Run".into(),
            size: 48 * q,
            args: 8,
            start_line: line(40),
            files: vec![main_files[0].clone()],
            pcsp: Some(vec![run(0, 4), run(8, 40), run(0, 4)]),
            pcfile: Some(vec![run(0, 48)]),
            pcln: Some(vec![run(40, 4), run(41, 20), run(43, 24)]),
            ..Func::default()
        },
        Func {
            name: "type:.eq.struct { a int; b [2]interface {} }".into(),
            size: 16 * q,
            func_id: 21,
            files: vec!["<autogenerated>".into()],
            pcsp: Some(vec![run(0, 16)]),
            pcfile: Some(vec![run(0, 16)]),
            pcln: Some(vec![run(1, 16)]),
            ..Func::default()
        },
    ];
    let mut code = Vec::new();
    if quantum == 1 {
        code.extend_from_slice(&[0x90; 16]);
        code.extend_from_slice(NEW_PROLOGUE);
        code.resize(16 + 64, 0x90);
        code.extend_from_slice(OLD_PROLOGUE);
        code.resize(16 + 64 + 32, 0x90);
        code.extend_from_slice(OLD_PROLOGUE);
    }
    Table {
        version,
        ptr_size: 8,
        quantum,
        text: 0x40_1000,
        funcs,
        code,
    }
}

impl GoTable {
    /// A [`Table`] of the `count` functions from index `first` on (fewer at the end), as
    /// this table describes them, with their machine code: the seed of a small real table.
    /// pcfile values are renumbered to each function's own files; other pcdata and funcdata
    /// than the inline tree are left out. None when a function of the range does not decode.
    pub fn excerpt(&self, data: &[u8], first: usize, count: usize) -> Option<Table> {
        let b = self.bytes(data);
        let last = first.checked_add(count)?.min(self.nfunc);
        let mut funcs = Vec::new();
        let text = self.entry(b, first)?;
        for i in first..last {
            let f = self.record(b, i)?;
            let runs = |off: u32| -> Option<Vec<Run>> {
                let runs = self.pctab.runs(data, off, f.entry, f.end)?;
                runs.map(|r| {
                    r.ok().map(|r| Run {
                        value: r.value,
                        len: r.end - r.start,
                    })
                })
                .collect()
            };
            // Files: renumber to the ones this function uses.
            let mut files: Vec<String> = Vec::new();
            let pcfile = runs(f.pcfile).map(|rs| {
                rs.into_iter()
                    .map(|r| {
                        if r.value < 0 {
                            return r;
                        }
                        let name = self
                            .file_name(data, f.cu_offset, r.value)
                            .unwrap_or("?")
                            .to_string();
                        let k = files.iter().position(|x| *x == name).unwrap_or_else(|| {
                            files.push(name);
                            files.len() - 1
                        });
                        Run {
                            value: k as i32,
                            len: r.len,
                        }
                    })
                    .collect()
            });
            let inline_index = self
                .pcdata(b, &f, super::inline::PCDATA_INL_TREE_INDEX)
                .and_then(runs);
            let tree = self.funcdata(b, &f, self.version.funcdata_inl_tree());
            let mut inlined = Vec::new();
            if let (Some(index), Some(tree), true) = (&inline_index, tree, self.inline_trees) {
                let entries = index.iter().map(|r| r.value + 1).max().unwrap_or(0);
                let (size, name_at, parent_at) = self.version.inlined_call();
                for k in 0..usize::try_from(entries).ok()? {
                    let call = tree.checked_add(k.checked_mul(size)?)?;
                    let i32_at = |o: usize| b.i32(call + o);
                    inlined.push(Inlined {
                        name: self.name(data, i32_at(name_at)?)?.to_string(),
                        parent_pc: i32_at(parent_at)?,
                        func_id: b.u8(call
                            + if self.version == GoTableVersion::V120 {
                                0
                            } else {
                                2
                            })?,
                        start_line: if self.version == GoTableVersion::V120 {
                            i32_at(12)?
                        } else {
                            0
                        },
                        parent: i32_at(0)? as i16,
                        file: i32_at(4)?,
                        line: i32_at(8)?,
                    });
                }
            }
            let fixed = self.func_fixed_size();
            funcs.push(Func {
                name: self.name(data, f.name_off)?.to_string(),
                size: f.end - f.entry,
                args: b.u32(f.at + self.entry_size() + 4)?,
                func_id: b.u8(f.at + fixed - 4)?,
                flag: f.flag,
                start_line: f.start_line.map_or(0, |l| l as i32),
                files,
                pcsp: runs(f.pcsp),
                pcfile,
                pcln: runs(f.pcln),
                inline_index: inline_index.filter(|_| !inlined.is_empty()),
                inlined,
            });
        }
        let end = self.entry(b, last)?;
        let code = usize::try_from(end.checked_sub(text)?)
            .ok()
            .and_then(|len| {
                let at = self.file_offset(text)?;
                data.get(at..at.checked_add(len)?)
            })
            .unwrap_or(&[])
            .to_vec();
        Some(Table {
            version: self.version,
            ptr_size: self.ptr_size as u8,
            quantum: self.pctab.quantum as u8,
            text,
            funcs,
            code,
        })
    }

    /// Whether `other` (in `other_data`) answers like this table for every address from
    /// `start` to `end`: the check that an excerpt kept what it was cut from. Returns the first
    /// address where they differ.
    pub fn first_difference(
        &self,
        data: &[u8],
        other: &GoTable,
        other_data: &[u8],
        start: u64,
        end: u64,
    ) -> Option<(u64, Symbolized, Symbolized)> {
        (start..end).find_map(|pc| {
            let a = self.symbolize(data, pc);
            let b = other.symbolize(other_data, pc);
            (a != b).then_some((pc, a, b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, Reason};

    fn frames(t: &GoTable, data: &[u8], va: u64) -> Vec<Frame> {
        match t.symbolize(data, va) {
            Symbolized::Sym(f) => f,
            other => panic!("{va:#x}: {other:?}"),
        }
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().map(|f| f.function.as_str()).collect()
    }

    /// Every version and placement decodes to the description it was written from.
    #[test]
    fn synthetic_tables_decode_as_described() {
        use GoTableVersion::*;
        let mut cases = Vec::new();
        for v in [V12, V116, V118, V120] {
            cases.push((v, GoImage::new(v), 1));
        }
        let mut go126 = GoImage::new(V120);
        go126.text_in_header = false;
        cases.push((V120, go126.clone(), 1));
        go126.gofunc_word = 43;
        cases.push((V120, go126, 1));
        for placement in [
            Placement::NoSectionHeaders,
            Placement::ExternalLink,
            Placement::Pie,
        ] {
            let mut o = GoImage::new(V120);
            o.placement = placement;
            o.symbols = true;
            o.go_version = Some("go1.22.10".into());
            cases.push((V120, o, 1));
        }
        let mut s390 = GoImage::new(V120);
        s390.machine = Machine::S390x;
        cases.push((V120, s390, 2));
        let mut arm = GoImage::new(V118);
        arm.machine = Machine::Aarch64;
        cases.push((V118, arm, 4));

        for (v, opts, q) in cases {
            let table = synthetic(v, q);
            let data = go_image(&table, &opts);
            let what = format!("{v:?} {opts:?}");
            let t = GoTable::from_elf(&data)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .unwrap_or_else(|| panic!("{what}: not found"));
            assert_eq!(t.version(), v, "{what}");
            let entries = table.entries();
            let found: Vec<_> = t.functions(&data).map(|f| (f.name, f.entry)).collect();
            let expected: Vec<_> = table
                .funcs
                .iter()
                .zip(&entries)
                .map(|(f, &e)| (f.name.as_str(), e))
                .collect();
            assert_eq!(found, expected, "{what}");
            let q = u64::from(q);
            let main = entries[1];
            let deepest = frames(&t, &data, main + 30 * q);
            assert_eq!(
                names(&deepest),
                ["fmt.Println", "main.sum[go.shape.int]", "main.main"],
                "{what}"
            );
            assert_eq!(
                deepest[0].file.as_deref(),
                Some("/usr/lib/go/src/fmt/print.go")
            );
            assert_eq!(deepest[0].line, Some(273));
            assert_eq!(
                deepest[1].line,
                Some(31),
                "{what}: the inner call site's line"
            );
            assert_eq!(
                deepest[2].line,
                Some(13),
                "{what}: the outer call site's line"
            );
            let top = frames(&t, &data, main);
            assert_eq!(top[0].line, Some(12));
            assert_eq!(top[0].start_line, (v == V120).then_some(12), "{what}");
            assert_eq!(
                frames(&t, &data, entries[2])[0].file.as_deref(),
                Some("/usr/lib/go/src/runtime/asm_amd64.s")
            );
            let sp: Vec<_> = t.sp_deltas(&data).collect();
            assert!(sp[0].top_frame && sp[2].sp_write, "{what}");
            if opts.go_version.is_some() && opts.placement != Placement::NoSectionHeaders {
                assert_eq!(
                    crate::gopclntab::build_info_version(&data).as_deref(),
                    Some("go1.22.10")
                );
            }
        }
    }

    #[test]
    fn old_build_info_points_at_its_string() {
        let mut o = GoImage::new(GoTableVersion::V116);
        o.go_version = Some("go1.16.15".into());
        let data = go_image(&synthetic(GoTableVersion::V116, 1), &o);
        assert_eq!(
            crate::gopclntab::build_info_version(&data).as_deref(),
            Some("go1.16.15")
        );
    }

    /// An excerpt of a synthetic table, written again, answers like the whole table over
    /// the functions it kept.
    #[test]
    fn excerpts_answer_like_their_source() {
        for v in [
            GoTableVersion::V12,
            GoTableVersion::V116,
            GoTableVersion::V118,
            GoTableVersion::V120,
        ] {
            let whole = go_image(&synthetic(v, 1), &GoImage::new(v));
            let t = GoTable::from_elf(&whole).unwrap().unwrap();
            let cut = t.excerpt(&whole, 1, 3).unwrap();
            assert_eq!(cut.funcs.len(), 3);
            let cut_data = go_image(&cut, &GoImage::new(v));
            let c = GoTable::from_elf(&cut_data).unwrap().unwrap();
            let entries = cut.entries();
            assert_eq!(
                t.first_difference(&whole, &c, &cut_data, entries[0], entries[3]),
                None,
                "{v:?}"
            );
            assert!(matches!(
                c.symbolize(&cut_data, entries[0]),
                Symbolized::Sym(_)
            ));
            assert_eq!(
                c.symbolize(&cut_data, entries[3]),
                Symbolized::Unknown(Reason::NoFunction)
            );
        }
    }

    /// The table-only target's wrapper finds what [`go_image`] would.
    #[test]
    fn table_inputs_decode_like_images() {
        for v in [
            GoTableVersion::V12,
            GoTableVersion::V116,
            GoTableVersion::V118,
            GoTableVersion::V120,
        ] {
            let table = synthetic(v, 1);
            let image = go_image(&table, &GoImage::new(v));
            let wrapped = table_image(&table_input(&table)).unwrap();
            let a = GoTable::from_elf(&image).unwrap().unwrap();
            let b = GoTable::from_elf(&wrapped).unwrap().unwrap();
            let entries = table.entries();
            let (start, end) = (entries[0], entries[entries.len() - 1]);
            assert_eq!(
                a.first_difference(&image, &b, &wrapped, start, end),
                None,
                "{v:?}"
            );
        }
        assert!(table_image(&[0; 11]).is_none());
        assert!(table_image(&[0; 40]).is_some(), "any bytes are wrapped");
    }

    #[test]
    fn runs_encode_like_go() {
        let r = |value, len| Run { value, len };
        // -1 → 10 (+11: 22), 4 bytes; 10 → 12 (+2: 4), 6 bytes; a repeat merges; then the end.
        assert_eq!(
            encode_runs(&[r(10, 4), r(12, 3), r(12, 3)], 1, |x| x),
            [22, 4, 4, 6, 0]
        );
        // A negative delta, and quanta.
        assert_eq!(encode_runs(&[r(5, 8), r(2, 4)], 4, |x| x), [12, 2, 5, 1, 0]);
    }
}

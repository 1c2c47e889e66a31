//! Hand-built tables in hand-built ELF files: decoding, inline chains, and damage of every kind
//! (never a panic; a miss or an error).

use super::*;
use crate::Frame;

/// Where the image is loaded and where the table sits in it.
const BASE: u64 = 0x40_0000;
const TABLE_OFF: usize = 0x100;
const TEXT: u64 = 0x40_1000;

/// Offsets inside the table of what the tests poke at.
struct Layout {
    /// Header word `k` is at `8 + 8k`.
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    func: usize,
    tree: usize,
}

/// A change to a table's bytes.
type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

fn put_u32(v: &mut [u8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&x.to_le_bytes());
}

fn put_u64(v: &mut [u8], at: usize, x: u64) {
    v[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

/// The first inlined function: a generic instantiation, whose shape name has spaces, as real
/// Go 1.18+ names do.
const INL: &str = "main.inl[go.shape.struct { x int }]";

/// A Go 1.20 table with one function `main.f` at `TEXT..TEXT+32`:
/// - lines 10 over [0, 16), 11 over [16, 32); file `/src/a.go` throughout;
/// - inline index -1 over [0, 8), 0 over [8, 16), 1 over [16, 24), -1 over [24, 32);
/// - inline tree: 0 = [`INL`] called at pc 20 (index 1), 1 = `main.inl2` called at pc 2.
fn build_table() -> (Vec<u8>, Layout) {
    let mut t = vec![0u8; 72];
    t[..8].copy_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]);
    let funcnametab = t.len();
    t.extend_from_slice(format!("main.f\0{INL}\0main.inl2\0").as_bytes());
    let inl2 = 7 + INL.len() as i32 + 1;
    let cutab = t.len();
    t.extend_from_slice(&0u32.to_le_bytes());
    let filetab = t.len();
    t.extend_from_slice(b"/src/a.go\0");
    let pctab = t.len();
    t.push(0); // offset 0 means "no table"
    t.extend_from_slice(&[22, 16, 2, 16, 0]); // pcln at 1
    t.extend_from_slice(&[2, 32, 0]); // pcfile at 6
    t.extend_from_slice(&[0, 8, 2, 8, 2, 8, 3, 8, 0]); // inline index at 9
    while !t.len().is_multiple_of(8) {
        t.push(0);
    }
    let functab = t.len();
    for w in [0u32, 20, 32] {
        t.extend_from_slice(&w.to_le_bytes()); // entryoff, funcoff (from functab), end
    }
    t.extend_from_slice(&[0; 8]);
    let func = t.len();
    assert_eq!(func - functab, 20);
    for w in [0u32, 0, 0, 0, 0, 6, 1, 3, 0, 10] {
        // entryOff nameOff args deferreturn pcsp pcfile pcln npcdata cuOffset startLine
        t.extend_from_slice(&w.to_le_bytes());
    }
    t.extend_from_slice(&[0, 0, 0, 4]); // funcID flag _ nfuncdata
    for w in [0u32, 0, 9] {
        t.extend_from_slice(&w.to_le_bytes()); // pcdata
    }
    for w in [u32::MAX, u32::MAX, u32::MAX, 0] {
        t.extend_from_slice(&w.to_le_bytes()); // funcdata; the tree sits at gofunc + 0
    }
    let tree = t.len();
    for (name, parent_pc) in [(7i32, 20i32), (inl2, 2)] {
        t.extend_from_slice(&[0; 4]);
        t.extend_from_slice(&name.to_le_bytes());
        t.extend_from_slice(&parent_pc.to_le_bytes());
        t.extend_from_slice(&0i32.to_le_bytes());
    }
    let words = [
        1,
        1,
        TEXT,
        funcnametab as u64,
        cutab as u64,
        filetab as u64,
        pctab as u64,
        functab as u64,
    ];
    for (k, w) in words.into_iter().enumerate() {
        put_u64(&mut t, 8 + 8 * k, w);
    }
    let layout = Layout {
        funcnametab,
        cutab,
        filetab,
        pctab,
        functab,
        func,
        tree,
    };
    (t, layout)
}

/// An x86-64 ELF executable: one read-only PT_LOAD at `BASE` over the whole file, the table at
/// `TABLE_OFF`, a `.noptrdata` holding a `moduledata` for it, and section headers unless
/// `sections` is false.
fn elf(table: &[u8], layout: &Layout, sections: bool) -> Vec<u8> {
    let mut f = vec![0u8; TABLE_OFF];
    f.extend_from_slice(table);
    while !f.len().is_multiple_of(8) {
        f.push(0);
    }
    let table_va = BASE + TABLE_OFF as u64;
    let md_off = f.len();
    let mut md = [0u64; 48];
    md[0] = table_va;
    md[1] = table_va + layout.funcnametab as u64;
    md[4] = table_va + layout.cutab as u64;
    md[22] = TEXT;
    md[40] = table_va + layout.tree as u64; // gofunc
    for w in md {
        f.extend_from_slice(&w.to_le_bytes());
    }
    let shstrtab_off = f.len();
    let names = b"\0.gopclntab\0.noptrdata\0.shstrtab\0";
    f.extend_from_slice(names);
    while !f.len().is_multiple_of(8) {
        f.push(0);
    }
    let shoff = f.len();
    let sh = |name: u32, kind: u32, addr: u64, off: usize, size: usize| {
        let mut s = [0u8; 64];
        put_u32(&mut s, 0, name);
        put_u32(&mut s, 4, kind);
        put_u64(&mut s, 16, addr);
        put_u64(&mut s, 24, off as u64);
        put_u64(&mut s, 32, size as u64);
        put_u64(&mut s, 48, 1);
        s
    };
    if sections {
        f.extend_from_slice(&[0; 64]);
        f.extend_from_slice(&sh(1, 1, table_va, TABLE_OFF, table.len()));
        f.extend_from_slice(&sh(12, 1, BASE + md_off as u64, md_off, 48 * 8));
        f.extend_from_slice(&sh(23, 3, 0, shstrtab_off, names.len()));
    }
    let len = f.len() as u64;
    // ELF header.
    f[..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    put_u32(&mut f, 20, 1);
    put_u64(&mut f, 24, TEXT);
    put_u64(&mut f, 32, 64); // e_phoff
    put_u64(&mut f, 40, if sections { shoff as u64 } else { 0 });
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    let shnum: u16 = if sections { 4 } else { 0 };
    f[60..62].copy_from_slice(&shnum.to_le_bytes());
    f[62..64].copy_from_slice(&(if sections { 3u16 } else { 0 }).to_le_bytes());
    // PT_LOAD, readable only.
    put_u32(&mut f, 64, 1);
    put_u32(&mut f, 68, 4);
    put_u64(&mut f, 72, 0);
    put_u64(&mut f, 80, BASE);
    put_u64(&mut f, 88, BASE);
    put_u64(&mut f, 96, len);
    put_u64(&mut f, 104, len);
    put_u64(&mut f, 112, 0x1000);
    f
}

/// A frame of the hand-built table, whose one physical function starts at line 10 (its
/// inlined calls record no start line).
fn frame(function: &str, line: u32, inlined: bool) -> Frame {
    Frame {
        function: function.to_string(),
        file: Some("/src/a.go".to_string()),
        line: Some(line),
        inlined,
        start_line: (!inlined).then_some(10),
    }
}

fn frames_of(t: &GoTable, data: &[u8], va: u64) -> Vec<Frame> {
    match t.symbolize(data, va) {
        Symbolized::Sym(f) => f,
        other => panic!("{va:#x}: {other:?}"),
    }
}

#[test]
fn decodes_a_hand_built_table_with_inline_frames() {
    let (t, layout) = build_table();
    for sections in [true, false] {
        let data = elf(&t, &layout, sections);
        let table = GoTable::from_elf(&data).unwrap().expect("a Go table");
        assert_eq!(table.version(), GoTableVersion::V120);
        assert_eq!(table.text_start(), TEXT);
        assert_eq!(table.len(), 1);
        let funcs: Vec<_> = table.functions(&data).collect();
        assert_eq!(
            funcs,
            [GoFunc {
                entry: TEXT,
                end: TEXT + 32,
                name: "main.f"
            }]
        );
        assert_eq!(frames_of(&table, &data, TEXT), [frame("main.f", 10, false)]);
        assert_eq!(
            frames_of(&table, &data, TEXT + 9),
            [
                frame(INL, 10, true),
                frame("main.inl2", 11, true),
                frame("main.f", 10, false)
            ],
            "sections: {sections}"
        );
        assert_eq!(
            frames_of(&table, &data, TEXT + 17),
            [frame("main.inl2", 11, true), frame("main.f", 10, false)]
        );
        assert_eq!(
            frames_of(&table, &data, TEXT + 31),
            [frame("main.f", 11, false)]
        );
        for va in [0, TEXT - 1, TEXT + 32, u64::MAX] {
            assert_eq!(
                table.symbolize(&data, va),
                Symbolized::Unknown(Reason::NoFunction)
            );
        }
    }
}

#[test]
fn not_go() {
    assert!(matches!(GoTable::from_elf(b"not an elf"), Ok(None)));
    assert!(matches!(GoTable::from_elf(&[]), Ok(None)));
    // An ELF file whose only loadable bytes hold no table.
    let (mut t, layout) = build_table();
    t[..4].copy_from_slice(&[0; 4]);
    assert!(matches!(
        GoTable::from_elf(&elf(&t, &layout, false)),
        Ok(None)
    ));
}

#[test]
fn bad_headers_are_errors() {
    let (t, layout) = build_table();
    let cases: [(&str, Damage); 7] = [
        ("unknown magic", Box::new(|t| t[0] = 0xf7)),
        ("padding", Box::new(|t| t[4] = 1)),
        ("quantum", Box::new(|t| t[6] = 3)),
        ("pointer size", Box::new(|t| t[7] = 2)),
        ("huge nfunc", Box::new(|t| put_u64(t, 8, u64::MAX))),
        ("nfunc past the table", Box::new(|t| put_u64(t, 8, 1 << 20))),
        (
            "offset past the table",
            Box::new(|t| put_u64(t, 8 + 8 * 7, 1 << 40)),
        ),
    ];
    for (what, damage) in cases {
        let mut t = t.clone();
        damage(&mut t);
        let r = GoTable::from_elf(&elf(&t, &layout, true));
        assert!(matches!(r, Err(Error::BadGoTable { .. })), "{what}: {r:?}");
    }
    // Offsets out of order.
    let mut t2 = t.clone();
    put_u64(&mut t2, 8 + 8 * 4, layout.filetab as u64 + 1);
    assert!(GoTable::from_elf(&elf(&t2, &layout, true)).is_err());
}

/// A file whose Go table is damaged opens all the same, named from its ELF symbols, and the
/// symbolizer counts it once however often it is seen.
#[test]
fn damaged_go_tables_are_counted_once_per_file() {
    let (mut t, layout) = build_table();
    t[7] = 2; // pointer size
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged");
    std::fs::write(&path, elf(&t, &layout, true)).unwrap();
    let mut s = crate::Symbolizer::new();
    let r = s
        .elf(std::fs::File::open(&path).unwrap(), "damaged")
        .unwrap();
    assert!(r.go_table_damaged() && !r.is_go());
    s.elf(std::fs::File::open(&path).unwrap(), "again").unwrap();
    assert_eq!(s.memory().go_tables_damaged, 1);
    drop(r);
    s.evict_unused();
    assert_eq!(s.memory().go_tables_damaged, 1, "a total since the start");

    let mut fine = crate::Symbolizer::new();
    let (t, layout) = build_table();
    let ok = dir.path().join("ok");
    std::fs::write(&ok, elf(&t, &layout, true)).unwrap();
    let r = fine.elf(std::fs::File::open(&ok).unwrap(), "ok").unwrap();
    assert!(r.is_go() && !r.go_table_damaged());
    assert_eq!(fine.memory().go_tables_damaged, 0);
}

#[test]
fn truncated_files_never_panic() {
    let (t, layout) = build_table();
    let data = elf(&t, &layout, true);
    for len in 0..data.len() {
        let cut = &data[..len];
        if let Ok(Some(table)) = GoTable::from_elf(cut) {
            for pc in TEXT..TEXT + 40 {
                let _ = table.symbolize(cut, pc);
            }
            let _ = table.functions(cut).count();
        }
    }
    // A table found in the full file, queried on a shorter one (a file that shrank).
    let table = GoTable::from_elf(&data).unwrap().unwrap();
    for len in [0, 100, TABLE_OFF + layout.func] {
        for pc in TEXT..TEXT + 40 {
            let s = table.symbolize(&data[..len], pc);
            assert!(matches!(s, Symbolized::Unknown(_)), "{len} {pc:#x}: {s:?}");
        }
    }
    // Cut inside the inline tree: inlined pcs are damaged, the others still decode.
    let cut = &data[..TABLE_OFF + layout.tree + 4];
    assert_eq!(
        table.symbolize(cut, TEXT + 9),
        Symbolized::Unknown(Reason::Malformed)
    );
    assert_eq!(frames_of(&table, cut, TEXT), [frame("main.f", 10, false)]);
}

#[test]
fn damaged_records_are_malformed_misses() {
    let (t, layout) = build_table();
    let cases: [(&str, Damage); 3] = [
        (
            "funcoff past the end",
            Box::new(|t| put_u32(t, layout.functab + 4, 1 << 30)),
        ),
        (
            "name past the table",
            Box::new(|t| put_u32(t, layout.func + 4, 1 << 30)),
        ),
        (
            "negative name offset",
            Box::new(|t| put_u32(t, layout.func + 4, u32::MAX)),
        ),
    ];
    for (what, damage) in cases {
        let mut t = t.clone();
        damage(&mut t);
        let data = elf(&t, &layout, true);
        let table = GoTable::from_elf(&data).unwrap().unwrap();
        assert_eq!(
            table.symbolize(&data, TEXT + 9),
            Symbolized::Unknown(Reason::Malformed),
            "{what}"
        );
    }
}

#[test]
fn an_inline_tree_that_does_not_decode_is_not_trusted() {
    // The only tree names a string past the table, or has non-zero padding after its funcID
    // (what a pointer, or another layout, looks like): no `gofunc` candidate decodes, so
    // inlined frames are left out and the physical function is still named.
    for case in 0..2 {
        let (mut t, layout) = build_table();
        if case == 0 {
            put_u32(&mut t, layout.tree + 4, 1 << 30);
        } else {
            t[layout.tree + 2] = 1;
        }
        let data = elf(&t, &layout, true);
        let table = GoTable::from_elf(&data).unwrap().unwrap();
        match table.symbolize(&data, TEXT + 9) {
            Symbolized::Sym(frames) => {
                assert_eq!(frames.len(), 1, "case {case}: {frames:?}");
                assert_eq!(frames[0].function, "main.f");
                assert!(!frames[0].inlined);
            }
            other => panic!("case {case}: {other:?}"),
        }
    }
}

#[test]
fn damaged_positions_leave_the_frame_without_file_or_line() {
    let (mut t, layout) = build_table();
    // The CU's file index points past the file table; the line table's offset past pctab.
    put_u32(&mut t, layout.cutab, 1 << 20);
    put_u32(&mut t, layout.func + 24, 1 << 20);
    let data = elf(&t, &layout, true);
    let table = GoTable::from_elf(&data).unwrap().unwrap();
    assert_eq!(
        frames_of(&table, &data, TEXT),
        [Frame {
            function: "main.f".to_string(),
            file: None,
            line: None,
            inlined: false,
            start_line: Some(10),
        }]
    );
}

#[test]
fn cyclic_inline_parents_are_malformed() {
    let (mut t, layout) = build_table();
    // Entry 1's call site is pc 8, whose index is 0, whose call site is pc 20 (index 1)...
    put_u32(&mut t, layout.tree + 16 + 8, 8);
    let data = elf(&t, &layout, true);
    let table = GoTable::from_elf(&data).unwrap().unwrap();
    for pc in [9, 17] {
        assert_eq!(
            table.symbolize(&data, TEXT + pc),
            Symbolized::Unknown(Reason::Malformed)
        );
    }
    // A call site pointing at itself, and one outside the function.
    for parent in [17u32, 1000] {
        let (mut t, layout) = build_table();
        put_u32(&mut t, layout.tree + 16 + 8, parent);
        let data = elf(&t, &layout, true);
        let table = GoTable::from_elf(&data).unwrap().unwrap();
        assert_eq!(
            table.symbolize(&data, TEXT + 17),
            Symbolized::Unknown(Reason::Malformed),
            "parent pc {parent}"
        );
    }
}

#[test]
fn pctab_offsets_count_from_pctab() {
    let (t, layout) = build_table();
    let data = elf(&t, &layout, true);
    let table = GoTable::from_elf(&data).unwrap().unwrap();
    assert_eq!(table.pctab.range.start, TABLE_OFF + layout.pctab);
    assert_eq!(
        table.pctab.value(&data, 1, TEXT, TEXT + 32, TEXT + 16),
        Some(11)
    );
}

#[test]
fn every_byte_flip_is_survived() {
    let (t, layout) = build_table();
    let data = elf(&t, &layout, true);
    for i in TABLE_OFF..data.len() {
        for x in [0x00, 0x01, 0x80, 0xff] {
            let mut d = data.clone();
            d[i] ^= x;
            if let Ok(Some(table)) = GoTable::from_elf(&d) {
                for pc in TEXT.saturating_sub(2)..TEXT + 34 {
                    let _ = table.symbolize(&d, pc);
                }
                let _ = table.functions(&d).count();
            }
        }
    }
}

use super::*;

/// A table whose sub-tables all sit in one byte vector; only `pctab` matters here.
fn table_with_pctab(pctab: &[u8]) -> (GoTable, Vec<u8>) {
    let data = pctab.to_vec();
    let t = GoTable {
        version: GoTableVersion::V120,
        quantum: 1,
        ptr_size: 8,
        nfunc: 0,
        text_start: 0,
        section: 0..data.len(),
        func_base: 0,
        loads: Vec::new(),
        funcnametab: 0..0,
        cutab: 0..0,
        filetab: 0..0,
        pctab: 0..data.len(),
        pclntab: 0..0,
        gofunc: None,
    };
    (t, data)
}

#[test]
fn pcvalue_steps_through_zigzag_deltas() {
    // value -1 + 11 = 10 for pc [0x100, 0x104); + 2 = 12 for [0x104, 0x10a); end.
    let (t, data) = table_with_pctab(&[0xee, 22, 4, 4, 6, 0]);
    let b = Bytes(&data);
    assert_eq!(t.pcvalue(b, 1, 0x100, 0x100), Some(10));
    assert_eq!(t.pcvalue(b, 1, 0x100, 0x103), Some(10));
    assert_eq!(t.pcvalue(b, 1, 0x100, 0x104), Some(12));
    assert_eq!(t.pcvalue(b, 1, 0x100, 0x109), Some(12));
    assert_eq!(t.pcvalue(b, 1, 0x100, 0x10a), None, "past the table's end");
    assert_eq!(
        t.pcvalue(b, 0, 0x100, 0x100),
        None,
        "offset 0 means no table"
    );
}

#[test]
fn pcvalue_negative_delta() {
    // -1 + 6 = 5 for [0, 2), then 5 - 3 = 2 for [2, 3): zigzag(-3) = 5.
    let (t, data) = table_with_pctab(&[0, 12, 2, 5, 1, 0]);
    let b = Bytes(&data);
    assert_eq!(t.pcvalue(b, 1, 0, 1), Some(5));
    assert_eq!(t.pcvalue(b, 1, 0, 2), Some(2));
}

#[test]
fn truncated_or_runaway_tables_end_cleanly() {
    let (t, data) = table_with_pctab(&[0, 22]);
    assert_eq!(t.pcvalue(Bytes(&data), 1, 0, 5), None);
    let (t, data) = table_with_pctab(&[0, 0xff, 0xff, 0xff]);
    assert_eq!(t.pcvalue(Bytes(&data), 1, 0, 5), None);
    // A pc delta that overflows the address space.
    let (t, data) = table_with_pctab(&[
        0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ]);
    assert_eq!(t.pcvalue(Bytes(&data), 1, u64::MAX - 1, u64::MAX), None);
}

#[test]
fn lookups_on_an_empty_or_garbage_table_are_misses() {
    let (t, data) = table_with_pctab(&[0; 64]);
    assert_eq!(
        t.symbolize(&data, 0x1000),
        Symbolized::Unknown(Reason::NoFunction)
    );
    assert_eq!(t.functions(&data).count(), 0);
    assert_eq!(
        GoTable::from_elf(b"not an elf")
            .unwrap_or(None)
            .map(|t| t.len()),
        None
    );
}

use super::*;

fn build(blocks: &[&[(u64, u64, Cfa)]], sources: &[usize]) -> Vec<UnwindRow> {
    let mut b = Builder::new(1000);
    let mut source = 0;
    for (i, runs) in blocks.iter().enumerate() {
        while source < sources[i] {
            b.end_source();
            source += 1;
        }
        let start = runs.first().unwrap().0;
        let end = runs.last().unwrap().1;
        b.begin(start, end);
        for &(s, e, cfa) in *runs {
            b.push(s, e, cfa, Rbp::Unchanged).unwrap();
        }
        b.end();
    }
    b.finish().unwrap()
}

fn row(pc: u64, cfa: Cfa) -> UnwindRow {
    UnwindRow {
        pc,
        cfa,
        rbp: Rbp::Unchanged,
    }
}

#[test]
fn gaps_are_unknown_and_equal_neighbours_merge() {
    let rows = build(
        &[
            &[(0x10, 0x11, Cfa::Rsp(8)), (0x11, 0x20, Cfa::Rsp(16))],
            &[(0x20, 0x28, Cfa::Rsp(16))],
            &[(0x30, 0x40, Cfa::Rsp(8))],
        ],
        &[0, 0, 0],
    );
    assert_eq!(
        rows,
        [
            row(0x10, Cfa::Rsp(8)),
            row(0x11, Cfa::Rsp(16)),
            row(0x28, Cfa::Unknown),
            row(0x30, Cfa::Rsp(8)),
            row(0x40, Cfa::Unknown),
        ]
    );
}

#[test]
fn earlier_sources_win_whole_blocks() {
    // Source 0 covers 0x10..0x20; source 1's block overlapping it is dropped whole, even the
    // part past 0x20; its other block stays. Its block starting inside its own earlier one goes.
    let rows = build(
        &[
            &[(0x10, 0x20, Cfa::Rsp(8))],
            &[(0x18, 0x30, Cfa::Rbp(16))],
            &[(0x40, 0x50, Cfa::Rbp(16))],
            &[(0x48, 0x58, Cfa::Rsp(8))],
        ],
        &[0, 1, 1, 1],
    );
    assert_eq!(
        rows,
        [
            row(0x10, Cfa::Rsp(8)),
            row(0x20, Cfa::Unknown),
            row(0x40, Cfa::Rbp(16)),
            row(0x50, Cfa::Unknown),
        ]
    );
}

#[test]
fn runs_are_clipped_to_their_block_and_order() {
    let mut b = Builder::new(10);
    b.begin(0x10, 0x20);
    b.push(0x0, 0x14, Cfa::Rsp(8), Rbp::Unchanged).unwrap();
    b.push(0x12, 0x30, Cfa::Rsp(16), Rbp::At(-16)).unwrap();
    b.push(0x5, 0x8, Cfa::Rsp(24), Rbp::Unchanged).unwrap();
    b.end();
    let rows = b.finish().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].pc, 0x14);
    assert_eq!(rows[2], row(0x20, Cfa::Unknown));
}

#[test]
fn row_limit_is_an_error() {
    let mut b = Builder::new(3);
    b.begin(0, 100);
    for i in 0..3u64 {
        b.push(i, i + 1, Cfa::Rsp(8 * (i as i32 + 1)), Rbp::Unchanged)
            .unwrap();
    }
    assert!(matches!(
        b.push(3, 4, Cfa::Rsp(64), Rbp::Unchanged),
        Err(UnwindError::TooManyRows { limit: 3 })
    ));
}

#[test]
fn lookup_finds_the_covering_row() {
    let table = UnwindTable {
        rows: vec![row(0x10, Cfa::Rsp(8)), row(0x20, Cfa::Unknown)],
        stats: UnwindStats::default(),
    };
    assert_eq!(table.lookup(0xf), None);
    assert_eq!(table.lookup(0x10).unwrap().cfa, Cfa::Rsp(8));
    assert_eq!(table.lookup(0x1f).unwrap().cfa, Cfa::Rsp(8));
    assert_eq!(table.lookup(0x1000).unwrap().cfa, Cfa::Unknown);
}

#[test]
fn not_elf_and_other_machines_are_errors() {
    let limits = UnwindLimits::default();
    assert!(matches!(
        UnwindTable::from_elf(b"not an elf", None, &limits),
        Err(UnwindError::BadElf(_))
    ));
}

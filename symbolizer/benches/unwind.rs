//! Criterion benchmark of building unwind tables for large binaries, against gimli evaluating
//! the same CFI rows without keeping them (and, for Go, the bare pcsp decode): the cost of our
//! layer on top of the parsers.
//!
//! Inputs, when present: a native binary with a large `.eh_frame` (`BELLOWS_BENCH_NATIVE`, else
//! `target/release/bellows`, else `target/debug/bellows`) and the Go compiler fixture
//! (`BELLOWS_FIXTURES/go-large/compile-*`). A missing input is reported and skipped.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use gimli::UnwindSection;
use object::{Object, ObjectSection};
use symbolizer::{
    gopclntab::GoTable,
    unwind::{UnwindLimits, UnwindTable},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn inputs() -> Vec<(&'static str, PathBuf)> {
    let native = std::env::var_os("BELLOWS_BENCH_NATIVE")
        .map(PathBuf::from)
        .or_else(|| {
            ["release", "debug"]
                .map(|p| root().join("target").join(p).join("bellows"))
                .into_iter()
                .find(|p| p.is_file())
        });
    let go = std::env::var_os("BELLOWS_FIXTURES")
        .map(|f| Path::new(&f).join("go-large"))
        .and_then(|d| std::fs::read_dir(d).ok())
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())));
    let mut out = Vec::new();
    for (name, path) in [("native", native), ("go", go)] {
        match path.filter(|p| p.is_file()) {
            Some(p) => out.push((name, p)),
            None => eprintln!("skipping {name}: no input"),
        }
    }
    out
}

/// gimli alone: every row of every `.eh_frame` FDE evaluated, nothing kept.
fn gimli_rows(data: &[u8]) -> usize {
    let obj = object::File::parse(data).unwrap();
    let Some(section) = obj.section_by_name(".eh_frame") else {
        return 0;
    };
    let bytes = section.data().unwrap();
    let mut eh = gimli::EhFrame::new(bytes, gimli::LittleEndian);
    eh.set_address_size(8);
    let bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    let mut ctx = gimli::UnwindContext::new();
    let mut entries = eh.entries(&bases);
    let mut rows = 0;
    while let Ok(Some(entry)) = entries.next() {
        let gimli::CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            continue;
        };
        let Ok(mut table) = fde.rows(&eh, &bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(_)) = table.next_row() {
            rows += 1;
        }
    }
    rows
}

/// The pcsp tables alone: every run of every function decoded, nothing kept.
fn pcsp_runs(data: &[u8]) -> usize {
    let table = GoTable::from_elf(data).unwrap().unwrap();
    table
        .sp_deltas(data)
        .filter_map(|f| f.runs)
        .map(|r| r.count())
        .sum()
}

fn bench(c: &mut Criterion) {
    for (name, path) in inputs() {
        let data = std::fs::read(&path).unwrap();
        let mut group = c.benchmark_group(format!("unwind-{name}"));
        group.sample_size(10);
        let rows = UnwindTable::from_elf(&data, None, &UnwindLimits::default())
            .unwrap()
            .rows()
            .len();
        assert!(rows > 10_000, "{}: {rows} rows", path.display());
        eprintln!(
            "{name}: {} ({} bytes): {rows} rows",
            path.display(),
            data.len()
        );
        group.bench_function("table", |b| {
            b.iter(|| {
                let t = UnwindTable::from_elf(&data, None, &UnwindLimits::default()).unwrap();
                assert_eq!(t.rows().len(), rows);
            })
        });
        if name == "go" {
            group.bench_function("peer: pcsp decode only", |b| {
                b.iter(|| assert!(pcsp_runs(&data) > 0))
            });
        } else {
            group.bench_function("peer: gimli rows only", |b| {
                b.iter(|| assert!(gimli_rows(&data) > 0))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

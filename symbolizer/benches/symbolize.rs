//! Criterion benchmarks of the symbolizer on large real binaries: cold open (parse and index)
//! and lookups per second, for a stripped Go binary (Go's own table) and a binary with DWARF.
//!
//! Inputs, when present (`cargo xtask setup` and `cargo build --release -p agent` make them):
//! - Go 1.26's `compile` from `target/toolchains/go-1.26.6` (stripped, about 24 MB);
//! - `target/release/bellows` (DWARF line tables, about 40 MB).
//!
//! A missing input is reported and its benchmarks skipped. Peers (`go tool addr2line`,
//! `llvm-symbolizer`) are compared by `cargo xtask bench symbolize`, which runs whole processes.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use object::{Object, ObjectSymbol};
use symbolizer::ElfResolver;

const LOOKUPS: usize = 2_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn inputs() -> Vec<(&'static str, PathBuf)> {
    let go = root().join("target/toolchains/go-1.26.6/go/pkg/tool/linux_amd64/compile");
    let dwarf = root().join("target/release/bellows");
    let mut out = Vec::new();
    for (name, path) in [("go-stripped", go), ("dwarf", dwarf)] {
        if path.is_file() {
            out.push((name, path));
        } else {
            eprintln!("skipping {name}: {} not found", path.display());
        }
    }
    out
}

/// Addresses inside functions, spread evenly: from the Go table when there is one (stripped
/// binaries have no symbol table), else from the ELF symbols.
fn addresses(path: &Path) -> Vec<u64> {
    let data = std::fs::read(path).unwrap();
    let mut funcs: Vec<(u64, u64)> = match symbolizer::gopclntab::GoTable::from_elf(&data) {
        Ok(Some(table)) => table
            .functions(&data)
            .map(|f| (f.entry, f.end - f.entry))
            .collect(),
        _ => {
            let obj = object::File::parse(&*data).unwrap();
            obj.symbols()
                .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
                .map(|s| (s.address(), s.size()))
                .collect()
        }
    };
    funcs.retain(|&(_, size)| size > 1);
    let step = (funcs.len() / LOOKUPS).max(1);
    funcs
        .iter()
        .step_by(step)
        .take(LOOKUPS)
        .map(|&(start, size)| start + size / 2)
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, path) in inputs() {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("open", |b| {
            b.iter(|| {
                let r = ElfResolver::open(&path).unwrap();
                // The first lookup builds the lazy indexes: part of a cold start.
                std::hint::black_box(r.symbolize(0));
            })
        });
        let addrs = addresses(&path);
        let resolver = ElfResolver::open(&path).unwrap();
        for a in &addrs {
            std::hint::black_box(resolver.symbolize(*a));
        }
        group.throughput(Throughput::Elements(addrs.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("lookups", addrs.len()),
            &addrs,
            |b, addrs| {
                b.iter(|| {
                    for &a in addrs {
                        std::hint::black_box(resolver.symbolize(a));
                    }
                })
            },
        );
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Criterion benchmarks of the symbolizer on large real binaries: cold open (parse and index),
//! lookups per second, and a cold batch (open, then every address at once, as `bellows
//! symbolize` does), for a stripped Go binary (Go's own table) and a binary with DWARF. On the
//! DWARF binary the `addr2line` crate answers the same cold batch, in the same process.
//!
//! Inputs, when present (`cargo xtask setup` and `cargo build --release -p agent` make them):
//! - Go 1.26's `compile` from `target/toolchains/go-1.26.6` (stripped, about 24 MB);
//! - `target/release/bellows` (DWARF line tables, about 40 MB).
//!
//! A missing input is reported and its benchmarks skipped. Peers (`go tool addr2line`,
//! `llvm-symbolizer`) are compared by `cargo xtask bench symbolize`, which runs whole processes.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use object::{Object, ObjectSection, ObjectSymbol};
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
        group.bench_with_input(
            BenchmarkId::new("cold batch", addrs.len()),
            &addrs,
            |b, addrs| {
                b.iter(|| {
                    let r = ElfResolver::open(&path).unwrap();
                    std::hint::black_box(r.symbolize_batch(addrs));
                })
            },
        );
        if name == "dwarf" {
            group.bench_with_input(
                BenchmarkId::new("peer: addr2line crate, cold batch", addrs.len()),
                &addrs,
                |b, addrs| b.iter(|| std::hint::black_box(addr2line_batch(&path, addrs))),
            );
        }
        group.finish();
    }
}

/// The `addr2line` crate's frames (inlined ones included) for every address, from a fresh
/// context over the file mapped.
fn addr2line_batch(path: &Path, addrs: &[u64]) -> usize {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a benchmark input nothing writes to while it runs.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let obj = object::File::parse(&*map).unwrap();
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let sections = gimli::DwarfSections::load(|id| -> Result<_, gimli::Error> {
        Ok(obj
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or_default())
    })
    .unwrap();
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, endian));
    let ctx = addr2line::Context::from_dwarf(dwarf).unwrap();
    let mut frames = 0;
    for &a in addrs {
        let mut iter = ctx.find_frames(a).skip_all_loads().unwrap();
        while let Ok(Some(frame)) = iter.next() {
            frames += 1;
            // Demangled and with its file name, as our answers are.
            let name = frame.function.and_then(|f| {
                f.raw_name()
                    .ok()
                    .map(|n| rustc_demangle::demangle(&n).to_string())
            });
            let file = frame.location.and_then(|l| l.file.map(str::to_string));
            std::hint::black_box((name, file));
        }
    }
    frames
}

criterion_group!(benches, bench);
criterion_main!(benches);

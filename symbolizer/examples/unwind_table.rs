//! Builds the unwind table of an ELF file and prints its size, what went into it, and how long
//! it took: `cargo run --release -p symbolizer --example unwind_table -- FILE [DEBUG_FILE]
//! [--rows]`. The file is mapped, as the agent does: measure peak memory with `/usr/bin/time -v`.

use std::time::Instant;

use symbolizer::unwind::{UnwindLimits, UnwindTable};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let print_rows = args.iter().any(|a| a == "--rows");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(path) = files.first() else {
        return Err("usage: unwind_table FILE [DEBUG_FILE] [--rows]".into());
    };
    let file = std::fs::File::open(path)?;
    // SAFETY: the file is mapped read-only and not modified while mapped; a concurrent truncation
    // would raise SIGBUS, which a measuring tool may accept.
    let data = unsafe { memmap2::Mmap::map(&file)? };
    let debug = files.get(1).map(std::fs::read).transpose()?;
    let start = Instant::now();
    let table = UnwindTable::from_elf(&data, debug.as_deref(), &UnwindLimits::default())?;
    let elapsed = start.elapsed();
    if print_rows {
        for row in table.rows() {
            println!("{:#x} {:?} {:?}", row.pc, row.cfa, row.rbp);
        }
    }
    eprintln!(
        "{path}: {} bytes, {} rows in {:.1} ms; {:?}",
        data.len(),
        table.rows().len(),
        elapsed.as_secs_f64() * 1e3,
        table.stats()
    );
    Ok(())
}

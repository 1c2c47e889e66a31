//! `cargo xtask fuzz`: the symbolizer's fuzz targets (cargo-fuzz, libFuzzer, nightly), seeded
//! with real binaries from the fixtures.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context, Result};

use crate::run;

/// (target, seed files, largest input): binaries are large, so their targets accept large inputs.
fn targets(root: &Path) -> Vec<(&'static str, Vec<PathBuf>, usize)> {
    let fixtures = root.join("target/fixtures");
    let go = |v: &str| fixtures.join("go").join(v).join("stripped/cpuburn");
    vec![
        (
            "gopclntab",
            vec![
                go("go1.19.8"),
                fixtures.join("go-real/esbuild-0.7.22"),
                fixtures.join("go-real/esbuild-0.13.15"),
            ],
            16 << 20,
        ),
        (
            "elf",
            vec![
                fixtures.join("native/dwarf"),
                fixtures.join("native/zdwarf"),
                fixtures.join("native/nodwarf"),
            ],
            1 << 20,
        ),
        (
            "unwind",
            vec![
                root.join("symbolizer/fuzz/seeds/unwind/eh_frame.elf"),
                root.join("symbolizer/fuzz/seeds/unwind/debug_frame.elf"),
                fixtures.join("native/nodwarf"),
                go("go1.19.8"),
            ],
            2 << 20,
        ),
        ("text", Vec::new(), 64 << 10),
    ]
}

/// Builds the native seed binaries (the DWARF fixture in three builds).
pub fn native_fixtures(root: &Path) -> Result<Vec<PathBuf>> {
    let src = root.join("symbolizer/testdata/native/inline.c");
    let dir = root.join("target/fixtures/native");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (name, flags) in [
        ("dwarf", &["-O2", "-g"][..]),
        ("zdwarf", &["-O2", "-g", "-gz=zlib"]),
        ("nodwarf", &["-O2"]),
    ] {
        let bin = dir.join(name);
        if !bin.is_file() {
            run(Command::new("gcc")
                .args(flags)
                .arg("-o")
                .arg(&bin)
                .arg(&src))?;
        }
        out.push(bin);
    }
    Ok(out)
}

pub fn fuzz(root: &Path, seconds: u64, only: &[String]) -> Result<()> {
    native_fixtures(root)?;
    let crate_dir = root.join("symbolizer");
    for (target, seeds, max_len) in targets(root) {
        if !only.is_empty() && !only.iter().any(|t| t == target) {
            continue;
        }
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        for seed in &seeds {
            ensure!(
                seed.is_file(),
                "missing seed {}: run `cargo xtask fixtures`",
                seed.display()
            );
            let name = seed.to_string_lossy().replace('/', "_");
            std::fs::copy(seed, corpus.join(name)).with_context(|| seed.display().to_string())?;
        }
        eprintln!("\n=== fuzz {target} for {seconds} s");
        run(Command::new("cargo")
            .current_dir(&crate_dir)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={max_len}"))
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1"))
        .with_context(|| format!("fuzz target {target} failed (crash input under symbolizer/fuzz/artifacts/{target})"))?;
    }
    Ok(())
}

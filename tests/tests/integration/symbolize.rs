//! `bellows symbolize` on the Go workloads: the CLI contract, `--pid` on a live process, and bad
//! input.

use std::process::Command;

use tests::{bellows, bpf_available, require_go_fixtures, Workload};

/// The address of `function` in a non-PIE build, from `go tool nm`.
fn nm_address(go_binary_dir_fixture: &std::path::Path, function: &str) -> Option<u64> {
    let go = std::env::var("BELLOWS_GO_TOOLCHAINS")
        .ok()
        .and_then(|l| l.split(':').next().map(str::to_string))
        .unwrap_or_else(|| "go".into());
    let out = Command::new(go)
        .args(["tool", "nm"])
        .arg(go_binary_dir_fixture)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let addr = it.next()?;
        let _kind = it.next()?;
        (it.next()? == function).then(|| u64::from_str_radix(addr, 16).ok())?
    })
}

#[test]
fn symbolize_elf_text_and_json() {
    let fixtures = require_go_fixtures("symbolize_elf_text_and_json", "cpuburn");
    for fx in fixtures.iter().filter(|f| f.variant == "default") {
        let stripped = fx
            .path
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("stripped/cpuburn");
        let hot_a = nm_address(&fx.path, "main.hotA").expect("main.hotA in go tool nm");
        let addr = format!("{hot_a:#x}");
        // The stripped build has the same addresses and still names everything.
        let out = bellows(&[
            "symbolize",
            "--elf",
            stripped.to_str().unwrap(),
            &addr,
            "0x10",
        ]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("main.hotA"), "{text}");
        assert!(lines.next().unwrap().contains("cpuburn/main.go:"), "{text}");
        assert!(text.contains("\n??\n??:0:0\n"), "unknown address: {text}");

        let out = bellows(&[
            "symbolize",
            "--elf",
            stripped.to_str().unwrap(),
            "--json",
            &addr,
        ]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("[{"), "{text}");
        assert!(text.contains(&format!("\"address\":\"{addr}\"")), "{text}");
        assert!(text.contains("\"function\":\"main.hotA\""), "{text}");
        assert!(text.contains("\"inlined\":false"), "{text}");
    }
}

#[test]
fn symbolize_pid_resolves_a_live_go_process() {
    if !bpf_available("symbolize_pid_resolves_a_live_go_process") {
        return;
    }
    let fixtures = require_go_fixtures("symbolize_pid_resolves_a_live_go_process", "cpuburn");
    let Some(fx) = fixtures.iter().find(|f| f.variant == "default") else {
        return;
    };
    let hot_a = nm_address(&fx.path, "main.hotA").expect("main.hotA");
    let w = Workload::start(&fx.path, &["-duration", "5s", "-mode", "cpu"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let pid = w.pid().to_string();
    let out = bellows(&["symbolize", "--pid", &pid, &format!("{hot_a:#x}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("main.hotA\n"));
}

/// The vDSO's functions of a live process, read from its own image: (absolute address inside
/// each sized text symbol, the names at that symbol's address).
fn vdso_functions(pid: u32) -> Vec<(u64, Vec<String>)> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let (start, end) = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| l.split_whitespace().next()?.split_once('-'))
        .map(|(s, e)| {
            let hex = |x| u64::from_str_radix(x, 16).unwrap();
            (hex(s), hex(e))
        })
        .expect("a [vdso] mapping");
    let mut image = vec![0u8; (end - start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(format!("/proc/{pid}/mem")).unwrap(),
        &mut image,
        start,
    )
    .unwrap();
    let obj = object::File::parse(&*image).unwrap();
    let load = obj.segments().next().expect("a loadable segment");
    obj.dynamic_symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 1)
        .map(|s| {
            let va = s.address() + s.size() / 2;
            let names = obj
                .dynamic_symbols()
                .filter(|o| o.address() == s.address())
                .map(|o| o.name().unwrap().to_string())
                .collect();
            (start + (va - load.address()) + load.file_range().0, names)
        })
        .collect()
}

/// Regression: `symbolize --pid` answered "no symbols" for the vDSO, which `record` names (it
/// had a (pid, address) → frames path of its own; both now take the symbolizer's process
/// source).
#[test]
fn symbolize_pid_names_vdso_addresses() {
    if !bpf_available("symbolize_pid_names_vdso_addresses") {
        return;
    }
    let fixtures = require_go_fixtures("symbolize_pid_names_vdso_addresses", "cpuburn");
    let Some(fx) = fixtures.iter().find(|f| f.variant == "default") else {
        return;
    };
    let w = Workload::start(&fx.path, &["-duration", "5s", "-mode", "cpu"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let functions = vdso_functions(w.pid());
    assert!(functions.len() >= 4, "{functions:?}");
    let addrs: Vec<String> = functions.iter().map(|(a, _)| format!("{a:#x}")).collect();
    let pid = w.pid().to_string();
    let mut args = vec!["symbolize", "--pid", &pid, "--json"];
    args.extend(addrs.iter().map(String::as_str));
    let out = bellows(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), functions.len());
    for (answer, (addr, names)) in answers.iter().zip(&functions) {
        let got = answer["frames"][0]["function"].as_str();
        assert!(
            got.is_some_and(|f| names.iter().any(|n| n == f)),
            "{addr:#x}: {answer} is not one of {names:?}"
        );
    }
}

#[test]
fn symbolize_bad_input_exits_with_one_line() {
    let out = bellows(&["symbolize", "--elf", "/bin/true", "0xnot-hex"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = bellows(&["symbolize", "--elf", "/nonexistent/binary", "0x1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/binary") && !err.contains("panicked"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\x7fELF not really").unwrap();
    let out = bellows(&["symbolize", "--elf", junk.to_str().unwrap(), "0x1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Function addresses (mid-function) of `main.` and `runtime.` functions, spread over the
/// binary, from `go tool nm -size`.
fn function_addresses(go: &std::path::Path, binary: &std::path::Path, most: usize) -> Vec<u64> {
    let out = Command::new(go)
        .args(["tool", "nm", "-size", "-sort", "address"])
        .arg(binary)
        .output()
        .expect("go tool nm");
    assert!(out.status.success(), "go tool nm failed");
    let all: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let size: u64 = it.next()?.parse().ok()?;
            let kind = it.next()?;
            let name = it.next()?;
            let go_code = name.starts_with("main.") || name.starts_with("runtime.");
            (matches!(kind, "T" | "t") && size > 1 && go_code).then_some(addr + size / 2)
        })
        .collect();
    let step = all.len().div_ceil(most).max(1);
    all.into_iter().step_by(step).collect()
}

/// A Go PIE linked by an external linker (cgo, `-linkmode=external`) before Go 1.26 has its
/// table merged into `.data.rel.ro`, and once GNU strip has removed the symbols, no section and
/// no symbol says where it is (Docker's static CLI is such a binary). Built here with cgo by the
/// oldest and the newest Go toolchain, as an executable and as a PIE, then stripped: every
/// function the newest toolchain's `go tool addr2line` names in the unstripped twin is named the
/// same from the stripped file, and at least one of the builds has that shape.
#[test]
fn symbolize_stripped_externally_linked_go() {
    let test = "symbolize_stripped_externally_linked_go";
    let picked = tests::oldest_and_newest_go(test);
    let Some(newest) = picked.last() else {
        return;
    };
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-extlink-cache");
    let dir = tempfile::tempdir().unwrap();
    let mut merged = Vec::new();
    for (i, go) in picked.iter().enumerate() {
        for mode in ["exe", "pie"] {
            let what = format!("{} -buildmode={mode} -linkmode=external", go.display());
            let full = dir.path().join(format!("cgo-{i}-{mode}"));
            let args = ["-buildmode", mode, "-ldflags=-linkmode=external"];
            tests::build_cgo(go, &args, &full, &cache.join(i.to_string()));
            let stripped = dir.path().join(format!("cgo-{i}-{mode}.stripped"));
            let status = Command::new("strip")
                .arg("-o")
                .arg(&stripped)
                .arg(&full)
                .status()
                .expect("GNU strip (binutils)");
            assert!(status.success(), "{what}: strip failed");

            // The shape this test is about: no table section, no symbols.
            let bytes = std::fs::read(&stripped).unwrap();
            let elf = object::File::parse(&*bytes).unwrap();
            use object::{Object, ObjectSection};
            assert!(elf.symbols().next().is_none(), "{what}: not stripped");
            if !elf
                .sections()
                .any(|s| s.name().is_ok_and(|n| n.contains("gopclntab")))
            {
                merged.push(what.clone());
            }

            let addrs = function_addresses(go, &full, 200);
            assert!(addrs.len() >= 50, "{what}: only {} functions", addrs.len());
            let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
            // The newest toolchain's addr2line: Go 1.19's cannot read its own externally
            // linked PIEs (it answers "?" for every address of the unstripped twin).
            let mut oracle = Command::new(newest)
                .args(["tool", "addr2line"])
                .arg(&full)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("go tool addr2line");
            use std::io::Write;
            oracle
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let oracle = oracle.wait_with_output().unwrap();
            let expected: Vec<String> = String::from_utf8_lossy(&oracle.stdout)
                .lines()
                .step_by(2)
                .map(str::to_string)
                .collect();
            assert_eq!(expected.len(), addrs.len(), "{what}: addr2line output");

            let mut args = vec![
                "symbolize".to_string(),
                "--elf".to_string(),
                stripped.display().to_string(),
                "--json".to_string(),
            ];
            args.extend(addrs.iter().map(|a| format!("{a:#x}")));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = bellows(&args);
            assert!(out.status.success(), "{what}: bellows symbolize failed");
            let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let answers = answers.as_array().expect("a JSON array");
            assert_eq!(answers.len(), addrs.len());
            let mut same = 0;
            for ((addr, want), got) in addrs.iter().zip(&expected).zip(answers) {
                // The physical function: the last frame (inlined ones come first).
                let function = got["frames"]
                    .as_array()
                    .and_then(|f| f.last())
                    .and_then(|f| f["function"].as_str())
                    .unwrap_or("??");
                if function == want {
                    same += 1;
                } else {
                    eprintln!("{what}: {addr:#x}: addr2line {want}, bellows {function}");
                }
            }
            assert_eq!(
                same,
                addrs.len(),
                "{what}: {same} of {} functions named as go tool addr2line names them",
                addrs.len()
            );
        }
    }
    eprintln!("{test}: tables without a section of their own: {merged:?}");
    assert!(
        !merged.is_empty(),
        "no build had its table merged into another section: the case is not tested"
    );
}

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

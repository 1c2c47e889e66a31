//! A hand-built recording shared by the unit tests of `profile` and `output`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use symbolizer::Frame;

use super::{Location, Mapping, Recording, Sample};

pub(crate) const HZ: u64 = 100;
pub(crate) const PERIOD: i64 = 10_000_000;
pub(crate) const START_NANOS: i64 = 1_700_000_000_123_456_789;

fn frame(function: &str, file: Option<&str>, line: Option<u32>, inlined: bool) -> Frame {
    Frame {
        function: function.into(),
        file: file.map(Into::into),
        line,
        inlined,
        start_line: None,
    }
}

fn loc(
    address: u64,
    mapping: Option<&Arc<Mapping>>,
    frames: Vec<Frame>,
    kernel: bool,
) -> Arc<Location> {
    Arc::new(Location {
        address,
        mapping: mapping.cloned(),
        frames,
        kernel,
    })
}

fn sample(stack: &[&Arc<Location>], count: u64, pid: u32, comm: &str) -> Sample {
    Sample {
        stack: stack.iter().map(|l| Arc::clone(l)).collect(),
        count,
        pid,
        tid: pid,
        comm: comm.into(),
    }
}

/// Two processes; 15 samples in all:
///
/// | count | pid | comm | stack, root first |
/// |---|---|---|---|
/// | 2 + 3 | 100 | myapp | main.main; main.run; main.inlinedHelper (inlined into run) |
/// | 3 | 100 | myapp | main.main; main.run; main.hot; entry_SYSCALL_64… [k]; do_syscall_64 [k] |
/// | 2 | 101 | myapp | main.main; main.run; main.inlinedHelper; libmystery.so+0x1234 (unsymbolized) |
/// | 1 | 200 | other;proc | [unknown] (no mapping); semi;colon |
/// | 4 | 100 | myapp | main.main; main.recurse ×3 (two addresses) |
/// | 0 | 100 | myapp | main.main (dropped) |
///
/// The second `2 + 3` sample uses a distinct but equal `Arc<Location>` for main.main.
pub(crate) fn recording() -> Recording {
    let exe = Arc::new(Mapping {
        start: 0x40_0000,
        limit: 0x50_0000,
        offset: 0,
        file: "/usr/bin/myapp".into(),
        build_id: Some("abcdef0123456789".into()),
    });
    let lib = Arc::new(Mapping {
        start: 0x7f00_0000_0000,
        limit: 0x7f00_0001_0000,
        offset: 0x1000,
        file: "/usr/lib/libmystery.so".into(),
        build_id: None,
    });
    let go = |name: &str, line: u32| frame(name, Some("/src/myapp/main.go"), Some(line), false);

    let main = loc(0x40_1000, Some(&exe), vec![go("main.main", 10)], false);
    let main_copy = Arc::new(Location::clone(&main));
    let inl = loc(
        0x40_2000,
        Some(&exe),
        vec![
            frame(
                "main.inlinedHelper",
                Some("/src/myapp/util.go"),
                Some(5),
                true,
            ),
            go("main.run", 20),
        ],
        false,
    );
    let run = loc(0x40_2100, Some(&exe), vec![go("main.run", 22)], false);
    let hot = loc(0x40_3000, Some(&exe), vec![go("main.hot", 30)], false);
    let k_leaf = loc(
        0xffff_ffff_8100_1000,
        None,
        vec![frame("do_syscall_64", None, None, false)],
        true,
    );
    let k_entry = loc(
        0xffff_ffff_8100_2000,
        None,
        vec![frame("entry_SYSCALL_64_after_hwframe", None, None, false)],
        true,
    );
    let unsym = loc(0x7f00_0000_0234, Some(&lib), vec![], false);
    let unknown = loc(0x1000, None, vec![], false);
    let semi = loc(
        0x2000,
        None,
        vec![frame("semi;colon", None, None, false)],
        false,
    );
    let rec_a = loc(0x40_4000, Some(&exe), vec![go("main.recurse", 40)], false);
    let rec_b = loc(0x40_4010, Some(&exe), vec![go("main.recurse", 42)], false);

    Recording {
        frequency_hz: HZ,
        start: UNIX_EPOCH + Duration::from_nanos(START_NANOS as u64),
        duration: Duration::from_secs(10),
        samples: vec![
            sample(&[&inl, &main], 2, 100, "myapp"),
            sample(&[&k_leaf, &k_entry, &hot, &run, &main], 3, 100, "myapp"),
            sample(&[&inl, &main_copy], 3, 100, "myapp"),
            sample(&[&unsym, &inl, &main], 2, 101, "myapp"),
            sample(&[&semi, &unknown], 1, 200, "other;proc"),
            sample(&[&rec_a, &rec_b, &rec_b, &main], 4, 100, "myapp"),
            sample(&[&main], 0, 100, "myapp"),
        ],
    }
}

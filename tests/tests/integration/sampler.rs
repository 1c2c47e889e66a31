//! The kernel side driven directly, as `bellows run` drives it: generations flipped while
//! sampling, and the cgroup filter changed while sampling.

use std::{
    collections::{BTreeSet, HashSet},
    time::Duration,
};

use agent::ebpf::{Drained, Sampler, SamplerConfig};
use agent_common::ErrorKind;
use tests::{bpf_available, require_go_fixtures, GoFixture, TestCgroup, Workload};

fn fixture(test: &str) -> Option<GoFixture> {
    if !bpf_available(test) {
        return None;
    }
    let fixtures = require_go_fixtures(test, "cpuburn");
    fixtures.into_iter().find(|f| f.variant == "default")
}

fn counted(d: &Drained) -> u64 {
    d.samples.iter().map(|s| s.count).sum()
}

#[test]
fn flipping_generations_neither_loses_nor_repeats_a_sample() {
    let Some(fx) = fixture("flipping_generations_neither_loses_nor_repeats_a_sample") else {
        return;
    };
    let work = Workload::start(&fx.path, &["-duration", "10s", "-mode", "all"]);
    let mut sampler = Sampler::load(&SamplerConfig {
        frequency_hz: 999,
        kernel_stacks: true,
        pids: vec![work.pid()],
        double_buffered: true,
        ..SamplerConfig::default()
    })
    .unwrap();
    sampler.start(999).unwrap();
    let mut total = 0;
    let mut windows = Vec::new();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(100));
        let drained = sampler.flip().unwrap();
        assert_eq!(drained.missing_stacks, 0, "a window lost stacks");
        for s in &drained.samples {
            assert_eq!(s.tgid, work.pid());
            for id in [s.user_stack, s.kernel_stack].into_iter().flatten() {
                assert!(
                    drained.stacks.contains_key(&id),
                    "stack {id:#x} not drained"
                );
            }
        }
        total += counted(&drained);
        windows.push(counted(&drained));
    }
    sampler.stop();
    // Samples of the window current at stop are in the generation the next flip drains.
    let last = sampler.flip().unwrap();
    total += counted(&last);
    let kernel = sampler.drop_counts().unwrap();
    assert_eq!(
        total,
        kernel.get(ErrorKind::Counted),
        "every sample the kernel counted is drained exactly once (windows {windows:?})"
    );
    assert!(total > 500, "too few samples to mean anything: {total}");
    assert!(
        windows.iter().filter(|&&n| n > 0).count() >= 12,
        "samples should spread over the windows: {windows:?}"
    );
    // Both generations are empty now.
    assert!(sampler.flip().unwrap().samples.is_empty());
    assert!(sampler.flip().unwrap().samples.is_empty());
    assert_eq!(kernel.problems().count(), 0, "drops: {:?}", kernel.0);
}

#[test]
fn cgroup_filter_follows_changes_while_sampling() {
    let Some(fx) = fixture("cgroup_filter_follows_changes_while_sampling") else {
        return;
    };
    let cg_a = TestCgroup::create("sync-a");
    let cg_b = TestCgroup::create("sync-b");
    if tests::cgroup_layout() == agent::cgroup::Layout::V1 {
        // No v2 hierarchy: nothing to give the kernel filter, which refuses a v1 directory
        // (hosts::cgroup_ids_tell_cgroups_apart_except_on_v1 shows why; record and run select
        // in userspace there).
        assert!(matches!(
            agent::cgroup::cgroup_id(&cg_a.path),
            Err(agent::cgroup::CgroupError::NotCgroup2(_))
        ));
        return;
    }
    let a = Workload::start(&fx.path, &["-duration", "10s", "-mode", "cpu"]);
    cg_a.add(a.pid());
    let b = Workload::start(&fx.path, &["-duration", "10s", "-mode", "cpu"]);
    cg_b.add(b.pid());
    let id = |cg: &TestCgroup| agent::cgroup::cgroup_id(&cg.path).unwrap();

    let mut sampler = Sampler::load(&SamplerConfig {
        frequency_hz: 499,
        kernel_stacks: false,
        double_buffered: true,
        ..SamplerConfig::default()
    })
    .unwrap();
    let only = |ids: &[u64]| ids.iter().copied().collect::<HashSet<u64>>();
    assert_eq!(
        sampler
            .sync_cgroup_filter(true, &only(&[id(&cg_a)]))
            .unwrap(),
        (1, 0)
    );
    sampler.start(499).unwrap();
    let window = |sampler: &mut Sampler| {
        std::thread::sleep(Duration::from_millis(700));
        let d = sampler.flip().unwrap();
        d.samples.iter().map(|s| s.tgid).collect::<BTreeSet<u32>>()
    };
    assert_eq!(window(&mut sampler), BTreeSet::from([a.pid()]));

    // Swap the selection: one added, one removed, and only B from now on.
    assert_eq!(
        sampler
            .sync_cgroup_filter(true, &only(&[id(&cg_b)]))
            .unwrap(),
        (1, 1)
    );
    sampler.flip().unwrap(); // the window that straddles the change
    assert_eq!(window(&mut sampler), BTreeSet::from([b.pid()]));

    // Nothing selected: nothing counted, and the kernel says why.
    let before = sampler.drop_counts().unwrap().get(ErrorKind::Filtered);
    sampler.sync_cgroup_filter(true, &HashSet::new()).unwrap();
    sampler.flip().unwrap();
    assert!(window(&mut sampler).is_empty());
    assert!(sampler.drop_counts().unwrap().get(ErrorKind::Filtered) > before);

    // Filter off: both again (and whatever else runs on the machine).
    sampler.sync_cgroup_filter(false, &HashSet::new()).unwrap();
    sampler.flip().unwrap();
    let pids = window(&mut sampler);
    assert!(
        pids.contains(&a.pid()) && pids.contains(&b.pid()),
        "{pids:?}"
    );
}

/// The table-walking unwinder passes this kernel's verifier, and its maps can be taken by a
/// table loader.
#[test]
fn the_unwinder_loads_and_hands_out_its_maps() {
    if !bpf_available("the_unwinder_loads_and_hands_out_its_maps") {
        return;
    }
    let mut sampler = Sampler::load(&SamplerConfig {
        frequency_hz: 99,
        unwind: true,
        unwind_rows: 1024,
        ..SamplerConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
    let maps = sampler.take_unwind_maps().unwrap().expect("unwind maps");
    assert_eq!(maps.row_capacity(), 1024);
    assert!(sampler.take_unwind_maps().is_err(), "taken once");
}

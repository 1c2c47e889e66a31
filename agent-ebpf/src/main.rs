//! Bellows' kernel side: a perf_event program sampled on every CPU.
//!
//! Each sample records the process, thread name, cgroup v2 id and the user and kernel stacks, and
//! counts it in `COUNTS` (or `COUNTS_B`, by generation). Userspace drains `COUNTS` and `STACKS`,
//! and learns of processes at exec and at their first sample through the `NEW_PIDS` ring buffer,
//! so it can read their mappings while they still exist. Every sample names its process's
//! incarnation, so a pid reused within a window never mixes two processes. Failures are counted per CPU in `ERRORS`; nothing
//! is dropped silently.
//!
//! User stacks of processes whose binaries have unwind tables (`PROCESS_MAPPINGS`) are walked
//! by `bellows_unwind` from the sampled registers, frame by frame with the rows userspace built
//! from `.eh_frame`, `.debug_frame` and `.gopclntab`; it tail-calls itself every
//! `FRAMES_PER_CALL` frames. Where no row covers a pc it steps by frame pointer. Other stacks
//! (samples taken in kernel mode, processes not loaded yet) come from `bpf_get_stack`, which
//! follows frame pointers only.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "atomic_xadd is the only atomic add that lowers to BPF"
)]

mod unwind;

use agent_common::{
    announce, config, stack_hash,
    unwind::{PageKey, PageRows, ProcessMappings, Row},
    Announcement, ErrorKind, ExecImage, SampleKey, Stack, COMM_LEN, COUNTS_ENTRIES, FILTER_ENTRIES,
    KNOWN_PIDS_ENTRIES, MAX_STACK_DEPTH, NEW_PIDS_BYTES, NO_STACK, STACK_MAP_ENTRIES, UNSAMPLED,
};
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_stack},
    macros::{map, perf_event, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{PerfEventContext, RawTracePointContext},
    EbpfContext,
};

#[map]
static COUNTS: HashMap<SampleKey, u64> = HashMap::with_max_entries(COUNTS_ENTRIES, 0);

/// Stacks by the hash of their frames. A hash map chains, so distinct stacks never evict or
/// refuse each other (a stack trace map loses one of two stacks sharing a bucket).
#[map]
static STACKS: HashMap<u64, Stack> = HashMap::with_max_entries(STACK_MAP_ENTRIES, 0);

/// Second generation of `COUNTS` and `STACKS`: while userspace drains one generation, samples go
/// to the other. The loader shrinks these to one entry when it does not flip generations.
#[map]
static COUNTS_B: HashMap<SampleKey, u64> = HashMap::with_max_entries(COUNTS_ENTRIES, 0);

#[map]
static STACKS_B: HashMap<u64, Stack> = HashMap::with_max_entries(STACK_MAP_ENTRIES, 0);

/// Per-CPU buffer the stack is copied into before it is hashed and stored.
#[map]
static STACK_SCRATCH: PerCpuArray<Stack> = PerCpuArray::with_max_entries(1, 0);

#[map]
static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

#[map]
static CONFIG: Array<u32> = Array::with_max_entries(config::LEN, 0);

#[map]
static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ErrorKind::COUNT, 0);

/// Processes announced, by tgid: their incarnation ([`SampleKey::incarnation`]). An entry is
/// removed when its process exits, so a reused pid is a new incarnation.
#[map]
static KNOWN_PIDS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(KNOWN_PIDS_ENTRIES, 0);

#[map]
static NEW_PIDS: RingBuf = RingBuf::with_byte_size(NEW_PIDS_BYTES, 0);

/// Memory-mappable: userspace writes a binary's rows with one copy, not a syscall's
/// element-by-element update (about 9 ms for libstdc++'s 34,000 rows, a new process's stacks
/// broken meanwhile).
#[map]
static UNWIND_ROWS: Array<Row> = Array::with_max_entries(
    agent_common::unwind::ROWS_ENTRIES,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);

#[map]
static UNWIND_PAGES: HashMap<PageKey, PageRows> =
    HashMap::with_max_entries(agent_common::unwind::PAGES_ENTRIES, 0);

#[map]
static PROCESS_MAPPINGS: HashMap<u32, ProcessMappings> =
    HashMap::with_max_entries(agent_common::unwind::PROCESS_ENTRIES, 0);

#[map]
static UNWIND_STATE: PerCpuArray<unwind::State> = PerCpuArray::with_max_entries(1, 0);

#[map]
static UNWIND_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Steps of the walks of one process, when userspace asks for them (`config::TRACE_PID`).
#[map]
static UNWIND_TRACE: RingBuf = RingBuf::with_byte_size(agent_common::unwind::TRACE_BYTES, 0);

/// When each process last asked for its mappings to be read again (see `announce::REFRESH`).
#[map]
static REFRESHED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(KNOWN_PIDS_ENTRIES, 0);

const EFAULT: i64 = 14;
const EEXIST: i32 = 17;

/// What became of one stack.
enum StackOutcome {
    Stored(u64),
    /// No stack of this kind (a kernel thread's user side, a user-mode sample's kernel side).
    Absent,
    MapFull,
    Failed,
}

#[perf_event]
pub fn bellows_sample(ctx: PerfEventContext) -> u32 {
    try_sample(&ctx);
    0
}

/// A process exec'd: its mappings change, so the old image's are forgotten, and it is announced
/// at once as a new incarnation, so userspace can read it before it exits (a short-lived
/// process may never live to a second sample). A raw tracepoint (Linux 4.17+) attaches by name
/// through `bpf(BPF_RAW_TRACEPOINT_OPEN)`, so it needs no tracefs, which bare hosts do not mount;
/// the program reads none of the tracepoint's arguments, only the current task (and, with
/// offsets from BTF, its new executable: see [`exec_image`]).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bellows_exec(ctx: RawTracePointContext) -> u32 {
    let tgid = ctx.tgid();
    // The old image's mappings would walk the new one's stacks wrongly: frame pointers until
    // userspace has loaded the new mappings.
    let _ = PROCESS_MAPPINGS.remove(&tgid);
    let _ = KNOWN_PIDS.remove(&tgid);
    // SAFETY: the helper takes no arguments and only reads the current task.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if tgid == config(config::SELF_TGID) || !selected(tgid, cgroup_id) {
        return 0;
    }
    // SAFETY: the helper only reads the clock.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() } & !UNSAMPLED;
    if KNOWN_PIDS.insert(&tgid, &(now | UNSAMPLED), 0).is_ok() {
        send_announcement(Announcement {
            tgid,
            reason: announce::EXEC,
            incarnation: now,
            exe: exec_image().unwrap_or_default(),
        });
    }
    0
}

/// The current task's executable, through the offsets userspace read from BTF
/// (`config::EXE_OFFSETS`); None when they are unknown or a read fails. Called at exec, when
/// the new image is loaded and nothing else has been mapped yet.
#[inline(always)]
fn exec_image() -> Option<ExecImage> {
    let offset = |i: u32| config(config::EXE_OFFSETS + i) as usize;
    if offset(0) == 0 {
        return None;
    }
    // SAFETY: the helper takes no arguments and returns the current task's address.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let mm: u64 = read(task, offset(0))?;
    let file: u64 = read(mm, offset(1))?;
    let start_code: u64 = read(mm, offset(2))?;
    let end_code: u64 = read(mm, offset(3))?;
    let inode: u64 = read(file, offset(4))?;
    let ino: u64 = read(inode, offset(5))?;
    let sb: u64 = read(inode, offset(6))?;
    let dev: u32 = read(sb, offset(7))?;
    Some(ExecImage {
        dev,
        _pad: 0,
        inode: ino,
        start_code,
        end_code,
    })
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: usize) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: the helper copies from kernel memory and fails cleanly on a bad address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base as usize + off) as *const T).ok() }
}

/// Whether the current task has no user address space its registers describe: a kernel thread
/// or a task past `exit_mm` (no `mm`), or a task inside execve (`in_execve`), whose user
/// registers are still the old image's while its mappings may already be the new one's.
/// False when BTF did not say where to look.
#[inline(always)]
fn no_user_space() -> bool {
    let mm_offset = config(config::EXE_OFFSETS) as usize;
    if mm_offset == 0 {
        return false;
    }
    // SAFETY: the helper takes no arguments and returns the current task's address.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    match read::<u64>(task, mm_offset) {
        Some(0) => return true,
        Some(_) => {}
        None => return false,
    }
    let bit = config(config::IN_EXECVE_BIT);
    if bit == 0 {
        return false;
    }
    let bit = bit - 1;
    read::<u8>(task, (bit / 8) as usize).is_some_and(|byte| byte >> (bit % 8) & 1 != 0)
}

/// A task exited: when it leads its thread group, the process is gone, and its pid may be
/// reused by an unrelated process, which must neither inherit its incarnation nor be walked
/// with its mappings.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn bellows_exit(ctx: RawTracePointContext) -> u32 {
    let tgid = ctx.tgid();
    if ctx.pid() == tgid {
        let _ = KNOWN_PIDS.remove(&tgid);
        let _ = PROCESS_MAPPINGS.remove(&tgid);
        let _ = REFRESHED.remove(&tgid);
    }
    0
}

fn try_sample(ctx: &PerfEventContext) {
    let tgid = ctx.tgid();
    if tgid == 0 {
        // The idle task: not a workload.
        return;
    }
    if tgid == config(config::SELF_TGID) {
        count_error(ErrorKind::Filtered);
        return;
    }
    // SAFETY: the helper takes no arguments and only reads the current task.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if !selected(tgid, cgroup_id) {
        count_error(ErrorKind::Filtered);
        return;
    }

    let generation = config(config::GENERATION);
    let kernel_stack = if config(config::NO_KERNEL) != 0 {
        NO_STACK
    } else {
        stack_key(
            store_stack(ctx, stacks_of(generation), true),
            ErrorKind::KernelStackFull,
            ErrorKind::KernelStackError,
        )
    };

    let mut comm = [0u8; COMM_LEN];
    if let Ok(c) = bpf_get_current_comm() {
        comm = c;
    }
    let mut key = SampleKey {
        tgid,
        pid: ctx.pid(),
        cgroup_id,
        user_stack: NO_STACK,
        kernel_stack,
        comm,
        incarnation: incarnation(tgid),
    };
    if no_user_space() {
        count_error(ErrorKind::NoUserSpace);
        count_sample(&key, generation);
        return;
    }
    if config(config::UNWIND) != 0 {
        // Returns only when this sample cannot be walked with tables.
        unwind::start(ctx, &key, generation);
    }
    count_error(ErrorKind::FramePointerStacks);
    key.user_stack = stack_key(
        store_stack(ctx, stacks_of(generation), false),
        ErrorKind::UserStackFull,
        ErrorKind::UserStackError,
    );
    count_sample(&key, generation);
}

/// The stack map of a generation.
#[inline(always)]
fn stacks_of(generation: u32) -> &'static HashMap<u64, Stack> {
    if generation == 0 {
        &STACKS
    } else {
        &STACKS_B
    }
}

/// Adds one to the sample's count in the generation's counts map.
#[inline(always)]
fn count_sample(key: &SampleKey, generation: u32) {
    let counts = if generation == 0 { &COUNTS } else { &COUNTS_B };
    match counts.get_ptr_mut(key) {
        // SAFETY: the pointer is to a live map value; the add is atomic across CPUs.
        Some(count) => unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                count, 1,
            );
        },
        None => {
            // BPF_NOEXIST: if another CPU inserted the key meanwhile, add to its entry instead.
            match counts.insert(key, &1, u64::from(BPF_NOEXIST)) {
                Ok(()) => {}
                Err(_) => match counts.get_ptr_mut(key) {
                    // SAFETY: as above.
                    Some(count) => unsafe {
                        core::intrinsics::atomic_xadd::<
                            u64,
                            u64,
                            { core::intrinsics::AtomicOrdering::Relaxed },
                        >(count, 1);
                    },
                    None => {
                        count_error(ErrorKind::CountsFull);
                        return;
                    }
                },
            }
        }
    }
    count_error(ErrorKind::Counted);
}

/// Stores a walked stack under the hash of its frames.
#[inline(always)]
fn store_walked(stack: &Stack, generation: u32) -> StackOutcome {
    let len = stack.len as usize;
    if len == 0 {
        return StackOutcome::Absent;
    }
    let key = stack_hash(&stack.ips, len, false);
    match stacks_of(generation).insert(&key, stack, u64::from(BPF_NOEXIST)) {
        Ok(()) => StackOutcome::Stored(key),
        Err(err) if -err == EEXIST => StackOutcome::Stored(key),
        Err(_) => StackOutcome::MapFull,
    }
}

/// The key a sample records for a stack, counting why there is none.
#[inline(always)]
fn stack_key(outcome: StackOutcome, full: ErrorKind, failed: ErrorKind) -> u64 {
    match outcome {
        StackOutcome::Stored(key) => key,
        StackOutcome::Absent => NO_STACK,
        StackOutcome::MapFull => {
            count_error(full);
            NO_STACK
        }
        StackOutcome::Failed => {
            count_error(failed);
            NO_STACK
        }
    }
}

/// Copies the current user or kernel stack, and stores it under the hash of its frames.
#[inline(always)]
fn store_stack(ctx: &PerfEventContext, stacks: &HashMap<u64, Stack>, kernel: bool) -> StackOutcome {
    let Some(buf) = STACK_SCRATCH.get_ptr_mut(0) else {
        return StackOutcome::Failed;
    };
    let flags = if kernel {
        0
    } else {
        u64::from(BPF_F_USER_STACK)
    };
    // SAFETY: `buf` points at this CPU's scratch value, whose `ips` holds exactly the size given;
    // nothing else runs on this CPU while the program does.
    let stack = unsafe { &mut *buf };
    // SAFETY: as above; the helper writes at most `size` bytes.
    let copied = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            stack.ips.as_mut_ptr().cast(),
            core::mem::size_of::<[u64; MAX_STACK_DEPTH]>() as u32,
            flags,
        )
    };
    if copied < 0 {
        return if -copied == EFAULT {
            StackOutcome::Absent
        } else {
            StackOutcome::Failed
        };
    }
    let len = copied as usize / 8;
    if len == 0 {
        return StackOutcome::Absent;
    }
    stack.len = len as u64;
    let key = stack_hash(&stack.ips, len, kernel);
    match stacks.insert(&key, &*stack, u64::from(BPF_NOEXIST)) {
        Ok(()) => StackOutcome::Stored(key),
        // Seen before: the same frames are already stored under this key.
        Err(err) if -err == EEXIST => StackOutcome::Stored(key),
        Err(_) => StackOutcome::MapFull,
    }
}

/// Whether a sample passes the filters. With no filter active every sample passes; with one or
/// both active, a sample passes when it matches any of them.
#[inline(always)]
fn selected(tgid: u32, cgroup_id: u64) -> bool {
    let by_cgroup = config(config::FILTER_CGROUPS) != 0;
    let by_pid = config(config::FILTER_PIDS) != 0;
    if !by_cgroup && !by_pid {
        return true;
    }
    // SAFETY: map values are plain bytes; we only test presence.
    (by_cgroup && unsafe { CGROUP_FILTER.get(&cgroup_id) }.is_some())
        || (by_pid && unsafe { PID_FILTER.get(&tgid) }.is_some())
}

/// The process's incarnation; a process not known yet becomes one, and is announced.
#[inline(always)]
fn incarnation(tgid: u32) -> u64 {
    if let Some(known) = KNOWN_PIDS.get_ptr_mut(&tgid) {
        // SAFETY: a live map value, a plain u64; another CPU may race the flag, and announce
        // the process twice at worst.
        let value = unsafe { *known };
        if value & UNSAMPLED != 0 {
            // SAFETY: as above.
            unsafe { *known = value & !UNSAMPLED };
            announce_process(tgid, announce::FIRST_SAMPLE, value & !UNSAMPLED);
        }
        return value & !UNSAMPLED;
    }
    // SAFETY: the helper only reads the clock.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() } & !UNSAMPLED;
    if KNOWN_PIDS
        .insert(&tgid, &now, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU saw it first, and announced it.
        // SAFETY: as above.
        return unsafe { KNOWN_PIDS.get(&tgid) }.map_or(now, |&known| known & !UNSAMPLED);
    }
    announce_process(tgid, announce::FIRST_SAMPLE, now);
    now
}

/// Sends an announcement; a full ring is counted (userspace then reads the process when it
/// resolves its samples, if it is still alive).
#[inline(always)]
fn announce_process(tgid: u32, reason: u32, incarnation: u64) {
    send_announcement(Announcement {
        tgid,
        reason,
        incarnation,
        exe: ExecImage::default(),
    });
}

#[inline(always)]
fn send_announcement(record: Announcement) {
    if NEW_PIDS.output::<Announcement>(&record, 0).is_err() {
        count_error(ErrorKind::NewPidDropped);
    }
}

/// Asks userspace to read a known process's mappings again (a pc outside all of them), at most
/// once per `REFRESH_NS`.
#[inline(always)]
fn request_refresh(tgid: u32, incarnation: u64) {
    // SAFETY: the helper only reads the clock.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // SAFETY: plain data, copied out.
    if let Some(&last) = unsafe { REFRESHED.get(&tgid) } {
        if now.wrapping_sub(last) < agent_common::REFRESH_NS {
            return;
        }
    }
    let _ = REFRESHED.insert(&tgid, &now, 0);
    announce_process(tgid, announce::REFRESH, incarnation);
}

#[inline(always)]
fn config(index: u32) -> u32 {
    CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
fn count_error(kind: ErrorKind) {
    if let Some(slot) = ERRORS.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Walks the rest of a user stack that `bellows_sample` began (tail-called, never attached).
#[perf_event]
pub fn bellows_unwind(ctx: PerfEventContext) -> u32 {
    unwind::resume(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

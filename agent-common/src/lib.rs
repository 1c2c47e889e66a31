//! Types shared by the Bellows eBPF programs (`agent-ebpf`) and userspace (`agent`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding so that no uninitialised bytes
//! reach a BPF hash (two equal keys must hash equally).
#![no_std]

/// Map names, as the loader looks them up.
pub mod maps {
    pub const COUNTS: &str = "COUNTS";
    pub const STACKS: &str = "STACKS";
    /// The second generation of `COUNTS` and `STACKS`, written while userspace drains the first
    /// (see [`crate::config::GENERATION`]).
    pub const COUNTS_B: &str = "COUNTS_B";
    pub const STACKS_B: &str = "STACKS_B";
    pub const STACK_SCRATCH: &str = "STACK_SCRATCH";
    pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
    pub const PID_FILTER: &str = "PID_FILTER";
    pub const CONFIG: &str = "CONFIG";
    pub const ERRORS: &str = "ERRORS";
    pub const KNOWN_PIDS: &str = "KNOWN_PIDS";
    pub const NEW_PIDS: &str = "NEW_PIDS";
    /// Unwind rows of every loaded binary, each binary a range of its own.
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// (file id, 64 KiB page) → that page's range of `UNWIND_ROWS`.
    pub const UNWIND_PAGES: &str = "UNWIND_PAGES";
    /// tgid → its executable mappings that have unwind tables.
    pub const PROCESS_MAPPINGS: &str = "PROCESS_MAPPINGS";
    /// Per-CPU state of a stack walk carried across tail calls.
    pub const UNWIND_STATE: &str = "UNWIND_STATE";
    /// The unwinder program, tail-called by the sampler and by itself.
    pub const UNWIND_PROGRAMS: &str = "UNWIND_PROGRAMS";
    /// The unwinder's steps for one process, when asked for (see [`crate::config::TRACE_PID`]).
    pub const UNWIND_TRACE: &str = "UNWIND_TRACE";
}

/// Program names, as the loader looks them up.
pub mod programs {
    pub const SAMPLE: &str = "bellows_sample";
    pub const EXEC: &str = "bellows_exec";
    pub const EXIT: &str = "bellows_exit";
    pub const UNWIND: &str = "bellows_unwind";
}

/// Default map sizes. The sample maps stay near 21 MiB: the stack maps dominate, at
/// `entries * (8 + 8 * MAX_STACK_DEPTH)` bytes, about 2 KiB per stack; a counts entry costs about
/// 140 bytes with the kernel's hash overhead. The unwind maps ([`unwind`]) add about 36 MiB, so
/// that all the maps stay under 64 MiB.
///
/// One-shot recording (one generation): 8192 stacks and 32768 counts, about 21 MiB.
pub const COUNTS_ENTRIES: u32 = 32_768;
pub const STACK_MAP_ENTRIES: u32 = 8_192;
/// Continuous profiling holds two generations, each filled during one collect interval:
/// 4096 stacks and 16384 counts each, about 21 MiB in all. `[maps]` in the configuration
/// raises them for busy nodes; what does not fit is counted, never silently lost.
pub const RUN_COUNTS_ENTRIES: u32 = 16_384;
pub const RUN_STACK_MAP_ENTRIES: u32 = 4_096;
/// Frames a stored stack holds: user stacks walked with unwind tables reach this deep (kernel
/// stacks stop at the kernel's `perf_event_max_stack`, 127 by default).
pub const MAX_STACK_DEPTH: usize = 256;
pub const FILTER_ENTRIES: u32 = 4_096;
pub const KNOWN_PIDS_ENTRIES: u32 = 16_384;
/// Ring buffer of [`Announcement`]s (48 bytes each, plus the ring's 8-byte header): about
/// 4,700 fit, four seconds of a thousand execs a second if the intake stalled.
pub const NEW_PIDS_BYTES: u32 = 256 * 1024;

/// A `NEW_PIDS` record: a process to read now.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub tgid: u32,
    /// Why: one of the `announce` constants.
    pub reason: u32,
    /// The process's [`SampleKey::incarnation`].
    pub incarnation: u64,
    /// At exec, the new image's executable as the kernel loaded it; zeros otherwise, or where
    /// the kernel's layout is unknown (no BTF).
    pub exe: ExecImage,
}

/// A process's executable, read by the exec hook from the task's `mm`: which file, and where
/// its code was loaded. A process that exits before its mappings can be read is still named
/// through it, from the same file opened for an earlier process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecImage {
    /// The file's device, as the kernel numbers it (`MAJOR << 20 | MINOR`, as
    /// `/proc/PID/maps` prints it); 0 when unknown.
    pub dev: u32,
    pub _pad: u32,
    pub inode: u64,
    /// `mm_struct.start_code` and `end_code`: the lowest and highest addresses of the
    /// executable's loaded code segments (their virtual addresses plus the load bias).
    pub start_code: u64,
    pub end_code: u64,
}

/// Set in a `KNOWN_PIDS` value (incarnations are even) while a process announced at exec has
/// not been sampled: its first sample announces it again, since a dynamically linked program
/// maps its libraries after exec.
pub const UNSAMPLED: u64 = 1;

/// [`Announcement::reason`]s.
pub mod announce {
    /// The process's first sample (forked and not exec'd since, or running since before the
    /// sampler started, or sampled again after userspace released it).
    pub const FIRST_SAMPLE: u32 = 0;
    /// The process exec'd (and passes the filters): read it at once, before it can exit. A
    /// dynamically linked program maps its libraries after this; its first sample asks again.
    pub const EXEC: u32 = 1;
    /// A sample's pc lies outside every mapping the kernel was given (a library loaded since,
    /// `dlopen`), so the mappings should be read again. At most once per [`crate::REFRESH_NS`]
    /// per process.
    pub const REFRESH: u32 = 2;
}
/// How often at most one process asks for its mappings to be read again (a library loaded
/// shortly after start must not leave a second of broken stacks behind).
pub const REFRESH_NS: u64 = 100_000_000;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Key of the counts map: one entry per distinct (process, thread name, cgroup, stacks).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id (kernel tgid).
    pub tgid: u32,
    /// Thread id (kernel pid) of the sampled task.
    pub pid: u32,
    /// cgroup v2 id of the sampled task (inode of its cgroup directory).
    pub cgroup_id: u64,
    /// Key in `STACKS` of the user stack; [`NO_STACK`] when there is none.
    pub user_stack: u64,
    /// Key in `STACKS` of the kernel stack; [`NO_STACK`] when there is none (sampled in user
    /// mode, a kernel-only thread's user side, or kernel stacks switched off).
    pub kernel_stack: u64,
    /// Thread name of the sampled task, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Which process had the tgid: the kernel time (`CLOCK_MONOTONIC`, ns) it was first seen,
    /// at exec or at its first sample (`KNOWN_PIDS` holds it until the process exits). A pid
    /// reused within a window is thus a different process, never one with the old mappings.
    pub incarnation: u64,
}

/// Stack key meaning "no stack".
pub const NO_STACK: u64 = 0;

/// A stack in the `STACKS` map, keyed by a 64-bit hash of its frames (so two stacks never
/// contend for one slot, unlike a stack trace map's buckets).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    /// Number of valid entries in `ips`.
    pub len: u64,
    /// Instruction pointers, leaf first.
    pub ips: [u64; MAX_STACK_DEPTH],
}

/// Hash of a stack's frames, as the kernel side computes it; never [`NO_STACK`].
#[inline(always)]
pub fn stack_hash(ips: &[u64; MAX_STACK_DEPTH], len: usize, kernel: bool) -> u64 {
    // FNV-1a over 64-bit words, seeded differently for kernel and user stacks.
    let mut h: u64 = if kernel {
        0xcbf2_9ce4_8422_2325
    } else {
        0x8422_2325_cbf2_9ce4
    };
    let mut i = 0;
    while i < MAX_STACK_DEPTH {
        if i >= len {
            break;
        }
        h ^= ips[i];
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
        i += 1;
    }
    if h == NO_STACK {
        1
    } else {
        h
    }
}

/// Indexes of the `CONFIG` array.
pub mod config {
    /// Nonzero: count only samples whose cgroup id is in `CGROUP_FILTER`.
    pub const FILTER_CGROUPS: u32 = 0;
    /// Nonzero: count only samples whose tgid is in `PID_FILTER`.
    pub const FILTER_PIDS: u32 = 1;
    /// Nonzero: do not collect kernel stacks.
    pub const NO_KERNEL: u32 = 2;
    /// Which generation of maps samples go to: 0 for `COUNTS`/`STACKS`, 1 for
    /// `COUNTS_B`/`STACKS_B`. Continuous profiling flips it, waits for programs in flight, and
    /// drains the generation no longer written, so no sample is lost between reading and clearing.
    pub const GENERATION: u32 = 3;
    /// The agent's own tgid: its samples are not taken (counted as filtered). Profiling the
    /// profiler would make it symbolize itself, a large binary, every interval.
    pub const SELF_TGID: u32 = 4;
    /// Nonzero: walk user stacks with the unwind tables where a process has them.
    pub const UNWIND: u32 = 5;
    /// Offset of `task_struct.stack` (from BTF); 0 when unknown. With it, samples taken in
    /// kernel mode find the user registers at the top of the task's kernel stack.
    pub const TASK_STACK_OFFSET: u32 = 6;
    /// Size of a task's kernel stack (x86_64: 16 KiB, 32 KiB with KASAN).
    pub const THREAD_SIZE: u32 = 7;
    /// Nonzero: the unwinder writes each step of this process's walks into `UNWIND_TRACE`
    /// ([`crate::unwind::TraceStep`]). Zero (the default): steps are still stored in the per-CPU
    /// state (a 32-byte store each), and one comparison per run decides not to send them.
    pub const TRACE_PID: u32 = 8;
    /// From here, [`EXE_OFFSETS_LEN`] offsets (from BTF) that the exec hook follows to the new
    /// image's executable: `task_struct.mm`, `mm_struct.exe_file`, `.start_code`, `.end_code`,
    /// `file.f_inode`, `inode.i_ino`, `.i_sb`, `super_block.s_dev`. The first is 0 when unknown
    /// (it never is 0: a task starts with its thread info and state).
    pub const EXE_OFFSETS: u32 = 9;
    pub const EXE_OFFSETS_LEN: usize = 8;
    /// Bit offset of `task_struct.in_execve` (a bitfield, from BTF) plus one; 0 when unknown.
    /// A sample taken while the task is in execve has user registers that describe the old
    /// image, not the mappings it may already have. Its user stack is left out, as that of a
    /// task without `mm` ([`crate::ErrorKind::NoUserSpace`]).
    pub const IN_EXECVE_BIT: u32 = EXE_OFFSETS + EXE_OFFSETS_LEN as u32;
    pub const LEN: u32 = IN_EXECVE_BIT + 1;
}

/// Indexes of the per-CPU `ERRORS` array: why samples were dropped or degraded.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Sample counted into the counts map (not an error; total for the drop ratios).
    Counted = 0,
    /// The counts map was full: the sample was lost.
    CountsFull = 1,
    /// The user stack was not stored: stack map full.
    UserStackFull = 2,
    /// Reading the user stack failed.
    UserStackError = 3,
    /// The kernel stack was not stored: stack map full.
    KernelStackFull = 4,
    /// Reading the kernel stack failed.
    KernelStackError = 5,
    /// The new-process ring buffer was full: that process's mappings may be read late.
    NewPidDropped = 6,
    /// Filtered out by the cgroup or pid filter (not an error; for verification).
    Filtered = 7,
    /// A user stack walked with unwind tables (not an error; the total for the ratios below).
    Unwound = 8,
    /// A user stack walked with unwind tables that ended before its outermost frame: a frame
    /// whose return address could not be read, or [`MAX_STACK_DEPTH`] reached. Its last frame
    /// is [`TRUNCATED_FRAME`].
    UnwindTruncated = 9,
    /// Frames stepped by frame pointer inside a table-walked stack because no table covered the
    /// pc (JIT code, a binary whose table is not loaded or did not fit).
    UnwindFpFrames = 10,
    /// Samples taken in kernel mode, or of processes without tables: their user stack came from
    /// frame pointers alone (`bpf_get_stack`).
    FramePointerStacks = 11,
    /// Samples of tasks without a user address space their registers describe: kernel threads,
    /// tasks in exit after `exit_mm`, and tasks inside execve (their registers are the old
    /// image's, their mappings may be the new one's). Counted with their kernel stack only
    /// (not an error).
    NoUserSpace = 12,
}

/// The frame that ends a user stack whose walk stopped early (see
/// [`ErrorKind::UnwindTruncated`]): no user address is this high on x86_64.
pub const TRUNCATED_FRAME: u64 = u64::MAX;

impl ErrorKind {
    pub const COUNT: u32 = 13;
    pub const ALL: [ErrorKind; Self::COUNT as usize] = [
        ErrorKind::Counted,
        ErrorKind::CountsFull,
        ErrorKind::UserStackFull,
        ErrorKind::UserStackError,
        ErrorKind::KernelStackFull,
        ErrorKind::KernelStackError,
        ErrorKind::NewPidDropped,
        ErrorKind::Filtered,
        ErrorKind::Unwound,
        ErrorKind::UnwindTruncated,
        ErrorKind::UnwindFpFrames,
        ErrorKind::FramePointerStacks,
        ErrorKind::NoUserSpace,
    ];

    /// Stable snake_case name, used in reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::Counted => "counted",
            ErrorKind::CountsFull => "counts_map_full",
            ErrorKind::UserStackFull => "user_stack_map_full",
            ErrorKind::UserStackError => "user_stack_error",
            ErrorKind::KernelStackFull => "kernel_stack_map_full",
            ErrorKind::KernelStackError => "kernel_stack_error",
            ErrorKind::NewPidDropped => "new_pid_event_dropped",
            ErrorKind::Filtered => "filtered",
            ErrorKind::Unwound => "unwound_with_tables",
            ErrorKind::UnwindTruncated => "unwind_truncated",
            ErrorKind::UnwindFpFrames => "unwind_frame_pointer_frames",
            ErrorKind::FramePointerStacks => "frame_pointer_stacks",
            ErrorKind::NoUserSpace => "no_user_address_space",
        }
    }
}

/// The kernel's view of unwind tables (x86_64). Userspace turns each binary's table into rows,
/// 64 KiB page by page, so that a row needs only the low 16 bits of its address.
pub mod unwind {
    /// Rows are grouped by pages of `1 << PAGE_SHIFT` bytes of ELF virtual address.
    pub const PAGE_SHIFT: u32 = 16;
    /// Default capacity of `UNWIND_ROWS` (8 bytes a row: 24 MiB).
    pub const ROWS_ENTRIES: u32 = 3 << 20;
    /// Default capacity of `UNWIND_PAGES`: 64 Ki pages cover 4 GiB of text.
    pub const PAGES_ENTRIES: u32 = 64 * 1024;
    /// Processes whose mappings the kernel knows (4 KiB each).
    pub const PROCESS_ENTRIES: u32 = 2_048;
    /// Executable mappings with tables per process.
    pub const MAX_MAPPINGS: usize = 96;
    /// Rows per page at most (a binary search of 16 steps).
    pub const MAX_PAGE_ROWS: u32 = 1 << 16;
    /// Frames one run of the unwinder walks before it tail-calls itself.
    pub const FRAMES_PER_CALL: usize = 12;
    /// Tail calls the kernel allows in one chain (MAX_TAIL_CALL_CNT; 32 on 5.10, 33 later).
    pub const MAX_TAIL_CALLS: u32 = 32;

    /// How a row finds the caller's frame.
    pub mod kind {
        /// CFA = rsp + cfa_offset.
        pub const CFA_RSP: u8 = 0;
        /// CFA = rbp + cfa_offset.
        pub const CFA_RBP: u8 = 1;
        /// A PLT stub: CFA = rsp + 8, plus 8 once past the push (rip & 15 >= 11).
        pub const PLT: u8 = 2;
        /// A signal trampoline: the interrupted registers are in the ucontext at rsp.
        pub const SIGNAL: u8 = 3;
        /// The outermost frame: the stack is complete.
        pub const END: u8 = 4;
        /// No rule here: step by frame pointer.
        pub const UNKNOWN: u8 = 5;
        /// In a trace only: no row covers the pc (no mapping with a table, or no page), so the
        /// step was by frame pointer.
        pub const NO_ROW: u8 = 6;
    }

    /// Bytes of the `UNWIND_TRACE` ring buffer: about 8,000 steps between two reads.
    pub const TRACE_BYTES: u32 = 256 * 1024;

    /// One step of a traced walk: the frame stepped and what became of it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TraceStep {
        /// The frame's index in its stack (0: the leaf).
        pub depth: u32,
        /// The rule that stepped it ([`kind`]).
        pub kind: u8,
        /// [`TRACE_NEXT`], [`TRACE_COMPLETE`] or [`TRACE_TRUNCATED`].
        pub outcome: u8,
        pub _pad: [u8; 2],
        /// The frame's registers.
        pub ip: u64,
        pub sp: u64,
        pub bp: u64,
    }

    /// The steps of one run of the unwinder (up to [`FRAMES_PER_CALL`]), one ring-buffer record:
    /// the steps are stored unconditionally and sent once, so tracing adds no branch to the
    /// verifier's paths through the walk.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TraceBatch {
        pub tid: u32,
        /// Valid entries of `steps`.
        pub count: u32,
        pub steps: [TraceStep; FRAMES_PER_CALL],
    }

    /// The walk went on to the caller.
    pub const TRACE_NEXT: u8 = 0;
    /// The frame was the outermost: the stack is complete.
    pub const TRACE_COMPLETE: u8 = 1;
    /// The walk ended early (an unreadable address, the depth or tail-call limit).
    pub const TRACE_TRUNCATED: u8 = 2;

    /// One row: from `pc_low` (within its page) to the next row, how to find the caller.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Row {
        /// Low [`PAGE_SHIFT`] bits of the first address the row covers.
        pub pc_low: u16,
        /// See [`kind`].
        pub kind: u8,
        /// Where the caller's rbp is saved, in 8-byte slots from the CFA; 0: rbp is unchanged.
        pub rbp_slot: i8,
        /// Added to the CFA's base register.
        pub cfa_offset: i32,
    }

    /// Key of `UNWIND_PAGES`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PageKey {
        pub file_id: u32,
        /// ELF virtual address >> [`PAGE_SHIFT`].
        pub page: u32,
    }

    /// Value of `UNWIND_PAGES`: the page's rows are `UNWIND_ROWS[first..first + count]`, sorted
    /// by `pc_low`, the first at `pc_low` 0.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PageRows {
        pub first: u32,
        pub count: u32,
    }

    /// One executable mapping of a process whose file has a table.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Mapping {
        pub start: u64,
        pub end: u64,
        /// ELF virtual address = address - bias.
        pub bias: u64,
        pub file_id: u32,
        pub _pad: u32,
    }

    /// Value of `PROCESS_MAPPINGS`: `entries[..len]`, sorted by start, not overlapping.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct ProcessMappings {
        pub len: u32,
        pub _pad: u32,
        /// The incarnation (see [`SampleKey::incarnation`](crate::SampleKey)) these mappings
        /// were read from. A walk uses them only for a sample of the same incarnation: a
        /// capture of a process that has since exec'd or exited may be loaded after the exec
        /// or exit hook cleared the entry.
        pub incarnation: u64,
        pub entries: [Mapping; MAX_MAPPINGS],
    }

    impl Default for ProcessMappings {
        fn default() -> Self {
            ProcessMappings {
                len: 0,
                _pad: 0,
                incarnation: 0,
                entries: [Mapping::default(); MAX_MAPPINGS],
            }
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: the unwind types are `repr(C)`, `Copy`, with explicit padding only, and every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::unwind::Row {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::PageKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::PageRows {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::ProcessMappings {}
    // SAFETY: `SampleKey` is `repr(C)`, `Copy`, has no implicit padding and
    // every bit pattern is valid.
    unsafe impl aya::Pod for super::SampleKey {}
    // SAFETY: `Stack` is `repr(C)`, `Copy`, all u64: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::Stack {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_key_has_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<SampleKey>(),
            4 + 4 + 8 + 8 + 8 + COMM_LEN + 8
        );
        assert_eq!(
            core::mem::size_of::<Announcement>(),
            4 + 4 + 8 + 4 + 4 + 8 * 3
        );
        assert_eq!(core::mem::size_of::<Stack>(), 8 + 8 * MAX_STACK_DEPTH);
    }

    #[test]
    fn stack_hash_depends_on_frames_length_and_kind() {
        let mut a = [0u64; MAX_STACK_DEPTH];
        a[0] = 0x401000;
        a[1] = 0x402000;
        let h = stack_hash(&a, 2, false);
        assert_ne!(h, NO_STACK);
        assert_ne!(h, stack_hash(&a, 1, false));
        assert_ne!(h, stack_hash(&a, 2, true));
        let mut b = a;
        b[5] = 99; // beyond len: ignored
        assert_eq!(h, stack_hash(&b, 2, false));
        b[1] = 0x402001;
        assert_ne!(h, stack_hash(&b, 2, false));
    }

    #[test]
    fn unwind_types_have_no_implicit_padding() {
        use unwind::*;
        assert_eq!(core::mem::size_of::<Row>(), 8);
        assert_eq!(core::mem::size_of::<PageKey>(), 8);
        assert_eq!(core::mem::size_of::<PageRows>(), 8);
        assert_eq!(core::mem::size_of::<Mapping>(), 32);
        assert_eq!(
            core::mem::size_of::<ProcessMappings>(),
            16 + 32 * MAX_MAPPINGS
        );
    }

    #[test]
    fn error_kinds_are_indexed_by_discriminant() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
    }
}

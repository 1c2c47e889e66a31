//! Types shared by the Bellows eBPF programs (`agent-ebpf`) and userspace (`agent`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding so that no uninitialised bytes
//! reach a BPF hash (two equal keys must hash equally).
#![no_std]

/// Map names, as the loader looks them up.
pub mod maps {
    pub const COUNTS: &str = "COUNTS";
    pub const STACKS: &str = "STACKS";
    pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
    pub const PID_FILTER: &str = "PID_FILTER";
    pub const CONFIG: &str = "CONFIG";
    pub const ERRORS: &str = "ERRORS";
    pub const KNOWN_PIDS: &str = "KNOWN_PIDS";
    pub const NEW_PIDS: &str = "NEW_PIDS";
}

/// Program names, as the loader looks them up.
pub mod programs {
    pub const SAMPLE: &str = "bellows_sample";
    pub const EXEC: &str = "bellows_exec";
}

/// Default map sizes. Memory: the stack map dominates (`STACK_MAP_ENTRIES * MAX_STACK_DEPTH * 8`
/// bytes = 10 MiB at the defaults); the counts map is `COUNTS_ENTRIES * (40 + 8)` bytes plus hash
/// overhead.
pub const COUNTS_ENTRIES: u32 = 32_768;
pub const STACK_MAP_ENTRIES: u32 = 10_240;
/// The kernel's default `perf_event_max_stack` (also the most a stack trace map entry holds here).
pub const MAX_STACK_DEPTH: usize = 127;
pub const FILTER_ENTRIES: u32 = 4_096;
pub const KNOWN_PIDS_ENTRIES: u32 = 16_384;
/// Ring buffer for "first sample of this process" notifications (one `u32` tgid each).
pub const NEW_PIDS_BYTES: u32 = 64 * 1024;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Key of the counts map: one entry per distinct (process, thread name, cgroup, stacks).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id (kernel tgid).
    pub tgid: u32,
    /// Padding; always zero.
    pub _pad: u32,
    /// cgroup v2 id of the sampled task (inode of its cgroup directory).
    pub cgroup_id: u64,
    /// Id in the stack map of the user stack, or a negative errno (no user stack).
    pub user_stack_id: i32,
    /// Id in the stack map of the kernel stack, or a negative errno (`-EFAULT`: sampled in user
    /// mode, so there is no kernel stack).
    pub kernel_stack_id: i32,
    /// Thread name of the sampled task, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Indexes of the `CONFIG` array.
pub mod config {
    /// Nonzero: count only samples whose cgroup id is in `CGROUP_FILTER`.
    pub const FILTER_CGROUPS: u32 = 0;
    /// Nonzero: count only samples whose tgid is in `PID_FILTER`.
    pub const FILTER_PIDS: u32 = 1;
    /// Nonzero: do not collect kernel stacks.
    pub const NO_KERNEL: u32 = 2;
    pub const LEN: u32 = 3;
}

/// Indexes of the per-CPU `ERRORS` array: why samples were dropped or degraded.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Sample counted into the counts map (not an error; total for the drop ratios).
    Counted = 0,
    /// The counts map was full: the sample was lost.
    CountsFull = 1,
    /// The user stack was not recorded: stack map full (`-ENOMEM`).
    UserStackFull = 2,
    /// The user stack hash collided with another stack (`-EEXIST`).
    UserStackCollision = 3,
    /// Other failure getting the user stack.
    UserStackOther = 4,
    /// The kernel stack was not recorded: stack map full.
    KernelStackFull = 5,
    /// The kernel stack hash collided.
    KernelStackCollision = 6,
    /// Other failure getting the kernel stack (not `-EFAULT`, which means "user mode").
    KernelStackOther = 7,
    /// The new-process ring buffer was full: that process's mappings may be read late.
    NewPidDropped = 8,
    /// Filtered out by the cgroup or pid filter (not an error; for verification).
    Filtered = 9,
}

impl ErrorKind {
    pub const COUNT: u32 = 10;
    pub const ALL: [ErrorKind; Self::COUNT as usize] = [
        ErrorKind::Counted,
        ErrorKind::CountsFull,
        ErrorKind::UserStackFull,
        ErrorKind::UserStackCollision,
        ErrorKind::UserStackOther,
        ErrorKind::KernelStackFull,
        ErrorKind::KernelStackCollision,
        ErrorKind::KernelStackOther,
        ErrorKind::NewPidDropped,
        ErrorKind::Filtered,
    ];

    /// Stable snake_case name, used in reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::Counted => "counted",
            ErrorKind::CountsFull => "counts_map_full",
            ErrorKind::UserStackFull => "user_stack_map_full",
            ErrorKind::UserStackCollision => "user_stack_collision",
            ErrorKind::UserStackOther => "user_stack_error",
            ErrorKind::KernelStackFull => "kernel_stack_map_full",
            ErrorKind::KernelStackCollision => "kernel_stack_collision",
            ErrorKind::KernelStackOther => "kernel_stack_error",
            ErrorKind::NewPidDropped => "new_pid_event_dropped",
            ErrorKind::Filtered => "filtered",
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `SampleKey` is `repr(C)`, `Copy`, has no implicit padding (explicit `_pad`) and
    // every bit pattern is valid.
    unsafe impl aya::Pod for super::SampleKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_key_has_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<SampleKey>(),
            4 + 4 + 8 + 4 + 4 + COMM_LEN
        );
    }

    #[test]
    fn error_kinds_are_indexed_by_discriminant() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
    }
}

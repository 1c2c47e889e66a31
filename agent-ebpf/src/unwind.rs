//! The user-stack walker: unwind rows from userspace, frame pointers where there are none.
//!
//! `start` runs inside `bellows_sample`: for a sample taken in user mode of a process whose
//! mappings the kernel knows, it copies the sampled registers into this CPU's [`State`] and
//! tail-calls `bellows_unwind`, which walks [`FRAMES_PER_CALL`] frames per run and tail-calls
//! itself until the stack ends, then stores the stack and counts the sample as
//! `bellows_sample` would have. Every step reads only map memory and user memory through
//! `bpf_probe_read_user`, so a bad row or a corrupt stack ends the walk, never the program.

use agent_common::config;
use agent_common::{
    unwind::{
        kind, Mapping, PageKey, ProcessMappings, Row, TraceBatch, TraceStep, FRAMES_PER_CALL,
        MAX_MAPPINGS, MAX_TAIL_CALLS, PAGE_SHIFT, TRACE_COMPLETE, TRACE_NEXT, TRACE_TRUNCATED,
    },
    ErrorKind, SampleKey, Stack, MAX_STACK_DEPTH, TRUNCATED_FRAME,
};
use aya_ebpf::{
    bindings::bpf_perf_event_data,
    helpers::{bpf_get_current_task, bpf_probe_read_user},
    programs::PerfEventContext,
    EbpfContext,
};

use crate::{
    count_error, count_sample, stack_key, store_walked, PROCESS_MAPPINGS, UNWIND_PAGES,
    UNWIND_PROGRAMS, UNWIND_ROWS, UNWIND_STATE, UNWIND_TRACE,
};

/// A stack walk in progress, carried from one tail call to the next.
#[repr(C)]
pub struct State {
    key: SampleKey,
    generation: u32,
    tail_calls: u32,
    /// Registers of the frame being stepped.
    ip: u64,
    sp: u64,
    bp: u64,
    /// Nonzero: `ip` is where the frame was interrupted (the leaf, or a frame a signal
    /// interrupted), not a return address, so its row is looked up at `ip` rather than `ip - 1`.
    exact_ip: u64,
    /// Nonzero while every step so far followed a row: `ip` is then a real address, and one
    /// outside every known mapping means code mapped since the process was read.
    trusted: u64,
    /// Nonzero: this walk's steps go to `UNWIND_TRACE` (the process is `config::TRACE_PID`).
    trace: u32,
    /// The rule of the last step ([`kind`]), for the trace.
    last_kind: u32,
    /// This run's steps, sent when `trace` is set.
    batch: TraceBatch,
    stack: Stack,
}

/// Offset of `uc_mcontext` in the `ucontext` a signal trampoline finds at rsp (x86_64: after
/// `uc_flags`, `uc_link` and the 24-byte `uc_stack`).
const UCONTEXT_MCONTEXT: u64 = 40;
/// Offsets in `struct sigcontext` (x86_64).
const SIGCONTEXT_RBP: u64 = 80;
const SIGCONTEXT_RSP: u64 = 120;
const SIGCONTEXT_RIP: u64 = 128;

/// Size of `struct pt_regs` and the offsets of the registers we need (x86_64).
const PT_REGS_SIZE: u64 = 21 * 8;
const PT_REGS_RBP: usize = 4 * 8;
const PT_REGS_RIP: usize = 16 * 8;
const PT_REGS_CS: usize = 17 * 8;
const PT_REGS_RSP: usize = 19 * 8;

/// User registers (ip, sp, bp) of the sampled task.
struct UserRegs {
    ip: u64,
    sp: u64,
    bp: u64,
}

/// The sampled registers when the sample was taken in user mode; in kernel mode, the user
/// registers saved at the top of the task's kernel stack, when the loader told us where the
/// stack is (BTF).
#[inline(always)]
fn user_regs(ctx: &PerfEventContext) -> Option<UserRegs> {
    // SAFETY: a perf_event program's context is a `bpf_perf_event_data`.
    let regs = unsafe { &(*(ctx.as_ptr() as *const bpf_perf_event_data)).regs };
    if regs.cs & 3 == 3 {
        return Some(UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        });
    }
    let stack_offset = crate::config(config::TASK_STACK_OFFSET) as usize;
    let thread_size = u64::from(crate::config(config::THREAD_SIZE));
    if stack_offset == 0 || thread_size == 0 {
        return None;
    }
    // SAFETY: the helper returns the current task; it is only read through the helper below.
    let task = unsafe { bpf_get_current_task() };
    let read = crate::read::<u64>;
    let stack = read(task, stack_offset)?;
    let pt_regs = stack.wrapping_add(thread_size).wrapping_sub(PT_REGS_SIZE);
    // A kernel thread, or a layout we do not know: no user mode saved there.
    if read(pt_regs, PT_REGS_CS)? & 3 != 3 {
        return None;
    }
    Some(UserRegs {
        ip: read(pt_regs, PT_REGS_RIP)?,
        sp: read(pt_regs, PT_REGS_RSP)?,
        bp: read(pt_regs, PT_REGS_RBP)?,
    })
}

/// Begins walking this sample's user stack with tables. Returns (doing nothing) when it cannot:
/// the process has no known mappings, its user registers cannot be had (a kernel-mode sample
/// without BTF), or the tail call failed; the caller then takes the frame-pointer stack.
#[inline(always)]
pub fn start(ctx: &PerfEventContext, key: &SampleKey, generation: u32) {
    // SAFETY: plain data, compared in place.
    if unsafe { PROCESS_MAPPINGS.get(&key.tgid) }
        .is_none_or(|mappings| mappings.incarnation != key.incarnation)
    {
        return;
    }
    let Some(regs) = user_regs(ctx) else {
        return;
    };
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value; nothing else runs on this CPU while the program does.
    let state = unsafe { &mut *state };
    state.key = *key;
    state.generation = generation;
    state.tail_calls = 0;
    state.ip = regs.ip;
    state.sp = regs.sp;
    state.bp = regs.bp;
    state.exact_ip = 1;
    state.trusted = 1;
    let traced = crate::config(config::TRACE_PID);
    state.trace = u32::from(traced != 0 && traced == key.tgid);
    state.last_kind = u32::from(kind::NO_ROW);
    state.stack.len = 0;
    // SAFETY: on success control never comes back; on failure it returns here.
    unsafe { UNWIND_PROGRAMS.tail_call(ctx, 0) };
}

/// One run of `bellows_unwind`.
#[inline(always)]
pub fn resume(ctx: &PerfEventContext) {
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `start`.
    let state = unsafe { &mut *state };
    // SAFETY: the value stays valid while the program runs (userspace replaces it whole).
    let Some(mappings) = (unsafe { PROCESS_MAPPINGS.get(&state.key.tgid) }) else {
        return finish(state, true);
    };
    // Replaced since `start` by another incarnation's (an exec on another CPU).
    if mappings.incarnation != state.key.incarnation {
        return finish(state, true);
    }
    let (mut end, mut count) = (TRACE_NEXT, 0u32);
    for i in 0..FRAMES_PER_CALL {
        let (ip, sp, bp, depth) = (state.ip, state.sp, state.bp, state.stack.len);
        let outcome = match step(state, mappings) {
            Step::Next => TRACE_NEXT,
            Step::Complete => TRACE_COMPLETE,
            Step::Truncated => TRACE_TRUNCATED,
        };
        // Stored whether traced or not: a branch here would double the verifier's paths at
        // every step.
        if let Some(slot) = state.batch.steps.get_mut(i) {
            *slot = TraceStep {
                depth: depth as u32,
                kind: state.last_kind as u8,
                outcome,
                _pad: [0; 2],
                ip,
                sp,
                bp,
            };
        }
        count = i as u32 + 1;
        if outcome != TRACE_NEXT {
            end = outcome;
            break;
        }
    }
    if state.trace != 0 {
        state.batch.tid = state.key.pid;
        state.batch.count = count;
        // A full ring buffer drops the batch: the trace is a debugging aid, and its depths
        // show the gap.
        let _ = UNWIND_TRACE.output::<TraceBatch>(&state.batch, 0);
    }
    match end {
        TRACE_COMPLETE => return finish(state, false),
        TRACE_TRUNCATED => return finish(state, true),
        _ => {}
    }
    state.tail_calls += 1;
    if state.tail_calls < MAX_TAIL_CALLS {
        // SAFETY: as in `start`.
        unsafe { UNWIND_PROGRAMS.tail_call(ctx, 0) };
    }
    finish(state, true);
}

enum Step {
    Next,
    Complete,
    Truncated,
}

/// Records the current frame and moves to its caller.
#[inline(always)]
fn step(state: &mut State, mappings: &ProcessMappings) -> Step {
    let len = state.stack.len as usize;
    if len >= MAX_STACK_DEPTH {
        return Step::Truncated;
    }
    state.stack.ips[len] = state.ip;
    state.stack.len = len as u64 + 1;
    let pc = if state.exact_ip != 0 {
        state.ip
    } else {
        state.ip.wrapping_sub(1)
    };
    state.exact_ip = 0;
    // A real address outside every known mapping: the process has mapped code since it was
    // read (a library loaded later).
    if state.trusted != 0 && find_mapping(mappings, pc).is_none() {
        crate::request_refresh(state.key.tgid, state.key.incarnation);
    }
    let Some(row) = find_row(mappings, pc) else {
        state.last_kind = u32::from(kind::NO_ROW);
        return frame_pointer_step(state);
    };
    state.last_kind = u32::from(row.kind);
    let cfa = match row.kind {
        kind::CFA_RSP => state.sp.wrapping_add(row.cfa_offset as i64 as u64),
        kind::CFA_RBP => state.bp.wrapping_add(row.cfa_offset as i64 as u64),
        kind::PLT => state
            .sp
            .wrapping_add(if state.ip & 15 >= 11 { 16 } else { 8 }),
        kind::SIGNAL => return signal_step(state),
        kind::END => return Step::Complete,
        _ => return frame_pointer_step(state),
    };
    let Some(ra) = read_u64(cfa.wrapping_sub(8)) else {
        return Step::Truncated;
    };
    let bp = if row.rbp_slot != 0 {
        let at = cfa.wrapping_add((row.rbp_slot as i64 * 8) as u64);
        let Some(bp) = read_u64(at) else {
            return Step::Truncated;
        };
        bp
    } else {
        state.bp
    };
    move_to(state, ra, cfa, bp)
}

/// Makes the caller's registers current; a zero ip is past the outermost frame.
#[inline(always)]
fn move_to(state: &mut State, ip: u64, sp: u64, bp: u64) -> Step {
    state.ip = ip;
    state.sp = sp;
    state.bp = bp;
    if ip == 0 {
        Step::Complete
    } else {
        Step::Next
    }
}

/// Steps a frame no row covers by its frame pointer: [rbp] is the caller's rbp, [rbp + 8] the
/// return address. A zero rbp is the outermost frame (the ABI's start-up code clears it).
#[inline(always)]
fn frame_pointer_step(state: &mut State) -> Step {
    count_error(ErrorKind::UnwindFpFrames);
    state.trusted = 0;
    let bp = state.bp;
    if bp == 0 {
        return Step::Complete;
    }
    let (Some(next_bp), Some(ra)) = (read_u64(bp), read_u64(bp.wrapping_add(8))) else {
        return Step::Truncated;
    };
    // The caller's frame lies above this one: a frame pointer that goes down is not one.
    if next_bp != 0 && next_bp <= bp {
        return Step::Truncated;
    }
    move_to(state, ra, bp.wrapping_add(16), next_bp)
}

/// Steps out of a signal trampoline: the interrupted frame's registers are in the ucontext that
/// the kernel pushed, at rsp.
#[inline(always)]
fn signal_step(state: &mut State) -> Step {
    let mcontext = state.sp.wrapping_add(UCONTEXT_MCONTEXT);
    let (Some(bp), Some(sp), Some(ip)) = (
        read_u64(mcontext.wrapping_add(SIGCONTEXT_RBP)),
        read_u64(mcontext.wrapping_add(SIGCONTEXT_RSP)),
        read_u64(mcontext.wrapping_add(SIGCONTEXT_RIP)),
    ) else {
        return Step::Truncated;
    };
    // The interrupted instruction itself, not a return address.
    state.exact_ip = 1;
    move_to(state, ip, sp, bp)
}

/// The row covering `pc`: its mapping (a binary search of the process's mappings), then its
/// page's rows (a binary search of at most 16 steps).
#[inline(always)]
fn find_row(mappings: &ProcessMappings, pc: u64) -> Option<Row> {
    let mapping = find_mapping(mappings, pc)?;
    let vaddr = pc.wrapping_sub(mapping.bias);
    let key = PageKey {
        file_id: mapping.file_id,
        page: (vaddr >> PAGE_SHIFT) as u32,
    };
    // SAFETY: plain data, copied out.
    let page = unsafe { UNWIND_PAGES.get(&key) }.copied()?;
    if page.count == 0 {
        return None;
    }
    let target = (vaddr & ((1 << PAGE_SHIFT) - 1)) as u16;
    // The last row whose pc_low <= target; rows[0].pc_low is 0, so there is one. Branch-free
    // halving keeps one verifier path per step.
    let mut lo: u32 = 0;
    let mut size: u32 = page.count;
    for _ in 0..16 {
        let half = size / 2;
        let mid = lo + half;
        let row = UNWIND_ROWS.get(page.first.wrapping_add(mid))?;
        let right = u32::from(half > 0 && row.pc_low <= target);
        lo += right * half;
        size -= half;
    }
    UNWIND_ROWS.get(page.first.wrapping_add(lo)).copied()
}

/// The mapping containing `pc`, by binary search of the sorted entries.
#[inline(always)]
fn find_mapping(mappings: &ProcessMappings, pc: u64) -> Option<Mapping> {
    let len = (mappings.len as usize).min(MAX_MAPPINGS);
    if len == 0 {
        return None;
    }
    let mut lo: usize = 0;
    let mut size: usize = len;
    for _ in 0..7 {
        let half = size / 2;
        let mid = lo + half;
        let start = mappings.entries.get(mid)?.start;
        let right = usize::from(half > 0 && start <= pc);
        lo += right * half;
        size -= half;
    }
    let m = *mappings.entries.get(lo)?;
    (m.start <= pc && pc < m.end).then_some(m)
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: the helper checks the address; a fault returns an error.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// Stores the walked stack and counts the sample. A truncated stack ends in [`TRUNCATED_FRAME`].
#[inline(always)]
fn finish(state: &mut State, truncated: bool) {
    if truncated {
        count_error(ErrorKind::UnwindTruncated);
        let len = state.stack.len as usize;
        if len < MAX_STACK_DEPTH {
            state.stack.ips[len] = TRUNCATED_FRAME;
            state.stack.len = len as u64 + 1;
        }
    }
    count_error(ErrorKind::Unwound);
    let mut key = state.key;
    key.user_stack = stack_key(
        store_walked(&state.stack, state.generation),
        ErrorKind::UserStackFull,
        ErrorKind::UserStackError,
    );
    count_sample(&key, state.generation);
}

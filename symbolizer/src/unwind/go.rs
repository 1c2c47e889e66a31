//! Rows from Go's `pcsp` tables: for every pc of a Go function, how many bytes the function
//! has pushed below its return address. CFA = rsp + spdelta + 8.
//!
//! rbp: Go saves the caller's rbp just below the return address, at CFA-16, in every function
//! with a frame (compiled code, and assembly without `NOFRAME`), in one of two prologues seen in
//! the fixtures' machine code:
//! - Go ≤ 1.20: `sub $n, %rsp; mov %rbp, n-8(%rsp); lea n-8(%rsp), %rbp` (the first pcsp change
//!   is to n, and the instruction right there is `mov %rbp, n-8(%rsp)`: `48 89 2c 24` when
//!   n = 8, `48 89 6c 24 d8` or `48 89 ac 24 d32`): saved from the next instruction on;
//! - Go ≥ 1.21: `push %rbp; mov %rsp, %rbp; sub $n, %rsp` (the first pcsp change is to 8, and
//!   the byte before it is `push %rbp`, `55`): saved from there.
//!
//! We emit [`Rbp::At(-16)`](Rbp::At) for every pc from that point on whose spdelta is
//! positive, [`Rbp::Unchanged`] elsewhere: before the save, and wherever the spdelta is 0 again
//! (after the epilogue's `add`/`pop`, where rbp holds the caller's value once more). Between
//! the epilogue's `mov n-8(%rsp), %rbp` (or `add`) and the return, the saved copy is still in
//! place, so `At(-16)` stays right there. A function whose first stack change matches neither
//! prologue (frameless code, assembly that pushes other registers) keeps `Unchanged`.
//!
//! Functions that switch stacks (SPWRITE: `runtime.asmcgocall` into C code on the thread's
//! stack, `runtime.systemstack`) move rsp where no `pcsp` delta follows. Their frame pointer
//! still leads back to the goroutine's stack (`asmcgocall` keeps it for this purpose), so
//! from their saved rbp on, wherever they have pushed something, they get the frame-pointer
//! rule instead: CFA = rbp + 16, the caller's rbp at CFA-16. Without a saved rbp of their own
//! (Go ≤ 1.20's `asmcgocall` has no frame, and its `pcsp` does not see its `sub` on the new
//! stack), they get that rule after their entry instruction: rbp is still their caller's, and
//! the walk skips that one caller (`runtime.cgocall`) rather than losing the stack.
//!
//! Functions the runtime ends tracebacks at (TOPFRAME: `runtime.goexit`, `runtime.mstart`,
//! `runtime.rt0_go`), and `runtime.mcall` and `runtime.morestack`, which begin the g0 stack
//! after a switch (no frame pointer of theirs leads back), are [`Cfa::Undefined`]. A function whose table is damaged is left to the
//! other sources. Rows cover `[entry, end of pcsp)`: the alignment padding after a function is
//! not described by its table and stays `Unknown`.

use object::{Object, ObjectSegment};

use super::{Builder, Cfa, Rbp, UnwindError, UnwindStats};
use crate::gopclntab::{GoTable, PcRun};

/// The machine code of the file's loadable segments, read by virtual address.
struct Code<'a> {
    data: &'a [u8],
    /// (vaddr, file offset, file size).
    loads: Vec<(u64, u64, u64)>,
}

impl<'a> Code<'a> {
    fn bytes(&self, va: u64, len: usize) -> Option<&'a [u8]> {
        let &(v, off, size) = self
            .loads
            .iter()
            .find(|&&(v, _, size)| va >= v && va - v < size)?;
        let at = usize::try_from(off.checked_add(va - v)?).ok()?;
        let avail = usize::try_from(size - (va - v)).ok()?;
        if len > avail {
            return None;
        }
        self.data.get(at..at.checked_add(len)?)
    }
}

/// Where the caller's rbp becomes saved at CFA-16, from the function's first stack change.
fn rbp_saved_from(code: &Code<'_>, runs: &[PcRun]) -> Option<u64> {
    let first = runs.iter().find(|r| r.value != 0)?;
    let p = first.start;
    if first.value == 8 && code.bytes(p.checked_sub(1)?, 1) == Some(&[0x55]) {
        return Some(p);
    }
    let disp = i64::from(first.value) - 8;
    if disp == 0 && code.bytes(p, 4) == Some(&[0x48, 0x89, 0x2c, 0x24]) {
        return Some(p + 4);
    }
    if let Some(&[0x48, 0x89, 0x6c, 0x24, d]) = code.bytes(p, 5) {
        if i64::from(d as i8) == disp {
            return Some(p + 5);
        }
    }
    if let Some(&[0x48, 0x89, 0xac, 0x24, d0, d1, d2, d3]) = code.bytes(p, 8) {
        if i64::from(i32::from_le_bytes([d0, d1, d2, d3])) == disp {
            return Some(p + 8);
        }
    }
    None
}

/// Adds one block per Go function with a readable `pcsp` table.
pub(super) fn collect(
    data: &[u8],
    obj: &object::File<'_>,
    table: &GoTable,
    b: &mut Builder,
    stats: &mut UnwindStats,
) -> Result<(), UnwindError> {
    let code = Code {
        data,
        loads: obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (s.address(), off, size)
            })
            .collect(),
    };
    let mut runs: Vec<PcRun> = Vec::new();
    for f in table.sp_deltas(data) {
        runs.clear();
        let Some(table_runs) = f.runs else {
            stats.go_without_table += 1;
            continue;
        };
        let mut damaged = false;
        for run in table_runs {
            match run {
                Ok(run) => runs.push(run),
                Err(_) => damaged = true,
            }
        }
        if damaged {
            stats.go_damaged += 1;
            continue;
        }
        if runs.is_empty() {
            stats.go_without_table += 1;
            continue;
        }
        stats.go_functions += 1;
        let saved = if f.top_frame {
            None
        } else {
            rbp_saved_from(&code, &runs)
        };
        b.begin(f.func.entry, f.func.end);
        for run in &runs {
            let cfa = if f.top_frame {
                Cfa::Undefined
            } else {
                // A delta of -8 is real: assembly that pops its own return address around a
                // syscall (`runtime/internal/syscall.Syscall6`'s vfork path) has CFA = rsp.
                match i32::try_from(i64::from(run.value) + 8) {
                    Ok(n) if n >= 0 => Cfa::Rsp(n),
                    _ => Cfa::Unknown,
                }
            };
            if f.sp_write && !f.top_frame && (run.value > 0 || saved.is_none()) {
                // Frameless: the entry instruction keeps its exact rule.
                let from = saved.unwrap_or(f.func.entry + 1);
                if run.start < from {
                    b.push(run.start, from.min(run.end), cfa, Rbp::Unchanged)?;
                }
                if run.end > from {
                    b.push(run.start.max(from), run.end, Cfa::Rbp(16), Rbp::At(-16))?;
                }
                continue;
            }
            match saved {
                Some(at) if run.value > 0 && run.end > at => {
                    if run.start < at {
                        b.push(run.start, at, cfa, Rbp::Unchanged)?;
                    }
                    b.push(run.start.max(at), run.end, cfa, Rbp::At(-16))?;
                }
                _ => b.push(run.start, run.end, cfa, Rbp::Unchanged)?,
            }
        }
        b.end();
    }
    Ok(())
}

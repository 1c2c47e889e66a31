//! pc-value tables: the run-length encoded `pc → value` maps behind lines (`pcln`), files
//! (`pcfile`) and inline-tree indices (`pcdata[2]`).
//!
//! A table is a sequence of `(value delta, pc delta)` pairs of unsigned LEB128 varints. The value
//! starts at -1 and the pc at the function's entry; the value delta is zig-zag encoded (low bit
//! set: negative); the pc delta counts pc quanta. After a pair, the value holds for
//! `[previous pc, pc)`. A zero value delta after the first pair ends the table.

use std::ops::Range;

use super::reader::varint_prefix;

/// Steps a well-formed table needs beyond one per pc quantum of the function: a table never has
/// more runs than its function has quanta, so anything past this is damage.
const SLACK_STEPS: u64 = 64;

/// Where pc-value tables live and how pcs count.
#[derive(Debug, Clone)]
pub(super) struct PcTab {
    /// File range of `pctab`; table offsets count from its start.
    pub range: Range<usize>,
    /// Bytes per pc delta unit (1 on amd64, 4 on arm64).
    pub quantum: u64,
}

impl PcTab {
    /// The value at `target` of the table at `off`, for a function spanning `entry..end`. None
    /// when the function has no such table (`off == 0`), the table ends before `target`, or the
    /// table is damaged. Bounded by the table's bytes and by the function's size.
    pub fn value(&self, data: &[u8], off: u32, entry: u64, end: u64, target: u64) -> Option<i32> {
        if off == 0 || target < entry {
            return None;
        }
        let start = self.range.start.checked_add(usize::try_from(off).ok()?)?;
        let mut table = data.get(start..self.range.end.min(data.len()))?;
        let max_steps = (end.saturating_sub(entry) / self.quantum).saturating_add(SLACK_STEPS);
        let mut value: i32 = -1;
        let mut pc = entry;
        let mut step = 0u64;
        while step < max_steps {
            let (uvdelta, n) = varint_prefix(table)?;
            table = table.get(n..)?;
            if uvdelta == 0 && step > 0 {
                return None;
            }
            // Values are 32-bit in the Go runtime: truncation is the format's own arithmetic.
            let half = (uvdelta >> 1) as i32;
            let delta = if uvdelta & 1 != 0 { !half } else { half };
            value = value.wrapping_add(delta);
            let (pcdelta, n) = varint_prefix(table)?;
            table = table.get(n..)?;
            pc = pc.checked_add(pcdelta.checked_mul(self.quantum)?)?;
            if target < pc {
                return Some(value);
            }
            step += 1;
        }
        None
    }
}

/// One run of a pc-value table: `value` holds for `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcRun {
    /// First address of the run (ELF virtual address).
    pub start: u64,
    /// First address past the run.
    pub end: u64,
    /// The table's value over the run.
    pub value: i32,
}

/// The table ended in the middle of a pair, ran past its function, or never ended: its runs
/// cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedTable;

/// The runs of one pc-value table, in address order, from the function's entry; see
/// [`PcTab::runs`]. Yields at most one `Err`, then ends.
#[derive(Debug, Clone)]
pub struct PcRuns<'a> {
    table: &'a [u8],
    quantum: u64,
    value: i32,
    pc: u64,
    end: u64,
    steps_left: u64,
    first: bool,
    done: bool,
}

impl Iterator for PcRuns<'_> {
    type Item = Result<PcRun, DamagedTable>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.step() {
                Ok(Some(run)) if run.start == run.end => continue,
                Ok(Some(run)) => return Some(Ok(run)),
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl PcRuns<'_> {
    /// Decodes the next pair: Ok(None) at the end of the table.
    fn step(&mut self) -> Result<Option<PcRun>, DamagedTable> {
        if self.steps_left == 0 {
            return Err(DamagedTable);
        }
        self.steps_left -= 1;
        let (uvdelta, n) = varint_prefix(self.table).ok_or(DamagedTable)?;
        self.table = self.table.get(n..).ok_or(DamagedTable)?;
        if uvdelta == 0 && !self.first {
            return Ok(None);
        }
        self.first = false;
        // Values are 32-bit in the Go runtime: truncation is the format's own arithmetic.
        let half = (uvdelta >> 1) as i32;
        let delta = if uvdelta & 1 != 0 { !half } else { half };
        self.value = self.value.wrapping_add(delta);
        let (pcdelta, n) = varint_prefix(self.table).ok_or(DamagedTable)?;
        self.table = self.table.get(n..).ok_or(DamagedTable)?;
        let start = self.pc;
        let end = pcdelta
            .checked_mul(self.quantum)
            .and_then(|d| start.checked_add(d))
            .filter(|&e| e <= self.end)
            .ok_or(DamagedTable)?;
        self.pc = end;
        Ok(Some(PcRun {
            start,
            end,
            value: self.value,
        }))
    }
}

impl PcTab {
    /// Every run of the table at `off` for a function spanning `entry..end`; a run past `end`
    /// is damage. None when the function has no table (`off == 0`) or the offset is outside
    /// `pctab`. Bounded like [`Self::value`].
    pub fn runs<'a>(&self, data: &'a [u8], off: u32, entry: u64, end: u64) -> Option<PcRuns<'a>> {
        if off == 0 || end < entry {
            return None;
        }
        let start = self.range.start.checked_add(usize::try_from(off).ok()?)?;
        let table = data.get(start..self.range.end.min(data.len()))?;
        Some(PcRuns {
            table,
            quantum: self.quantum,
            value: -1,
            pc: entry,
            end,
            steps_left: ((end - entry) / self.quantum).saturating_add(SLACK_STEPS),
            first: true,
            done: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(bytes: &[u8]) -> (PcTab, Vec<u8>) {
        // Offset 0 means "no table", so tables start at 1.
        let mut data = vec![0xaa];
        data.extend_from_slice(bytes);
        (
            PcTab {
                range: 0..data.len(),
                quantum: 1,
            },
            data,
        )
    }

    #[test]
    fn steps_through_zigzag_deltas() {
        // -1 + 11 = 10 over [0x100, 0x104); 10 + 2 = 12 over [0x104, 0x10a); end.
        let (t, d) = tab(&[22, 4, 4, 6, 0]);
        let v = |pc| t.value(&d, 1, 0x100, 0x200, pc);
        assert_eq!(v(0x100), Some(10));
        assert_eq!(v(0x103), Some(10));
        assert_eq!(v(0x104), Some(12));
        assert_eq!(v(0x109), Some(12));
        assert_eq!(v(0x10a), None, "past the table's end");
        assert_eq!(v(0xff), None, "before the entry");
        assert_eq!(t.value(&d, 0, 0x100, 0x200, 0x100), None, "no table");
    }

    #[test]
    fn negative_deltas_and_quantum() {
        // -1 + 6 = 5 over 2 quanta; 5 - 3 = 2 (zig-zag 5) over 1 quantum.
        let (mut t, d) = tab(&[12, 2, 5, 1, 0]);
        assert_eq!(t.value(&d, 1, 0, 100, 1), Some(5));
        assert_eq!(t.value(&d, 1, 0, 100, 2), Some(2));
        t.quantum = 4;
        assert_eq!(t.value(&d, 1, 0, 100, 7), Some(5));
        assert_eq!(t.value(&d, 1, 0, 100, 8), Some(2));
        assert_eq!(t.value(&d, 1, 0, 100, 12), None);
    }

    #[test]
    fn multibyte_varints() {
        // Value delta 300 (zig-zag 600 = 0xd8 0x04), pc delta 200 (0xc8 0x01).
        let (t, d) = tab(&[0xd8, 0x04, 0xc8, 0x01, 0]);
        assert_eq!(t.value(&d, 1, 0, 1000, 199), Some(299));
        assert_eq!(t.value(&d, 1, 0, 1000, 200), None);
    }

    #[test]
    fn damaged_tables_end_cleanly() {
        // Truncated in the middle of a pair.
        let (t, d) = tab(&[22]);
        assert_eq!(t.value(&d, 1, 0, 100, 5), None);
        // A varint that never ends.
        let (t, d) = tab(&[0xff; 16]);
        assert_eq!(t.value(&d, 1, 0, 100, 5), None);
        // An offset past the table.
        let (t, d) = tab(&[2, 2, 0]);
        assert_eq!(t.value(&d, 1000, 0, 100, 5), None);
        assert_eq!(t.value(&d, u32::MAX, 0, 100, 5), None);
        // A pc delta that overflows the address space.
        let (t, d) = tab(&[
            2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert_eq!(t.value(&d, 1, u64::MAX - 1, u64::MAX, u64::MAX), None);
    }

    #[test]
    fn runs_list_the_same_values() {
        let (t, d) = tab(&[22, 4, 4, 6, 0]);
        let runs: Vec<_> = t.runs(&d, 1, 0x100, 0x200).unwrap().collect();
        let run = |start, end, value| Ok(PcRun { start, end, value });
        assert_eq!(runs, [run(0x100, 0x104, 10), run(0x104, 0x10a, 12)]);
        for r in runs.iter().flatten() {
            for pc in r.start..r.end {
                assert_eq!(t.value(&d, 1, 0x100, 0x200, pc), Some(r.value));
            }
        }
        // Past the function's end, truncated, or endless: one error, then nothing.
        let runs: Vec<_> = t.runs(&d, 1, 0x100, 0x108).unwrap().collect();
        assert_eq!(runs, [run(0x100, 0x104, 10), Err(DamagedTable)]);
        let (t, d) = tab(&[22]);
        assert_eq!(
            t.runs(&d, 1, 0, 100).unwrap().collect::<Vec<_>>(),
            [Err(DamagedTable)]
        );
        let mut bytes = vec![2, 0];
        bytes.extend(std::iter::repeat_n([2u8, 0], 10_000).flatten());
        let (t, d) = tab(&bytes);
        assert_eq!(
            t.runs(&d, 1, 0, 16).unwrap().last(),
            Some(Err(DamagedTable))
        );
        assert!(t.runs(&d, 0, 0, 16).is_none(), "no table");
    }

    #[test]
    fn runs_that_never_advance_are_cut_off() {
        // Value +1 and pc +0, forever: a table that would never reach the target.
        let mut bytes = vec![2, 0];
        bytes.extend(std::iter::repeat_n([2u8, 0], 10_000).flatten());
        let (t, d) = tab(&bytes);
        assert_eq!(t.value(&d, 1, 0, 16, 8), None);
    }
}

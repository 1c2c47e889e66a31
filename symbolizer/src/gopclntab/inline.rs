//! Frames of one address, inlined calls included, from a function's inline tree.
//!
//! `pcdata[2]` (`PCDATA_InlTreeIndex`) maps a pc to an index into the function's inline tree
//! (a funcdata, `FUNCDATA_InlTree`), or -1 outside inlined code. Each tree entry names the
//! inlined function and gives `parentPc`, an offset from the entry of the physical function
//! where the inlined call sits: looking that pc up again gives the caller, which may itself be
//! inlined. Files and lines always come from the physical function's pcfile/pcln tables, at the
//! pc of the frame.
//!
//! `inlinedCall` records: Go 1.20+ 16 bytes `{funcID u8, _ [3]u8, nameOff i32, parentPc i32,
//! startLine i32}`; Go 1.12–1.19 20 bytes `{parent i16, funcID u8, _ u8, file i32, line i32,
//! func_ i32 (name offset), parentPc i32}`.

use super::{func::FuncRecord, reader::Bytes, GoTable, GoTableVersion};
use crate::Frame;

/// `PCDATA_InlTreeIndex`, stable since Go 1.12.
pub(super) const PCDATA_INL_TREE_INDEX: u32 = 2;
/// Inlining depth we follow at most; a deeper chain is a cycle or damage (real code rarely
/// exceeds 10).
pub(super) const MAX_INLINE_DEPTH: usize = 64;

/// Why frames could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FramesError {
    /// A record, name or inline tree entry points outside the file or is not text.
    Damaged,
    /// The inline chain is longer than [`MAX_INLINE_DEPTH`]: a cycle.
    TooDeep,
}

impl GoTableVersion {
    /// `FUNCDATA_InlTree`: 4 in Go 1.12–1.15 (after RegPointerMaps and StackObjects), 3 since
    /// Go 1.16 dropped RegPointerMaps.
    pub(super) fn funcdata_inl_tree(self) -> u32 {
        match self {
            Self::V12 => 4,
            _ => 3,
        }
    }

    /// Size of one `inlinedCall` record and the offsets of its name and parentPc fields.
    pub(super) fn inlined_call(self) -> (usize, usize, usize) {
        match self {
            Self::V120 => (16, 4, 8),
            _ => (20, 12, 16),
        }
    }
}

impl GoTable {
    /// Frames for `va` inside function record `f`: innermost inlined frame first, the physical
    /// function last.
    pub(super) fn frames(
        &self,
        b: Bytes<'_>,
        f: &FuncRecord,
        va: u64,
    ) -> Result<Vec<Frame>, FramesError> {
        let data = b.0;
        let position = |pc: u64| -> (Option<String>, Option<u32>) {
            let file = self
                .pctab
                .value(data, f.pcfile, f.entry, f.end, pc)
                .and_then(|n| self.file_name(data, f.cu_offset, n))
                .map(str::to_string);
            let line = self
                .pctab
                .value(data, f.pcln, f.entry, f.end, pc)
                .and_then(|l| u32::try_from(l).ok())
                .filter(|&l| l > 0);
            (file, line)
        };
        let physical = self
            .name(data, f.name_off)
            .ok_or(FramesError::Damaged)?
            .to_string();

        let (mut frames, cur) = match self.inlined_frames(b, f, va, &position) {
            Ok(found) => found,
            // Go 1.2–1.11 share one table layout but Go 1.9–1.11 wrote a different inline
            // tree; a tree we cannot read there still leaves the physical frame exact.
            Err(FramesError::Damaged) if self.version == GoTableVersion::V12 => (Vec::new(), va),
            Err(e) => return Err(e),
        };
        let (file, line) = position(cur);
        frames.push(Frame {
            function: physical,
            file,
            line,
            inlined: false,
            start_line: f.start_line,
        });
        Ok(frames)
    }

    /// The inlined frames at `va` and the pc of the call site in the physical function.
    #[allow(clippy::type_complexity)] // a private helper's two results
    fn inlined_frames(
        &self,
        b: Bytes<'_>,
        f: &FuncRecord,
        va: u64,
        position: &dyn Fn(u64) -> (Option<String>, Option<u32>),
    ) -> Result<(Vec<Frame>, u64), FramesError> {
        let mut frames = Vec::new();
        if !self.inline_trees {
            return Ok((frames, va));
        }
        let (Some(index_table), Some(tree)) = (
            self.pcdata(b, f, PCDATA_INL_TREE_INDEX),
            self.funcdata(b, f, self.version.funcdata_inl_tree()),
        ) else {
            return Ok((frames, va));
        };
        let (size, name_at, parent_at) = self.version.inlined_call();
        let mut cur = va;
        while let Some(index) = self.pctab.value(b.0, index_table, f.entry, f.end, cur) {
            // -1: not inside inlined code at this pc.
            let Ok(index) = usize::try_from(index) else {
                break;
            };
            if frames.len() >= MAX_INLINE_DEPTH {
                return Err(FramesError::TooDeep);
            }
            let call = index
                .checked_mul(size)
                .and_then(|o| tree.checked_add(o))
                .ok_or(FramesError::Damaged)?;
            let field = |k: usize| {
                call.checked_add(k)
                    .and_then(|at| b.i32(at))
                    .ok_or(FramesError::Damaged)
            };
            let name = self
                .name(b.0, field(name_at)?)
                .ok_or(FramesError::Damaged)?;
            let (file, line) = position(cur);
            // Go 1.20+ records carry the inlined function's start line after parentPc.
            let start_line = if self.version == GoTableVersion::V120 {
                field(parent_at + 4)
                    .ok()
                    .and_then(|l| u32::try_from(l).ok())
                    .filter(|&l| l > 0)
            } else {
                None
            };
            frames.push(Frame {
                function: name.to_string(),
                file,
                line,
                inlined: true,
                start_line,
            });
            // Continue at the call site, which must lie inside the function.
            cur = u64::try_from(field(parent_at)?)
                .ok()
                .and_then(|o| f.entry.checked_add(o))
                .filter(|&pc| pc < f.end)
                .ok_or(FramesError::Damaged)?;
        }
        Ok((frames, cur))
    }

    /// Decides how inline trees are read: Go 1.18+ funcdata count from the first of
    /// `gofunc_candidates` that decodes ([`Self::choose_gofunc`]); older tables point at their
    /// trees, which are used only when they decode ([`Self::absolute_trees_decode`]).
    pub(super) fn settle_inline_trees(&mut self, data: &[u8], gofunc_candidates: &[usize]) {
        let b = self.bytes(data);
        if self.version.relative_entries() {
            self.gofunc = self.choose_gofunc(b, gofunc_candidates);
        } else {
            self.inline_trees = self.absolute_trees_decode(b);
        }
    }

    /// The first of `candidates` (file offsets) that works as `moduledata.gofunc`: the inline
    /// trees it leads to decode into names that start in the name table and call sites inside
    /// their functions, for every function checked (up to [`GOFUNC_SAMPLE`], spread over the
    /// table). With no inline tree to check, the first candidate; with none that decodes, None
    /// (frames then lack inlined calls, nothing worse).
    fn choose_gofunc(&self, b: Bytes<'_>, candidates: &[usize]) -> Option<usize> {
        let mut any_tree = false;
        for &candidate in candidates {
            let (checked, valid) = self.check_trees(b, Some(candidate));
            any_tree |= checked > 0;
            if checked > 0 && valid == checked {
                return Some(candidate);
            }
        }
        if any_tree {
            None
        } else {
            candidates.first().copied()
        }
    }

    /// Whether the inline trees of a Go ≤ 1.17 table (absolute funcdata pointers) decode in the
    /// layout this decoder reads, Go 1.12's: Go 1.9–1.11 trees have another (no call-site pc),
    /// and reading them as Go 1.12's would invent inlined frames. True when no tree is sampled.
    fn absolute_trees_decode(&self, b: Bytes<'_>) -> bool {
        let (checked, valid) = self.check_trees(b, None);
        valid == checked
    }

    /// (trees checked, trees plausible) over up to [`GOFUNC_SAMPLE`] functions spread over the
    /// table, with Go 1.18+ funcdata offsets taken from `gofunc`.
    fn check_trees(&self, b: Bytes<'_>, gofunc: Option<usize>) -> (usize, usize) {
        let stride = (self.nfunc / (GOFUNC_SAMPLE * 8)).max(1);
        let (mut checked, mut valid) = (0, 0);
        for i in (0..self.nfunc).step_by(stride) {
            if checked >= GOFUNC_SAMPLE {
                break;
            }
            let Some(f) = self.record(b, i) else {
                continue;
            };
            let Some(tree) = self.funcdata_from(b, &f, self.version.funcdata_inl_tree(), gofunc)
            else {
                continue;
            };
            checked += 1;
            valid += usize::from(self.plausible_inlined_call(b, &f, tree));
        }
        (checked, valid)
    }

    /// Whether the first `inlinedCall` of a tree at `tree` looks real: its name starts a name,
    /// its call site lies inside the function, and its padding is zero.
    fn plausible_inlined_call(&self, b: Bytes<'_>, f: &FuncRecord, tree: usize) -> bool {
        let (_, name_at, parent_at) = self.version.inlined_call();
        let field = |k: usize| tree.checked_add(k).and_then(|at| b.i32(at));
        let (Some(name_off), Some(parent)) = (field(name_at), field(parent_at)) else {
            return false;
        };
        let Ok(off) = usize::try_from(name_off) else {
            return false;
        };
        // A name starts the table or follows the previous name's NUL. Names hold no control
        // characters, but may hold spaces: generic shapes (`go.shape.struct { … }`).
        let starts_a_name = off == 0
            || self
                .funcnametab
                .start
                .checked_add(off - 1)
                .and_then(|at| b.0.get(at))
                == Some(&0);
        let named = self
            .name(b.0, name_off)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c >= b' ' && c != 0x7f));
        let inside = u64::try_from(parent)
            .ok()
            .is_some_and(|p| p < f.end.saturating_sub(f.entry));
        // The padding after funcID is zero: bytes 1–3 (Go 1.20+), byte 3 (Go 1.12–1.19).
        let padding = match self.version {
            GoTableVersion::V120 => 1..4,
            _ => 3..4,
        };
        let padded = padding
            .map(|k| tree.checked_add(k).and_then(|at| b.u8(at)))
            .all(|byte| byte == Some(0));
        starts_a_name && named && inside && padded
    }
}

/// Inline trees checked per `gofunc` candidate.
const GOFUNC_SAMPLE: usize = 24;

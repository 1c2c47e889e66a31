//! Brendan Gregg's folded stacks, and the frame naming shared by every text output.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::profile::{Location, Recording, Sample};

/// The name of a frame whose address nothing is known about.
const UNKNOWN: &str = "[unknown]";

/// Renders `rec` as folded stacks, one line per distinct stack, sorted:
/// `comm;root;…;leaf count`.
///
/// - Each location contributes its frames caller → callee: the physical function, then the
///   functions inlined into it, innermost last.
/// - Kernel frames get the `_[k]` suffix perf and inferno use.
/// - An unsymbolized frame is `FILE+0xOFFSET`, `FILE` being the base name of its mapping's file
///   and `OFFSET` the file offset of the address; `[unknown]` when there is no mapping.
/// - `;` inside names becomes `:` (as `stackcollapse-perf.pl` does) and control characters
///   become spaces, so every line parses back.
///
/// Samples of different processes with the same comm and stack share a line.
pub fn folded(rec: &Recording) -> String {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &rec.samples {
        if sample.count == 0 {
            continue;
        }
        let stack = folded_stack(sample, Annotate::KernelOnly);
        let n = lines.entry(stack).or_insert(0);
        *n = n.saturating_add(sample.count);
    }
    let mut out = String::new();
    for (stack, count) in lines {
        let _ = writeln!(out, "{stack} {count}");
    }
    out
}

/// Which inferno annotations frame names get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Annotate {
    /// `_[k]` on kernel frames.
    KernelOnly,
    /// `_[k]` on kernel frames and `_[i]` on inlined user frames; inferno strips both from the
    /// labels it draws and colors the frames by them.
    KernelAndInlined,
}

/// `comm;root;…;leaf` for one sample.
pub(super) fn folded_stack(sample: &Sample, annotate: Annotate) -> String {
    let mut line = if sample.comm.is_empty() {
        UNKNOWN.to_owned()
    } else {
        sanitize(&sample.comm).into_owned()
    };
    for name in stack_names(sample, annotate) {
        line.push(';');
        line.push_str(&name);
    }
    line
}

/// The frame names of a sample, root first, leaf last.
pub(super) fn stack_names(sample: &Sample, annotate: Annotate) -> Vec<String> {
    let mut names = Vec::with_capacity(sample.stack.len());
    for loc in sample.stack.iter().rev() {
        location_names(loc, annotate, &mut names);
    }
    names
}

/// Appends the names of `loc`'s frames, caller → callee.
fn location_names(loc: &Location, annotate: Annotate, out: &mut Vec<String>) {
    let kernel_suffix = if loc.kernel { "_[k]" } else { "" };
    if loc.frames.is_empty() {
        out.push(format!("{}{kernel_suffix}", unsymbolized_name(loc)));
        return;
    }
    for frame in loc.frames.iter().rev() {
        let name = if frame.function.is_empty() {
            Cow::Borrowed(UNKNOWN)
        } else {
            sanitize(&frame.function)
        };
        let suffix = if loc.kernel {
            "_[k]"
        } else if frame.inlined && annotate == Annotate::KernelAndInlined {
            "_[i]"
        } else {
            ""
        };
        out.push(format!("{name}{suffix}"));
    }
}

/// `FILE+0xOFFSET` for an address nothing resolved, `[unknown]` without a usable mapping.
fn unsymbolized_name(loc: &Location) -> String {
    let Some(m) = loc.mapping.as_deref().filter(|_| !loc.kernel) else {
        return UNKNOWN.to_owned();
    };
    let Some(offset) = loc
        .address
        .checked_sub(m.start)
        .and_then(|delta| delta.checked_add(m.offset))
    else {
        return UNKNOWN.to_owned();
    };
    let base = m
        .file
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or(UNKNOWN);
    format!("{}+{offset:#x}", sanitize(base))
}

/// Makes a name safe inside a folded line.
fn sanitize(name: &str) -> Cow<'_, str> {
    if name.chars().any(|c| c == ';' || c.is_control()) {
        Cow::Owned(
            name.chars()
                .map(|c| match c {
                    ';' => ':',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::testdata;

    #[test]
    fn folded_lines_are_exact() {
        let rec = testdata::recording();
        assert_eq!(
            folded(&rec),
            "\
myapp;main.main;main.recurse;main.recurse;main.recurse 4
myapp;main.main;main.run;main.hot;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k] 3
myapp;main.main;main.run;main.inlinedHelper 5
myapp;main.main;main.run;main.inlinedHelper;libmystery.so+0x1234 2
other:proc;[unknown];semi:colon 1
"
        );
    }

    #[test]
    fn inlined_frames_can_be_annotated_for_inferno() {
        let rec = testdata::recording();
        let stack = folded_stack(&rec.samples[0], Annotate::KernelAndInlined);
        assert_eq!(stack, "myapp;main.main;main.run;main.inlinedHelper_[i]");
    }

    #[test]
    fn unsymbolized_names_use_the_file_offset() {
        use crate::profile::Mapping;
        use std::sync::Arc;
        let m = Arc::new(Mapping {
            start: 0x7f00_0000_0000,
            limit: 0x7f00_0001_0000,
            offset: 0x2000,
            file: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            build_id: None,
        });
        let at = |address, mapping: Option<Arc<Mapping>>, kernel| Location {
            address,
            mapping,
            frames: vec![],
            kernel,
        };
        let name = |l: &Location| {
            let mut v = vec![];
            location_names(l, Annotate::KernelOnly, &mut v);
            v.join(";")
        };
        assert_eq!(
            name(&at(0x7f00_0000_0010, Some(m.clone()), false)),
            "libc.so.6+0x2010"
        );
        assert_eq!(name(&at(0x10, Some(m), false)), "[unknown]");
        assert_eq!(name(&at(0x10, None, false)), "[unknown]");
        assert_eq!(
            name(&at(0xffff_ffff_8100_0000, None, true)),
            "[unknown]_[k]"
        );
    }
}

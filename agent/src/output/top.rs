//! The hottest functions as a table.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::folded::{stack_names, Annotate};
use crate::profile::Recording;

/// One function's share of the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    /// The function, named as in [`folded`](super::folded) output (kernel functions end in
    /// `_[k]`, unsymbolized addresses are `FILE+0xOFFSET`).
    pub function: String,
    /// Samples whose leaf (innermost frame of the first location) is this function.
    pub self_samples: u64,
    /// `self_samples` as a percentage of all samples.
    pub self_pct: f64,
    /// Samples with this function anywhere on the stack, each sample counted once even when
    /// the function recurses.
    pub total_samples: u64,
    /// `total_samples` as a percentage of all samples.
    pub total_pct: f64,
}

/// The `n` functions with the most self samples (ties: more total samples, then by name).
///
/// Inlined functions count as functions of their own. Percentages are of
/// [`Recording::total_samples`], 0 when there are no samples.
pub fn top(rec: &Recording, n: usize) -> Vec<TopRow> {
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    for sample in &rec.samples {
        if sample.count == 0 {
            continue;
        }
        let names = stack_names(sample, Annotate::KernelOnly);
        if let Some(leaf) = names.last() {
            let c = counts.entry(leaf.clone()).or_default();
            c.0 = c.0.saturating_add(sample.count);
        }
        let mut seen = HashSet::with_capacity(names.len());
        for name in names {
            if seen.contains(&name) {
                continue;
            }
            let c = counts.entry(name.clone()).or_default();
            c.1 = c.1.saturating_add(sample.count);
            seen.insert(name);
        }
    }
    let total = rec.total_samples();
    let pct = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / total as f64
        }
    };
    let mut rows: Vec<TopRow> = counts
        .into_iter()
        .map(|(function, (self_samples, total_samples))| TopRow {
            function,
            self_samples,
            self_pct: pct(self_samples),
            total_samples,
            total_pct: pct(total_samples),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(b.total_samples.cmp(&a.total_samples))
            .then_with(|| a.function.cmp(&b.function))
    });
    rows.truncate(n);
    rows
}

/// Renders `rows` as an aligned table under a one-line summary of how much of `total` samples
/// the rows' self samples cover:
///
/// ```text
/// Showing 2 functions accounting for 8 of 15 samples (53.33%)
///   self%   self  total%  total  function
///  33.33%      5  46.67%      7  main.inlinedHelper
///  20.00%      3  20.00%      3  do_syscall_64_[k]
/// ```
pub fn render_top(rows: &[TopRow], total: u64) -> String {
    let width = |n: u64| n.to_string().len();
    let count_w = rows
        .iter()
        .map(|r| width(r.self_samples).max(width(r.total_samples)))
        .max()
        .unwrap_or(0)
        .max("total".len() + 1);
    let covered = rows
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.self_samples));
    let covered_pct = if total == 0 {
        0.0
    } else {
        covered as f64 * 100.0 / total as f64
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Showing {} function{} accounting for {covered} of {total} samples ({covered_pct:.2}%)",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        out,
        "{:>7} {:>count_w$} {:>7} {:>count_w$}  function",
        "self%", "self", "total%", "total"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6.2}% {:>count_w$} {:>6.2}% {:>count_w$}  {}",
            r.self_pct,
            r.self_samples,
            r.total_pct,
            r.total_samples,
            r.function.replace(['\n', '\r'], " "),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::testdata;

    fn row<'a>(rows: &'a [TopRow], f: &str) -> &'a TopRow {
        rows.iter()
            .find(|r| r.function == f)
            .unwrap_or_else(|| panic!("no row for {f} in {rows:?}"))
    }

    #[test]
    fn self_and_total_counts() {
        let rec = testdata::recording();
        let rows = top(&rec, 100);
        let expect = [
            ("main.inlinedHelper", 5, 7),
            ("main.recurse", 4, 4),
            ("do_syscall_64_[k]", 3, 3),
            ("libmystery.so+0x1234", 2, 2),
            ("semi:colon", 1, 1),
            ("main.main", 0, 14),
            ("main.run", 0, 10),
            ("entry_SYSCALL_64_after_hwframe_[k]", 0, 3),
            ("main.hot", 0, 3),
            ("[unknown]", 0, 1),
        ];
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.function.as_str(), r.self_samples, r.total_samples))
            .collect();
        assert_eq!(got, expect);
        let inl = row(&rows, "main.inlinedHelper");
        assert!((inl.self_pct - 100.0 / 3.0).abs() < 1e-9);
        assert!((inl.total_pct - 700.0 / 15.0).abs() < 1e-9);
    }

    #[test]
    fn recursion_counts_once_per_sample() {
        let rec = testdata::recording();
        let rows = top(&rec, 100);
        let r = row(&rows, "main.recurse");
        assert_eq!((r.self_samples, r.total_samples), (4, 4));
        assert!((r.total_pct - 400.0 / 15.0).abs() < 1e-9);
        assert!(rows.iter().all(|r| r.total_pct <= 100.0));
    }

    #[test]
    fn n_limits_rows_and_empty_is_fine() {
        let rec = testdata::recording();
        assert_eq!(top(&rec, 2).len(), 2);
        let empty = Recording {
            samples: vec![],
            ..rec
        };
        assert!(top(&empty, 10).is_empty());
        assert_eq!(
            render_top(&[], 0),
            "Showing 0 functions accounting for 0 of 0 samples (0.00%)\n  \
             self%   self  total%  total  function\n"
        );
    }

    #[test]
    fn table_is_aligned() {
        let rec = testdata::recording();
        let table = render_top(&top(&rec, 3), rec.total_samples());
        assert_eq!(
            table,
            "\
Showing 3 functions accounting for 12 of 15 samples (80.00%)
  self%   self  total%  total  function
 33.33%      5  46.67%      7  main.inlinedHelper
 26.67%      4  26.67%      4  main.recurse
 20.00%      3  20.00%      3  do_syscall_64_[k]
"
        );
        let wide = [TopRow {
            function: "f".into(),
            self_samples: 12_345_678,
            self_pct: 100.0,
            total_samples: 12_345_678,
            total_pct: 100.0,
        }];
        let table = render_top(&wide, 12_345_678);
        let lines: Vec<_> = table.lines().skip(1).collect();
        assert_eq!(lines[0], "  self%     self  total%    total  function");
        assert_eq!(lines[1], "100.00% 12345678 100.00% 12345678  f");
    }
}

//! Prometheus text exposition (format 0.0.4): metric families as `# HELP`, `# TYPE` and sample
//! lines. Every part of the agent that publishes metrics renders through these helpers;
//! [`crate::run::metrics`] serves the result.

use std::fmt::Write as _;

/// Appends one metric family. Each value is `(labels, value)`, the labels as written between
/// braces (`reason="x"`), or empty for none.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// [`family`] with owned label strings.
pub fn family_owned(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    values: &[(String, u64)],
) {
    let borrowed: Vec<(&str, u64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(out, name, kind, help, &borrowed);
}

/// Appends a gauge family with one unlabelled floating-point value.
pub fn gauge_f64(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_help_type_and_samples() {
        let mut out = String::new();
        family(&mut out, "a_total", "counter", "As.", &[("", 1)]);
        family(
            &mut out,
            "b",
            "gauge",
            "Bs.",
            &[("k=\"x\"", 2), ("k=\"y\"", 3)],
        );
        gauge_f64(&mut out, "c_seconds", "Cs.", 0.5);
        assert_eq!(
            out,
            "# HELP a_total As.\n# TYPE a_total counter\na_total 1\n\
             # HELP b Bs.\n# TYPE b gauge\nb{k=\"x\"} 2\nb{k=\"y\"} 3\n\
             # HELP c_seconds Cs.\n# TYPE c_seconds gauge\nc_seconds 0.5\n"
        );
    }
}

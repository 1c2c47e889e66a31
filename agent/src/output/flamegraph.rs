//! Flame graph SVG through inferno.

use std::collections::BTreeMap;

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::folded::{folded_stack, Annotate};
use super::{OutputError, Result};
use crate::profile::Recording;

/// Renders `rec` as an interactive flame graph (SVG with inferno's search and zoom script);
/// [`OutputError::NoSamples`] when there is nothing to draw.
///
/// Frames are the folded stacks of [`folded`](super::folded), root = comm. Colors follow the
/// frame's kind: kernel frames orange, inlined frames aqua, others by inferno's "java" palette
/// heuristics (Go and other dotted names green, C++/Rust `::` names yellow, C names red); the
/// color of a name is derived from its hash, so the same input always gives the same SVG.
pub fn flamegraph_svg(rec: &Recording, title: &str) -> Result<Vec<u8>> {
    flamegraph_svg_inner(rec, title)
}

/// A well-formed SVG that says no samples were recorded, for a recording that ended before
/// its first sample (e.g. interrupted at once): every requested output still gets written.
pub fn empty_flamegraph_svg(title: &str) -> Vec<u8> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"80\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"600\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">{}</text>\n\
         <text x=\"600\" y=\"60\" text-anchor=\"middle\" font-size=\"14\">No samples were recorded.</text>\n\
         </svg>\n",
        escape(title)
    )
    .into_bytes()
}

fn flamegraph_svg_inner(rec: &Recording, title: &str) -> Result<Vec<u8>> {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &rec.samples {
        if sample.count == 0 {
            continue;
        }
        let n = stacks
            .entry(folded_stack(sample, Annotate::KernelAndInlined))
            .or_insert(0);
        *n = n.saturating_add(sample.count);
    }
    if stacks.is_empty() {
        return Err(OutputError::NoSamples);
    }
    let lines: Vec<String> = stacks
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();

    let mut opt = Options::default();
    opt.title = title.replace(['\n', '\r'], " ");
    opt.subtitle = Some(format!(
        "{} samples at {} Hz over {:.1} s",
        rec.total_samples(),
        rec.frequency_hz,
        rec.duration.as_secs_f64()
    ));
    opt.count_name = "samples".to_owned();
    opt.colors = Palette::Multi(MultiPalette::Java);
    opt.hash = true;

    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut svg)
        .map_err(OutputError::FlameGraph)?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::testdata;

    /// Checks that `svg` is one balanced tree of XML elements (enough to catch truncation and
    /// unescaped names; a full parser is a dev-dependency we do without).
    pub(crate) fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            rest = &rest[open..];
            if let Some(after) = rest.strip_prefix("<!--") {
                let end = after.find("-->").expect("unterminated comment");
                rest = &after[end + 3..];
                continue;
            }
            if let Some(after) = rest.strip_prefix("<![CDATA[") {
                let end = after.find("]]>").expect("unterminated CDATA");
                rest = &after[end + 3..];
                continue;
            }
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("empty tag");
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        assert!(!rest.contains('>') || rest.trim().is_empty());
    }

    #[test]
    fn svg_is_well_formed_and_names_the_hot_function() {
        let rec = testdata::recording();
        let svg = flamegraph_svg(&rec, "myapp <cpu> & more").unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert_well_formed(&svg);
        assert!(svg.contains("main.inlinedHelper"));
        assert!(svg.contains("do_syscall_64"));
        assert!(svg.contains("myapp &lt;cpu&gt; &amp; more"));
        assert!(
            !svg.contains("_[i]") && !svg.contains("_[k]"),
            "annotations leak"
        );
        // Deterministic colors: the same input renders the same bytes.
        assert_eq!(
            flamegraph_svg(&rec, "myapp <cpu> & more").unwrap(),
            svg.into_bytes()
        );
    }

    #[test]
    fn empty_recording() {
        let rec = Recording {
            samples: vec![],
            ..testdata::recording()
        };
        let err = flamegraph_svg(&rec, "empty").unwrap_err();
        assert!(matches!(err, OutputError::NoSamples), "{err}");
    }
}

//! Keeping within Pyroscope's default limits, so nothing we send is rejected for its shape:
//! at most 30 labels per series, label names ≤ 1024 bytes of `[a-zA-Z_][a-zA-Z0-9_]*`, values
//! ≤ 2048 bytes, ≤ 16,000 samples and ≤ 4 MiB uncompressed per profile, and an ingestion burst
//! of 2 MB per tenant (a single larger profile is refused with 429 forever).
//!
//! Labels are trimmed; profiles are split by samples into pieces of the same series and window,
//! which the server merges. Everything trimmed is counted.

use std::collections::HashSet;

use prost::Message;

use crate::profile::{build_pprof_with, pprof, BuildOptions, Recording};

pub const MAX_LABELS: usize = 30;
pub const MAX_LABEL_NAME_BYTES: usize = 1024;
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;
pub const MAX_SAMPLES: usize = 16_000;
/// Uncompressed bytes per profile: under the 4 MiB size limit and well under the 2 MB burst of
/// the default ingestion rate limit, which is charged the uncompressed size, so that one profile
/// never exhausts a tenant's burst on its own.
pub const MAX_PROFILE_BYTES: usize = 1_500_000;
/// Labels never dropped to make room.
const ESSENTIAL: [&str; 2] = ["__name__", "service_name"];

/// What was changed to fit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    pub labels_dropped: u64,
    pub names_sanitized: u64,
    pub values_truncated: u64,
    /// Extra profiles made by splitting.
    pub splits: u64,
}

impl Trimmed {
    pub fn add(&mut self, o: &Trimmed) {
        self.labels_dropped += o.labels_dropped;
        self.names_sanitized += o.names_sanitized;
        self.values_truncated += o.values_truncated;
        self.splits += o.splits;
    }
}

/// Series labels the server accepts, from labels in priority order: names sanitized, values
/// truncated at a character boundary, duplicates and empty values dropped (the first wins), and
/// the lowest-priority labels dropped beyond [`MAX_LABELS`].
pub fn fit_labels(labels: &[(String, String)], t: &mut Trimmed) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(String, String)> = Vec::with_capacity(labels.len().min(MAX_LABELS));
    for (name, value) in labels {
        let clean = sanitize_name(name);
        if clean != *name {
            t.names_sanitized += 1;
        }
        if value.is_empty() || !seen.insert(clean.clone()) {
            continue;
        }
        let value = if value.len() > MAX_LABEL_VALUE_BYTES {
            t.values_truncated += 1;
            truncate(value, MAX_LABEL_VALUE_BYTES).to_string()
        } else {
            value.clone()
        };
        out.push((clean, value));
    }
    while out.len() > MAX_LABELS {
        // Drop the last label that is not essential.
        match out
            .iter()
            .rposition(|(n, _)| !ESSENTIAL.contains(&n.as_str()))
        {
            Some(i) => {
                out.remove(i);
                t.labels_dropped += 1;
            }
            None => break,
        }
    }
    out
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, at most [`MAX_LABEL_NAME_BYTES`]; other characters become `_`.
/// `__name__` is kept as it is.
pub fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_LABEL_NAME_BYTES)
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The recording as one or more pprof profiles, each within [`MAX_SAMPLES`] and
/// [`MAX_PROFILE_BYTES`], without per-sample labels (they would become series labels).
pub fn split_profiles(rec: &Recording, t: &mut Trimmed) -> Vec<pprof::Profile> {
    let options = BuildOptions {
        sample_labels: false,
    };
    let mut out = Vec::new();
    // Work list of sample ranges; halves are pushed back until each piece fits.
    let mut pending = vec![rec.samples.as_slice()];
    while let Some(samples) = pending.pop() {
        let piece = Recording {
            samples: samples.to_vec(),
            ..rec.clone_header()
        };
        let profile = build_pprof_with(&piece, &options);
        let fits =
            profile.sample.len() <= MAX_SAMPLES && profile.encoded_len() <= MAX_PROFILE_BYTES;
        if fits || samples.len() <= 1 {
            if !profile.sample.is_empty() || out.is_empty() && pending.is_empty() {
                out.push(profile);
            }
            continue;
        }
        let (a, b) = samples.split_at(samples.len() / 2);
        // Second half first so that pieces come out in order.
        pending.push(b);
        pending.push(a);
    }
    t.splits += out.len().saturating_sub(1) as u64;
    out
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::profile::{Location, Sample};

    fn l(n: &str, v: &str) -> (String, String) {
        (n.to_string(), v.to_string())
    }

    #[test]
    fn labels_are_sanitized_truncated_and_capped_keeping_the_essential_ones() {
        let mut labels = vec![l("__name__", "process_cpu"), l("service_name", "svc")];
        labels.push(l("app.kubernetes.io/name", "web"));
        labels.push(l("9lives", "x"));
        labels.push(l("team", &"é".repeat(2000)));
        labels.push(l("team", "duplicate"));
        labels.push(l("empty", ""));
        for i in 0..40 {
            labels.push(l(&format!("extra_{i}"), "v"));
        }
        let mut t = Trimmed::default();
        let out = fit_labels(&labels, &mut t);
        assert_eq!(out.len(), MAX_LABELS);
        assert_eq!(out[0], l("__name__", "process_cpu"));
        assert_eq!(out[1], l("service_name", "svc"));
        assert_eq!(out[2].0, "app_kubernetes_io_name");
        assert_eq!(out[3].0, "_lives");
        assert!(out[4].1.len() <= MAX_LABEL_VALUE_BYTES);
        assert!(out[4].1.chars().all(|c| c == 'é'));
        assert!(!out.iter().any(|(n, _)| n == "empty"));
        assert_eq!(out.iter().filter(|(n, _)| n == "team").count(), 1);
        // The lowest-priority labels went.
        assert_eq!(out.last().unwrap().0, "extra_24");
        assert_eq!(t.labels_dropped, 15);
        assert_eq!(t.values_truncated, 1);
        assert_eq!(t.names_sanitized, 2);
        for (n, _) in &out {
            let mut chars = n.chars();
            let first = chars.next().unwrap();
            assert!(first.is_ascii_alphabetic() || first == '_');
            assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
    }

    fn big_recording(stacks: usize, depth: usize) -> Recording {
        let samples = (0..stacks)
            .map(|i| Sample {
                stack: (0..depth)
                    .map(|d| {
                        Arc::new(Location {
                            address: (i * depth + d) as u64 * 16 + 0x1000,
                            mapping: None,
                            frames: vec![symbolizer::Frame {
                                function: format!("pkg.function_{i}_{d}_with_a_long_name"),
                                file: Some(format!("/src/pkg/file_{i}.go")),
                                line: Some(d as u32 + 1),
                                inlined: false,
                                start_line: None,
                            }],
                            kernel: false,
                        })
                    })
                    .collect(),
                count: 1 + i as u64 % 7,
                pid: i as u32,
                tid: i as u32,
                comm: "w".into(),
            })
            .collect();
        Recording {
            frequency_hz: 97,
            start: SystemTime::now(),
            duration: Duration::from_secs(15),
            samples,
        }
    }

    #[test]
    fn big_recordings_split_into_pieces_that_fit_and_sum_to_the_input() {
        let rec = big_recording(20_000, 12);
        let mut t = Trimmed::default();
        let pieces = split_profiles(&rec, &mut t);
        assert!(pieces.len() >= 2, "{} pieces", pieces.len());
        assert_eq!(t.splits, pieces.len() as u64 - 1);
        let period = rec.period_nanos() as i64;
        let mut total = 0;
        for p in &pieces {
            assert!(p.sample.len() <= MAX_SAMPLES);
            assert!(p.encoded_len() <= MAX_PROFILE_BYTES);
            assert_eq!(p.time_nanos, pieces[0].time_nanos, "same window");
            assert!(
                p.sample.iter().all(|s| s.label.is_empty()),
                "no sample labels"
            );
            total += p.sample.iter().map(|s| s.value[0]).sum::<i64>();
        }
        let want: i64 = rec.samples.iter().map(|s| s.count as i64 * period).sum();
        assert_eq!(total, want);
    }

    #[test]
    fn small_recordings_stay_whole_and_merge_threads() {
        let mut rec = big_recording(3, 4);
        // Same stack from another thread: merged once labels are gone.
        let mut twin = rec.samples[0].clone();
        twin.tid += 100;
        rec.samples.push(twin);
        let mut t = Trimmed::default();
        let pieces = split_profiles(&rec, &mut t);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].sample.len(), 3);
        assert_eq!(t, Trimmed::default());
    }
}

//! [`Recording`] → [`pprof::Profile`].

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::UNIX_EPOCH;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::{pprof, Location, Mapping, Recording};

/// The file name of the synthetic mapping that holds every kernel location, as perf names it.
/// pprof skips symbolization of mappings whose name starts with `[`.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// Builds the CPU profile of `rec` as specified in `docs/pyroscope.md`.
///
/// - `sample_type = [cpu/nanoseconds]`, `period_type = cpu/nanoseconds`,
///   `period = 1e9 / frequency_hz` ([`Recording::period_nanos`]), `value = count × period`;
/// - one [`pprof::Location`] per distinct (mapping, address, kernel) — compared by value, not by
///   `Arc` pointer — whose lines are the location's frames, inlined first, physical last;
///   unsymbolized locations keep address and mapping and have no lines;
/// - one [`pprof::Function`] per distinct (name, file), with the start line of the first frame
///   that knows it (Go 1.20+ tables record it; 0 when unknown);
/// - kernel locations share one mapping named [`KERNEL_MAPPING`] spanning the kernel addresses
///   seen (a kernel location's own `mapping`, if any, is ignored);
/// - samples carry a numeric label `pid` and a string label `comm`; samples with the same
///   (stack, pid, comm) are merged and samples with a zero count are dropped.
///
/// A mapping's `has_*` flags are set only when every location of that mapping has the
/// information, so that pprof or a server may still symbolize what we could not.
pub fn build_pprof(rec: &Recording) -> pprof::Profile {
    build_pprof_with(rec, &BuildOptions::default())
}

/// Choices [`build_pprof`] makes one way for files and another for a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Label samples with `pid`, `tid` and `comm`. Pyroscope turns sample labels into series
    /// labels, so profiles pushed there leave them out (one series per thread would exceed its
    /// series limits), and samples differing only by them are merged.
    pub sample_labels: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            sample_labels: true,
        }
    }
}

/// [`build_pprof`] with options.
pub fn build_pprof_with(rec: &Recording, options: &BuildOptions) -> pprof::Profile {
    let mut b = Builder::new(rec);
    b.sample_labels = options.sample_labels;
    for sample in &rec.samples {
        if sample.count == 0 {
            continue;
        }
        let ids: Vec<u64> = sample.stack.iter().map(|l| b.location(l)).collect();
        let key = if options.sample_labels {
            (ids, sample.pid, sample.tid, sample.comm.as_str())
        } else {
            (ids, 0, 0, "")
        };
        match b.sample_ix.get(&key) {
            Some(&ix) => b.counts[ix] = b.counts[ix].saturating_add(sample.count),
            None => {
                b.sample_ix.insert(key, b.counts.len());
                b.counts.push(sample.count);
            }
        }
    }
    b.finish()
}

/// Serializes `p` as a gzipped protobuf, the encoding pprof readers and Pyroscope expect.
pub fn encode_gzip(p: &pprof::Profile) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, and deflate of in-memory bytes has no error path either.
    write_gzip(p, &mut out).expect("gzip into a Vec is infallible");
    out
}

/// Writes `p` as a gzipped protobuf to `w`.
pub fn write_gzip<W: Write>(p: &pprof::Profile, w: W) -> io::Result<()> {
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&p.encode_to_vec())?;
    gz.finish()?.flush()
}

/// Interning tables under construction. Everything borrows from the recording.
struct Builder<'a> {
    rec: &'a Recording,
    strings: Vec<String>,
    string_ix: HashMap<&'a str, i64>,
    mappings: Vec<pprof::Mapping>,
    mapping_ix: HashMap<&'a Mapping, u64>,
    kernel_mapping: Option<u64>,
    kernel_range: Option<(u64, u64)>,
    locations: Vec<pprof::Location>,
    /// Fast path: most stacks share `Arc<Location>`s.
    location_by_ptr: HashMap<*const Location, u64>,
    location_ix: HashMap<(u64, u64, bool), u64>,
    functions: Vec<pprof::Function>,
    function_ix: HashMap<(&'a str, Option<&'a str>), u64>,
    /// Per mapping id − 1: (every location has lines, every line has a file, every line has a
    /// line number).
    mapping_quality: Vec<(bool, bool, bool)>,
    sample_ix: HashMap<(Vec<u64>, u32, u32, &'a str), usize>,
    counts: Vec<u64>,
    sample_labels: bool,
}

impl<'a> Builder<'a> {
    fn new(rec: &'a Recording) -> Self {
        Builder {
            rec,
            strings: vec![String::new()],
            string_ix: HashMap::from([("", 0)]),
            mappings: Vec::new(),
            mapping_ix: HashMap::new(),
            kernel_mapping: None,
            kernel_range: None,
            locations: Vec::new(),
            location_by_ptr: HashMap::new(),
            location_ix: HashMap::new(),
            functions: Vec::new(),
            function_ix: HashMap::new(),
            mapping_quality: Vec::new(),
            sample_ix: HashMap::new(),
            counts: Vec::new(),
            sample_labels: true,
        }
    }

    fn string(&mut self, s: &'a str) -> i64 {
        if let Some(&ix) = self.string_ix.get(s) {
            return ix;
        }
        let ix = i64::try_from(self.strings.len()).unwrap_or(i64::MAX);
        self.strings.push(s.to_owned());
        self.string_ix.insert(s, ix);
        ix
    }

    fn new_mapping(&mut self, m: pprof::Mapping) -> u64 {
        let id = self.mappings.len() as u64 + 1;
        self.mappings.push(pprof::Mapping { id, ..m });
        self.mapping_quality.push((true, true, true));
        id
    }

    fn mapping(&mut self, m: &'a Mapping) -> u64 {
        if let Some(&id) = self.mapping_ix.get(m) {
            return id;
        }
        let filename = self.string(&m.file);
        let build_id = match &m.build_id {
            Some(b) => self.string(b),
            None => 0,
        };
        let id = self.new_mapping(pprof::Mapping {
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename,
            build_id,
            ..Default::default()
        });
        self.mapping_ix.insert(m, id);
        id
    }

    fn kernel_mapping(&mut self, address: u64) -> u64 {
        let end = address.saturating_add(1);
        self.kernel_range = Some(match self.kernel_range {
            Some((lo, hi)) => (lo.min(address), hi.max(end)),
            None => (address, end),
        });
        if let Some(id) = self.kernel_mapping {
            return id;
        }
        let filename = self.string(KERNEL_MAPPING);
        let id = self.new_mapping(pprof::Mapping {
            filename,
            ..Default::default()
        });
        self.kernel_mapping = Some(id);
        id
    }

    fn function(&mut self, name: &'a str, file: Option<&'a str>, start_line: Option<u32>) -> u64 {
        if let Some(&id) = self.function_ix.get(&(name, file)) {
            if let (Some(line), Some(f)) = (start_line, self.functions.get_mut(id as usize - 1)) {
                if f.start_line == 0 {
                    f.start_line = i64::from(line);
                }
            }
            return id;
        }
        let name_ix = self.string(name);
        let filename = match file {
            Some(f) => self.string(f),
            None => 0,
        };
        let id = self.functions.len() as u64 + 1;
        self.functions.push(pprof::Function {
            id,
            name: name_ix,
            system_name: name_ix,
            filename,
            start_line: start_line.map_or(0, i64::from),
        });
        self.function_ix.insert((name, file), id);
        id
    }

    fn location(&mut self, loc: &'a std::sync::Arc<Location>) -> u64 {
        let ptr = std::sync::Arc::as_ptr(loc);
        if let Some(&id) = self.location_by_ptr.get(&ptr) {
            return id;
        }
        let loc: &'a Location = loc;
        let mapping_id = match (&loc.mapping, loc.kernel) {
            (_, true) => self.kernel_mapping(loc.address),
            (Some(m), false) => self.mapping(m),
            (None, false) => 0,
        };
        let key = (mapping_id, loc.address, loc.kernel);
        let id = match self.location_ix.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.locations.len() as u64 + 1;
                let line = loc
                    .frames
                    .iter()
                    .map(|f| pprof::Line {
                        function_id: self.function(&f.function, f.file.as_deref(), f.start_line),
                        line: f.line.map_or(0, i64::from),
                        column: 0,
                    })
                    .collect();
                if let Some(q) = mapping_id
                    .checked_sub(1)
                    .and_then(|ix| self.mapping_quality.get_mut(ix as usize))
                {
                    q.0 &= !loc.frames.is_empty();
                    q.1 &= loc.frames.iter().all(|f| f.file.is_some());
                    q.2 &= loc.frames.iter().all(|f| f.line.is_some());
                }
                self.locations.push(pprof::Location {
                    id,
                    mapping_id,
                    address: loc.address,
                    line,
                    is_folded: false,
                });
                self.location_ix.insert(key, id);
                id
            }
        };
        self.location_by_ptr.insert(ptr, id);
        id
    }

    /// Renumbers the mappings so that executables come first, then shared libraries, then
    /// pseudo files such as `[vdso]` and the kernel: pprof reports the first mapping as the
    /// profile's main binary ("File: …").
    fn main_binary_first(&mut self) {
        let rank = |m: &pprof::Mapping| {
            let file = usize::try_from(m.filename)
                .ok()
                .and_then(|ix| self.strings.get(ix))
                .map_or("", String::as_str);
            let base = file.rsplit('/').next().unwrap_or(file);
            if base.starts_with('[') || base.is_empty() {
                2
            } else if base.ends_with(".so") || base.contains(".so.") {
                1
            } else {
                0
            }
        };
        let mut order: Vec<usize> = (0..self.mappings.len()).collect();
        order.sort_by_key(|&ix| rank(&self.mappings[ix]));
        if order.iter().enumerate().all(|(new, &old)| new == old) {
            return;
        }
        // new_id[old id - 1] = new id
        let mut new_id = vec![0u64; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = new as u64 + 1;
        }
        let renumber = |id: u64| {
            id.checked_sub(1)
                .and_then(|ix| new_id.get(ix as usize))
                .copied()
                .unwrap_or(0)
        };
        for l in &mut self.locations {
            l.mapping_id = renumber(l.mapping_id);
        }
        self.kernel_mapping = self.kernel_mapping.map(renumber);
        let mut mappings = std::mem::take(&mut self.mappings);
        let quality = std::mem::take(&mut self.mapping_quality);
        let mut pairs: Vec<_> = mappings.drain(..).zip(quality).collect();
        pairs.sort_by_key(|(m, _)| renumber(m.id));
        for (m, q) in pairs {
            self.mappings.push(pprof::Mapping {
                id: renumber(m.id),
                ..m
            });
            self.mapping_quality.push(q);
        }
    }

    fn finish(mut self) -> pprof::Profile {
        let period = self.rec.period_nanos();
        let cpu = self.string("cpu");
        let nanoseconds = self.string("nanoseconds");
        let labelled = self.sample_labels;
        let (pid_key, comm_key, tid_key) = if labelled {
            (self.string("pid"), self.string("comm"), self.string("tid"))
        } else {
            (0, 0, 0)
        };

        let mut keyed: Vec<_> = std::mem::take(&mut self.sample_ix).into_iter().collect();
        keyed.sort_unstable_by_key(|(_, ix)| *ix);
        let mut sample = Vec::with_capacity(keyed.len());
        for ((location_id, pid, tid, comm), ix) in keyed {
            let count = self.counts.get(ix).copied().unwrap_or(0);
            let value = i64::try_from(count.saturating_mul(period)).unwrap_or(i64::MAX);
            if !labelled {
                sample.push(pprof::Sample {
                    location_id,
                    value: vec![value],
                    label: Vec::new(),
                });
                continue;
            }
            let comm = self.string(comm);
            sample.push(pprof::Sample {
                location_id,
                value: vec![value],
                label: vec![
                    pprof::Label {
                        key: pid_key,
                        num: i64::from(pid),
                        ..Default::default()
                    },
                    pprof::Label {
                        key: tid_key,
                        num: i64::from(tid),
                        ..Default::default()
                    },
                    pprof::Label {
                        key: comm_key,
                        str: comm,
                        ..Default::default()
                    },
                ],
            });
        }

        self.main_binary_first();
        if let (Some(id), Some((lo, hi))) = (self.kernel_mapping, self.kernel_range) {
            if let Some(m) = self.mappings.get_mut((id - 1) as usize) {
                m.memory_start = lo;
                m.memory_limit = hi;
            }
        }
        for (m, (functions, files, lines)) in self.mappings.iter_mut().zip(&self.mapping_quality) {
            m.has_functions = *functions;
            m.has_filenames = *functions && *files;
            m.has_line_numbers = *functions && *lines;
            m.has_inline_frames = *functions;
        }

        let time_nanos = match self.rec.start.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        let cpu_nanos = pprof::ValueType {
            r#type: cpu,
            unit: nanoseconds,
        };
        pprof::Profile {
            sample_type: vec![cpu_nanos],
            sample,
            mapping: self.mappings,
            location: self.locations,
            function: self.functions,
            string_table: self.strings,
            time_nanos,
            duration_nanos: i64::try_from(self.rec.duration.as_nanos()).unwrap_or(i64::MAX),
            period_type: Some(cpu_nanos),
            period: i64::try_from(period).unwrap_or(i64::MAX),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Read;

    use super::*;
    use crate::profile::testdata::{self, PERIOD, START_NANOS};

    fn s(p: &pprof::Profile, ix: i64) -> &str {
        &p.string_table[usize::try_from(ix).unwrap()]
    }

    /// Renders a sample as `pid comm: leaf<-…<-root value`, lines joined with `+` per location.
    fn describe(p: &pprof::Profile, sample: &pprof::Sample) -> String {
        let loc = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
        let func = |id: u64| p.function.iter().find(|f| f.id == id).unwrap();
        let frames: Vec<String> = sample
            .location_id
            .iter()
            .map(|&id| {
                let l = loc(id);
                if l.line.is_empty() {
                    format!("{:#x}", l.address)
                } else {
                    let names: Vec<_> = l
                        .line
                        .iter()
                        .map(|ln| s(p, func(ln.function_id).name))
                        .collect();
                    names.join("+")
                }
            })
            .collect();
        let mut labels = String::new();
        for l in &sample.label {
            if l.str != 0 {
                labels += &format!("{}={} ", s(p, l.key), s(p, l.str));
            } else {
                labels += &format!("{}={} ", s(p, l.key), l.num);
            }
        }
        format!("{labels}{} {:?}", frames.join("<-"), sample.value)
    }

    #[test]
    fn profile_header() {
        let p = build_pprof(&testdata::recording());
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.sample_type.len(), 1);
        let st = p.sample_type[0];
        assert_eq!((s(&p, st.r#type), s(&p, st.unit)), ("cpu", "nanoseconds"));
        assert_eq!(p.period_type, Some(st));
        assert_eq!(p.period, PERIOD);
        assert_eq!(p.time_nanos, START_NANOS);
        assert_eq!(p.duration_nanos, 10_000_000_000);
        assert_eq!(
            (p.drop_frames, p.keep_frames, p.default_sample_type),
            (0, 0, 0)
        );
        // Every string is interned once.
        let unique: HashSet<_> = p.string_table.iter().collect();
        assert_eq!(unique.len(), p.string_table.len());
    }

    #[test]
    fn samples_are_merged_with_values_and_labels() {
        let p = build_pprof(&testdata::recording());
        let got: Vec<String> = p.sample.iter().map(|x| describe(&p, x)).collect();
        let v = |n: i64| format!("[{}]", n * PERIOD);
        assert_eq!(
            got,
            [
                format!(
                    "pid=100 tid=100 comm=myapp main.inlinedHelper+main.run<-main.main {}",
                    v(5)
                ),
                format!(
                    "pid=100 tid=100 comm=myapp do_syscall_64<-entry_SYSCALL_64_after_hwframe<-main.hot\
                     <-main.run<-main.main {}",
                    v(3)
                ),
                format!(
                    "pid=101 tid=101 comm=myapp 0x7f0000000234<-main.inlinedHelper+main.run<-main.main {}",
                    v(2)
                ),
                format!("pid=200 tid=200 comm=other;proc semi;colon<-0x1000 {}", v(1)),
                format!(
                    "pid=100 tid=100 comm=myapp main.recurse<-main.recurse<-main.recurse<-main.main {}",
                    v(4)
                ),
            ]
        );
        let labels = &p.sample[0].label;
        assert_eq!(labels[0].num_unit, 0);
        // pid and tid are numbers, comm a string.
        assert_eq!(labels[1].num, 100);
        assert_eq!(labels[2].num, 0);
    }

    #[test]
    fn start_lines_reach_the_functions() {
        let mut rec = testdata::recording();
        let first = std::sync::Arc::make_mut(&mut rec.samples[0].stack[0]);
        first.frames[0].start_line = Some(7);
        let name = first.frames[0].function.clone();
        let p = build_pprof(&rec);
        let f = p.function.iter().find(|f| s(&p, f.name) == name).unwrap();
        assert_eq!(f.start_line, 7);
        assert!(p
            .function
            .iter()
            .filter(|g| g.id != f.id)
            .all(|g| g.start_line == 0));
    }

    #[test]
    fn locations_functions_and_mappings_are_deduplicated() {
        let p = build_pprof(&testdata::recording());
        // main.main appears through two distinct Arcs but is one location.
        assert_eq!(p.location.len(), 11);
        assert_eq!(p.function.len(), 8);
        assert_eq!(p.mapping.len(), 3);
        for (i, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
        }
        for (i, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
            assert_eq!(f.name, f.system_name);
            assert_eq!(f.start_line, 0);
        }
        for (i, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
        }
        let names: HashSet<_> = p.function.iter().map(|f| s(&p, f.name)).collect();
        assert_eq!(names.len(), p.function.len());
        let keys: HashSet<_> = p
            .location
            .iter()
            .map(|l| (l.mapping_id, l.address))
            .collect();
        assert_eq!(keys.len(), p.location.len());
        // Every reference resolves.
        for sample in &p.sample {
            for id in &sample.location_id {
                assert!((1..=p.location.len() as u64).contains(id));
            }
        }
        for l in &p.location {
            assert!(l.mapping_id <= p.mapping.len() as u64);
            for line in &l.line {
                assert!((1..=p.function.len() as u64).contains(&line.function_id));
            }
        }
    }

    #[test]
    fn inlined_lines_come_first() {
        let p = build_pprof(&testdata::recording());
        let l = p.location.iter().find(|l| l.address == 0x40_2000).unwrap();
        let f = |ln: &pprof::Line| {
            let f = p.function.iter().find(|f| f.id == ln.function_id).unwrap();
            (
                s(&p, f.name).to_owned(),
                s(&p, f.filename).to_owned(),
                ln.line,
            )
        };
        assert_eq!(
            l.line.iter().map(f).collect::<Vec<_>>(),
            [
                (
                    "main.inlinedHelper".to_owned(),
                    "/src/myapp/util.go".to_owned(),
                    5
                ),
                ("main.run".to_owned(), "/src/myapp/main.go".to_owned(), 20),
            ]
        );
        // Two lines of main.recurse, one function.
        let rec: Vec<_> = p
            .location
            .iter()
            .filter(|l| l.address == 0x40_4000 || l.address == 0x40_4010)
            .map(|l| (l.line[0].function_id, l.line[0].line))
            .collect();
        assert_eq!(rec.len(), 2);
        assert_eq!(rec[0].0, rec[1].0);
        assert_eq!((rec[0].1, rec[1].1), (40, 42));
    }

    #[test]
    fn mappings_kernel_and_unsymbolized() {
        let p = build_pprof(&testdata::recording());
        let by_name = |n: &str| p.mapping.iter().find(|m| s(&p, m.filename) == n).unwrap();
        let exe = by_name("/usr/bin/myapp");
        assert_eq!(
            (exe.memory_start, exe.memory_limit, exe.file_offset),
            (0x40_0000, 0x50_0000, 0)
        );
        assert_eq!(s(&p, exe.build_id), "abcdef0123456789");
        assert!(
            exe.has_functions && exe.has_filenames && exe.has_line_numbers && exe.has_inline_frames
        );

        let k = by_name(KERNEL_MAPPING);
        assert_eq!(
            (k.memory_start, k.memory_limit),
            (0xffff_ffff_8100_1000, 0xffff_ffff_8100_2001)
        );
        assert!(k.has_functions && !k.has_filenames && !k.has_line_numbers);
        let kernel_locs: Vec<_> = p.location.iter().filter(|l| l.mapping_id == k.id).collect();
        assert_eq!(kernel_locs.len(), 2);

        let lib = by_name("/usr/lib/libmystery.so");
        assert_eq!(lib.build_id, 0);
        assert!(!lib.has_functions && !lib.has_filenames && !lib.has_line_numbers);
        let unsym = p.location.iter().find(|l| l.mapping_id == lib.id).unwrap();
        assert_eq!(unsym.address, 0x7f00_0000_0234);
        assert!(unsym.line.is_empty());

        let orphan = p.location.iter().find(|l| l.address == 0x1000).unwrap();
        assert_eq!(orphan.mapping_id, 0);
        assert!(orphan.line.is_empty());
    }

    #[test]
    fn executables_are_the_first_mappings() {
        let p = build_pprof(&testdata::recording());
        let names: Vec<_> = p.mapping.iter().map(|m| s(&p, m.filename)).collect();
        assert_eq!(
            names,
            ["/usr/bin/myapp", "/usr/lib/libmystery.so", KERNEL_MAPPING]
        );

        // The library is seen first (leaf of the first sample), then the executable.
        let mut rec = testdata::recording();
        rec.samples.retain(|x| x.count == 3 || x.pid == 101);
        rec.samples.rotate_right(1);
        let p = build_pprof(&rec);
        let names: Vec<_> = p.mapping.iter().map(|m| s(&p, m.filename)).collect();
        assert_eq!(
            names,
            ["/usr/bin/myapp", "/usr/lib/libmystery.so", KERNEL_MAPPING]
        );
        for (i, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
        }
        let lib = p
            .location
            .iter()
            .find(|l| l.address == 0x7f00_0000_0234)
            .unwrap();
        assert_eq!(lib.mapping_id, 2);
        let exe = p.location.iter().find(|l| l.address == 0x40_1000).unwrap();
        assert_eq!(exe.mapping_id, 1);
        assert!(p.mapping[0].has_functions && !p.mapping[1].has_functions);
        let k = p
            .location
            .iter()
            .find(|l| l.address == 0xffff_ffff_8100_1000)
            .unwrap();
        assert_eq!(k.mapping_id, 3);
        assert_eq!(p.mapping[2].memory_start, 0xffff_ffff_8100_1000);
    }

    #[test]
    fn gzip_round_trip() {
        let p = build_pprof(&testdata::recording());
        let gz = encode_gzip(&p);
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(pprof::Profile::decode(&raw[..]).unwrap(), p);
    }

    #[test]
    fn degenerate_input_does_not_panic() {
        let mut rec = testdata::recording();
        rec.frequency_hz = 0;
        rec.start = UNIX_EPOCH - std::time::Duration::from_secs(1);
        rec.duration = std::time::Duration::MAX;
        rec.samples[0].count = u64::MAX;
        let p = build_pprof(&rec);
        assert_eq!(p.period, 1_000_000_000);
        assert_eq!(p.time_nanos, -1_000_000_000);
        assert_eq!(p.duration_nanos, i64::MAX);
        assert_eq!(p.sample[0].value, [i64::MAX]);

        rec.frequency_hz = u64::MAX;
        rec.samples.clear();
        let p = build_pprof(&rec);
        assert_eq!(p.period, 1);
        assert!(p.sample.is_empty() && p.location.is_empty() && p.mapping.is_empty());
        assert_eq!(p.string_table[0], "");
        let _ = encode_gzip(&p);
    }
}

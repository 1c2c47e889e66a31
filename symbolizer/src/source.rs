//! One way from addresses to frames, on blazesym's model: a [`Source`] says where addresses
//! come from, an [`Input`] what they are, and [`Symbolizer::symbolize`] answers one
//! [`Symbolized`] per address, in order; a miss is [`Symbolized::Unknown`] with its reason.
//!
//! Lookups go one binary at a time, in file-offset order, across every request of a call
//! ([`Symbolizer::symbolize_many`]), and the DWARF budget is kept here: room is made before a
//! binary's DWARF may be built, and the budget enforced after each lookup. With a budget too
//! small for every binary at once, lookups interleaved across binaries would release and
//! rebuild the same DWARF over and over; grouped, each context is built at most once per call.

use std::sync::Arc;

use crate::{process::Located, process::Process, ElfResolver, Reason, Symbolized, Symbolizer};

/// Where addresses come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A process, captured and [`Symbolizer::prepare`]d: addresses in its mappings are
    /// resolved through the files it pinned (and the vDSO).
    Process(&'a Process),
    /// The running kernel, through the symbols [`Symbolizer::kernel`] read (until they are read,
    /// kernel addresses are [`Reason::NoSymbols`]).
    Kernel,
}

/// The addresses to symbolize.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Absolute addresses, as the source sees them (a process's virtual addresses, kernel
    /// addresses). For a sampled stack, see [`lookup_addresses`].
    AbsAddr(&'a [u64]),
}

/// The address to look up for each frame of a sampled stack, leaf first: the leaf's instruction
/// pointer as it is, and each caller's return address one byte earlier, inside the call
/// instruction (a return address may already belong to the next line, or the next function).
/// Profiles record these adjusted addresses, so that re-symbolizing them gives the same answer.
pub fn lookup_addresses(ips: &[u64]) -> impl Iterator<Item = u64> + '_ {
    ips.iter()
        .enumerate()
        .map(|(depth, &ip)| if depth == 0 { ip } else { ip.wrapping_sub(1) })
}

impl Symbolizer {
    /// One answer per address of `input`, in order. See [`Self::symbolize_many`].
    pub fn symbolize(&self, source: &Source<'_>, input: Input<'_>) -> Vec<Symbolized> {
        self.symbolize_many(&[(*source, input)])
            .pop()
            .unwrap_or_default()
    }

    /// One answer per address of each request, in order. Addresses of every request are looked
    /// up together, grouped by binary (one binary's DWARF built at most once per call however
    /// many processes map it), and within the DWARF budget ([`Self::set_dwarf_budget`]).
    pub fn symbolize_many(&self, requests: &[(Source<'_>, Input<'_>)]) -> Vec<Vec<Symbolized>> {
        let mut answers: Vec<Vec<Symbolized>> = requests
            .iter()
            .map(|(_, Input::AbsAddr(addrs))| {
                vec![Symbolized::Unknown(Reason::Unmapped); addrs.len()]
            })
            .collect();
        // (binary, file offset, request, index) of each address in a parsed file.
        let mut in_files: Vec<(usize, u64, usize, usize, &Arc<ElfResolver>)> = Vec::new();
        for (r, (source, Input::AbsAddr(addrs))) in requests.iter().enumerate() {
            match source {
                Source::Kernel => {
                    let kernel = self.kernel_symbols();
                    for (answer, &addr) in answers[r].iter_mut().zip(*addrs) {
                        *answer = match kernel {
                            Some(kernel) => kernel.symbolize(addr),
                            None => Symbolized::Unknown(Reason::NoSymbols),
                        };
                    }
                }
                Source::Process(process) => {
                    for (i, &addr) in addrs.iter().enumerate() {
                        match process.locate(addr) {
                            Located::File {
                                resolver,
                                file_offset,
                            } => in_files.push((
                                Arc::as_ptr(resolver) as usize,
                                file_offset,
                                r,
                                i,
                                resolver,
                            )),
                            Located::Unknown(reason) => answers[r][i] = Symbolized::Unknown(reason),
                        }
                    }
                }
            }
        }
        in_files.sort_unstable_by_key(|&(binary, offset, r, i, _)| (binary, offset, r, i));
        let mut previous = None;
        for (binary, file_offset, r, i, resolver) in in_files {
            // Release other binaries' DWARF before this one's may be built, rather than after:
            // two large contexts are never held at once. Go binaries are answered from their Go
            // tables and rarely need their DWARF.
            if previous.replace(binary) != Some(binary) && !resolver.is_go() {
                self.make_room_for(resolver);
            }
            answers[r][i] = match resolver.file_offset_to_va(file_offset) {
                Some(va) => resolver.symbolize(va),
                None => Symbolized::Unknown(Reason::Unmapped),
            };
            // A lookup may have built a DWARF context: keep within the budget.
            self.enforce_budget();
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::process::{MapEntry, MapPath};

    #[inline(never)]
    fn source_test_marker() -> u64 {
        std::hint::black_box(11)
    }

    fn marker() -> u64 {
        source_test_marker();
        source_test_marker as fn() -> u64 as usize as u64
    }

    fn own_process(s: &mut Symbolizer) -> Process {
        let mut p = Process::capture(std::process::id()).unwrap();
        s.prepare(&mut p);
        p
    }

    #[test]
    fn callers_are_looked_up_one_byte_earlier() {
        let got: Vec<u64> = lookup_addresses(&[0x1000, 0x2000, 0x3000]).collect();
        assert_eq!(got, [0x1000, 0x1fff, 0x2fff]);
        assert_eq!(lookup_addresses(&[]).count(), 0);
    }

    #[test]
    fn a_process_answers_like_its_file_in_input_order() {
        let mut s = Symbolizer::new();
        let p = own_process(&mut s);
        let addr = marker();
        let answers = s.symbolize(&Source::Process(&p), Input::AbsAddr(&[addr, 0x10, addr]));
        assert_eq!(answers.len(), 3);
        let name = &answers[0].frames().last().expect("named").function;
        assert!(name.ends_with("source_test_marker"), "{name}");
        assert_eq!(answers[1], Symbolized::Unknown(Reason::Unmapped));
        assert_eq!(answers[2], answers[0]);

        let i = p.find(addr).unwrap();
        let r = p.resolver(i).unwrap();
        let offset = p.mappings()[i].file_offset(addr).unwrap();
        assert_eq!(
            r.symbolize(r.file_offset_to_va(offset).unwrap()),
            answers[0]
        );

        // Kernel addresses before kernel symbols are read.
        let kernel = s.symbolize(&Source::Kernel, Input::AbsAddr(&[0xffff_ffff_8100_0000]));
        assert_eq!(kernel, [Symbolized::Unknown(Reason::NoSymbols)]);
        assert!(s
            .symbolize(&Source::Process(&p), Input::AbsAddr(&[]))
            .is_empty());
    }

    #[test]
    fn vdso_addresses_of_a_process_are_named() {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let mut s = Symbolizer::new();
        let p = own_process(&mut s);
        let vdso = p
            .mappings()
            .iter()
            .find(|e| e.path == MapPath::Vdso)
            .expect("a [vdso] mapping");
        let mut image = vec![0u8; (vdso.end - vdso.start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            &File::open("/proc/self/mem").unwrap(),
            &mut image,
            vdso.start,
        )
        .unwrap();
        let obj = object::File::parse(&*image).unwrap();
        let load = obj.segments().next().unwrap();
        let mut expected = Vec::new();
        let mut addrs = Vec::new();
        for sym in obj.dynamic_symbols() {
            if sym.kind() == object::SymbolKind::Text && sym.size() > 1 {
                let at = sym.address() + sym.size() / 2;
                addrs.push(vdso.start + (at - load.address()) + load.file_range().0);
                // The name, or any alias at the same address.
                let aliases: Vec<String> = obj
                    .dynamic_symbols()
                    .filter(|o| o.address() == sym.address())
                    .map(|o| o.name().unwrap().to_string())
                    .collect();
                expected.push(aliases);
            }
        }
        assert!(addrs.len() >= 4, "only {} vDSO functions", addrs.len());
        let answers = s.symbolize(&Source::Process(&p), Input::AbsAddr(&addrs));
        for (answer, names) in answers.iter().zip(&expected) {
            let got = &answer.frames().first().expect("named").function;
            assert!(names.contains(got), "{got} not in {names:?}");
        }
    }

    /// Two binaries with the same DWARF, each in its own process, asked for in interleaved
    /// order, under a budget that holds one: each context is built once, never rebuilt, and
    /// at most one is loaded at the end.
    #[test]
    fn the_budget_is_kept_inside_one_binary_at_a_time() {
        let mut s = Symbolizer::new();
        s.set_dwarf_budget(1);
        let own = own_process(&mut s);
        let text = own.mappings()[own.find(marker()).unwrap()].clone();
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        let mut bytes = std::fs::read(&exe).unwrap();
        bytes.extend_from_slice(&[0; 4096]); // another size: not shared by build id
        std::fs::write(&other, &bytes).unwrap();
        let mut process = |path: &std::path::Path| {
            let entry = MapEntry {
                path: MapPath::File(path.display().to_string()),
                ..text.clone()
            };
            let mut p = Process::from_maps(1, vec![entry], |e| {
                Ok((File::open(e.path.to_string())?, e.path.to_string()))
            });
            assert!(s.prepare(&mut p).is_empty());
            p
        };
        let (a, b) = (process(&exe), process(&other));
        assert!(!Arc::ptr_eq(a.resolver(0).unwrap(), b.resolver(0).unwrap()));
        let addrs = [marker(), marker() + 1, text.start + 0x40];
        let answers = s.symbolize_many(&[
            (Source::Process(&a), Input::AbsAddr(&addrs)),
            (Source::Process(&b), Input::AbsAddr(&addrs)),
        ]);
        assert_eq!(answers[0], answers[1]);
        assert!(answers[0][0].frames().iter().any(|f| f.line.is_some()));
        let m = s.memory();
        assert_eq!(m.dwarf_reloads, 0, "each binary's DWARF built once");
        let loaded = [&a, &b].map(|p| p.resolver(0).unwrap().dwarf_bytes());
        assert!(loaded.contains(&0), "both loaded: {loaded:?}");
        assert_eq!(m.dwarf, loaded[0] + loaded[1], "{m:?}");
        assert!(m.dwarf_released >= 1);
    }
}

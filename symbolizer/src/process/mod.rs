//! Processes: their mappings (`/proc/PID/maps` through [`parse_maps`], mapped files opened
//! from outside through [`open_mapped_file`]) and the [`Process`] handle that
//! [`crate::Source::Process`] symbolizes.
//!
//! A sampled absolute address becomes a file offset through its mapping
//! (`addr - start + offset`); [`crate::ElfResolver::file_offset_to_va`] then gives the virtual
//! address as the ELF file sees it.

mod maps;

use std::{fs::File, io, sync::Arc};

pub use maps::{
    exec_code_mapping, map_path, open_mapped_file, open_paths, parse_maps, MapEntry, MapPath,
    ProcessMaps,
};

use crate::{ElfResolver, Error, Reason, Symbolizer};

/// A process as first seen: its executable mappings, the files behind them opened right then
/// (pinned: a process that exits later, or a file only reachable inside its container, is still
/// symbolized), and, once [`Symbolizer::prepare`]d, their resolvers and the vDSO's.
///
/// Symbolize its absolute addresses with [`Symbolizer::symbolize`] and
/// [`crate::Source::Process`].
#[derive(Debug)]
pub struct Process {
    /// The executable mappings, sorted by address.
    maps: ProcessMaps,
    /// What each mapping (same index) is symbolized with.
    files: Vec<Pinned>,
}

/// The file behind one mapping.
#[derive(Debug, Default)]
struct Pinned {
    /// Opened at capture, until [`Symbolizer::prepare`] parses it.
    pending: Option<(File, String)>,
    /// The parsed file (or the vDSO image).
    resolver: Option<Arc<ElfResolver>>,
}

/// Where an absolute address of a process leads.
pub(crate) enum Located<'a> {
    /// A file offset in a parsed file.
    File {
        resolver: &'a Arc<ElfResolver>,
        file_offset: u64,
    },
    Unknown(Reason),
}

impl Process {
    /// Captures a live process: reads `/proc/PID/maps` and opens every executable mapping's
    /// file from outside ([`open_mapped_file`]). A file that cannot be opened leaves its
    /// addresses unknown (no symbols); a process that cannot be read is an error.
    pub fn capture(pid: u32) -> io::Result<Self> {
        let maps = ProcessMaps::read(pid)?;
        Ok(Self::from_maps(pid, maps.entries, |entry| {
            open_mapped_file(pid, entry).map(|(file, _)| (file, entry.path.to_string()))
        }))
    }

    /// A process from mappings read elsewhere (`/proc/PID/maps` text through [`parse_maps`]):
    /// keeps the executable ones and opens each file mapping's file with `open`, which returns
    /// the file and the name to show for it. A failed open leaves the mapping without symbols.
    pub fn from_maps(
        pid: u32,
        entries: Vec<MapEntry>,
        mut open: impl FnMut(&MapEntry) -> io::Result<(File, String)>,
    ) -> Self {
        let mut entries: Vec<MapEntry> = entries.into_iter().filter(|e| e.executable).collect();
        entries.sort_by_key(|e| e.start);
        let files = entries
            .iter()
            .map(|entry| Pinned {
                pending: match entry.path {
                    MapPath::File(_) => open(entry).ok(),
                    _ => None,
                },
                resolver: None,
            })
            .collect();
        Process {
            maps: ProcessMaps { pid, entries },
            files,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.maps.pid
    }

    /// The executable mappings, sorted by address.
    pub fn mappings(&self) -> &[MapEntry] {
        &self.maps.entries
    }

    /// The index in [`Self::mappings`] of the mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<usize> {
        self.maps.position(addr)
    }

    /// The resolver of mapping `index`: None before [`Symbolizer::prepare`], and for a mapping
    /// whose file could not be opened or parsed (or that maps no file).
    pub fn resolver(&self, index: usize) -> Option<&Arc<ElfResolver>> {
        self.files.get(index)?.resolver.as_ref()
    }

    /// The file behind mapping `index` as opened at capture, until [`Symbolizer::prepare`]
    /// parses it: for readers other than the symbolizer (the agent's unwind tables) at first
    /// sight.
    pub fn pinned_file(&self, index: usize) -> Option<&File> {
        self.files
            .get(index)?
            .pending
            .as_ref()
            .map(|(file, _)| file)
    }

    /// Where `addr` leads: a file offset in a parsed file, or why nothing is known.
    pub(crate) fn locate(&self, addr: u64) -> Located<'_> {
        let Some(i) = self.find(addr) else {
            return Located::Unknown(Reason::Unmapped);
        };
        let Some(resolver) = self.resolver(i) else {
            return Located::Unknown(Reason::NoSymbols);
        };
        match self.maps.entries[i].file_offset(addr) {
            Some(file_offset) => Located::File {
                resolver,
                file_offset,
            },
            None => Located::Unknown(Reason::Unmapped),
        }
    }
}

impl Symbolizer {
    /// Parses the files `process` pinned (once per file identity, shared with every other
    /// process that maps them) and attaches the vDSO, so that its addresses can be symbolized.
    /// Cheap once done; a failure leaves that mapping without symbols and is returned, with the
    /// mapping's path, for the caller to report.
    pub fn prepare(&mut self, process: &mut Process) -> Vec<(MapPath, Error)> {
        let mut failed = Vec::new();
        for (entry, pinned) in process.maps.entries.iter().zip(&mut process.files) {
            if entry.path == MapPath::Vdso && pinned.resolver.is_none() {
                match self.vdso() {
                    Ok(vdso) => pinned.resolver = Some(vdso),
                    Err(err) => failed.push((MapPath::Vdso, err)),
                }
            }
            let Some((file, name)) = pinned.pending.take() else {
                continue;
            };
            match self.elf(file, &name) {
                Ok(resolver) => pinned.resolver = Some(resolver),
                Err(err) => failed.push((entry.path.clone(), err)),
            }
        }
        failed
    }

    /// [`Self::prepare`] for the files parsed already (by identity) only, which need no
    /// parse: the process lets go of them at once. The others stay open and pending. A
    /// program exec'd a thousand times a second would otherwise hold a thousand copies of its
    /// files open until they are prepared.
    pub fn prepare_parsed(&self, process: &mut Process) {
        for pinned in &mut process.files {
            let Some((file, _)) = &pinned.pending else {
                continue;
            };
            if let Some(resolver) = self.parsed(file) {
                pinned.resolver = Some(resolver);
                pinned.pending = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_executable_mappings_and_pins_their_files() {
        let exe = std::env::current_exe().unwrap();
        let maps = format!(
            "00400000-00500000 r-xp 00001000 08:01 1234 {exe}\n\
             00500000-00600000 rw-p 00000000 08:01 1234 {exe}\n\
             00700000-00800000 r-xp 00000000 08:01 99 /nonexistent/lib.so\n\
             7ffd0000-7ffd2000 r-xp 00000000 00:00 0 [vdso]\n",
            exe = exe.display()
        );
        let mut opened = Vec::new();
        let mut p = Process::from_maps(7, parse_maps(&maps).unwrap(), |e| {
            opened.push(e.path.clone());
            let MapPath::File(name) = &e.path else {
                unreachable!("only files are opened")
            };
            Ok((File::open(name)?, name.clone()))
        });
        assert_eq!(opened.len(), 2, "both file mappings, nothing else");
        assert_eq!(p.pid(), 7);
        assert_eq!(p.mappings().len(), 3, "only r-x mappings are kept");
        assert!(
            p.resolver(0).is_none(),
            "files are parsed only when prepared"
        );
        assert!(matches!(
            p.locate(0x0040_0010),
            Located::Unknown(Reason::NoSymbols)
        ));

        let mut s = Symbolizer::new();
        s.prepare_parsed(&mut p);
        assert!(p.resolver(0).is_none(), "nothing parsed yet: still pending");
        assert!(p.pinned_file(0).is_some());
        let failed = s.prepare(&mut p);
        assert!(failed.is_empty(), "{failed:?}");
        assert!(p.resolver(0).is_some());
        let mut again = Process::from_maps(8, parse_maps(&maps).unwrap(), |e| {
            let MapPath::File(name) = &e.path else {
                unreachable!("only files are opened")
            };
            Ok((File::open(name)?, name.clone()))
        });
        s.prepare_parsed(&mut again);
        assert!(again.resolver(0).is_some(), "parsed once, shared");
        assert!(again.pinned_file(0).is_none(), "and let go of");
        assert!(p.resolver(1).is_none(), "could not be opened");
        assert!(p.resolver(2).is_some(), "the vDSO");
        assert!(matches!(
            p.locate(0x0040_0010),
            Located::File {
                file_offset: 0x1010,
                ..
            }
        ));
        assert_eq!(p.find(0x0050_0000), None, "rw-p mapping is not kept");
        assert_eq!(p.find(0x7ffd_0001), Some(2));
        assert!(matches!(p.locate(0x10), Located::Unknown(Reason::Unmapped)));
        assert!(s.prepare(&mut p).is_empty(), "nothing left to do");
        assert_eq!(s.len(), 1);
    }
}

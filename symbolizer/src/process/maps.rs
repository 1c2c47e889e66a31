//! `/proc/PID/maps`: which file is mapped where in a process, and how to open it from outside.
//!
//! A sampled absolute address becomes a file offset through its mapping
//! (`addr - start + offset`); [`crate::ElfResolver::file_offset_to_va`] then gives the virtual
//! address as the ELF file sees it.

use std::io;

use crate::{Error, Result};

/// What a mapping maps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapPath {
    /// A file, by the path the process sees (in its own mount namespace).
    File(String),
    /// The vDSO.
    Vdso,
    /// The legacy vsyscall page.
    Vsyscall,
    /// Anonymous memory (JIT code, heap without a name).
    Anonymous,
    /// Any other bracketed name: `[heap]`, `[stack]`, `[anon:...]`.
    Other(String),
}

impl std::fmt::Display for MapPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapPath::File(s) | MapPath::Other(s) => f.write_str(s),
            MapPath::Vdso => f.write_str("[vdso]"),
            MapPath::Vsyscall => f.write_str("[vsyscall]"),
            MapPath::Anonymous => f.write_str("[anon]"),
        }
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// `r` permission.
    pub readable: bool,
    /// `w` permission.
    pub writable: bool,
    /// `x` permission.
    pub executable: bool,
    /// Private (copy-on-write, `p`) rather than shared (`s`).
    pub private: bool,
    /// Major number of the device holding the file (0 for anonymous memory).
    pub dev_major: u32,
    /// Minor number of the device holding the file.
    pub dev_minor: u32,
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// What is mapped; a deleted file keeps its path, without the ` (deleted)` suffix.
    pub path: MapPath,
    /// The file was deleted after it was mapped (`(deleted)` suffix).
    pub deleted: bool,
}

impl MapEntry {
    /// True for code (`x`).
    pub fn is_executable(&self) -> bool {
        self.executable
    }

    /// The file offset of an absolute address inside this mapping.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        (self.start..self.end)
            .contains(&addr)
            .then(|| (addr - self.start).checked_add(self.offset))
            .flatten()
    }
}

/// Parses the text of `/proc/PID/maps`. Blank lines are skipped; a malformed line is an error
/// naming its line number.
pub fn parse_maps(text: &str) -> Result<Vec<MapEntry>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|reason| Error::BadMaps {
                line: i + 1,
                reason: reason.to_string(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> std::result::Result<MapEntry, &'static str> {
    // start-end perms offset major:minor inode [path, which may contain spaces]
    let mut rest = line;
    let mut field = || -> std::result::Result<&str, &'static str> {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        if f.is_empty() {
            Err("too few fields")
        } else {
            Ok(f)
        }
    };
    let range = field()?;
    let perms = field()?.as_bytes();
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path_text = rest.trim_start_matches(' ');

    let (start, end) = range.split_once('-').ok_or("address range lacks '-'")?;
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| "bad hex number");
    let (start, end) = (hex(start)?, hex(end)?);
    if end < start {
        return Err("range ends before it starts");
    }
    if perms.len() != 4 {
        return Err("permissions are not 4 characters");
    }
    let (major, minor) = dev.split_once(':').ok_or("device lacks ':'")?;
    let dev_num = |s: &str| u32::from_str_radix(s, 16).map_err(|_| "bad device number");
    let (path, deleted) = match path_text {
        "" => (MapPath::Anonymous, false),
        "[vdso]" => (MapPath::Vdso, false),
        "[vsyscall]" => (MapPath::Vsyscall, false),
        p if p.starts_with('[') => (MapPath::Other(p.to_string()), false),
        p => match p.strip_suffix(" (deleted)") {
            Some(p) => (MapPath::File(p.to_string()), true),
            None => (MapPath::File(p.to_string()), false),
        },
    };
    Ok(MapEntry {
        start,
        end,
        offset: hex(offset)?,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        executable: perms[2] == b'x',
        private: perms[3] == b'p',
        dev_major: dev_num(major)?,
        dev_minor: dev_num(minor)?,
        inode: inode.parse().map_err(|_| "bad inode")?,
        path,
        deleted,
    })
}

/// The mappings of one process, sorted by address.
#[derive(Debug, Clone, Default)]
pub struct ProcessMaps {
    /// The process.
    pub pid: u32,
    /// Its mappings, sorted by start address (required by [`ProcessMaps::find`]).
    pub entries: Vec<MapEntry>,
}

impl ProcessMaps {
    /// Reads `/proc/PID/maps`.
    pub fn read(pid: u32) -> io::Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        let mut entries = parse_maps(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        entries.sort_by_key(|e| e.start);
        Ok(ProcessMaps { pid, entries })
    }

    /// The mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&MapEntry> {
        self.position(addr).map(|i| &self.entries[i])
    }

    /// The index in [`Self::entries`] of the mapping holding `addr`.
    pub fn position(&self, addr: u64) -> Option<usize> {
        let i = self
            .entries
            .partition_point(|e| e.start <= addr)
            .checked_sub(1)?;
        (addr < self.entries[i].end).then_some(i)
    }
}

/// Paths through which a mapped file can be opened from outside the process, best first:
/// `/proc/PID/map_files/START-END` works for deleted files and any mount namespace (needs
/// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE); `/proc/PID/root/PATH` follows the process's root
/// (containers).
pub fn open_paths(pid: u32, entry: &MapEntry) -> Vec<std::path::PathBuf> {
    let mut paths = vec![std::path::PathBuf::from(format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        entry.start, entry.end
    ))];
    if let MapPath::File(p) = &entry.path {
        paths.push(std::path::PathBuf::from(format!("/proc/{pid}/root{p}")));
    }
    paths
}

/// Opens a mapped file from outside the process, trying [`open_paths`] in order; returns the
/// file and the path that worked. Only file mappings can be opened.
pub fn open_mapped_file(
    pid: u32,
    entry: &MapEntry,
) -> io::Result<(std::fs::File, std::path::PathBuf)> {
    if !matches!(entry.path, MapPath::File(_)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "mapping {:x}-{:x} of pid {pid} is not a file ({})",
                entry.start, entry.end, entry.path
            ),
        ));
    }
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for path in open_paths(pid, entry) {
        match std::fs::File::open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00400000-00401000 r--p 00000000 08:01 1048602 /usr/bin/my prog
00401000-00500000 r-xp 00001000 08:01 1048602 /usr/bin/my prog
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000100000 r-xp 00028000 fd:00 42 /usr/lib/libc.so.6 (deleted)
7ffc12345000-7ffc12366000 rw-p 00000000 00:00 0                          [stack]
7ffc123fe000-7ffc12400000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_every_kind_of_line() {
        let e = parse_maps(MAPS).unwrap();
        assert_eq!(e.len(), 7);
        assert_eq!(e[1].path, MapPath::File("/usr/bin/my prog".into()));
        assert!(e[1].executable && e[1].readable && !e[1].writable && e[1].private);
        assert_eq!(e[1].offset, 0x1000);
        assert_eq!(e[1].inode, 1048602);
        assert_eq!((e[1].dev_major, e[1].dev_minor), (8, 1));
        assert_eq!(e[2].path, MapPath::Anonymous);
        assert_eq!(e[3].path, MapPath::File("/usr/lib/libc.so.6".into()));
        assert!(e[3].deleted);
        assert_eq!((e[3].dev_major, e[3].dev_minor), (0xfd, 0));
        assert_eq!(e[4].path, MapPath::Other("[stack]".into()));
        assert_eq!(e[5].path, MapPath::Vdso);
        assert_eq!(e[6].path, MapPath::Vsyscall);
    }

    #[test]
    fn finds_by_address_and_computes_file_offsets() {
        let mut entries = parse_maps(MAPS).unwrap();
        entries.sort_by_key(|e| e.start);
        let maps = ProcessMaps { pid: 1, entries };
        let m = maps.find(0x0040_1010).unwrap();
        assert_eq!(m.file_offset(0x0040_1010), Some(0x1010));
        assert!(maps.find(0x0050_0000).is_none(), "end is exclusive");
        assert!(maps.find(0x10).is_none());
        assert_eq!(maps.find(0x7ffc_123f_f000).unwrap().path, MapPath::Vdso);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        for bad in [
            "zz-10 r-xp 0 08:01 1 /x",
            "10-20 r-x 0 08:01 1 /x",
            "20-10 r-xp 0 08:01 1 /x",
            "10-20 r-xp 0 0801 1 /x",
            "10-20 r-xp 0 08:01",
            "10-20",
        ] {
            let text = format!("00400000-00401000 r--p 00000000 08:01 1 /ok\n{bad}\n");
            match parse_maps(&text) {
                Err(Error::BadMaps { line: 2, .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_own_maps() {
        let maps = ProcessMaps::read(std::process::id()).unwrap();
        let here = reads_own_maps as fn() as usize as u64;
        let m = maps.find(here).expect("own code is mapped");
        assert!(m.executable);
        assert!(matches!(m.path, MapPath::File(_)));
    }
}

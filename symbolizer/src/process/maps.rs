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

/// What a mapping's name, as the kernel prints it (`/proc/PID/maps`, perf's mmap records),
/// says is mapped; and whether the file was deleted since.
pub fn map_path(text: &str) -> (MapPath, bool) {
    match text {
        "" => (MapPath::Anonymous, false),
        "[vdso]" => (MapPath::Vdso, false),
        "[vsyscall]" => (MapPath::Vsyscall, false),
        p if p.starts_with('[') => (MapPath::Other(p.to_string()), false),
        p => match p.strip_suffix(" (deleted)") {
            Some(p) => (MapPath::File(p.to_string()), true),
            None => (MapPath::File(p.to_string()), false),
        },
    }
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
    let (path, deleted) = map_path(path_text);
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

/// The code mapping of an executable that the kernel loaded with its code at `start_code` to
/// `end_code` (`mm_struct`'s fields, `/proc/PID/stat`'s `startcode` and `endcode`): the lowest
/// executable segment's virtual address plus the load bias, and the end of the highest one's file
/// contents. Returns the mapping as `(start, end, file offset of start)`, covering the lowest
/// executable segment, which is where the load bias is known to hold. For a process that has
/// exited before its mappings could be read, but whose executable is known.
///
/// Reads the ELF header and program headers only (64-bit, little-endian); an error for any
/// other file, or one whose segments do not fit the two addresses.
pub fn exec_code_mapping(
    file: &std::fs::File,
    start_code: u64,
    end_code: u64,
) -> io::Result<(u64, u64, u64)> {
    use std::os::unix::fs::FileExt;
    /// More program headers than any linker writes (the table read is at most 28 KiB).
    const MAX_PHNUM: usize = 512;
    const PT_LOAD: u32 = 1;
    const PF_X: u32 = 1;
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)?;
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let phoff = u64_at(&header, 32);
    let phentsize = usize::from(u16_at(&header, 54));
    let phnum = usize::from(u16_at(&header, 56));
    if phentsize != 56 || phnum > MAX_PHNUM {
        return Err(bad("implausible program headers"));
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.read_exact_at(&mut table, phoff)?;
    // (vaddr, offset, filesz) of the executable segment with the lowest address.
    let lowest = table
        .chunks_exact(phentsize)
        .filter(|ph| u32_at(ph, 0) == PT_LOAD && u32_at(ph, 4) & PF_X != 0)
        .map(|ph| (u64_at(ph, 16), u64_at(ph, 8), u64_at(ph, 32)))
        .min_by_key(|&(vaddr, ..)| vaddr)
        .ok_or_else(|| bad("no executable segment"))?;
    let (vaddr, offset, filesz) = lowest;
    let bias = start_code
        .checked_sub(vaddr)
        .ok_or_else(|| bad("code below its segment's address"))?;
    let end = vaddr
        .checked_add(filesz)
        .and_then(|e| e.checked_add(bias))
        .ok_or_else(|| bad("segment past the address space"))?
        .min(end_code);
    if end <= start_code {
        return Err(bad("no code between start and end"));
    }
    Ok((start_code, end, offset))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_code_mapping_of_this_test_binary_from_its_stat() {
        // /proc/self/stat's fields 26 and 27 (after the command) are mm's start_code and end_code.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let (start_code, end_code): (u64, u64) =
            (fields[23].parse().unwrap(), fields[24].parse().unwrap());
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let (start, end, offset) = exec_code_mapping(&exe, start_code, end_code).unwrap();
        // The kernel's own mapping of the text holds it, at the same file offsets.
        let target = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap()).unwrap();
        let text = maps
            .iter()
            .find(|m| {
                m.executable
                    && m.path == MapPath::File(target.display().to_string())
                    && m.start <= start
                    && end <= m.end
            })
            .expect("a mapping of our text holds the computed one");
        assert_eq!(start - text.start + text.offset, offset, "same file offset");
        assert!(end > start);
        // Not an ELF file, or addresses its segments cannot hold: errors, not guesses.
        let not_elf = tempfile::tempfile().unwrap();
        not_elf.set_len(4096).unwrap();
        assert!(exec_code_mapping(&not_elf, start_code, end_code).is_err());
        assert!(exec_code_mapping(&exe, 0, 0).is_err());
    }

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

//! Symbols and DWARF kept outside the binary: a separate debug file (by build id, or by
//! `.gnu_debuglink` and its CRC-32) and MiniDebugInfo (`.gnu_debugdata`, an xz-compressed ELF
//! holding the symbols a stripped binary lost: Fedora, RHEL).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use memmap2::Mmap;
use object::{Object, ObjectSection};

use super::{
    dwarf::DwarfState,
    symbols::{SymbolIndex, SymbolSource},
};

/// Where separate debug files are looked for (by build id, and by debuglink).
pub const DEFAULT_DEBUG_ROOT: &str = "/usr/lib/debug";

/// Largest MiniDebugInfo we decompress (real ones are a few MiB at most).
const MAX_MINI_DEBUGINFO: usize = 64 << 20;

/// What a binary has of its own.
pub(super) struct Own {
    pub symbols: SymbolIndex,
    pub dwarf: DwarfState,
}

/// The symbols and DWARF a binary is symbolized with, from wherever they were found.
pub(super) struct Found {
    pub symbols: SymbolIndex,
    pub dwarf: DwarfState,
    /// The separate debug file, when one was looked for and found.
    pub debug_file: Option<(PathBuf, Arc<Mmap>)>,
    /// The decompressed MiniDebugInfo, when its symbols are the ones used.
    pub mini_debuginfo: Option<Vec<u8>>,
}

/// Completes what a binary (`obj`, named `display`) lacks: without DWARF of its own, a separate
/// debug file's DWARF (and its symbols, when the binary has no symbol table beyond its dynamic
/// symbols); without any symbols, the MiniDebugInfo's.
pub(super) fn complete(
    own: Own,
    obj: &object::File<'_>,
    build_id: Option<&[u8]>,
    display: &str,
    debug_root: &Path,
) -> Found {
    let Own {
        mut symbols,
        mut dwarf,
    } = own;
    // MiniDebugInfo is only needed when the binary has no symbol table of its own.
    let mini_debuginfo = if symbols.is_empty() {
        decompress_mini_debuginfo(obj)
    } else {
        None
    };
    let mut debug_file = None;
    if !dwarf.present() {
        let debuglink = obj.gnu_debuglink().ok().flatten();
        debug_file = find_debug_file(build_id, debuglink, Path::new(display).parent(), debug_root);
        if let Some((_, debug)) = &debug_file {
            if let Ok(dobj) = object::File::parse(&debug[..]) {
                dwarf = DwarfState::new(debug, &dobj);
                // A binary without `.symtab` names only what it exports (`.dynsym`); its debug
                // file's table names everything (ld.so's `_start`, static functions written in
                // assembly, which DWARF does not cover).
                if symbols.is_empty() || obj.section_by_name(".symtab").is_none() {
                    let found = SymbolIndex::build(&dobj, debug, SymbolSource::DebugFile);
                    if !found.is_empty() {
                        symbols = found;
                    }
                }
            }
        }
    }
    if symbols.is_empty() {
        if let Some(mini) = &mini_debuginfo {
            if let Ok(mobj) = object::File::parse(&mini[..]) {
                let found = SymbolIndex::build(&mobj, mini, SymbolSource::MiniDebugInfo);
                if !found.is_empty() {
                    symbols = found;
                }
            }
        }
    }
    let mini_debuginfo = mini_debuginfo.filter(|_| symbols.source() == SymbolSource::MiniDebugInfo);
    Found {
        symbols,
        dwarf,
        debug_file,
        mini_debuginfo,
    }
}

/// The decompressed `.gnu_debugdata` section, if present, valid and within
/// [`MAX_MINI_DEBUGINFO`].
fn decompress_mini_debuginfo(obj: &object::File<'_>) -> Option<Vec<u8>> {
    /// A writer that refuses to grow past a limit: bounds a decompression bomb.
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > MAX_MINI_DEBUGINFO {
                return Err(std::io::Error::other("MiniDebugInfo too large"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let compressed = obj.section_by_name(".gnu_debugdata")?.data().ok()?;
    let mut out = Bounded(Vec::new());
    lzma_rs::xz_decompress(&mut &compressed[..], &mut out).ok()?;
    Some(out.0)
}

/// The separate debug file of an ELF image (`data`, the whole file), found as the symbolizer
/// finds it for DWARF: by build id under `root/.build-id/`, else by `.gnu_debuglink` next to
/// `path` (when the binary's path is known), in its `.debug/` directory or under `root`, the
/// debuglink's CRC-32 checked. The unwind-table loader takes `.debug_frame` from it.
pub fn separate_debug_file(data: &[u8], path: Option<&Path>, root: &Path) -> Option<Arc<Mmap>> {
    let obj = object::File::parse(data).ok()?;
    let build_id = obj.build_id().ok().flatten();
    let debuglink = obj.gnu_debuglink().ok().flatten();
    if build_id.is_none() && debuglink.is_none() {
        return None;
    }
    find_debug_file(build_id, debuglink, path.and_then(Path::parent), root).map(|(_, m)| m)
}

/// A separate debug file: by build id under `root/.build-id/`, else by debuglink next to the
/// binary, in its `.debug/` directory, or under `root` + the binary's directory; a debuglink
/// match must also match its CRC-32.
fn find_debug_file(
    build_id: Option<&[u8]>,
    debuglink: Option<(&[u8], u32)>,
    binary_dir: Option<&Path>,
    root: &Path,
) -> Option<(PathBuf, Arc<Mmap>)> {
    let map = |path: &Path| -> Option<Arc<Mmap>> {
        let file = File::open(path).ok()?;
        // SAFETY: as for the binary itself: a read-only private map of a file we hold open.
        unsafe { Mmap::map(&file) }.ok().map(Arc::new)
    };
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let path = root
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if let Some(m) = map(&path) {
            return Some((path, m));
        }
    }
    let (name, crc) = debuglink?;
    let name = std::str::from_utf8(name).ok()?;
    if name.contains('/') {
        return None;
    }
    let dir = binary_dir.unwrap_or(Path::new("/"));
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    for candidate in [
        dir.join(name),
        dir.join(".debug").join(name),
        root.join(rel).join(name),
    ] {
        if let Some(m) = map(&candidate) {
            if crc32(&m) == crc {
                return Some((candidate, m));
            }
        }
    }
    None
}

/// CRC-32 (IEEE), as `.gnu_debuglink` records it.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }
}

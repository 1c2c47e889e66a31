//! The [`Symbolizer`]: resolvers cached by file identity.

use std::{collections::HashMap, fs::File, os::unix::fs::MetadataExt, sync::Arc};

use crate::{ElfResolver, Error, KernelResolver, Result};

/// What makes two opened files the same file: device, inode, size and modification time.
/// Paths are not identity: the same binary is seen through many paths (containers, map_files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl FileIdentity {
    /// The identity of an open file (`fstat`).
    pub fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// Memory held by a [`Symbolizer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes of files mapped (page cache, shared with other readers; mostly not resident).
    pub mapped: usize,
    /// Heap bytes of indexes.
    pub heap: usize,
}

/// Owns the resolvers of every file and the kernel, each parsed once.
#[derive(Debug, Default)]
pub struct Symbolizer {
    elfs: HashMap<FileIdentity, Arc<ElfResolver>>,
    kernel: Option<Arc<KernelResolver>>,
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The resolver for an opened file, parsing it on first sight of its identity.
    pub fn elf(&mut self, file: File, display: &str) -> Result<Arc<ElfResolver>> {
        let id = FileIdentity::of(&file).map_err(|source| Error::Io {
            path: display.to_string(),
            source,
        })?;
        if let Some(r) = self.elfs.get(&id) {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(ElfResolver::from_file(file, display)?);
        self.elfs.insert(id, Arc::clone(&r));
        Ok(r)
    }

    /// Kernel symbols, read from `/proc/kallsyms` once.
    pub fn kernel(&mut self) -> Result<Arc<KernelResolver>> {
        if let Some(k) = &self.kernel {
            return Ok(Arc::clone(k));
        }
        let k = Arc::new(KernelResolver::from_proc()?);
        self.kernel = Some(Arc::clone(&k));
        Ok(k)
    }

    /// Forgets one file (its resolver lives on while others hold it).
    pub fn evict(&mut self, id: &FileIdentity) -> bool {
        self.elfs.remove(id).is_some()
    }

    /// Forgets every file and the kernel symbols.
    pub fn clear(&mut self) {
        self.elfs.clear();
        self.kernel = None;
    }

    /// Files cached.
    pub fn len(&self) -> usize {
        self.elfs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elfs.is_empty()
    }

    /// Memory held by the cached resolvers.
    pub fn memory(&self) -> MemoryUse {
        self.elfs
            .values()
            .fold(MemoryUse::default(), |m, r| MemoryUse {
                mapped: m.mapped + r.mapped_bytes(),
                heap: m.heap + r.index_bytes(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_through_two_paths_is_parsed_once() {
        let exe = std::env::current_exe().unwrap();
        let mut s = Symbolizer::new();
        let a = s.elf(File::open(&exe).unwrap(), "a").unwrap();
        let via_proc = format!("/proc/{}/exe", std::process::id());
        let b = s.elf(File::open(via_proc).unwrap(), "b").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(s.len(), 1);
        assert!(s.memory().mapped > 0);
        let id = FileIdentity::of(&File::open(&exe).unwrap()).unwrap();
        assert!(s.evict(&id));
        assert!(s.is_empty());
    }
}

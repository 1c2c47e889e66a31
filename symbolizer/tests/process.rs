//! `/proc/PID/maps` of this very process: files mapped under awkward names (spaces, deleted)
//! are parsed and reopened from outside through `/proc/PID/map_files`, and the cache
//! recognises one file seen through different paths.

use std::{fs::File, path::Path, sync::Arc};

use symbolizer::{
    process::{open_mapped_file, MapPath, ProcessMaps},
    ElfResolver, FileIdentity, Symbolizer,
};

/// A small real ELF file to map.
const SAMPLE: &str = "/bin/true";

/// Copies [`SAMPLE`] to `path` and maps it into this process.
fn map_copy(path: &Path) -> memmap2::Mmap {
    std::fs::copy(SAMPLE, path).unwrap();
    let file = File::open(path).unwrap();
    // SAFETY: a private copy in our own temporary directory; nothing truncates it.
    unsafe { memmap2::Mmap::map(&file) }.unwrap()
}

fn own_maps() -> ProcessMaps {
    ProcessMaps::read(std::process::id()).unwrap()
}

#[test]
fn paths_with_spaces_survive_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("with  two spaces");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("a b.so");
    let map = map_copy(&path);
    let maps = own_maps();
    let entry = maps.find(map.as_ptr() as u64).expect("our mapping");
    assert_eq!(entry.path, MapPath::File(path.display().to_string()));
    assert!(!entry.deleted && entry.readable && !entry.writable && !entry.private);
    assert_eq!(entry.offset, 0);
    assert!(entry.inode != 0);
}

/// A deleted file stays reachable through map_files (root needed) while it is mapped.
#[test]
fn deleted_files_reopen_through_map_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.so");
    let map = map_copy(&path);
    let original = ElfResolver::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    let maps = own_maps();
    let entry = maps.find(map.as_ptr() as u64).expect("our mapping");
    assert!(entry.deleted, "{entry:?}");
    assert_eq!(entry.path, MapPath::File(path.display().to_string()));

    match open_mapped_file(std::process::id(), entry) {
        Ok((file, via)) => {
            assert!(via.starts_with("/proc"), "{}", via.display());
            assert!(
                via.to_string_lossy().contains("/map_files/"),
                "{}",
                via.display()
            );
            let reopened = ElfResolver::from_file(file, &via.display().to_string()).unwrap();
            assert_eq!(reopened.build_id(), original.build_id());
            assert_eq!(reopened.mapped_bytes(), original.mapped_bytes());
        }
        // map_files needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE); the root/ fallback cannot
        // find a deleted file.
        Err(e) => {
            // SAFETY: geteuid has no preconditions.
            assert!(
                unsafe { libc::geteuid() } != 0,
                "root could not reopen: {e}"
            );
            eprintln!("skipping: not root ({e})");
        }
    }
}

#[test]
fn anonymous_memory_is_not_a_file() {
    let maps = own_maps();
    let anon = maps
        .entries
        .iter()
        .find(|e| e.path == MapPath::Anonymous || matches!(e.path, MapPath::Other(_)))
        .expect("a process has anonymous memory");
    assert!(open_mapped_file(std::process::id(), anon).is_err());
}

/// Our own executable through its path, /proc/self/exe and map_files: one identity, one parse.
#[test]
fn one_file_through_three_paths_is_parsed_once() {
    let exe = std::env::current_exe().unwrap();
    let maps = own_maps();
    let here = one_file_through_three_paths_is_parsed_once as fn() as usize as u64;
    let entry = maps.find(here).unwrap();
    let mut symbolizer = Symbolizer::new();
    let a = symbolizer.elf(File::open(&exe).unwrap(), "exe").unwrap();
    let b = symbolizer
        .elf(File::open("/proc/self/exe").unwrap(), "proc exe")
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    if let Ok((file, _)) = open_mapped_file(std::process::id(), entry) {
        let c = symbolizer.elf(file, "map_files").unwrap();
        assert!(Arc::ptr_eq(&a, &c));
    }
    assert_eq!(symbolizer.len(), 1);
    let memory = symbolizer.memory();
    assert_eq!(memory.mapped, a.mapped_bytes());
    assert!(memory.heap > 0);

    // A different file (same content, new inode) is a different identity.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    std::fs::copy(SAMPLE, &copy).unwrap();
    let d = symbolizer.elf(File::open(&copy).unwrap(), "copy").unwrap();
    assert!(!Arc::ptr_eq(&a, &d));
    assert_eq!(symbolizer.len(), 2);
    let id = FileIdentity::of(&File::open(&copy).unwrap()).unwrap();
    assert!(symbolizer.evict(&id));
    assert!(!symbolizer.evict(&id), "already gone");
    assert_eq!(symbolizer.len(), 1);
    symbolizer.clear();
    assert!(symbolizer.is_empty());
}

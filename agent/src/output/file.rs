//! Writing the gzipped pprof to a file, atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{OutputError, Result};
use crate::profile::{build_pprof, write_gzip, Recording};

/// Writes the gzipped pprof of `rec` to `path`.
///
/// The profile is written to a temporary file in the same directory, synced, then renamed over
/// `path`, so a reader (or a crash) never sees a partial file. On error the temporary file is
/// removed and `path` is left as it was.
pub fn write_pprof(path: impl AsRef<Path>, rec: &Recording) -> Result<()> {
    let profile = build_pprof(rec);
    write_atomically(path.as_ref(), |w| write_gzip(&profile, w))
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename), like [`write_pprof`].
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomically(path.as_ref(), |w| w.write_all(bytes))
}

/// Calls `write` on a fresh temporary file next to `path`, then renames it to `path`.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Err(OutputError::NotAFile {
            path: path.to_owned(),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp_path, file) = create_temp(dir, name)?;
    let written = (|| {
        let mut w = BufWriter::new(&file);
        write(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()
    })();
    drop(file);
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(OutputError::Write {
            path: tmp_path,
            source,
        });
    }
    if let Err(source) = fs::rename(&tmp_path, path) {
        let _ = fs::remove_file(&tmp_path);
        return Err(OutputError::Rename {
            from: tmp_path,
            to: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Creates `dir/.NAME.PID.N.tmp` exclusively, trying a few names if one exists already.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp_path = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
        {
            Ok(f) => return Ok((tmp_path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    Err(OutputError::CreateTemp {
        dir: dir.to_owned(),
        source: last_err.unwrap_or_else(|| io::Error::other("no temporary name available")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        fs::write(&path, b"old").unwrap();
        write_atomically(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        fs::write(&path, b"old").unwrap();
        let err = write_atomically(&path, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert!(matches!(err, OutputError::Write { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn errors_name_the_directory() {
        let err = write_atomically(Path::new("/nonexistent-bellows-dir/p.pb.gz"), |_| Ok(()))
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-bellows-dir"),
            "{err}"
        );
        let err = write_atomically(Path::new("/"), |_| Ok(())).unwrap_err();
        assert!(matches!(err, OutputError::NotAFile { .. }), "{err}");
    }
}

//! cgroup v2 helpers: ids for the kernel filter, and a private cgroup for `record -- CMD`.
//!
//! The kernel reports `bpf_get_current_cgroup_id()`, which is the inode number of the task's
//! cgroup v2 directory. On hybrid hosts the v2 hierarchy is mounted beside v1 controllers
//! (e.g. at `/sys/fs/cgroup/unified`), so the mount point is looked up, never assumed.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// `statfs` magic of a cgroup2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a directory of a cgroup v2 (cgroup2) filesystem")]
    NotCgroup2(PathBuf),
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoV2Mount,
    #[error("this process has no cgroup v2 membership in /proc/self/cgroup")]
    NoV2Membership,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The id the kernel reports for tasks in the cgroup v2 directory `path`.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    if !is_cgroup2(path)? {
        return Err(CgroupError::NotCgroup2(path.to_path_buf()));
    }
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_dir() {
        return Err(CgroupError::NotCgroup2(path.to_path_buf()));
    }
    Ok(meta.ino())
}

fn is_cgroup2(path: &Path) -> Result<bool, CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| CgroupError::NotCgroup2(path.to_path_buf()))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ret = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if ret != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs across libcs"
    )]
    Ok(buf.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// Mount point of the cgroup v2 hierarchy, from mountinfo text.
pub fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // <id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ...
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mount_path(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v2 path of a process from `/proc/PID/cgroup` text (`0::/path`).
pub fn v2_membership(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim_end)
}

/// A cgroup v2 directory created for the duration of a recording and removed afterwards.
#[derive(Debug)]
pub struct ScratchCgroup {
    path: PathBuf,
    id: u64,
}

impl ScratchCgroup {
    /// Creates `bellows-record-<pid>` below this process's own v2 cgroup, so that the command
    /// stays under the same limits as we are.
    pub fn create() -> Result<Self, CgroupError> {
        let mountinfo_path = Path::new("/proc/self/mountinfo");
        let mountinfo = fs::read_to_string(mountinfo_path).map_err(io_err(mountinfo_path))?;
        let mount = find_v2_mount(&mountinfo).ok_or(CgroupError::NoV2Mount)?;
        let own_path = Path::new("/proc/self/cgroup");
        let own = fs::read_to_string(own_path).map_err(io_err(own_path))?;
        let rel = v2_membership(&own).ok_or(CgroupError::NoV2Membership)?;
        let parent = mount.join(rel.trim_start_matches('/'));
        let path = parent.join(format!("bellows-record-{}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let id = cgroup_id(&path)?;
        Ok(ScratchCgroup { path, id })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        // Fails while processes remain (e.g. a daemon the command left behind): say so.
        if let Err(err) = fs::remove_dir(&self.path) {
            tracing::warn!(
                "could not remove cgroup {}: {err} (processes left in it?)",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount_on_a_hybrid_host() {
        let mountinfo = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            find_v2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_pure_v2_mount_and_unescapes_spaces() {
        let mountinfo =
            "25 1 0:22 / /sys/fs/cgroup\\040x rw,relatime shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_v2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup x"))
        );
        assert_eq!(
            find_v2_mount("25 1 0:22 / /x rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn reads_v2_membership_among_v1_lines() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/user.slice/session-1.scope\n";
        assert_eq!(v2_membership(text), Some("/user.slice/session-1.scope"));
        assert_eq!(v2_membership("4:memory:/x\n"), None);
    }

    #[test]
    fn rejects_a_directory_that_is_not_cgroup2() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            cgroup_id(dir.path()),
            Err(CgroupError::NotCgroup2(_))
        ));
    }
}

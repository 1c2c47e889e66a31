//! cgroup helpers: ids for the kernel filter, v1 membership for selection in userspace, and a
//! private cgroup for `record -- CMD`.
//!
//! The kernel reports `bpf_get_current_cgroup_id()`, which is the inode number of the task's
//! cgroup v2 directory. On hybrid hosts the v2 hierarchy is mounted beside v1 controllers
//! (e.g. at `/sys/fs/cgroup/unified`), so the mount point is looked up, never assumed. On hosts
//! with cgroup v1 only, every task reports the id of the (unmounted) v2 root, so the kernel
//! cannot select by cgroup there: a v1 directory ([`V1Cgroup`]) is matched against
//! `/proc/PID/cgroup` in userspace instead.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// `statfs` magic of a cgroup2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `statfs` magic of a cgroup v1 hierarchy.
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

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
    #[error("{0} is not a cgroup directory (neither cgroup2 nor a cgroup v1 hierarchy)")]
    NotCgroup(PathBuf),
    #[error("{0} is on a cgroup v1 filesystem that /proc/self/mountinfo does not list")]
    V1NotMounted(PathBuf),
    #[error("no cgroup v1 hierarchy that this process may create a cgroup in is mounted")]
    NoV1Mount,
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
    if fs_magic(path)? != CGROUP2_SUPER_MAGIC {
        return Err(CgroupError::NotCgroup2(path.to_path_buf()));
    }
    v2_id(path)
}

fn v2_id(path: &Path) -> Result<u64, CgroupError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_dir() {
        return Err(CgroupError::NotCgroup2(path.to_path_buf()));
    }
    Ok(meta.ino())
}

/// A cgroup directory as a selection: by id in the kernel (v2), or by membership in userspace (v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDir {
    V2 { id: u64 },
    V1(V1Cgroup),
}

impl CgroupDir {
    /// Classifies the cgroup directory `path` by the filesystem it is on.
    pub fn open(path: &Path) -> Result<Self, CgroupError> {
        match fs_magic(path)? {
            CGROUP2_SUPER_MAGIC => Ok(CgroupDir::V2 { id: v2_id(path)? }),
            CGROUP_SUPER_MAGIC => {
                let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
                let canonical = fs::canonicalize(path).map_err(io_err(path))?;
                V1Cgroup::from_dir(&canonical, &mountinfo)
                    .map(CgroupDir::V1)
                    .ok_or_else(|| CgroupError::V1NotMounted(path.to_path_buf()))
            }
            _ => Err(CgroupError::NotCgroup(path.to_path_buf())),
        }
    }
}

/// A directory of a cgroup v1 hierarchy: which hierarchy (its controllers, as `/proc/PID/cgroup`
/// names them) and the path within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Cgroup {
    /// Controllers of the hierarchy, sorted (`cpu,cpuacct`; `name=systemd` for a named one).
    controllers: Vec<String>,
    /// Path within the hierarchy, starting with `/`.
    path: String,
}

impl V1Cgroup {
    /// The v1 cgroup of the (canonical) directory `dir`, from mountinfo text: the cgroup v1 mount
    /// with the longest mount point containing `dir`.
    pub fn from_dir(dir: &Path, mountinfo: &str) -> Option<Self> {
        let mount = v1_mounts(mountinfo)
            .filter(|m| dir.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())?;
        let below = dir.strip_prefix(&mount.mount_point).ok()?;
        let path = Path::new(&mount.root).join(below);
        Some(V1Cgroup {
            controllers: mount.controllers,
            path: path.to_string_lossy().into_owned(),
        })
    }

    /// Whether a process whose `/proc/PID/cgroup` reads `proc_cgroup` is in this cgroup or below.
    pub fn contains(&self, proc_cgroup: &str) -> bool {
        proc_cgroup.lines().any(|line| {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return false;
            };
            if controllers.is_empty() || sorted_list(controllers) != self.controllers {
                return false;
            }
            let path = path.trim_end();
            self.path == "/"
                || path == self.path
                || path
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// One cgroup v1 mount of mountinfo.
struct V1Mount {
    /// The directory of the hierarchy that is mounted (`/` unless in a cgroup namespace).
    root: String,
    mount_point: PathBuf,
    controllers: Vec<String>,
}

/// Mount options of a cgroup v1 superblock that name no controller.
const V1_NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
];

fn v1_mounts(mountinfo: &str) -> impl Iterator<Item = V1Mount> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let super_options = right.nth(1)?;
        let mut left = left.split_whitespace();
        let root = unescape_mount_path(left.nth(3)?);
        let mount_point = PathBuf::from(unescape_mount_path(left.next()?));
        let controllers = sorted_list(
            &super_options
                .split(',')
                .filter(|o| {
                    !V1_NON_CONTROLLER_OPTIONS.contains(o) && !o.starts_with("release_agent=")
                })
                .collect::<Vec<_>>()
                .join(","),
        );
        (!controllers.is_empty()).then_some(V1Mount {
            root,
            mount_point,
            controllers,
        })
    })
}

fn sorted_list(list: &str) -> Vec<String> {
    let mut items: Vec<String> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    items.sort();
    items
}

/// How this host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 only (the unified hierarchy).
    V2,
    /// cgroup v1 hierarchies with cgroup2 beside them (e.g. at `/sys/fs/cgroup/unified`).
    Hybrid,
    /// cgroup v1 only: the kernel cannot select by cgroup.
    V1,
    /// No cgroup filesystem mounted.
    None,
}

impl Layout {
    /// The layout mountinfo text describes.
    pub fn from_mountinfo(mountinfo: &str) -> Self {
        match (
            find_v2_mount(mountinfo).is_some(),
            v1_mounts(mountinfo).next().is_some(),
        ) {
            (true, false) => Layout::V2,
            (true, true) => Layout::Hybrid,
            (false, true) => Layout::V1,
            (false, false) => Layout::None,
        }
    }

    /// This host's layout.
    pub fn of_host() -> Self {
        Self::from_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// The `statfs` magic of the filesystem holding `path`.
fn fs_magic(path: &Path) -> Result<i64, CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| CgroupError::NotCgroup(path.to_path_buf()))?;
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
    Ok(buf.f_type as i64)
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

/// A cgroup directory created for the duration of a recording and removed afterwards: in the v2
/// hierarchy where there is one, else in a cgroup v1 hierarchy (selected in userspace).
#[derive(Debug)]
pub struct ScratchCgroup {
    path: PathBuf,
    dir: CgroupDir,
}

/// Which v1 hierarchy a scratch cgroup goes in, best first: `pids` limits nothing a child of ours
/// is not already limited by, and no service manager tracks its tree (unlike `name=systemd`).
const V1_SCRATCH_PREFERENCE: &[&str] = &["pids", "cpu", "cpuacct", "memory"];

impl ScratchCgroup {
    /// Creates `bellows-record-<pid>` below this process's own cgroup, so that the command stays
    /// under the same limits as we are.
    pub fn create() -> Result<Self, CgroupError> {
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let own = read(Path::new("/proc/self/cgroup"))?;
        let name = format!("bellows-record-{}", std::process::id());
        match Self::create_v2(&mountinfo, &own, &name) {
            Err(CgroupError::NoV2Mount | CgroupError::NoV2Membership) => {
                Self::create_v1(&mountinfo, &own, &name)
            }
            other => other,
        }
    }

    fn create_v2(mountinfo: &str, own: &str, name: &str) -> Result<Self, CgroupError> {
        let mount = find_v2_mount(mountinfo).ok_or(CgroupError::NoV2Mount)?;
        let rel = v2_membership(own).ok_or(CgroupError::NoV2Membership)?;
        let path = mount.join(rel.trim_start_matches('/')).join(name);
        make_dir(&path)?;
        let id = cgroup_id(&path)?;
        Ok(ScratchCgroup {
            path,
            dir: CgroupDir::V2 { id },
        })
    }

    fn create_v1(mountinfo: &str, own: &str, name: &str) -> Result<Self, CgroupError> {
        let rank = |m: &V1Mount| {
            V1_SCRATCH_PREFERENCE
                .iter()
                .position(|c| m.controllers.iter().any(|have| have == c))
                .unwrap_or(V1_SCRATCH_PREFERENCE.len())
        };
        let mut mounts: Vec<V1Mount> = v1_mounts(mountinfo).collect();
        mounts.sort_by_key(rank);
        for mount in mounts {
            // Our own directory in this hierarchy, relative to what the mount shows.
            let Some(own_path) = own.lines().find_map(|line| {
                let mut f = line.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                (sorted_list(controllers) == mount.controllers).then_some(path.trim_end())
            }) else {
                continue;
            };
            let Ok(below_root) = Path::new(own_path).strip_prefix(&mount.root) else {
                continue;
            };
            let path = mount.mount_point.join(below_root).join(name);
            if make_dir(&path).is_err() {
                continue;
            }
            let Some(cgroup) = V1Cgroup::from_dir(&path, mountinfo) else {
                let _ = fs::remove_dir(&path);
                continue;
            };
            return Ok(ScratchCgroup {
                path,
                dir: CgroupDir::V1(cgroup),
            });
        }
        Err(CgroupError::NoV1Mount)
    }

    /// How samples of the cgroup are selected.
    pub fn dir(&self) -> &CgroupDir {
        &self.dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path)(e)),
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

    const V1_MOUNTINFO: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - tmpfs tmpfs rw,mode=755
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/pids rw,nosuid shared:12 - cgroup cgroup rw,pids
35 30 0:31 /kubepods /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/systemd rw,nosuid shared:14 - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
";

    #[test]
    fn layouts_follow_the_mounts() {
        assert_eq!(Layout::from_mountinfo(V1_MOUNTINFO), Layout::V1);
        let hybrid =
            format!("{V1_MOUNTINFO}37 30 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
        assert_eq!(Layout::from_mountinfo(&hybrid), Layout::Hybrid);
        assert_eq!(
            Layout::from_mountinfo("25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            Layout::V2
        );
        assert_eq!(
            Layout::from_mountinfo("25 1 0:22 / / rw - ext4 /dev/vda rw\n"),
            Layout::None
        );
    }

    #[test]
    fn a_v1_directory_knows_its_hierarchy_and_members() {
        let cg =
            V1Cgroup::from_dir(Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b"), V1_MOUNTINFO).unwrap();
        assert_eq!(cg.controllers, ["cpu", "cpuacct"]);
        assert_eq!(cg.path, "/a/b");
        // /proc/PID/cgroup may list controllers in another order.
        assert!(cg.contains("12:pids:/\n4:cpuacct,cpu:/a/b\n"));
        assert!(cg.contains("4:cpu,cpuacct:/a/b/c\n"));
        assert!(!cg.contains("4:cpu,cpuacct:/a/bc\n"));
        assert!(!cg.contains("4:cpu,cpuacct:/a\n"));
        // Same path, other hierarchy.
        assert!(!cg.contains("12:pids:/a/b\n0::/a/b\n"));
        assert!(!cg.contains("garbage\n::\n"));
        // A mount of a sub-tree: paths in /proc/PID/cgroup are the hierarchy's.
        let mem =
            V1Cgroup::from_dir(Path::new("/sys/fs/cgroup/memory/pod1"), V1_MOUNTINFO).unwrap();
        assert_eq!(mem.path, "/kubepods/pod1");
        assert!(mem.contains("5:memory:/kubepods/pod1/c1\n"));
        // Named hierarchies match by name; mount options that are no controllers are ignored.
        let sd = V1Cgroup::from_dir(Path::new("/sys/fs/cgroup/systemd"), V1_MOUNTINFO).unwrap();
        assert_eq!(sd.controllers, ["name=systemd"]);
        assert!(sd.contains("1:name=systemd:/user.slice\n"));
        assert!(V1Cgroup::from_dir(Path::new("/home"), V1_MOUNTINFO).is_none());
    }

    #[test]
    fn rejects_a_directory_that_is_not_cgroup2() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            cgroup_id(dir.path()),
            Err(CgroupError::NotCgroup2(_))
        ));
        assert!(matches!(
            CgroupDir::open(dir.path()),
            Err(CgroupError::NotCgroup(_))
        ));
    }
}

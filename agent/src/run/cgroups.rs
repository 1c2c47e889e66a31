//! cgroup v2 id → cgroup path → container, for labelling samples and filling the kernel filter.
//!
//! The kernel side records each sample's cgroup v2 id, the inode number of the cgroup directory.
//! [`CgroupIndex`] walks the cgroup2 hierarchy and remembers each directory's id and path, and
//! what the path says about a container ([`crate::target`]). It is rescanned every collection
//! and whenever a sample names an id it does not know (a container started since), at most once
//! per [`CgroupIndex::rescan_if_stale`] period.
//!
//! Hosts without a cgroup v2 hierarchy for workloads (cgroup v1 only) give every task the root id;
//! there the caller falls back to `/proc/PID/cgroup` ([`crate::target::parse_proc_cgroup`]).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::target::{parse_cgroup_path, ContainerRef};

/// Directories below the root we descend at most; kubelet layouts are 5 deep, kind nests 8.
const MAX_DEPTH: usize = 16;
/// Directories indexed at most: bounds memory on hosts with runaway cgroup creation.
const MAX_ENTRIES: usize = 200_000;

/// One cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Path relative to the cgroup2 mount, starting with `/`.
    pub path: String,
    /// The container the path belongs to, if it is a container's scope (or below one).
    pub container: Option<ContainerRef>,
}

impl CgroupEntry {
    /// The systemd unit a path ends in (`nginx.service`, `session-3.scope`), if any.
    pub fn systemd_unit(&self) -> Option<&str> {
        self.path
            .rsplit('/')
            .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
    }
}

/// The cgroup2 hierarchy, by id.
#[derive(Debug)]
pub struct CgroupIndex {
    root: Option<PathBuf>,
    by_id: HashMap<u64, Arc<CgroupEntry>>,
    last_scan: Option<Instant>,
    /// Scans done, and directories skipped because of [`MAX_ENTRIES`].
    pub scans: u64,
    pub truncated: bool,
}

impl CgroupIndex {
    /// An index of the hierarchy mounted at `root` (None: no cgroup v2 on this host). Call
    /// [`Self::rescan`] to fill it.
    pub fn new(root: Option<PathBuf>) -> Self {
        CgroupIndex {
            root,
            by_id: HashMap::new(),
            last_scan: None,
            scans: 0,
            truncated: false,
        }
    }

    /// The index of this host's cgroup2 mount, found in `/proc/self/mountinfo`.
    pub fn for_host() -> Self {
        let root = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| crate::cgroup::find_v2_mount(&m));
        Self::new(root)
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Arc<CgroupEntry>> {
        self.by_id.get(&id)
    }

    /// Every indexed cgroup.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Arc<CgroupEntry>)> + '_ {
        self.by_id.iter().map(|(id, e)| (*id, e))
    }

    /// Every indexed cgroup that is a container's.
    pub fn containers(&self) -> impl Iterator<Item = (u64, &Arc<CgroupEntry>)> + '_ {
        self.by_id
            .iter()
            .filter(|(_, e)| e.container.is_some())
            .map(|(id, e)| (*id, e))
    }

    /// Rescans if the last scan is older than `max_age`. Returns whether it scanned.
    pub fn rescan_if_stale(&mut self, max_age: Duration) -> bool {
        if self.last_scan.is_some_and(|t| t.elapsed() < max_age) {
            return false;
        }
        self.rescan();
        true
    }

    /// Walks the hierarchy again. Entries of removed directories go; unchanged ones are reused.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.scans += 1;
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut fresh = HashMap::with_capacity(self.by_id.len());
        let mut truncated = false;
        // Depth-first with an explicit stack: (directory, path relative to root, depth).
        let mut stack = vec![(root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            if fresh.len() >= MAX_ENTRIES {
                truncated = true;
                break;
            }
            let path = if rel.is_empty() {
                "/".to_string()
            } else {
                rel.clone()
            };
            let entry = match self.by_id.get(&meta.ino()) {
                Some(e) if e.path == path => Arc::clone(e),
                _ => Arc::new(CgroupEntry {
                    container: parse_cgroup_path(&path),
                    path,
                }),
            };
            fresh.insert(meta.ino(), entry);
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(children) = fs::read_dir(&dir) else {
                continue;
            };
            for child in children.flatten() {
                if !child.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = child.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                stack.push((child.path(), format!("{rel}/{name}"), depth + 1));
            }
        }
        self.truncated = truncated;
        self.by_id = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn indexes_a_kubelet_layout_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let scope = dir.path().join(format!(
            "kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod1234abcd_0000_1111_2222_333344445555.slice/\
             cri-containerd-{ID}.scope"
        ));
        fs::create_dir_all(&scope).unwrap();
        fs::create_dir_all(dir.path().join("system.slice/nginx.service")).unwrap();

        let mut index = CgroupIndex::new(Some(dir.path().to_path_buf()));
        index.rescan();
        let ino = fs::metadata(&scope).unwrap().ino();
        let entry = index.get(ino).expect("scope indexed");
        let container = entry.container.as_ref().expect("a container");
        assert_eq!(container.container_id, ID);
        assert_eq!(
            container.pod_uid.as_deref(),
            Some("1234abcd-0000-1111-2222-333344445555")
        );
        assert_eq!(index.containers().count(), 1);

        let nginx = fs::metadata(dir.path().join("system.slice/nginx.service"))
            .unwrap()
            .ino();
        let nginx = index.get(nginx).unwrap();
        assert_eq!(nginx.path, "/system.slice/nginx.service");
        assert_eq!(nginx.systemd_unit(), Some("nginx.service"));
        assert!(nginx.container.is_none());

        // A removed container disappears at the next scan.
        fs::remove_dir(&scope).unwrap();
        index.rescan();
        assert!(index.get(ino).is_none());
        assert_eq!(index.containers().count(), 0);
        assert_eq!(index.scans, 2);
    }

    #[test]
    fn without_a_hierarchy_the_index_stays_empty() {
        let mut index = CgroupIndex::new(None);
        index.rescan();
        assert!(index.is_empty());
        assert!(!index.rescan_if_stale(Duration::from_secs(60)));
    }
}

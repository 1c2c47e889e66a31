//! Which series a sample belongs to: Pod containers, other containers, and processes outside
//! pods, each labelled for Pyroscope; and which cgroups the kernel filter should let through.

use std::collections::HashSet;

use serde::Deserialize;

use super::cgroups::{CgroupEntry, CgroupIndex};
use crate::target::ContainerRef;

/// Series labels in priority order (`__name__` first); [`crate::push`] drops the tail first when a
/// series would exceed the server's label limit.
pub type SeriesLabels = Vec<(String, String)>;

/// The profile type every series of ours carries.
pub const METRIC_NAME: &str = "process_cpu";

/// What to do with processes that are not in a Pod's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutsidePods {
    /// Do not profile them (enforced in the kernel: their samples are not even taken).
    Skip,
    /// One series per systemd unit (`service_name` = the unit), else per executable.
    SystemdUnit,
    /// One series per executable name.
    #[default]
    Executable,
}

impl std::str::FromStr for OutsidePods {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(OutsidePods::Skip),
            "systemd-unit" => Ok(OutsidePods::SystemdUnit),
            "executable" => Ok(OutsidePods::Executable),
            other => Err(format!(
                "unknown policy {other:?}: use skip, systemd-unit or executable"
            )),
        }
    }
}

/// What the Kubernetes side knows of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// Series labels without `__name__`, in priority order (`service_name` first).
    pub labels: SeriesLabels,
    /// Whether the configured selection includes this Pod.
    pub selected: bool,
}

/// Container → Pod, implemented over the Kubernetes pod index.
pub trait PodResolver {
    /// What is known of the container's Pod; None when nothing is (not yet) known.
    fn resolve(&self, container: &ContainerRef) -> Option<PodTarget>;
    /// Whether every Pod is selected (no namespace or label selection).
    fn selects_everything(&self) -> bool;
}

/// Labels samples and chooses the kernel filter.
pub struct Targeting<'a> {
    pub node: &'a str,
    pub outside: OutsidePods,
    /// None when the Kubernetes API is not used.
    pub pods: Option<&'a dyn PodResolver>,
}

impl Targeting<'_> {
    fn selects_everything(&self) -> bool {
        self.pods.is_none_or(|p| p.selects_everything())
    }

    /// Whether the kernel should filter by cgroup, and with which ids: None when every process is
    /// profiled. Otherwise the selected containers' cgroups, plus every cgroup that is not a
    /// container's when processes outside pods are profiled (a cgroup created since the last scan
    /// is let through from the next scan on; its samples until then count as filtered).
    pub fn kernel_filter(&self, cgroups: &CgroupIndex) -> Option<HashSet<u64>> {
        if self.outside != OutsidePods::Skip && self.selects_everything() {
            return None;
        }
        // Without a cgroup v2 hierarchy (cgroup v1 hosts) tasks have no ids to select by:
        // select in userspace, from /proc/PID/cgroup.
        cgroups.root()?;
        let outside_wanted = self.outside != OutsidePods::Skip;
        let wanted = cgroups
            .entries()
            .filter(|(_, entry)| match &entry.container {
                None => outside_wanted,
                Some(container) => match self.pods.and_then(|p| p.resolve(container)) {
                    Some(target) => target.selected,
                    // Not (yet) known to the API: wanted only when everything is.
                    None => self.selects_everything(),
                },
            })
            .map(|(id, _)| id)
            .collect();
        Some(wanted)
    }

    /// The series of a sample, or None when it is not to be profiled. `entry` is its cgroup (if
    /// known), `proc_container` the container read from `/proc/PID/cgroup` when the cgroup id
    /// says nothing (cgroup v1 hosts), `exe` the process's name.
    pub fn series(
        &self,
        entry: Option<&CgroupEntry>,
        proc_container: Option<&ContainerRef>,
        exe: &str,
    ) -> Option<SeriesLabels> {
        let mut labels: SeriesLabels = vec![("__name__".into(), METRIC_NAME.into())];
        let container = entry.and_then(|e| e.container.as_ref()).or(proc_container);
        if let Some(container) = container {
            match self.pods.and_then(|p| p.resolve(container)) {
                Some(target) if target.selected => labels.extend(target.labels),
                Some(_) => return None,
                None if !self.selects_everything() => return None,
                None => {
                    let short = &container.container_id[..12.min(container.container_id.len())];
                    labels.push(("service_name".into(), format!("ebpf/container/{short}")));
                    labels.push(("node".into(), self.node.into()));
                    labels.push(("container_id".into(), container.container_id.clone()));
                    if let Some(uid) = &container.pod_uid {
                        labels.push(("pod_uid".into(), uid.clone()));
                    }
                }
            }
            return Some(labels);
        }
        let unit = entry.and_then(CgroupEntry::systemd_unit);
        let service = match self.outside {
            OutsidePods::Skip => return None,
            OutsidePods::SystemdUnit => unit.unwrap_or(exe),
            OutsidePods::Executable => exe,
        };
        labels.push(("service_name".into(), service.to_string()));
        labels.push(("node".into(), self.node.into()));
        if let Some(unit) = unit {
            labels.push(("systemd_unit".into(), unit.to_string()));
        }
        Some(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Runtime;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Fake {
        selected: bool,
        known: bool,
        everything: bool,
    }

    impl PodResolver for Fake {
        fn resolve(&self, c: &ContainerRef) -> Option<PodTarget> {
            self.known.then(|| PodTarget {
                labels: vec![
                    ("service_name".into(), "ebpf/shop/web".into()),
                    ("pod".into(), format!("web-{}", &c.container_id[..4])),
                ],
                selected: self.selected,
            })
        }
        fn selects_everything(&self) -> bool {
            self.everything
        }
    }

    fn container_entry() -> CgroupEntry {
        CgroupEntry {
            path: format!("/kubepods.slice/cri-containerd-{ID}.scope"),
            container: Some(ContainerRef {
                container_id: ID.into(),
                runtime: Runtime::Containerd,
                pod_uid: None,
            }),
        }
    }

    fn host_entry() -> CgroupEntry {
        CgroupEntry {
            path: "/system.slice/nginx.service".into(),
            container: None,
        }
    }

    #[test]
    fn pod_containers_get_their_pod_labels_and_selection() {
        let fake = Fake {
            selected: true,
            known: true,
            everything: false,
        };
        let t = Targeting {
            node: "n1",
            outside: OutsidePods::Skip,
            pods: Some(&fake),
        };
        let labels = t.series(Some(&container_entry()), None, "web").unwrap();
        assert_eq!(labels[0], ("__name__".into(), "process_cpu".into()));
        assert_eq!(labels[1], ("service_name".into(), "ebpf/shop/web".into()));
        assert_eq!(t.series(Some(&host_entry()), None, "nginx"), None);

        let unselected = Fake {
            selected: false,
            ..fake
        };
        let t = Targeting {
            pods: Some(&unselected),
            ..t
        };
        assert_eq!(t.series(Some(&container_entry()), None, "web"), None);
    }

    #[test]
    fn unknown_containers_are_labelled_by_id_only_when_everything_is_selected() {
        let unknown = Fake {
            selected: false,
            known: false,
            everything: true,
        };
        let t = Targeting {
            node: "n1",
            outside: OutsidePods::Executable,
            pods: Some(&unknown),
        };
        let labels = t.series(Some(&container_entry()), None, "x").unwrap();
        assert!(labels.contains(&("service_name".into(), "ebpf/container/0123456789ab".into())));
        assert!(labels.contains(&("container_id".into(), ID.into())));

        let narrowed = Fake {
            everything: false,
            ..unknown
        };
        let t = Targeting {
            pods: Some(&narrowed),
            ..t
        };
        assert_eq!(t.series(Some(&container_entry()), None, "x"), None);
    }

    #[test]
    fn processes_outside_pods_follow_the_policy() {
        let mut t = Targeting {
            node: "n1",
            outside: OutsidePods::SystemdUnit,
            pods: None,
        };
        let labels = t
            .series(Some(&host_entry()), None, "nginx: worker")
            .unwrap();
        assert!(labels.contains(&("service_name".into(), "nginx.service".into())));
        assert!(labels.contains(&("systemd_unit".into(), "nginx.service".into())));
        t.outside = OutsidePods::Executable;
        let labels = t.series(Some(&host_entry()), None, "nginx").unwrap();
        assert!(labels.contains(&("service_name".into(), "nginx".into())));
        t.outside = OutsidePods::Skip;
        assert_eq!(t.series(Some(&host_entry()), None, "nginx"), None);
        assert_eq!(t.series(None, None, "nginx"), None);
    }

    #[test]
    fn without_cgroup_v2_selection_stays_in_userspace() {
        let t = Targeting {
            node: "n1",
            outside: OutsidePods::Skip,
            pods: None,
        };
        assert_eq!(t.kernel_filter(&CgroupIndex::new(None)), None);
    }

    #[test]
    fn proc_cgroup_fallback_finds_the_container() {
        let t = Targeting {
            node: "n1",
            outside: OutsidePods::Skip,
            pods: None,
        };
        let c = container_entry().container.unwrap();
        assert!(t.series(None, Some(&c), "x").is_some());
    }

    #[test]
    fn kernel_filter_lists_selected_containers_and_is_off_when_all_is_wanted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(format!(
            "kubepods.slice/kubepods-pod1234abcd_0000_1111_2222_333344445555.slice/cri-containerd-{ID}.scope"
        )))
        .unwrap();
        let mut index = CgroupIndex::new(Some(dir.path().to_path_buf()));
        index.rescan();

        let all = Targeting {
            node: "n",
            outside: OutsidePods::Executable,
            pods: None,
        };
        assert_eq!(all.kernel_filter(&index), None);

        let pods_only = Targeting {
            outside: OutsidePods::Skip,
            ..all
        };
        assert_eq!(pods_only.kernel_filter(&index).unwrap().len(), 1);

        let none_selected = Fake {
            selected: false,
            known: true,
            everything: false,
        };
        let t = Targeting {
            pods: Some(&none_selected),
            outside: OutsidePods::Skip,
            node: "n",
        };
        assert!(t.kernel_filter(&index).unwrap().is_empty());

        // Narrowed selection, host processes wanted: every non-container cgroup, no container.
        let t = Targeting {
            outside: OutsidePods::Executable,
            ..t
        };
        let wanted = t.kernel_filter(&index).unwrap();
        assert_eq!(wanted.len(), index.len() - 1);
    }
}

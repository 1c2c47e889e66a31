//! From a cgroup path to the container and Kubernetes Pod it belongs to.
//!
//! The kernel gives a cgroup v2 id; its path (from the cgroup2 hierarchy, or `/proc/PID/cgroup`
//! on cgroup v1 hosts) names the container runtime's scope. The shapes handled here are the ones
//! containerd, CRI-O and docker produce under the systemd and cgroupfs drivers, nested (kind)
//! and inside private cgroup namespaces. A path that is not a container's gives `None`.

/// Which runtime created a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A cgroupfs-driver path that names no runtime (`.../pod<uid>/<id>`).
    Unknown,
}

/// What a cgroup path says about its container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// The 64-hex container id.
    pub container_id: String,
    pub runtime: Runtime,
    /// The Pod UID, normalised to the API's form (dashes, not the underscores of systemd unit
    /// names); for static pods a 32-hex hash.
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id in one path component, with its runtime, if the component is a container
/// scope (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, a bare `<id>`).
/// `crio-conmon-<id>` is CRI-O's monitor process, not the workload.
fn container_component(component: &str) -> Option<(String, Runtime)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if name.starts_with("crio-conmon-") {
        return None;
    }
    for (prefix, runtime) in [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ] {
        if let Some(id) = name.strip_prefix(prefix) {
            return is_container_id(id).then(|| (id.to_ascii_lowercase(), runtime));
        }
    }
    is_container_id(name).then(|| (name.to_ascii_lowercase(), Runtime::Unknown))
}

/// The Pod UID in one path component (`kubepods-burstable-pod<uid>.slice` with `_` for `-`, or
/// `pod<uid>` under the cgroupfs driver).
fn pod_component(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let uid = match name.rfind("-pod") {
        Some(i) if name.contains("kubepods") => &name[i + 4..],
        _ => name.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    let hex_and_dashes = uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let valid = hex_and_dashes && (uid.len() == 36 || (uid.len() == 32 && !uid.contains('-')));
    valid.then(|| uid.to_ascii_lowercase())
}

/// Parses a cgroup path (v2 path, or the path field of a v1 line). `None` when it is not a
/// container's.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerRef> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The innermost container scope wins (kind nests a node's containers in a docker one).
    let (index, (container_id, runtime)) = components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| container_component(c).map(|found| (i, found)))?;
    let pod_uid = components[..index]
        .iter()
        .rev()
        .find_map(|c| pod_component(c));
    // A bare 64-hex directory is only a container under a pod (cgroupfs) or docker's tree.
    if runtime == Runtime::Unknown && pod_uid.is_none() {
        let parent = index.checked_sub(1).map(|i| components[i]);
        if parent != Some("docker") {
            return None;
        }
        return Some(ContainerRef {
            container_id,
            runtime: Runtime::Docker,
            pod_uid: None,
        });
    }
    Some(ContainerRef {
        container_id,
        runtime,
        pod_uid,
    })
}

/// The container of a process, from `/proc/PID/cgroup` text: the v2 line if it names one, else
/// any v1 line that does (hybrid and v1-only hosts).
pub fn parse_proc_cgroup(text: &str) -> Option<ContainerRef> {
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(_controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" {
            if let Some(found) = parse_cgroup_path(path) {
                return Some(found);
            }
        } else if v1.is_none() {
            v1 = parse_cgroup_path(path);
        }
    }
    v1
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "2f8c6b1e-8d3a-4c55-9a0e-5b7d4f1e2a3c";
    const UID_SYSTEMD: &str = "2f8c6b1e_8d3a_4c55_9a0e_5b7d4f1e2a3c";

    fn check(path: &str, runtime: Runtime, pod: Option<&str>) {
        let got = parse_cgroup_path(path).unwrap_or_else(|| panic!("no container in {path}"));
        assert_eq!(got.container_id, ID, "{path}");
        assert_eq!(got.runtime, runtime, "{path}");
        assert_eq!(got.pod_uid.as_deref(), pod, "{path}");
    }

    #[test]
    fn containerd_systemd_driver_every_qos_class() {
        for qos in ["burstable", "besteffort"] {
            check(
                &format!(
                    "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_SYSTEMD}.slice/\
                     cri-containerd-{ID}.scope"
                ),
                Runtime::Containerd,
                Some(UID),
            );
        }
        // Guaranteed pods have no QoS slice.
        check(
            &format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
            Runtime::Containerd,
            Some(UID),
        );
    }

    #[test]
    fn cgroupfs_driver() {
        check(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Runtime::Unknown,
            Some(UID),
        );
        check(
            &format!("/kubepods/pod{UID}/{ID}"),
            Runtime::Unknown,
            Some(UID),
        );
    }

    #[test]
    fn crio_both_drivers_and_its_monitor() {
        check(
            &format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"),
            Runtime::CriO,
            Some(UID),
        );
        check(
            &format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
            Runtime::CriO,
            Some(UID),
        );
        assert_eq!(
            parse_cgroup_path(&format!(
                "/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
    }

    #[test]
    fn docker_without_kubernetes() {
        check(
            &format!("/system.slice/docker-{ID}.scope"),
            Runtime::Docker,
            None,
        );
        check(&format!("/docker/{ID}"), Runtime::Docker, None);
    }

    #[test]
    fn kind_nesting_takes_the_innermost_container() {
        let outer = "f".repeat(64);
        check(
            &format!(
                "/docker/{outer}/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
            Some(UID),
        );
    }

    #[test]
    fn private_cgroup_namespace_relative_paths() {
        check(
            &format!("/../../kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
            Runtime::Containerd,
            Some(UID),
        );
    }

    #[test]
    fn static_pod_uid_is_a_hash() {
        let hash = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        check(
            &format!("/kubepods.slice/kubepods-pod{hash}.slice/cri-containerd-{ID}.scope"),
            Runtime::Containerd,
            Some(hash),
        );
    }

    #[test]
    fn not_containers() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/init.scope",
            &format!("/some/{ID}"),
            &format!("/kubepods.slice/cri-containerd-{}.scope", &ID[..60]),
        ] {
            assert_eq!(parse_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_prefers_v2_and_falls_back_to_v1() {
        let v2 = format!(
            "0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(parse_proc_cgroup(&v2).unwrap().container_id, ID);
        let hybrid = format!(
            "12:memory:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"
        );
        let got = parse_proc_cgroup(&hybrid).unwrap();
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
        assert_eq!(parse_proc_cgroup("0::/user.slice\n3:cpu:/\n"), None);
        assert_eq!(parse_proc_cgroup("garbage\n\n::\n"), None);
    }
}

//! A static pod's container as the static path made it before its containers went through
//! the runtime's CRI side (docs/architecture.md, step C2a). Written independently of
//! [`super::cri_config`], it is the equivalence tests' statement of what a static pod's
//! container must be: the runtime's reading of the generated `ContainerConfig` is compared
//! with it field by field.

use k8s_openapi::api::core::v1::PodSpec;

use super::command;
use super::config::{ContainerInputs, check_non_root, environment, merged_security_context, mounts, run_as, spec};
use super::node::NodeInfo;
use super::qos;
use crate::cgroups::DevicePolicy;
use crate::images::Image;
use crate::runtime::capabilities;
use crate::runtime::container::ContainerConfig;
use crate::runtime::seccomp::SeccompArgs;
use crate::runtime::spec::{ProcessSpec, StdioSpec, UserSpec};
use crate::runtime::state::Layout;

/// The runtime configuration of one container attempt, or why it cannot be made
/// (`CreateContainerConfigError`, in the kubelet's words).
pub fn container_config(
    layout: &Layout,
    seccomp_args: &SeccompArgs,
    node: &NodeInfo,
    i: &ContainerInputs,
    image: &Image,
) -> Result<ContainerConfig, String> {
    let c = i.container;
    let pod_spec = spec(i.pod);
    let sc = merged_security_context(pod_spec, c);

    let (env, pod_env) = environment(i.pod, c, node, i.pod_ips, &image.config.env, &i.plan.hostname)?;
    let args = command::resolve_expanded(
        c.command.as_deref().unwrap_or_default(),
        c.args.as_deref().unwrap_or_default(),
        &image.config.entrypoint,
        &image.config.cmd,
        &pod_env,
    );
    if args.is_empty() {
        return Err(format!(
            "no command specified: the image {} has no Entrypoint or Cmd and the container sets no command",
            image.summary.name
        ));
    }

    if sc.run_as_non_root == Some(true) {
        check_non_root(sc.run_as_user, &image.config.user)?;
    }
    let (supplemental_groups, strict_groups) = pod_groups(pod_spec);
    // As the runtime reads the kubelet's ContainerConfig: its user, else the image's.
    let run_as = run_as(&sc, &image.config.user);
    let user = UserSpec {
        uid: run_as.uid.map(|u| u as u32),
        gid: sc.run_as_group.map(|g| g as u32),
        image_user: if run_as.username.is_empty() {
            image.config.user.clone()
        } else {
            run_as.username
        },
        supplemental_groups,
        strict_groups,
    };

    let privileged = sc.privileged == Some(true);
    let caps = sc.capabilities.as_ref();
    let capabilities = (!privileged).then(|| {
        capabilities::effective_set(
            caps.and_then(|c| c.add.as_deref()).unwrap_or_default(),
            caps.and_then(|c| c.drop.as_deref()).unwrap_or_default(),
        )
    });

    let seccomp = super::security::seccomp_request(pod_spec, c, seccomp_args)?;

    let working_dir = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| image.config.working_dir.clone());

    Ok(ContainerConfig {
        pod_uid: i.uid.to_string(),
        pod_dir: layout.pod_dir(i.uid),
        name: c.name.clone(),
        attempt: i.attempt,
        image_ref: c.image.clone().unwrap_or_default(),
        image: image.clone(),
        pod_cgroup: i.plan.cgroup.clone(),
        resources: qos::container_resources(c),
        // Kubernetes gives a privileged container every device; others the runtimes' default.
        devices: if privileged {
            DevicePolicy::AllowAll
        } else {
            DevicePolicy::Default
        },
        oom_score_adj: qos::oom_score_adj(pod_spec, i.plan.qos, c, node.memory_bytes),
        share_pid: i.plan.share_pid,
        process: ProcessSpec {
            args,
            env,
            cwd: if working_dir.is_empty() {
                "/".into()
            } else {
                working_dir
            },
            user,
            capabilities,
            no_new_privileges: sc.allow_privilege_escalation == Some(false),
            seccomp: None,
            stdio: StdioSpec {
                stdin: c.stdin == Some(true),
                stdin_once: c.stdin_once == Some(true),
                tty: c.tty == Some(true),
            },
        },
        mounts: mounts(layout, i)?,
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        kernel_paths: None,
        log_path: i.log_path.clone(),
        seccomp,
    })
}

/// The pod's supplemental groups with its fsGroup, and whether its policy is Strict: what
/// its pause and every container are given.
pub(super) fn pod_groups(spec: &PodSpec) -> (Vec<u32>, bool) {
    let psc = spec.security_context.as_ref();
    let groups = psc
        .map(|p| {
            p.supplemental_groups
                .iter()
                .flatten()
                .copied()
                .chain(p.fs_group)
                .map(|g| g as u32)
                .collect()
        })
        .unwrap_or_default();
    let strict = psc.and_then(|p| p.supplemental_groups_policy.as_deref()) == Some("Strict");
    (groups, strict)
}

//! seccomp and AppArmor as the kubelet reads them from a pod: the profile a container asks
//! for, the API server's validation of those fields, and the node's admission of pods that
//! ask for what this node cannot enforce (AppArmor, user namespaces).

use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::runtime::seccomp::{Request, SeccompArgs};

const PROFILE_TYPES: [&str; 3] = ["Localhost", "RuntimeDefault", "Unconfined"];

/// The annotation prefix of the deprecated per-container AppArmor profile.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The seccomp profile of a container, as the kubelet hands it to the runtime: the
/// container's `securityContext.seccompProfile`, else the pod's, else RuntimeDefault with
/// `--seccomp-default` and Unconfined without. A Localhost profile is a path under
/// `--seccomp-profile-root`, never outside it.
pub fn seccomp_request(spec: &PodSpec, c: &Container, args: &SeccompArgs) -> Result<Request, String> {
    let from_container = c.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref());
    let from_pod = spec.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref());
    let Some(p) = from_container.or(from_pod) else {
        return Ok(if args.seccomp_default {
            Request::RuntimeDefault
        } else {
            Request::Unconfined
        });
    };
    match p.type_.as_str() {
        "RuntimeDefault" => Ok(Request::RuntimeDefault),
        "Unconfined" => Ok(Request::Unconfined),
        "Localhost" => {
            let rel = p.localhost_profile.as_deref().unwrap_or_default();
            if let Some(problem) = descending_path_problem(rel) {
                return Err(format!("seccompProfile.localhostProfile {rel:?}: {problem}"));
            }
            Ok(Request::Localhost(args.seccomp_profile_root.join(rel)))
        }
        other => Err(format!("seccompProfile.type {other:?}: not one of {PROFILE_TYPES:?}")),
    }
}

/// Why `path` is not a relative path that stays below its root (Kubernetes'
/// `validateLocalDescendingPath`), if it is not.
fn descending_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("must be set when seccomp type is Localhost");
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Some("must be a relative path");
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Some("must not contain '..'");
    }
    None
}

/// The seccomp and AppArmor profiles of one security context (pod or container level: the
/// two context types share these fields) at `path`.
fn profiles_errors(
    path: &str,
    seccomp: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    apparmor: Option<&k8s_openapi::api::core::v1::AppArmorProfile>,
    errs: &mut Vec<String>,
) {
    if let Some(p) = seccomp {
        profile_errors(
            &format!("{path}.seccompProfile"),
            "seccomp",
            &p.type_,
            p.localhost_profile.as_deref(),
            errs,
        );
    }
    if let Some(p) = apparmor {
        profile_errors(
            &format!("{path}.appArmorProfile"),
            "AppArmor",
            &p.type_,
            p.localhost_profile.as_deref(),
            errs,
        );
    }
}

/// The API server's validation of seccompProfile and appArmorProfile, pod and container
/// level, with its field paths and wording. A static pod failing it is an invalid manifest.
pub fn validate(pod: &Pod) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(spec) = &pod.spec else { return errs };
    if let Some(sc) = &spec.security_context {
        profiles_errors(
            "spec.securityContext",
            sc.seccomp_profile.as_ref(),
            sc.app_armor_profile.as_ref(),
            &mut errs,
        );
    }
    let lists = [
        ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let Some(sc) = &c.security_context else { continue };
            profiles_errors(
                &format!("spec.{list}[{i}].securityContext"),
                sc.seccomp_profile.as_ref(),
                sc.app_armor_profile.as_ref(),
                &mut errs,
            );
        }
    }
    errs
}

fn profile_errors(path: &str, what: &str, kind: &str, localhost: Option<&str>, errs: &mut Vec<String>) {
    if !PROFILE_TYPES.contains(&kind) {
        let list = PROFILE_TYPES.map(|t| format!("{t:?}")).join(", ");
        errs.push(format!(
            "{path}.type: Unsupported value: {kind:?}: supported values: {list}"
        ));
        return;
    }
    let field = format!("{path}.localhostProfile");
    match (kind, localhost) {
        ("Localhost", None | Some("")) => errs.push(format!(
            "{field}: Required value: must be set when {what} type is Localhost"
        )),
        ("Localhost", Some(p)) if what == "seccomp" => {
            if let Some(problem) = descending_path_problem(p) {
                errs.push(format!("{field}: Invalid value: {p:?}: {problem}"));
            }
        }
        ("Localhost", Some(_)) => {}
        (_, Some(p)) if !p.is_empty() => errs.push(format!(
            "{field}: Invalid value: {p:?}: can only be set when {what} type is Localhost"
        )),
        _ => {}
    }
}

/// Why the kubelet would not admit `pod` on this node (its admission reason and message),
/// if it would not. minilet applies no AppArmor profile, so a pod asking for one (the
/// `appArmorProfile` fields or the deprecated annotations) is refused rather than run
/// unconfined; the message is the kubelet's on a host without AppArmor.
pub fn admit(pod: &Pod) -> Result<(), Rejection> {
    if wants_apparmor(pod) {
        let why = if apparmor_enabled() {
            "minilet does not apply AppArmor profiles"
        } else {
            "AppArmor is not enabled on the host"
        };
        return Err(Rejection {
            reason: "AppArmor".into(),
            message: format!("Cannot enforce AppArmor: {why}"),
        });
    }
    Ok(())
}

/// A pod the node refused: its status reason and message, as the kubelet's admission gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

/// Whether any AppArmor profile other than Unconfined is asked for (the kubelet's `isRequired`).
fn wants_apparmor(pod: &Pod) -> bool {
    let confined = |t: &str| t != "Unconfined";
    let spec = pod.spec.as_ref();
    let pod_level = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.app_armor_profile.as_ref())
        .is_some_and(|p| confined(&p.type_));
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
    let container_level = containers
        .filter_map(|c| c.security_context.as_ref()?.app_armor_profile.as_ref())
        .any(|p| confined(&p.type_));
    let annotated = pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, v)| k.starts_with(APPARMOR_ANNOTATION_PREFIX) && v != "unconfined");
    pod_level || container_level || annotated
}

/// AppArmor is on when the kernel module says so (what runc and the kubelet check).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'))
}

/// `hostUsers: false` asks for a user namespace, which minilet does not create: sandbox
/// creation fails as the kubelet's does when the runtime handler has no user namespaces.
pub fn user_namespace_problem(pod: &Pod) -> Option<String> {
    (pod.spec.as_ref()?.host_users == Some(false)).then(|| {
        "RuntimeClass handler \"\" does not support user namespaces (spec.hostUsers: false): \
         minilet runs every pod in the host's user namespace"
            .to_string()
    })
}

/// Why the pod's sandbox cannot be made as the kubelet asks for it: runAsGroup without
/// runAsUser. The kubelet sends the group alone for the sandbox and the CRI requires a user
/// with it (containerd fails RunPodSandbox: "user group is specified without user"), so such
/// a pod never gets a sandbox; a container's runAsGroup alone is fine (the kubelet sends the
/// image's user with it).
pub fn sandbox_user_problem(pod: &Pod) -> Option<String> {
    let psc = pod.spec.as_ref()?.security_context.as_ref()?;
    match (psc.run_as_user, psc.run_as_group) {
        (None, Some(gid)) => Some(format!(
            "spec.securityContext.runAsGroup ({gid}) is set without spec.securityContext.runAsUser: \
             the runtime cannot run the sandbox as a group without a user"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";

    fn args(default: bool) -> SeccompArgs {
        SeccompArgs {
            seccomp_default: default,
            seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
        }
    }

    #[test]
    fn container_wins_then_pod_then_the_flag() {
        let p = pod(&format!(
            "{BASE}spec:\n  securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}\n  containers:\n  - {{name: a, image: x}}\n  - {{name: b, image: x, securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: profiles/b.json}}}}}}\n  - {{name: c, image: x, securityContext: {{seccompProfile: {{type: Unconfined}}}}}}\n"
        ));
        let spec = p.spec.as_ref().unwrap();
        let req = |i: usize, a: &SeccompArgs| seccomp_request(spec, &spec.containers[i], a).unwrap();
        assert_eq!(req(0, &args(false)), Request::RuntimeDefault);
        assert_eq!(
            req(1, &args(false)),
            Request::Localhost("/var/lib/kubelet/seccomp/profiles/b.json".into())
        );
        assert_eq!(req(2, &args(true)), Request::Unconfined);

        let bare = pod(&format!("{BASE}spec:\n  containers: [{{name: a, image: x}}]\n"));
        let spec = bare.spec.as_ref().unwrap();
        assert_eq!(
            seccomp_request(spec, &spec.containers[0], &args(false)).unwrap(),
            Request::Unconfined
        );
        assert_eq!(
            seccomp_request(spec, &spec.containers[0], &args(true)).unwrap(),
            Request::RuntimeDefault
        );
    }

    #[test]
    fn localhost_paths_stay_under_the_root() {
        for (bad, why) in [
            ("../etc/x.json", "'..'"),
            ("a/../../x", "'..'"),
            ("/etc/x.json", "relative"),
        ] {
            let p = pod(&format!(
                "{BASE}spec:\n  containers: [{{name: a, image: x, securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: '{bad}'}}}}}}]\n"
            ));
            let spec = p.spec.as_ref().unwrap();
            let e = seccomp_request(spec, &spec.containers[0], &args(false)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            let v = validate(&p);
            assert_eq!(v.len(), 1, "{v:?}");
            assert!(
                v[0].starts_with("spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value:"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn field_validation() {
        let p = pod(&format!(
            "{BASE}spec:\n  securityContext: {{seccompProfile: {{type: Localhost}}, appArmorProfile: {{type: Bogus}}}}\n  initContainers:\n  - {{name: i, image: x, securityContext: {{seccompProfile: {{type: RuntimeDefault, localhostProfile: x.json}}}}}}\n  containers:\n  - {{name: a, image: x, securityContext: {{appArmorProfile: {{type: Localhost}}}}}}\n"
        ));
        let v = validate(&p);
        assert_eq!(
            v,
            [
                "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
                "spec.securityContext.appArmorProfile.type: Unsupported value: \"Bogus\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
                "spec.initContainers[0].securityContext.seccompProfile.localhostProfile: Invalid value: \"x.json\": can only be set when seccomp type is Localhost",
                "spec.containers[0].securityContext.appArmorProfile.localhostProfile: Required value: must be set when AppArmor type is Localhost",
            ]
        );
        let ok = pod(&format!(
            "{BASE}spec:\n  containers: [{{name: a, image: x, securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: my/p.json}}}}}}]\n"
        ));
        assert!(validate(&ok).is_empty());
    }

    #[test]
    fn apparmor_requests_are_refused_unconfined_is_not() {
        let field = pod(&format!(
            "{BASE}spec:\n  containers: [{{name: a, image: x, securityContext: {{appArmorProfile: {{type: RuntimeDefault}}}}}}]\n"
        ));
        let r = admit(&field).unwrap_err();
        assert_eq!(r.reason, "AppArmor");
        assert!(r.message.starts_with("Cannot enforce AppArmor: "), "{}", r.message);
        let pod_level = pod(&format!(
            "{BASE}spec:\n  securityContext: {{appArmorProfile: {{type: Localhost, localhostProfile: k8s-x}}}}\n  containers: [{{name: a, image: x}}]\n"
        ));
        assert!(admit(&pod_level).is_err());
        let annotated = pod(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {container.apparmor.security.beta.kubernetes.io/a: runtime/default}\nspec:\n  containers: [{name: a, image: x}]\n",
        );
        assert!(admit(&annotated).is_err());
        let unconfined = pod(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {container.apparmor.security.beta.kubernetes.io/a: unconfined}\nspec:\n  securityContext: {appArmorProfile: {type: Unconfined}}\n  containers: [{name: a, image: x}]\n",
        );
        assert_eq!(admit(&unconfined), Ok(()));
    }

    #[test]
    fn host_users_false_has_no_user_namespace() {
        let p = pod(&format!(
            "{BASE}spec:\n  hostUsers: false\n  containers: [{{name: a, image: x}}]\n"
        ));
        assert!(
            user_namespace_problem(&p)
                .unwrap()
                .contains("does not support user namespaces")
        );
        let p = pod(&format!(
            "{BASE}spec:\n  hostUsers: true\n  containers: [{{name: a, image: x}}]\n"
        ));
        assert_eq!(user_namespace_problem(&p), None);
    }
}

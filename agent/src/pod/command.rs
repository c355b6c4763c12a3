//! What a container runs: `command`/`args` against the image's Entrypoint/Cmd, exactly as
//! Kubernetes defines it, with `$(VAR)` references in the pod's command and args expanded
//! (never in the image's, which the kubelet leaves to the runtime as they are).
//!
//! | command | args | runs                              |
//! |---------|------|-----------------------------------|
//! | -       | -    | image Entrypoint + image Cmd      |
//! | set     | -    | command (image Cmd ignored)       |
//! | -       | set  | image Entrypoint + args           |
//! | set     | set  | command + args                    |

use super::expansion::expand;

/// The argv of a container, before variable expansion.
pub fn resolve(command: &[String], args: &[String], entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (true, true) => entrypoint.iter().chain(cmd).cloned().collect(),
        (false, true) => command.to_vec(),
        (true, false) => entrypoint.iter().chain(args).cloned().collect(),
        (false, false) => command.iter().chain(args).cloned().collect(),
    }
}

/// The argv of a container: the pod's command and args with `$(VAR)` expanded from `env`,
/// then merged with the image's Entrypoint and Cmd, which stay as they are (the static
/// path's, kept for the equivalence tests; the runtime merges them itself).
#[cfg(test)]
pub fn resolve_expanded(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
    env: &[(String, String)],
) -> Vec<String> {
    resolve(&expand_args(command, env), &expand_args(args, env), entrypoint, cmd)
}

/// Expand `$(VAR)` in command and args, using the container's env (from the pod spec).
/// Only what the pod itself sets counts, not the image's env: that is Kubernetes' rule.
pub fn expand_args(argv: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    argv.iter().map(|a| expand(a, lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_four_cases() {
        let ep = v(&["/docker-entrypoint.sh"]);
        let cmd = v(&["nginx", "-g", "daemon off;"]);
        assert_eq!(
            resolve(&[], &[], &ep, &cmd),
            v(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"])
        );
        assert_eq!(resolve(&v(&["sh"]), &[], &ep, &cmd), v(&["sh"]));
        assert_eq!(
            resolve(&[], &v(&["-c", "x"]), &ep, &cmd),
            v(&["/docker-entrypoint.sh", "-c", "x"])
        );
        assert_eq!(resolve(&v(&["sh"]), &v(&["-c", "x"]), &ep, &cmd), v(&["sh", "-c", "x"]));
        assert!(resolve(&[], &[], &[], &[]).is_empty());
    }

    #[test]
    fn only_the_pods_command_and_args_are_expanded() {
        let env = vec![("X".to_string(), "x".to_string())];
        let ep = v(&["/entry", "$(X)"]);
        let cmd = v(&["echo", "$(X)"]);
        assert_eq!(
            resolve_expanded(&[], &[], &ep, &cmd, &env),
            v(&["/entry", "$(X)", "echo", "$(X)"]),
            "the image's Entrypoint and Cmd stay literal"
        );
        assert_eq!(
            resolve_expanded(&[], &v(&["$(X)"]), &ep, &cmd, &env),
            v(&["/entry", "$(X)", "x"]),
            "the pod's args are expanded, the image's Entrypoint is not"
        );
        assert_eq!(
            resolve_expanded(&v(&["sh", "$(X)"]), &v(&["$(X)"]), &ep, &cmd, &env),
            v(&["sh", "x", "x"])
        );
    }

    #[test]
    fn args_use_the_pods_env_only() {
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        assert_eq!(
            expand_args(&v(&["echo", "$(GREETING) $(HOME)", "$$(GREETING)"]), &env),
            v(&["echo", "hi $(HOME)", "$(GREETING)"])
        );
    }
}

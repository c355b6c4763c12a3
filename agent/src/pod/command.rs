//! What a container runs: `command`/`args` against the image's Entrypoint/Cmd, exactly as
//! Kubernetes defines it, then `$(VAR)` references expanded.
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
    fn args_use_the_pods_env_only() {
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        assert_eq!(
            expand_args(&v(&["echo", "$(GREETING) $(HOME)", "$$(GREETING)"]), &env),
            v(&["echo", "hi $(HOME)", "$(GREETING)"])
        );
    }
}

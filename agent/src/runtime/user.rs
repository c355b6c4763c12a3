//! Who a container process runs as, resolved against the container's own /etc/passwd and
//! /etc/group (after pivot_root), with runc's rules.

use super::spec::UserSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A numeric user or group that no Linux ID can be (0-4294967294): refused, not looked
    /// up as a name.
    #[error("{0} is not a valid user or group ID (0-4294967294)")]
    IdOutOfRange(String),
}

/// A user or group as written: a number (a Linux ID) or a name. Digits that no ID can be are
/// an error, not a name.
fn numeric_id(s: &str) -> Result<Option<u32>, UserError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(id) if id != u32::MAX => Ok(Some(id)),
        _ => Err(UserError::IdOutOfRange(s.to_string())),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members,
        })
    })
}

/// Resolve `spec` given the contents of the container's passwd and group files (if any).
///
/// runAsUser/runAsGroup win over the image's `User` (runAsGroup also over the group of a
/// named user without runAsUser). A numeric user missing from passwd is
/// fine (gid 0, home /); a user name must exist. The user's groups from /etc/group are added
/// (unless `strict_groups`), then the pod's supplemental groups.
pub fn resolve(spec: &UserSpec, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser, UserError> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");

    // The user: runAsUser, else the named user (the image's `User`, or a CRI client's
    // run_as_username). The group: runAsGroup with either (containerd's "user:gid"), else
    // the group the named user string carries, else the user's own.
    let (user_part, named_group) = match spec.uid {
        Some(uid) => (uid.to_string(), None),
        None => match spec.image_user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (spec.image_user.clone(), None),
        },
    };
    let user_part = if user_part.is_empty() {
        "0".to_string()
    } else {
        user_part
    };

    let numeric = numeric_id(&user_part)?;
    let entry = passwd_entries(passwd).find(|e| match numeric {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let (uid, mut gid, home, name) = match (&entry, numeric) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name)),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => return Err(UserError::NoUser(user_part)),
    };

    let group_override = spec.gid.map(|g| g.to_string()).or(named_group);
    if let Some(g) = group_override.filter(|g| !g.is_empty()) {
        gid = match numeric_id(&g)? {
            Some(n) => n,
            None => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or(UserError::NoGroup(g))?,
        };
    }

    let mut additional: Vec<u32> = Vec::new();
    if let Some(name) = name.filter(|_| !spec.strict_groups) {
        for g in group_entries(group).filter(|g| g.members.contains(&name)) {
            if g.gid != gid && !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    for &g in &spec.supplemental_groups {
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nnginx:x:101:\nwww:x:33:nginx,other\nnogroup:x:65534:\n";

    fn spec(image_user: &str, uid: Option<u32>, gid: Option<u32>) -> UserSpec {
        UserSpec {
            uid,
            gid,
            image_user: image_user.into(),
            supplemental_groups: vec![],
            strict_groups: false,
        }
    }

    #[test]
    fn strict_policy_leaves_out_the_image_groups() {
        let mut s = spec("nginx", None, None);
        s.supplemental_groups = vec![2000];
        assert_eq!(r(&s).unwrap().additional_gids, vec![33, 2000]);
        s.strict_groups = true;
        assert_eq!(r(&s).unwrap().additional_gids, vec![2000]);
    }

    fn r(s: &UserSpec) -> Result<ResolvedUser, UserError> {
        resolve(s, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn image_user_forms() {
        assert_eq!(
            r(&spec("", None, None)).unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                home: "/root".into()
            }
        );
        let nginx = r(&spec("nginx", None, None)).unwrap();
        assert_eq!(
            (nginx.uid, nginx.gid, nginx.additional_gids.clone(), nginx.home.as_str()),
            (101, 101, vec![33], "/var/cache/nginx")
        );
        assert_eq!(r(&spec("101:33", None, None)).unwrap().gid, 33);
        assert_eq!(r(&spec("nginx:www", None, None)).unwrap().gid, 33);
        // Unknown numeric users are fine, unknown names are not.
        assert_eq!(
            r(&spec("1234", None, None)).unwrap(),
            ResolvedUser {
                uid: 1234,
                gid: 0,
                additional_gids: vec![],
                home: "/".into()
            }
        );
        assert_eq!(r(&spec("ghost", None, None)), Err(UserError::NoUser("ghost".into())));
        // Digits are an ID, never a name: one no Linux ID can be is refused as such.
        for user in ["4294967296", "4294967295", "0:4294967296", "99999999999999999999999"] {
            let bad = user.rsplit(':').next().unwrap_or(user).to_string();
            assert_eq!(r(&spec(user, None, None)), Err(UserError::IdOutOfRange(bad)), "{user}");
        }
        assert_eq!(
            r(&spec("nginx:ghosts", None, None)),
            Err(UserError::NoGroup("ghosts".into()))
        );
    }

    #[test]
    fn security_context_wins_over_the_image() {
        // runAsUser alone: the passwd entry's primary group.
        let u = r(&spec("nginx", Some(65534), None)).unwrap();
        assert_eq!((u.uid, u.gid), (65534, 65534));
        let u = r(&spec("nginx", Some(1000), Some(2000))).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        let mut s = spec("", None, None);
        s.supplemental_groups = vec![5000, 0];
        assert_eq!(r(&s).unwrap().additional_gids, vec![5000, 0]);
        // runAsGroup with a named user (a CRI client's run_as_username, or the image's user
        // the kubelet passes that way): that user with that group, the user's own groups kept.
        let u = r(&spec("nginx", None, Some(2000))).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone()), (101, 2000, vec![33]));
        let u = r(&spec("nginx:www", None, Some(2000))).unwrap();
        assert_eq!((u.uid, u.gid), (101, 2000), "runAsGroup wins over the named group");
        // No passwd file at all (a scratch image): numeric ids still work.
        assert_eq!(resolve(&spec("", Some(7), None), None, None).unwrap().uid, 7);
    }
}

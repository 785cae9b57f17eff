//! Who is calling: the peer uid of the admin socket (SO_PEERCRED) is the tenant.
//!
//! A tenant owns the processes it launches. Root and members of the configured admin group
//! see and act on every tenant's processes; everyone else sees only their own.

use nix::unistd::{Gid, Group, Uid, User};

#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    /// The user name when the uid resolves to one, else `uid-N`: names the scratch tree.
    pub tenant: String,
    pub admin: bool,
}

impl Caller {
    pub fn resolve(uid: u32, gid: u32, admin_group: &str) -> Caller {
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let tenant = user
            .as_ref()
            .map_or_else(|| format!("uid-{uid}"), |u| u.name.clone());
        let admin = uid == 0 || in_group(user.as_ref(), gid, admin_group);
        Caller { uid, tenant, admin }
    }

    /// Whether this caller may see or act on a process owned by `owner`.
    pub fn may_access(&self, owner: u32) -> bool {
        self.admin || self.uid == owner
    }

    pub fn to_proto(&self) -> proto::Caller {
        proto::Caller {
            uid: self.uid,
            tenant: self.tenant.clone(),
            admin: self.admin,
        }
    }
}

fn in_group(user: Option<&User>, gid: u32, group: &str) -> bool {
    if group.is_empty() {
        return false;
    }
    let Ok(Some(g)) = Group::from_name(group) else {
        return false;
    };
    g.gid == Gid::from_raw(gid) || user.is_some_and(|u| u.gid == g.gid || g.mem.contains(&u.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_and_others_see_only_their_own() {
        let root = Caller::resolve(0, 0, "no-such-group-xyz");
        assert!(root.admin);
        assert_eq!(root.tenant, "root");
        let nobody = Caller::resolve(65534, 65534, "no-such-group-xyz");
        assert!(!nobody.admin);
        assert!(nobody.may_access(65534));
        assert!(!nobody.may_access(0));
        let unknown = Caller::resolve(4_000_000, 4_000_000, "");
        assert_eq!(unknown.tenant, "uid-4000000");
    }
}

//! The caller's identity, as the gateway passes it: `x-user-id` and
//! `x-user-roles` (comma-separated) metadata. Services trust these headers
//! because only the gateway can reach them; the gateway strips any
//! client-sent values and sets verified ones.

use tonic::{Status, metadata::MetadataMap};

pub const USER_ID_HEADER: &str = "x-user-id";
pub const USER_ROLES_HEADER: &str = "x-user-roles";

/// A user id: 1-128 characters, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 128 {
            return Err("must be 1-128 characters".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Admin,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub roles: Vec<Role>,
}

impl Caller {
    /// Reads the caller from request metadata; `UNAUTHENTICATED` when absent
    /// or malformed. Unknown roles are ignored; no role means `customer`.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, Status> {
        let raw = metadata
            .get(USER_ID_HEADER)
            .ok_or_else(|| Status::unauthenticated("no caller identity: sign in (x-user-id metadata is missing)"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("x-user-id metadata must be ASCII"))?;
        let user_id = UserId::parse(raw).map_err(|why| Status::unauthenticated(format!("x-user-id {why}")))?;
        let mut roles: Vec<Role> = metadata
            .get(USER_ROLES_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(',')
            .filter_map(|role| match role.trim() {
                "customer" => Some(Role::Customer),
                "admin" => Some(Role::Admin),
                _ => None,
            })
            .collect();
        if roles.is_empty() {
            roles.push(Role::Customer);
        }
        Ok(Self { user_id, roles })
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether the caller may see or change a resource owned by `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin() || self.user_id.as_str() == owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().expect("ascii"));
        }
        m
    }

    #[test]
    fn reads_user_and_roles() {
        let c = Caller::from_metadata(&metadata(&[
            ("x-user-id", "alice"),
            ("x-user-roles", "customer, admin"),
        ]))
        .expect("valid");
        assert_eq!(c.user_id.as_str(), "alice");
        assert!(c.is_admin());
        assert!(c.may_access("bob"));
    }

    #[test]
    fn defaults_to_customer_and_checks_ownership() {
        let c = Caller::from_metadata(&metadata(&[("x-user-id", "alice")])).expect("valid");
        assert!(!c.is_admin());
        assert!(c.may_access("alice"));
        assert!(!c.may_access("bob"));
    }

    #[test]
    fn missing_or_bad_identity_is_unauthenticated() {
        let e = Caller::from_metadata(&MetadataMap::new()).expect_err("missing");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = Caller::from_metadata(&metadata(&[("x-user-id", "a b")])).expect_err("space");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
}

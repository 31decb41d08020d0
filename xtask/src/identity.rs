//! The identity key pair a stack's gateway signs with and its services
//! verify with, and `cargo xtask identity`.

use std::path::{Path, PathBuf};

use shop_runtime::identity;

use crate::{cmd, layout::Layout};

/// Where a stack keeps its identity key pair.
pub(crate) struct IdentityKeys {
    pub signing: PathBuf,
    pub verifying: PathBuf,
}

/// The identity key pair of the stack whose data is in `data`, made on first
/// use and kept with the data, so `cargo xtask identity` signs with it.
pub(crate) fn identity_keys(data: &Path) -> anyhow::Result<IdentityKeys> {
    let dir = data.join("identity");
    let keys = IdentityKeys {
        signing: dir.join("signing.pem"),
        verifying: dir.join("verifying.pem"),
    };
    if !(keys.signing.is_file() && keys.verifying.is_file()) {
        identity::write_key_pair(&keys.signing, &keys.verifying)?;
    }
    Ok(keys)
}

/// `cargo xtask identity <user> <roles> <method>…`: an identity token for
/// calling the services of `up` directly, signed with the stack's key as
/// the gateway would, good for the methods named (`package.Service/Method`)
/// for 30 s.
pub(crate) fn print_identity(args: &[&str]) -> anyhow::Result<()> {
    let [user, roles, methods @ ..] = args else {
        anyhow::bail!("usage: cargo xtask identity <user> <roles, comma-separated> <package.Service/Method>…");
    };
    if methods.is_empty() {
        anyhow::bail!("name at least one method, e.g. shop.inventory.v1.InventoryService/Restock");
    }
    let user = identity::UserId::parse(user).map_err(|why| anyhow::anyhow!("user {why}"))?;
    let keys = identity_keys(&Layout::from_env()?.data_dir(&cmd::root()))?;
    let issuer = identity::IdentityIssuer::from_file(&keys.signing)?;
    let paths: Vec<String> = methods
        .iter()
        .map(|m| format!("/{}", m.trim_start_matches('/')))
        .collect();
    let roles: Vec<&str> = roles.split(',').map(str::trim).collect();
    println!("{}", issuer.issue(&user, &roles, &paths));
    Ok(())
}

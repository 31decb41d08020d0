//! `identity-keys <dir>`: writes a new identity key pair into `dir`:
//! `signing.pem` (the gateway's `IDENTITY_SIGNING_KEY_FILE`, readable by its
//! owner only) and `verifying.pem` (every other service's
//! `IDENTITY_VERIFYING_KEY_FILE`). Shipped in the service image, so a
//! deployment can make its keys without other tools; `openssl genpkey
//! -algorithm ed25519` makes the same files.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: identity-keys <dir>"))?;
    let (signing, verifying) = (dir.join("signing.pem"), dir.join("verifying.pem"));
    if signing.exists() || verifying.exists() {
        anyhow::bail!("{} holds a key pair already; not replacing it", dir.display());
    }
    shop_runtime::identity::write_key_pair(&signing, &verifying)?;
    println!("wrote {} and {}", signing.display(), verifying.display());
    Ok(())
}

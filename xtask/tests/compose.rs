//! compose.yaml stays valid against the Compose Specification's JSON schema
//! (checked without a Docker engine, by check-jsonschema from the project's
//! venv).

use std::path::Path;
use std::process::Command;

use shop_infra::binaries;

#[test]
fn compose_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace");
    let compose = root.join("compose.yaml");
    let checker = binaries::find("check-jsonschema")
        .expect("check-jsonschema is not installed: run `cargo xtask install` (it goes into tools/venv)");
    let output = Command::new(&checker)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&compose)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", checker.display()));
    assert!(
        output.status.success(),
        "{} does not follow the Compose Specification:\n{}{}",
        compose.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

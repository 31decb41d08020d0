//! compose.yaml stays valid (checked without a Docker engine).

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

#[test]
fn compose_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace");
    let compose = root.join("compose.yaml");
    let output = match Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .args(["config", "-q"])
        .current_dir(root)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("docker-compose is not installed: run `cargo xtask install`")
        }
        Err(e) => panic!("could not run docker-compose: {e}"),
    };
    assert!(
        output.status.success(),
        "docker-compose config rejected {}:\n{}{}",
        compose.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

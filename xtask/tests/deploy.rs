//! The deployment files stay true: compose.yaml valid against the Compose
//! Specification's JSON schema (checked without a Docker engine, by
//! check-jsonschema from the project's venv), and Prometheus scraping every
//! service of the registry where `up` runs it.

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

#[test]
fn prometheus_scrapes_every_service_of_the_registry_at_its_admin_port() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace");
    let config = std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml")).expect("prometheus.yml");
    let lines: Vec<&str> = config.lines().map(str::trim).collect();
    let mut scraped = 0;
    for spec in shop_runtime::registry::ALL {
        let target = format!("- targets: [\"127.0.0.1:{}\"]", spec.admin_port);
        let at = lines
            .iter()
            .position(|line| *line == target)
            .unwrap_or_else(|| panic!("prometheus.yml does not scrape {} ({target})", spec.name));
        assert_eq!(
            lines.get(at + 1).copied(),
            Some(format!("labels: {{ service: {} }}", spec.name).as_str()),
            "the target of {}",
            spec.name
        );
        scraped += 1;
    }
    let targets = lines.iter().filter(|line| line.starts_with("- targets:")).count();
    assert_eq!(
        targets, scraped,
        "prometheus.yml scrapes something the registry does not have"
    );
}

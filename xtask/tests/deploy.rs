//! The deployment files stay true, checked offline (no Docker engine, no
//! cluster):
//!
//! - compose.yaml follows the Compose Specification's JSON schema
//!   (check-jsonschema from the project's venv) and runs every service of
//!   the registry reachable on its ports, with only the gateway published;
//! - the Dockerfile builds every service of the registry with the
//!   workspace's toolchain;
//! - every overlay of deploy/k8s renders (`kubectl kustomize`), follows
//!   Kubernetes' schemas (kubernetes-validate from the venv, `--strict`) and
//!   keeps the rules below: probes, limits and no privileges for every
//!   container, a Deployment, a disruption budget and an autoscaler for every
//!   service, shutdown within the kubelet's grace, no secret values in prod,
//!   only the gateway exposed, network policies that allow exactly the calls
//!   the platform makes, and a durable NATS whose configuration parses;
//! - Prometheus scrapes every service of the registry where `up` runs it;
//! - the payment provider emulator runs in compose and the dev overlay,
//!   where svc-payment charges through it and checks its webhooks with the
//!   secret it signs them with, and never in prod.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize as _;
use serde_norway::{Mapping, Value};
use shop_infra::binaries;
use shop_runtime::registry::{self, ServiceSpec};

/// The Kubernetes releases the manifests must be valid for: the oldest one
/// they are written for, and a recent one.
const KUBERNETES_VERSIONS: &[&str] = &["1.30", "1.34"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn compose_file_is_valid() {
    let compose = root().join("compose.yaml");
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
    let config = read(&root().join("deploy/prometheus/prometheus.yml"));
    let lines: Vec<&str> = config.lines().map(str::trim).collect();
    let mut scraped = 0;
    for spec in registry::ALL {
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

// ---------------------------------------------------------------- compose

/// Every service of the registry runs in compose.yaml as it would anywhere
/// else: its binary, listening on every interface at its registry ports,
/// told the others' URLs by compose service name, with what it keeps; only
/// the gateway is published, on loopback; only the gateway gets the signing
/// key; and Docker waits longer than a service drains.
#[test]
fn compose_runs_every_service_of_the_registry_and_publishes_only_the_gateway() {
    let docs = documents(&read(&root().join("compose.yaml")));
    let services = docs
        .first()
        .and_then(|doc| doc.get("services"))
        .and_then(Value::as_mapping)
        .expect("compose.yaml has services");
    let service = |name: &str| {
        services
            .get(name)
            .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
    };
    for spec in registry::ALL {
        let what = format!("compose.yaml: {}", spec.name);
        let service = service(spec.name);
        assert_eq!(
            strings(service.get("command")),
            [spec.name],
            "{what} runs another command"
        );
        let env = compose_env(service, &what);
        let var = |name: &str| env.get(name).map(String::as_str);
        check_service_env(spec, &env, &what);
        if let Some(database) = spec.database {
            let url = var("DATABASE_URL").unwrap_or_default();
            assert!(
                url.ends_with(&format!("/{database}")),
                "{what}: DATABASE_URL {url} is not {database}"
            );
        }

        let grace = var("SHUTDOWN_GRACE_PERIOD").unwrap_or_else(|| panic!("{what} has no SHUTDOWN_GRACE_PERIOD"));
        let stop = service
            .get("stop_grace_period")
            .and_then(Value::as_str)
            .unwrap_or("10s");
        assert!(
            duration(stop) > duration(grace),
            "{what}: Docker kills after {stop}, before the service has drained ({grace})"
        );

        let ports = strings(service.get("ports"));
        if spec.name == registry::GATEWAY.name {
            assert_eq!(
                ports,
                [format!("127.0.0.1:{0}:{0}", spec.grpc_port)],
                "{what} publishes"
            );
        } else {
            assert!(ports.is_empty(), "{what} publishes {ports:?}: only the gateway may");
        }
    }

    // The volume holding the signing key is mounted by the gateway alone.
    let gateway = service(registry::GATEWAY.name);
    let key = compose_env(gateway, "the gateway")["IDENTITY_SIGNING_KEY_FILE"].clone();
    let key_dir = Path::new(&key).parent().expect("a key file in a directory");
    let volume = strings(gateway.get("volumes"))
        .into_iter()
        .find_map(|mount| {
            let mut parts = mount.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            (Path::new(target) == key_dir).then(|| source.to_owned())
        })
        .expect("the gateway mounts the directory of its signing key");
    for spec in registry::ALL.iter().filter(|spec| spec.name != registry::GATEWAY.name) {
        for mount in strings(service(spec.name).get("volumes")) {
            assert!(
                mount.split(':').next() != Some(volume.as_str()),
                "{} mounts {volume}, which holds the gateway's signing key",
                spec.name
            );
        }
    }
}

/// The emulator runs in compose, svc-payment charges through it, and both
/// hold the one webhook secret; its webhooks go to the gateway.
#[test]
fn compose_runs_the_payment_provider_that_svc_payment_charges_through() {
    let docs = documents(&read(&root().join("compose.yaml")));
    let services = docs.first().and_then(|doc| doc.get("services")).expect("services");
    let provider = services
        .get(PROVIDER)
        .expect("compose.yaml runs the payment provider emulator");
    assert_eq!(strings(provider.get("command")), [PROVIDER]);
    let provider_env = compose_env(provider, "compose.yaml: payment-provider");
    let payment_env = compose_env(
        services.get(registry::PAYMENT.name).expect("svc-payment"),
        "compose.yaml: svc-payment",
    );
    check_provider_env(&provider_env, &payment_env, "compose.yaml");
}

/// What the emulator (`provider`) and svc-payment (`payment`) are told, as
/// one deployment: svc-payment charges through the emulator by its service
/// name and port, both hold the one webhook secret, and webhooks go to the
/// gateway.
fn check_provider_env(provider: &BTreeMap<String, String>, payment: &BTreeMap<String, String>, what: &str) {
    let port = provider
        .get("PROVIDER_LISTEN_ADDR")
        .and_then(|addr| addr.strip_prefix("0.0.0.0:"))
        .unwrap_or_else(|| panic!("{what}: the emulator does not listen on every interface"));
    assert_eq!(
        payment.get("PAYMENT_PROVIDER_URL"),
        Some(&format!("http://{PROVIDER}:{port}")),
        "{what}: svc-payment does not charge through the emulator"
    );
    let secret = payment.get("PAYMENT_WEBHOOK_SECRET");
    assert!(secret.is_some(), "{what}: svc-payment has no webhook secret");
    assert_eq!(
        provider.get("PROVIDER_WEBHOOK_SECRET"),
        secret,
        "{what}: the emulator signs with another secret than svc-payment checks"
    );
    assert_eq!(
        provider.get("PROVIDER_WEBHOOK_URL"),
        Some(&format!(
            "http://{}:{}{}",
            registry::GATEWAY.name,
            registry::GATEWAY.grpc_port,
            registry::PAYMENT_WEBHOOKS_PATH
        )),
        "{what}: the emulator's webhooks do not go to the gateway"
    );
}

/// The payment provider emulator's name: its binary, and its compose
/// service and Kubernetes Deployment.
const PROVIDER: &str = shop_provider::SERVICE.name;

/// A compose service's `environment`, merged (`<<`) as compose reads it.
fn compose_env(service: &Value, what: &str) -> BTreeMap<String, String> {
    let env = service
        .get("environment")
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("{what}: environment is not a mapping"));
    env.iter().map(|(key, value)| (scalar(key), scalar(value))).collect()
}

// ------------------------------------------------------------- Dockerfile

/// The image is built with the workspace's rust-version and holds every
/// binary the deployments run, as a numeric non-root user.
#[test]
fn the_image_builds_every_service_of_the_registry_with_the_workspace_toolchain() {
    let dockerfile = read(&root().join("Dockerfile"));
    let manifest = read(&root().join("Cargo.toml"));
    let rust_version = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("rust-version = "))
        .expect("the workspace's rust-version")
        .trim_matches('"');
    assert!(
        dockerfile
            .lines()
            .any(|line| line.trim() == format!("ARG RUST_VERSION={rust_version}")),
        "the Dockerfile does not build with rust-version {rust_version} (ARG RUST_VERSION)"
    );
    let copied = dockerfile
        .lines()
        .find(|line| line.trim().starts_with("&& for bin in"))
        .expect("the Dockerfile copies the binaries out of the build");
    for spec in registry::ALL {
        assert!(
            dockerfile.contains(&format!("-p {} ", spec.name)) || dockerfile.contains(&format!("-p {}\n", spec.name)),
            "the Dockerfile does not build {}",
            spec.name
        );
        assert!(
            copied.split_whitespace().any(|word| word == spec.name),
            "the Dockerfile does not copy {}",
            spec.name
        );
    }
    assert!(copied.contains("identity-keys"), "the image lacks identity-keys");
    assert!(
        dockerfile.contains("-p shop-provider")
            && copied
                .split_whitespace()
                .any(|word| word.trim_end_matches(';') == PROVIDER),
        "the image lacks the payment provider emulator, which compose and the dev overlay run"
    );
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, last)| last)
        .expect("a runtime stage");
    assert!(
        runtime.lines().any(|line| line.trim() == "USER 65532:65532"),
        "the runtime stage does not run as the numeric user 65532"
    );
    let ignored = read(&root().join(".dockerignore"));
    assert!(
        ignored.lines().any(|line| line.trim() == "target"),
        ".dockerignore must leave out the target directory"
    );
}

// ------------------------------------------------------------- Kubernetes

/// One overlay of deploy/k8s, rendered.
struct Overlay {
    name: String,
    yaml: String,
    docs: Vec<Value>,
}

/// Every directory of deploy/k8s/overlays, rendered once for all tests.
fn overlays() -> &'static [Overlay] {
    static RENDERED: OnceLock<Vec<Overlay>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = root().join("deploy/k8s/overlays");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|entry| {
                let entry = entry.ok()?;
                entry.path().is_dir().then(|| entry.file_name().into_string().ok())?
            })
            .collect();
        names.sort();
        for needed in ["dev", "prod"] {
            assert!(
                names.iter().any(|name| name == needed),
                "deploy/k8s/overlays/{needed} is missing"
            );
        }
        names
            .into_iter()
            .map(|name| {
                let yaml = kustomize(&dir.join(&name));
                let docs = documents(&yaml);
                Overlay { name, yaml, docs }
            })
            .collect()
    })
}

fn overlay(name: &str) -> &'static Overlay {
    overlays()
        .iter()
        .find(|overlay| overlay.name == name)
        .unwrap_or_else(|| panic!("no overlay {name}"))
}

fn kustomize(dir: &Path) -> String {
    let kubectl = binaries::find("kubectl").expect(
        "kubectl is not installed: these tests render deploy/k8s with `kubectl kustomize`. \
         Install kubectl 1.27 or newer (it includes kustomize) from your distribution's or \
         Kubernetes' packages (https://kubernetes.io/docs/tasks/tools/)",
    );
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", kubectl.display()));
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize writes UTF-8")
}

#[test]
fn every_overlay_renders_and_follows_the_kubernetes_schemas() {
    let validator = binaries::find("kubernetes-validate")
        .expect("kubernetes-validate is not installed: run `cargo xtask install` (it goes into tools/venv)");
    let template = root().join("deploy/k8s/base/secret-template.yaml");
    let inputs = overlays()
        .iter()
        .map(|overlay| (format!("overlays/{}", overlay.name), overlay.yaml.clone()))
        .chain([("base/secret-template.yaml".to_owned(), read(&template))]);
    for (what, yaml) in inputs {
        for version in KUBERNETES_VERSIONS {
            let mut child = Command::new(&validator)
                .args(["--strict", "--quiet", "--kubernetes-version", version, "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("could not run {}: {e}", validator.display()));
            child
                .stdin
                .take()
                .expect("a pipe")
                .write_all(yaml.as_bytes())
                .expect("writing to kubernetes-validate");
            let output = child.wait_with_output().expect("kubernetes-validate finishes");
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            // A kind it has no schema for is only a warning (exit 0): here it
            // is a failure too, as nothing was checked.
            assert!(
                output.status.success() && report.trim().is_empty(),
                "{what} is not valid for Kubernetes {version}:\n{report}"
            );
        }
    }
}

#[test]
fn every_container_is_probed_bounded_and_unprivileged() {
    for overlay in overlays() {
        for workload in workloads(&overlay.docs) {
            let pod = pod_spec(workload);
            let pod_security = pod.get("securityContext");
            let containers = seq(pod.get("containers"));
            assert!(
                !containers.is_empty(),
                "{} {} has no containers",
                overlay.name,
                id(workload)
            );
            for (container, init) in containers
                .iter()
                .map(|c| (c, false))
                .chain(seq(pod.get("initContainers")).iter().map(|c| (c, true)))
            {
                let what = format!("{}: {} container {}", overlay.name, id(workload), name_of(container));
                if !init {
                    for probe in ["readinessProbe", "livenessProbe"] {
                        assert!(container.get(probe).is_some(), "{what} has no {probe}");
                    }
                }
                for bound in ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"] {
                    assert!(
                        at(container, &format!("resources.{bound}")).is_some(),
                        "{what} has no {bound}"
                    );
                }
                let security = container.get("securityContext");
                let own = |key: &str| security.and_then(|s| s.get(key));
                let effective = |key: &str| own(key).or_else(|| pod_security.and_then(|s| s.get(key)));
                assert_eq!(
                    effective("runAsNonRoot").and_then(Value::as_bool),
                    Some(true),
                    "{what}: runAsNonRoot"
                );
                if let Some(user) = effective("runAsUser").and_then(Value::as_u64) {
                    assert_ne!(user, 0, "{what} runs as root");
                }
                assert_eq!(
                    own("readOnlyRootFilesystem").and_then(Value::as_bool),
                    Some(true),
                    "{what}: readOnlyRootFilesystem"
                );
                assert_eq!(
                    own("allowPrivilegeEscalation").and_then(Value::as_bool),
                    Some(false),
                    "{what}: allowPrivilegeEscalation"
                );
                assert!(
                    own("privileged").and_then(Value::as_bool) != Some(true),
                    "{what} is privileged"
                );
                assert!(
                    strings(security.and_then(|s| at(s, "capabilities.drop"))).contains(&"ALL".to_owned()),
                    "{what} does not drop every capability"
                );
                assert_eq!(
                    effective("seccompProfile")
                        .and_then(|p| p.get("type"))
                        .and_then(Value::as_str),
                    Some("RuntimeDefault"),
                    "{what}: seccompProfile"
                );
            }
            assert!(
                pod.get("hostNetwork").and_then(Value::as_bool) != Some(true),
                "{} {} uses the host's network",
                overlay.name,
                id(workload)
            );
        }
    }
}

/// Each service of the registry: a Deployment running its binary on every
/// interface at its ports, probed on its admin port; a Service by its name
/// (headless for the services others call, so callers see every pod); a
/// PodDisruptionBudget and a HorizontalPodAutoscaler; and every URL variable
/// naming the service's Service and gRPC port.
#[test]
fn every_service_of_the_registry_is_deployed_budgeted_and_autoscaled() {
    for overlay in overlays() {
        let docs = &overlay.docs;
        for spec in registry::ALL {
            let what = format!("{}: {}", overlay.name, spec.name);
            let deployment = find(docs, "Deployment", spec.name).unwrap_or_else(|| panic!("{what} has no Deployment"));
            let container = seq(pod_spec(deployment).get("containers"))
                .iter()
                .find(|c| name_of(c) == spec.name)
                .unwrap_or_else(|| panic!("{what}: no container named {}", spec.name));
            assert_eq!(
                strings(container.get("command")),
                [spec.name],
                "{what} runs another command"
            );
            let env = container_env(docs, container);
            check_service_env(spec, &env, &what);
            for port in [spec.grpc_port, spec.admin_port] {
                assert!(
                    container_port(container, &Value::from(port)).is_some(),
                    "{what} does not declare port {port}"
                );
            }
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
                let get = container
                    .get(probe)
                    .and_then(|p| p.get("httpGet"))
                    .unwrap_or_else(|| panic!("{what}: {probe} is not an HTTP GET"));
                assert_eq!(get.get("path").and_then(Value::as_str), Some(path), "{what}: {probe}");
                let port = get.get("port").and_then(|port| container_port(container, port));
                assert_eq!(
                    port,
                    Some(u64::from(spec.admin_port)),
                    "{what}: {probe} is not on the admin port"
                );
            }

            let labels = at(deployment, "spec.template.metadata.labels").expect("pod labels");
            let service = find(docs, "Service", spec.name).unwrap_or_else(|| panic!("{what} has no Service"));
            assert!(
                selects(at(service, "spec.selector"), labels),
                "{what}: its Service selects other pods"
            );
            assert!(
                seq(at(service, "spec.ports"))
                    .iter()
                    .any(|port| port.get("port").and_then(Value::as_u64) == Some(u64::from(spec.grpc_port))),
                "{what}: its Service lacks port {}",
                spec.grpc_port
            );
            let headless = at(service, "spec.clusterIP").and_then(Value::as_str) == Some("None");
            assert_eq!(
                headless,
                !spec.url_vars.is_empty(),
                "{what}: the Service of a service others call is headless (they balance over its pods), the gateway's is not"
            );

            assert!(
                of_kind(docs, "PodDisruptionBudget").any(|pdb| {
                    selector_matches(at(pdb, "spec.selector"), labels)
                        && (at(pdb, "spec.maxUnavailable").is_some() || at(pdb, "spec.minAvailable").is_some())
                }),
                "{what} has no PodDisruptionBudget"
            );
            let hpa = of_kind(docs, "HorizontalPodAutoscaler")
                .find(|hpa| {
                    at(hpa, "spec.scaleTargetRef.kind").and_then(Value::as_str) == Some("Deployment")
                        && at(hpa, "spec.scaleTargetRef.name").and_then(Value::as_str) == Some(spec.name)
                })
                .unwrap_or_else(|| panic!("{what} has no HorizontalPodAutoscaler"));
            let min = at(hpa, "spec.minReplicas").and_then(Value::as_u64).unwrap_or(1);
            let max = at(hpa, "spec.maxReplicas").and_then(Value::as_u64).unwrap_or(0);
            assert!(1 <= min && min <= max, "{what}: replicas {min}..{max}");
            assert!(
                seq(at(hpa, "spec.metrics"))
                    .iter()
                    .any(|m| at(m, "resource.name").and_then(Value::as_str) == Some("cpu")),
                "{what}: its autoscaler does not follow CPU"
            );
            if overlay.name == "prod" {
                assert!(min >= 2, "{what}: fewer than two pods in prod");
            }
        }
    }
}

/// A service has drained and exited (SHUTDOWN_GRACE_PERIOD) before the
/// kubelet would kill it (terminationGracePeriodSeconds, 30 unless set).
#[test]
fn the_kubelet_waits_longer_than_every_service_drains() {
    for overlay in overlays() {
        for workload in workloads(&overlay.docs) {
            let pod = pod_spec(workload);
            let kubelet = Duration::from_secs(
                pod.get("terminationGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(30),
            );
            for container in seq(pod.get("containers")) {
                let command = strings(container.get("command"));
                if command.first().and_then(|c| registry::by_name(c)).is_none() {
                    continue;
                }
                let what = format!("{}: {} container {}", overlay.name, id(workload), name_of(container));
                let grace = seq(container.get("env"))
                    .iter()
                    .find(|var| var.get("name").and_then(Value::as_str) == Some("SHUTDOWN_GRACE_PERIOD"))
                    .and_then(|var| var.get("value"))
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{what} is not given SHUTDOWN_GRACE_PERIOD beside its pod's grace"));
                assert!(
                    kubelet > duration(grace),
                    "{what}: killed after {kubelet:?}, before it has drained ({grace})"
                );
            }
        }
    }
}

/// prod renders no Secret with a value (they are created in the cluster,
/// never from a committed file) and runs pinned images; every Secret a
/// workload reads is either rendered by its overlay or described, key for
/// key, by base/secret-template.yaml, which the base does not deploy.
#[test]
fn prod_holds_no_secret_values_and_pins_every_image() {
    let prod = overlay("prod");
    for secret in of_kind(&prod.docs, "Secret") {
        let values = ["data", "stringData"]
            .iter()
            .filter_map(|key| secret.get(*key).and_then(Value::as_mapping))
            .map(Mapping::len)
            .sum::<usize>();
        assert_eq!(
            values,
            0,
            "prod renders {} with values from committed files",
            id(secret)
        );
    }
    for workload in workloads(&prod.docs) {
        for container in seq(pod_spec(workload).get("containers")) {
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or_default();
            let pinned = image.contains("@sha256:") || last.split_once(':').is_some_and(|(_, tag)| tag != "latest");
            assert!(pinned, "prod: {} runs {image:?}, not a pinned tag", id(workload));
        }
    }

    let base = documents(&read(&root().join("deploy/k8s/base/kustomization.yaml")));
    assert!(
        !strings(base.first().and_then(|k| k.get("resources"))).contains(&"secret-template.yaml".to_owned()),
        "base/kustomization.yaml deploys the Secret templates"
    );
    let template = documents(&read(&root().join("deploy/k8s/base/secret-template.yaml")));
    for overlay in overlays() {
        for workload in workloads(&overlay.docs) {
            for (secret, key) in secret_references(pod_spec(workload)) {
                let what = format!("{}: {} reads {secret}/{key}", overlay.name, id(workload));
                let has_key = |doc: &Value| {
                    ["data", "stringData"]
                        .iter()
                        .any(|field| doc.get(*field).and_then(|d| d.get(key.as_str())).is_some())
                };
                match find(&overlay.docs, "Secret", &secret) {
                    Some(rendered) => assert!(has_key(rendered), "{what}, which its Secret lacks"),
                    None => assert!(
                        find(&template, "Secret", &secret).is_some_and(has_key),
                        "{what}, which base/secret-template.yaml does not describe"
                    ),
                }
            }
        }
    }
}

#[test]
fn only_the_gateway_is_reachable_from_outside_the_cluster() {
    for overlay in overlays() {
        for service in of_kind(&overlay.docs, "Service") {
            let kind = at(service, "spec.type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if matches!(kind, "LoadBalancer" | "NodePort") {
                assert_eq!(
                    name_of(service),
                    registry::GATEWAY.name,
                    "{}: {} is a {kind}",
                    overlay.name,
                    id(service)
                );
            }
        }
        for workload in workloads(&overlay.docs) {
            for container in seq(pod_spec(workload).get("containers")) {
                for port in seq(container.get("ports")) {
                    assert!(
                        port.get("hostPort").is_none(),
                        "{}: {} takes a host port",
                        overlay.name,
                        id(workload)
                    );
                }
            }
        }
    }
}

/// The dev overlay runs the emulator, probed on its `/livez`, and tells
/// svc-payment to charge through it; prod runs none and tells svc-payment
/// nothing of it.
#[test]
fn the_dev_overlay_runs_the_payment_provider_emulator_and_prod_does_not() {
    for overlay in overlays() {
        let docs = &overlay.docs;
        let payment = find(docs, "Deployment", registry::PAYMENT.name)
            .and_then(|d| seq(pod_spec(d).get("containers")).first())
            .expect("svc-payment");
        let payment_env = container_env(docs, payment);
        let Some(deployment) = find(docs, "Deployment", PROVIDER) else {
            assert_eq!(overlay.name, "prod", "{}: no payment provider emulator", overlay.name);
            assert!(
                !payment_env.contains_key("PAYMENT_PROVIDER_URL"),
                "prod: svc-payment is pointed at a provider from a committed file"
            );
            continue;
        };
        assert_ne!(overlay.name, "prod", "prod runs the emulator, a development tool");
        let what = format!("{}: {PROVIDER}", overlay.name);
        let container = &seq(pod_spec(deployment).get("containers"))[0];
        assert_eq!(strings(container.get("command")), [PROVIDER], "{what}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                at(container, &format!("{probe}.httpGet.path")).and_then(Value::as_str),
                Some("/livez"),
                "{what}: {probe}"
            );
        }
        // A value from a Secret reads `<from …>`: the same reference, the same.
        let provider_env = container_env(docs, container);
        let labels = at(deployment, "spec.template.metadata.labels").expect("pod labels");
        let service = find(docs, "Service", PROVIDER).unwrap_or_else(|| panic!("{what} has no Service"));
        assert!(selects(at(service, "spec.selector"), labels), "{what}: its Service");
        check_provider_env(&provider_env, &payment_env, &overlay.name);
    }
}

/// Where a connection comes from, for the network policies.
enum Source<'a> {
    /// A pod of the workload with these labels, in the overlay's namespace.
    Pod(&'a Value),
    /// Prometheus, where base/network-policies.yaml says it runs.
    Prometheus,
    /// Outside the cluster.
    Outside,
}

/// The network policies let through the calls the platform makes (the
/// gateway to every service, svc-cart to svc-order, svc-order and svc-cart
/// to the catalog, the services to NATS, NATS to itself, Prometheus to the
/// admin ports, the services to their own stores) and nothing else that was
/// tried.
#[test]
fn network_policies_allow_exactly_the_calls_the_platform_makes() {
    for overlay in overlays() {
        let docs = &overlay.docs;
        let namespace = docs
            .iter()
            .find_map(|doc| at(doc, "metadata.namespace").and_then(Value::as_str))
            .unwrap_or("default");
        assert!(
            of_kind(docs, "NetworkPolicy").any(|policy| {
                at(policy, "spec.podSelector")
                    .and_then(Value::as_mapping)
                    .is_some_and(Mapping::is_empty)
                    && strings(at(policy, "spec.policyTypes")).contains(&"Ingress".to_owned())
                    && seq(at(policy, "spec.ingress")).is_empty()
            }),
            "{}: no policy denies ingress by default",
            overlay.name
        );
        let pod = |name: &str| {
            workloads(docs)
                .find(|w| name_of(w) == name)
                .and_then(|w| at(w, "spec.template.metadata.labels"))
                .unwrap_or_else(|| panic!("{}: no workload {name}", overlay.name))
        };
        let check = |from: Source<'_>, to: &str, port: u16, expected: bool, why: &str| {
            let allowed = ingress_allowed(docs, namespace, &from, pod(to), port);
            assert_eq!(allowed, expected, "{}: {why} ({to}:{port})", overlay.name);
        };
        let gateway = registry::GATEWAY;
        check(
            Source::Outside,
            gateway.name,
            gateway.grpc_port,
            true,
            "clients reach the gateway",
        );
        for spec in upstreams() {
            check(
                Source::Pod(pod(gateway.name)),
                spec.name,
                spec.grpc_port,
                true,
                "the gateway forwards",
            );
            check(
                Source::Outside,
                spec.name,
                spec.grpc_port,
                false,
                "only the gateway is public",
            );
        }
        let (order, inventory, cart, payment) = (
            &registry::ORDER,
            &registry::INVENTORY,
            &registry::CART,
            &registry::PAYMENT,
        );
        check(
            Source::Pod(pod(cart.name)),
            order.name,
            order.grpc_port,
            true,
            "svc-cart checks out",
        );
        check(
            Source::Pod(pod(cart.name)),
            inventory.name,
            inventory.grpc_port,
            true,
            "svc-cart reads the catalog",
        );
        check(
            Source::Pod(pod(order.name)),
            inventory.name,
            inventory.grpc_port,
            true,
            "svc-order reads the catalog",
        );
        check(
            Source::Pod(pod(payment.name)),
            order.name,
            order.grpc_port,
            false,
            "svc-payment calls no one",
        );
        check(
            Source::Pod(pod(order.name)),
            payment.name,
            payment.grpc_port,
            false,
            "svc-order calls no payment",
        );
        check(
            Source::Pod(pod(payment.name)),
            order.name,
            order.admin_port,
            false,
            "admin ports are for Prometheus",
        );
        for spec in registry::ALL {
            let nats = spec.name != gateway.name;
            check(
                Source::Pod(pod(spec.name)),
                "nats",
                4222,
                nats,
                "the services with events reach NATS",
            );
            check(
                Source::Prometheus,
                spec.name,
                spec.admin_port,
                true,
                "Prometheus scrapes",
            );
        }
        check(Source::Pod(pod("nats")), "nats", 6222, true, "NATS routes to itself");
        check(
            Source::Pod(pod(gateway.name)),
            "nats",
            6222,
            false,
            "only NATS joins the cluster",
        );
        check(Source::Prometheus, "nats", 8222, true, "Prometheus scrapes NATS");
        check(Source::Outside, "nats", 4222, false, "NATS is not public");
        if workloads(docs).any(|w| name_of(w) == PROVIDER) {
            check(
                Source::Pod(pod(payment.name)),
                PROVIDER,
                12111,
                true,
                "svc-payment charges through the emulator",
            );
            check(
                Source::Pod(pod(order.name)),
                PROVIDER,
                12111,
                false,
                "only svc-payment calls the provider",
            );
            check(Source::Outside, PROVIDER, 12111, false, "the emulator is not public");
        }
        if workloads(docs).any(|w| name_of(w) == "postgres") {
            for spec in registry::ALL {
                let own = spec.database.is_some();
                check(
                    Source::Pod(pod(spec.name)),
                    "postgres",
                    5432,
                    own,
                    "the services with a database",
                );
            }
        }
        if workloads(docs).any(|w| name_of(w) == "redis") {
            for spec in registry::ALL {
                check(
                    Source::Pod(pod(spec.name)),
                    "redis",
                    6379,
                    spec.redis,
                    "the services with Redis",
                );
            }
        }
    }
}

/// Whether a connection from `from` to a pod labelled `target` on `port`
/// gets through the overlay's policies: a pod no policy selects takes
/// anything; a selected one takes what one of their rules allows.
fn ingress_allowed(docs: &[Value], namespace: &str, from: &Source<'_>, target: &Value, port: u16) -> bool {
    let own_namespace = Value::from(Mapping::from_iter([(
        Value::from("kubernetes.io/metadata.name"),
        Value::from(namespace),
    )]));
    let prometheus_namespace = Value::from(Mapping::from_iter([(
        Value::from("kubernetes.io/metadata.name"),
        Value::from("monitoring"),
    )]));
    let prometheus_pod = Value::from(Mapping::from_iter([(
        Value::from("app.kubernetes.io/name"),
        Value::from("prometheus"),
    )]));
    let (source_namespace, source_pod) = match from {
        Source::Pod(labels) => (Some(&own_namespace), Some(*labels)),
        Source::Prometheus => (Some(&prometheus_namespace), Some(&prometheus_pod)),
        Source::Outside => (None, None),
    };
    let peer_matches = |peer: &Value| {
        if peer.get("ipBlock").is_some() {
            return source_pod.is_none();
        }
        let namespace_ok = match peer.get("namespaceSelector") {
            Some(selector) => source_namespace.is_some_and(|ns| selector_matches(Some(selector), ns)),
            None => source_namespace == Some(&own_namespace),
        };
        let pod_ok = match peer.get("podSelector") {
            Some(selector) => source_pod.is_some_and(|labels| selector_matches(Some(selector), labels)),
            None => source_pod.is_some(),
        };
        namespace_ok && pod_ok
    };
    let policies: Vec<&Value> = of_kind(docs, "NetworkPolicy")
        .filter(|policy| selector_matches(at(policy, "spec.podSelector"), target))
        .filter(|policy| {
            let types = strings(at(policy, "spec.policyTypes"));
            types.is_empty() || types.contains(&"Ingress".to_owned())
        })
        .collect();
    if policies.is_empty() {
        return true;
    }
    policies.iter().any(|policy| {
        seq(at(policy, "spec.ingress")).iter().any(|rule| {
            let ports = seq(rule.get("ports"));
            let port_ok = ports.is_empty()
                || ports
                    .iter()
                    .any(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)));
            let peers = seq(rule.get("from"));
            port_ok && (peers.is_empty() || peers.iter().any(peer_matches))
        })
    })
}

/// NATS keeps every acknowledged event (`sync_interval: always`) on a
/// volume, its configuration is one nats-server accepts, its routes name
/// each of its pods, prod runs three of them, and the services keep each
/// stream on every node (NATS_STREAM_REPLICAS).
#[test]
fn nats_is_durable_and_its_configuration_parses() {
    let nats_server = binaries::nats_server().expect("nats-server: run `cargo xtask install`");
    for overlay in overlays() {
        let docs = &overlay.docs;
        let what = format!("{}: nats", overlay.name);
        let nats = find(docs, "StatefulSet", "nats").unwrap_or_else(|| panic!("{what} is not a StatefulSet"));
        let replicas = at(nats, "spec.replicas").and_then(Value::as_u64).unwrap_or(1);
        if overlay.name == "prod" {
            assert_eq!(replicas, 3, "{what}: three nodes in prod, for R3 streams");
        }
        for spec in registry::ALL.iter().filter(|spec| spec.name != registry::GATEWAY.name) {
            let container = find(docs, "Deployment", spec.name)
                .and_then(|deployment| seq(pod_spec(deployment).get("containers")).first())
                .unwrap_or_else(|| panic!("{}: no {}", overlay.name, spec.name));
            let streams = container_env(docs, container).get("NATS_STREAM_REPLICAS").cloned();
            assert_eq!(
                streams,
                Some(replicas.to_string()),
                "{}: {} keeps its streams on another number of nodes than NATS has",
                overlay.name,
                spec.name
            );
        }

        let headless = at(nats, "spec.serviceName")
            .and_then(Value::as_str)
            .expect("serviceName");
        let service = find(docs, "Service", headless).unwrap_or_else(|| panic!("{what}: no Service {headless}"));
        assert_eq!(
            at(service, "spec.clusterIP").and_then(Value::as_str),
            Some("None"),
            "{what}: {headless}"
        );

        let pod = pod_spec(nats);
        let config_map = seq(pod.get("volumes"))
            .iter()
            .find_map(|volume| at(volume, "configMap.name").and_then(Value::as_str))
            .unwrap_or_else(|| panic!("{what} mounts no configuration"));
        let config = find(docs, "ConfigMap", config_map)
            .and_then(|cm| at(cm, "data"))
            .and_then(|data| data.get("nats.conf"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{what}: {config_map} has no nats.conf"));
        let lines: Vec<&str> = config.lines().map(str::trim).collect();
        assert!(
            lines.contains(&"sync_interval: always"),
            "{what} does not fsync before acknowledging"
        );

        let store = lines
            .iter()
            .find_map(|line| line.strip_prefix("store_dir:"))
            .map(|dir| dir.trim().trim_matches('"'))
            .unwrap_or_else(|| panic!("{what} has no store_dir"));
        let container = &seq(pod.get("containers"))[0];
        let data = seq(at(nats, "spec.volumeClaimTemplates"))
            .iter()
            .filter_map(|claim| at(claim, "metadata.name").and_then(Value::as_str))
            .find_map(|claim| {
                seq(container.get("volumeMounts"))
                    .iter()
                    .find(|mount| mount.get("name").and_then(Value::as_str) == Some(claim))
                    .and_then(|mount| mount.get("mountPath").and_then(Value::as_str))
            })
            .unwrap_or_else(|| panic!("{what} keeps no volume claim"));
        assert!(
            store.starts_with(data),
            "{what}: store_dir {store} is not on its volume ({data})"
        );

        let routes: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|line| line.starts_with("nats://"))
            .collect();
        if replicas > 1 {
            let expected: Vec<String> = (0..replicas)
                .map(|i| format!("nats://{}-{i}.{headless}:6222", name_of(nats)))
                .collect();
            assert_eq!(routes, expected, "{what}: the routes are not its {replicas} pods");
        }

        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{}.conf", overlay.name));
        std::fs::write(&file, config).expect("writing the configuration");
        let output = Command::new(&nats_server)
            .args(["--config"])
            .arg(&file)
            .arg("-t")
            .env("SERVER_NAME", format!("{}-0", name_of(nats)))
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", nats_server.display()));
        assert!(
            output.status.success(),
            "{what}: nats-server rejects the configuration:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// ------------------------------------------------------------ YAML reading

/// Every document of a YAML stream, with merge keys (`<<`) applied.
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|document| {
            let mut value = Value::deserialize(document).expect("valid YAML");
            value.apply_merge().expect("valid merge keys");
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The value under a dotted path of mapping keys.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |value, key| value.get(key))
}

fn seq(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

/// A scalar as text (a port number or a quoted "on" alike).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    seq(value).iter().map(scalar).collect()
}

fn name_of(doc: &Value) -> &str {
    at(doc, "metadata.name")
        .or_else(|| doc.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn id(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc.get("kind").and_then(Value::as_str).unwrap_or("?"),
        name_of(doc)
    )
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter()
        .filter(move |doc| doc.get("kind").and_then(Value::as_str) == Some(kind))
}

fn find<'a>(docs: &'a [Value], kind: &'a str, name: &str) -> Option<&'a Value> {
    of_kind(docs, kind).find(|doc| name_of(doc) == name)
}

fn workloads(docs: &[Value]) -> impl Iterator<Item = &Value> {
    docs.iter().filter(|doc| {
        matches!(
            doc.get("kind").and_then(Value::as_str),
            Some("Deployment" | "StatefulSet")
        )
    })
}

fn pod_spec(workload: &Value) -> &Value {
    at(workload, "spec.template.spec").unwrap_or_else(|| panic!("{} has no pod template", id(workload)))
}

/// The number of a container port given by number or by name.
fn container_port(container: &Value, port: &Value) -> Option<u64> {
    let ports = seq(container.get("ports"));
    match port {
        Value::Number(number) => {
            let number = number.as_u64()?;
            ports
                .iter()
                .any(|p| p.get("containerPort").and_then(Value::as_u64) == Some(number))
                .then_some(number)
        }
        Value::String(name) => ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_u64)),
        _ => None,
    }
}

/// The environment a container is given: its ConfigMaps (`envFrom`) under
/// its own `env`. A value taken from a Secret or a field reads
/// `<from ...>`.
fn container_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in seq(container.get("envFrom")) {
        if let Some(name) = at(source, "configMapRef.name").and_then(Value::as_str) {
            let data = find(docs, "ConfigMap", name)
                .and_then(|cm| cm.get("data"))
                .and_then(Value::as_mapping)
                .unwrap_or_else(|| panic!("{} reads the missing ConfigMap {name}", name_of(container)));
            env.extend(data.iter().map(|(key, value)| (scalar(key), scalar(value))));
        }
    }
    for var in seq(container.get("env")) {
        let name = var.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let value = match var.get("value") {
            Some(value) => scalar(value),
            None => format!("<from {:?}>", var.get("valueFrom")),
        };
        env.insert(name, value);
    }
    env
}

/// Every (Secret, key) a pod reads, through its containers' environment or
/// its volumes.
fn secret_references(pod: &Value) -> Vec<(String, String)> {
    let mut references = Vec::new();
    for container in seq(pod.get("containers")).iter().chain(seq(pod.get("initContainers"))) {
        for var in seq(container.get("env")) {
            if let Some(reference) = at(var, "valueFrom.secretKeyRef") {
                let field = |key: &str| {
                    reference
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                references.push((field("name"), field("key")));
            }
        }
        assert!(
            seq(container.get("envFrom"))
                .iter()
                .all(|source| source.get("secretRef").is_none()),
            "{} takes a whole Secret as its environment: name the keys",
            name_of(container)
        );
    }
    for volume in seq(pod.get("volumes")) {
        if let Some(secret) = volume.get("secret") {
            let name = secret.get("secretName").and_then(Value::as_str).unwrap_or_default();
            let items = seq(secret.get("items"));
            assert!(
                !items.is_empty(),
                "volume {} takes every key of {name}: name them",
                name_of(volume)
            );
            for item in items {
                let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
                references.push((name.to_owned(), key.to_owned()));
            }
        }
    }
    references
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) selects
/// these labels; an empty one selects everything, a missing one nothing.
fn selector_matches(selector: Option<&Value>, labels: &Value) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_mapping)
        .is_none_or(|wanted| {
            wanted
                .iter()
                .all(|(k, v)| label(&scalar(k)) == Some(scalar(v).as_str()))
        });
    let match_expressions = seq(selector.get("matchExpressions")).iter().all(|expression| {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let values = strings(expression.get("values"));
        let value = label(key);
        match expression.get("operator").and_then(Value::as_str) {
            Some("In") => value.is_some_and(|v| values.iter().any(|w| w == v)),
            Some("NotIn") => value.is_none_or(|v| values.iter().all(|w| w != v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            other => panic!("unknown selector operator {other:?}"),
        }
    });
    match_labels && match_expressions
}

/// Whether a Service's `selector` (plain labels) selects these labels.
fn selects(selector: Option<&Value>, labels: &Value) -> bool {
    selector.and_then(Value::as_mapping).is_some_and(|wanted| {
        !wanted.is_empty()
            && wanted
                .iter()
                .all(|(k, v)| labels.get(scalar(k).as_str()).and_then(Value::as_str) == Some(scalar(v).as_str()))
    })
}

// ------------------------------------------------------------------ shared

/// The services the gateway forwards to: those others are told the URL of.
fn upstreams() -> impl Iterator<Item = &'static ServiceSpec> {
    registry::ALL.iter().copied().filter(|spec| !spec.url_vars.is_empty())
}

/// Every URL variable of the registry in `env` names its service (by the
/// name compose and the Services give it) at its gRPC port.
/// What every deployment tells a service: where to listen (on every
/// interface, its registry ports), its database, Redis and NATS, its half of
/// the identity keys (the signing key for the gateway alone), the upstream
/// URLs, each naming the right service.
fn check_service_env(spec: &ServiceSpec, env: &BTreeMap<String, String>, what: &str) {
    let var = |name: &str| env.get(name).map(String::as_str);
    assert_eq!(
        var("GRPC_LISTEN_ADDR"),
        Some(format!("0.0.0.0:{}", spec.grpc_port).as_str()),
        "{what}"
    );
    assert_eq!(
        var("ADMIN_LISTEN_ADDR"),
        Some(format!("0.0.0.0:{}", spec.admin_port).as_str()),
        "{what}"
    );
    if spec.database.is_some() {
        assert!(var("DATABASE_URL").is_some(), "{what} has no DATABASE_URL");
    }
    if spec.redis {
        assert!(var("REDIS_URL").is_some(), "{what} has no REDIS_URL");
    }
    if spec.name == registry::GATEWAY.name {
        assert!(var("IDENTITY_SIGNING_KEY_FILE").is_some(), "{what} has no signing key");
        for upstream in upstreams() {
            assert!(
                var(upstream.url_vars[0]).is_some(),
                "{what} is not told {}",
                upstream.url_vars[0]
            );
        }
    } else {
        assert!(var("NATS_URL").is_some(), "{what} has no NATS_URL");
        assert!(
            var("IDENTITY_VERIFYING_KEY_FILE").is_some(),
            "{what} has no verifying key"
        );
        assert!(
            var("IDENTITY_SIGNING_KEY_FILE").is_none(),
            "{what} is given the signing key"
        );
    }
    check_url_vars(env, what);
}

fn check_url_vars(env: &BTreeMap<String, String>, what: &str) {
    for spec in registry::ALL {
        for var in spec.url_vars {
            if let Some(url) = env.get(*var) {
                assert_eq!(
                    url,
                    &format!("http://{}:{}", spec.name, spec.grpc_port),
                    "{what}: {var} does not name {}",
                    spec.name
                );
            }
        }
    }
}

/// A duration as the services read them: a number and one unit.
fn duration(text: &str) -> Duration {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("{text:?} is not a duration"));
    match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => panic!("{text:?} is not a duration (ms, s, m or h)"),
    }
}

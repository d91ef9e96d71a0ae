//! Static checks of the Kubernetes manifests (`deploy/kubernetes`), on both
//! overlays as `kubectl kustomize` renders them: schema validation against
//! two Kubernetes versions, the invariants a cluster would only reveal at run
//! time (selectors, ports, references, probes, security contexts, secrets),
//! the configs against the files compose mounts, and the rendered Prometheus
//! and Alertmanager configs through promtool and amtool.
//!
//! Needs kubectl (with its Kustomize), kubernetes-validate and a promtool
//! with Kubernetes service discovery: scripts/test installs them and names
//! them in EVERGREEN_KUBECTL, EVERGREEN_KUBERNETES_VALIDATE and
//! EVERGREEN_KUBERNETES_PROMTOOL (scripts/lib.sh, kubernetes_tools).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use evergreen_tests::kubernetes::{Rendered, containers, name_of, repo_root, selects, string_map};
use serde_json::Value;

const OVERLAYS: [&str; 2] = ["dev", "production"];
/// Two recent Kubernetes versions whose schemas kubernetes-validate bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.35.0"];

fn overlays() -> Vec<Rendered> {
    OVERLAYS.into_iter().map(Rendered::overlay).collect()
}

fn tool(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (scripts/test installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default()
}

#[test]
fn both_overlays_pass_strict_schema_validation_for_two_kubernetes_versions() {
    let validator = tool("EVERGREEN_KUBERNETES_VALIDATE", "kubernetes-validate");
    for rendered in overlays() {
        let file = tempfile::NamedTempFile::new().expect("temporary file");
        fs::write(file.path(), &rendered.yaml).expect("write rendered YAML");
        let mut command = Command::new(&validator);
        command.arg("--strict");
        for version in KUBERNETES_VERSIONS {
            command.args(["-k", version]);
        }
        let (ok, output) = run(command.arg(file.path()));
        let complaints: Vec<&str> = output
            .lines()
            .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
            .collect();
        assert!(
            ok && complaints.is_empty(),
            "overlays/{}: kubernetes-validate: {complaints:#?}\n{output}",
            rendered.overlay
        );
        for version in KUBERNETES_VERSIONS {
            let minor = version.trim_end_matches(".0");
            let passed = output
                .lines()
                .filter(|l| l.contains("passed") && l.ends_with(&format!("version {minor}")))
                .count();
            assert_eq!(
                passed,
                rendered.objects.len(),
                "overlays/{}: every object validated against {minor}\n{output}",
                rendered.overlay
            );
        }
    }
}

#[test]
fn every_selector_port_and_reference_finds_what_it_names() {
    for rendered in overlays() {
        let overlay = &rendered.overlay;
        let workloads: Vec<(String, &Value)> = rendered.workloads().collect();
        let pods_of = |selector: &BTreeMap<String, String>| -> Vec<(String, &Value)> {
            // StatefulSet pods also carry their own name as a label.
            let mut selector = selector.clone();
            let pod_name = selector.remove("statefulset.kubernetes.io/pod-name");
            workloads
                .iter()
                .filter(|(id, template)| {
                    selects(&selector, &labels(template))
                        && pod_name.as_ref().is_none_or(|pod| {
                            let set =
                                rendered.find("StatefulSet", id.trim_start_matches("StatefulSet/"));
                            set.is_some_and(|set| {
                                let replicas = set["spec"]["replicas"].as_u64().unwrap_or(1);
                                (0..replicas).any(|i| *pod == format!("{}-{i}", name_of(set)))
                            })
                        })
                })
                .map(|(id, template)| (id.clone(), *template))
                .collect()
        };

        for (id, template) in &workloads {
            let object = rendered
                .objects
                .iter()
                .find(|o| &format!("{}/{}", o["kind"].as_str().unwrap_or(""), name_of(o)) == id)
                .expect("the workload itself");
            let selector = string_map(&object["spec"]["selector"]["matchLabels"]);
            assert!(
                selects(&selector, &labels(template)),
                "{overlay}: {id}: selector {selector:?} does not match its own pods"
            );
            for volume in template["spec"]["volumes"].as_array().into_iter().flatten() {
                if let Some(name) = volume["configMap"]["name"].as_str() {
                    assert!(
                        rendered.of_kind("ConfigMap").any(|c| name_of(c) == name),
                        "{overlay}: {id} mounts a ConfigMap {name} that is not rendered"
                    );
                }
                if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                    assert!(
                        rendered
                            .of_kind("PersistentVolumeClaim")
                            .any(|c| name_of(c) == claim),
                        "{overlay}: {id} mounts a claim {claim} that is not rendered"
                    );
                }
            }
            for (container, spec, _) in containers(template) {
                for source in spec["envFrom"].as_array().into_iter().flatten() {
                    if let Some(name) = source["configMapRef"]["name"].as_str() {
                        assert!(
                            rendered.of_kind("ConfigMap").any(|c| name_of(c) == name),
                            "{overlay}: {id}/{container} reads ConfigMap {name}, not rendered"
                        );
                    }
                }
                for env in spec["env"].as_array().into_iter().flatten() {
                    let reference = &env["valueFrom"]["secretKeyRef"];
                    if let Some(secret) = reference["name"].as_str() {
                        let key = reference["key"].as_str().unwrap_or("");
                        let found = rendered
                            .of_kind("Secret")
                            .find(|s| name_of(s) == secret)
                            .unwrap_or_else(|| {
                                panic!("{overlay}: {id}/{container}: no Secret {secret}")
                            });
                        assert!(
                            found["data"].get(key).is_some(),
                            "{overlay}: {id}/{container}: Secret {secret} has no key {key}"
                        );
                    }
                }
            }
        }

        for service in rendered.of_kind("Service") {
            let name = name_of(service);
            let selector = string_map(&service["spec"]["selector"]);
            let pods = pods_of(&selector);
            assert!(
                !pods.is_empty(),
                "{overlay}: Service {name} selects no pods ({selector:?})"
            );
            for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                let target = &port["targetPort"];
                for (id, template) in &pods {
                    let exists = containers(template).iter().any(|(_, c, init)| {
                        !init
                            && c["ports"].as_array().into_iter().flatten().any(|p| {
                                p["name"] == *target
                                    || (target.is_u64() && p["containerPort"] == *target)
                            })
                    });
                    assert!(
                        exists,
                        "{overlay}: Service {name} targets port {target} that {id} does not have"
                    );
                }
            }
        }

        for set in rendered.of_kind("StatefulSet") {
            let governing = set["spec"]["serviceName"].as_str().unwrap_or("");
            let service = rendered.get("Service", governing);
            assert_eq!(
                service["spec"]["clusterIP"],
                "None",
                "{overlay}: StatefulSet {}'s Service {governing} must be headless",
                name_of(set)
            );
        }
        for budget in rendered.of_kind("PodDisruptionBudget") {
            let selector = string_map(&budget["spec"]["selector"]["matchLabels"]);
            assert!(
                !pods_of(&selector).is_empty(),
                "{overlay}: PodDisruptionBudget {} selects no pods",
                name_of(budget)
            );
        }
        for autoscaler in rendered.of_kind("HorizontalPodAutoscaler") {
            let target = &autoscaler["spec"]["scaleTargetRef"];
            let kind = target["kind"].as_str().unwrap_or("");
            let scaled = rendered.get(kind, target["name"].as_str().unwrap_or(""));
            let requests_cpu = containers(&scaled["spec"]["template"])
                .iter()
                .all(|(_, c, _)| c["resources"]["requests"]["cpu"].is_string());
            assert!(
                requests_cpu,
                "{overlay}: the autoscaler scales on CPU: every container needs a CPU request"
            );
        }
    }
}

#[test]
fn every_container_has_resources_probes_and_a_restrictive_security_context() {
    for rendered in overlays() {
        let overlay = &rendered.overlay;
        for (id, template) in rendered.workloads() {
            let pod = &template["spec"];
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{overlay}: {id}"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{overlay}: {id}"
            );
            assert_eq!(
                pod["enableServiceLinks"], false,
                "{overlay}: {id}: Service links would inject REDIS_PORT, API_PORT... \
                 into the templates' environment"
            );
            for (name, container, init) in containers(template) {
                let at = format!("{overlay}: {id}/{name}");
                let resources = &container["resources"];
                assert!(
                    resources["requests"]["cpu"].is_string(),
                    "{at}: CPU request"
                );
                assert!(
                    resources["requests"]["memory"].is_string(),
                    "{at}: memory request"
                );
                assert!(
                    resources["limits"]["memory"].is_string(),
                    "{at}: memory limit"
                );
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{at}"
                );
                assert!(security["privileged"] != true, "{at}");
                if !init {
                    assert!(
                        container["readinessProbe"].is_object(),
                        "{at}: readiness probe"
                    );
                    assert!(
                        container["livenessProbe"].is_object(),
                        "{at}: liveness probe"
                    );
                }
            }
        }
        let api = rendered.get("Deployment", "api");
        let (_, container, _) = containers(&api["spec"]["template"])[0];
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/health/live",
            "{overlay}: liveness must not depend on Redis (a failover would restart every replica)"
        );
        let readiness = &container["readinessProbe"];
        assert_eq!(readiness["httpGet"]["path"], "/health/ready");
        // Unready takes failureThreshold failed probes in a row, which span
        // (failureThreshold - 1) periods. A failover (writes back within 9 s)
        // must not make every pod unready at once: cluster DNS would answer
        // NXDOMAIN for the headless Service and nginx drop every server.
        let period = readiness["periodSeconds"].as_u64().unwrap_or(10);
        let threshold = readiness["failureThreshold"].as_u64().unwrap_or(3);
        assert!(
            period * (threshold - 1) > 9,
            "{overlay}: a failover could make every API pod unready ({readiness})"
        );
        assert!(
            container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64() >= Some(6),
            "{overlay}: the API keeps serving until nginx (valid=5s) has re-resolved"
        );
    }
}

#[test]
fn nothing_but_secrets_holds_a_secret() {
    for rendered in overlays() {
        let overlay = &rendered.overlay;
        let secret_values: Vec<(&String, &String)> = rendered
            .secrets
            .iter()
            .filter(|(name, _)| name.ends_with("_PASSWORD") || name.ends_with("_SECRET"))
            .collect();
        assert!(
            secret_values.len() >= 7,
            "{overlay}: the example lists the secrets"
        );
        let secret = rendered.get("Secret", "evergreen-secrets");
        for (name, _) in &secret_values {
            assert!(
                secret["data"].get(name.as_str()).is_some(),
                "{overlay}: Secret evergreen-secrets lacks {name}"
            );
        }
        for object in rendered.objects.iter().filter(|o| o["kind"] != "Secret") {
            let text = object.to_string();
            for (name, value) in &secret_values {
                assert!(
                    !text.contains(value.as_str()),
                    "{overlay}: {} {} holds {name}",
                    object["kind"],
                    name_of(object)
                );
            }
        }
        for (id, template) in rendered.workloads() {
            for (container, spec, _) in containers(template) {
                for env in spec["env"].as_array().into_iter().flatten() {
                    let name = env["name"].as_str().unwrap_or("");
                    if name.contains("PASSWORD") || name.contains("SECRET") {
                        assert!(
                            env["value"].is_null() && env["valueFrom"]["secretKeyRef"].is_object(),
                            "{overlay}: {id}/{container}: {name} must come from a Secret"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_configs_are_byte_for_byte_the_files_compose_mounts() {
    let root = repo_root();
    let file =
        |path: &str| fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let expected: [(&str, &str, &str); 14] = [
        (
            "nginx-templates",
            "default.conf.template",
            "nginx/templates/default.conf.template",
        ),
        (
            "redis-config",
            "master.conf.template",
            "redis/master.conf.template",
        ),
        (
            "redis-config",
            "replica.conf.template",
            "redis/replica.conf.template",
        ),
        (
            "redis-config",
            "sentinel.conf.template",
            "redis/sentinel.conf.template",
        ),
        ("redis-config", "render.sh", "redis/render.sh"),
        ("redis-config", "healthcheck.sh", "redis/healthcheck.sh"),
        (
            "redis-config",
            "kubernetes-init.sh",
            "redis/kubernetes-init.sh",
        ),
        (
            "prometheus-rules",
            "evergreen.yml",
            "prometheus/rules/evergreen.yml",
        ),
        (
            "prometheus-config",
            "prometheus.yml",
            "prometheus/kubernetes.yml",
        ),
        (
            "alertmanager-config",
            "alertmanager.yml",
            "prometheus/alertmanager.yml",
        ),
        (
            "alert-webhook-config",
            "default.conf",
            "prometheus/alert-webhook.conf",
        ),
        (
            "grafana-dashboards",
            "api.json",
            "grafana/dashboards/api.json",
        ),
        (
            "grafana-dashboards",
            "redis-ha.json",
            "grafana/dashboards/redis-ha.json",
        ),
        (
            "grafana-datasources",
            "prometheus.yml",
            "grafana/provisioning/datasources/prometheus.yml",
        ),
    ];
    for rendered in overlays() {
        for (config_map, key, path) in expected {
            assert!(
                rendered.config_map(config_map).get(key) == Some(&file(path)),
                "overlays/{}: ConfigMap {config_map} key {key} is not {path}",
                rendered.overlay
            );
        }
        let dashboards = rendered.config_map("grafana-dashboards");
        let shipped = fs::read_dir(root.join("grafana/dashboards")).expect("grafana/dashboards");
        assert_eq!(
            dashboards.len(),
            shipped.count(),
            "every dashboard of grafana/dashboards, and only those"
        );
        assert_eq!(
            labels(rendered.get("ConfigMap", "grafana-dashboards")).get("grafana_dashboard"),
            Some(&"1".to_owned()),
            "the label the Grafana chart's sidecar loads"
        );
    }
}

/// `${NAME}` placeholders of a template, as render.sh and the nginx image
/// substitute them.
fn placeholders(template: &str) -> BTreeSet<String> {
    template
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn env_names(rendered: &Rendered, container: &Value) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            let map = rendered.of_kind("ConfigMap").find(|c| name_of(c) == name);
            names.extend(
                map.map(|m| string_map(&m["data"]).into_keys())
                    .into_iter()
                    .flatten(),
            );
        }
    }
    names
}

#[test]
fn every_placeholder_of_the_shared_templates_is_set_in_the_pods_that_render_them() {
    let root = repo_root();
    let template = |path: &str| placeholders(&fs::read_to_string(root.join(path)).expect(path));
    // What kubernetes-init.sh finds out and exports before it renders.
    let derived = [
        "REDIS_ANNOUNCE_IP",
        "SENTINEL_ANNOUNCE_IP",
        "MASTER_IP",
        "MASTER_PORT",
    ];
    let init_script = fs::read_to_string(root.join("redis/kubernetes-init.sh")).expect("script");
    for export in [
        "export REDIS_ANNOUNCE_IP=",
        "export SENTINEL_ANNOUNCE_IP=",
        "export MASTER_IP MASTER_PORT",
    ] {
        assert!(init_script.contains(export), "kubernetes-init.sh: {export}");
    }
    for rendered in overlays() {
        let overlay = &rendered.overlay;
        let nginx = rendered.get("Deployment", "nginx");
        let (_, container, _) = containers(&nginx["spec"]["template"])[0];
        let missing: Vec<String> = template("nginx/templates/default.conf.template")
            .difference(&env_names(&rendered, container))
            .cloned()
            .collect();
        assert!(missing.is_empty(), "{overlay}: nginx lacks {missing:?}");

        for (set, templates) in [
            (
                "redis",
                vec!["redis/master.conf.template", "redis/replica.conf.template"],
            ),
            ("sentinel", vec!["redis/sentinel.conf.template"]),
        ] {
            let object = rendered.get("StatefulSet", set);
            let (_, init, _) = containers(&object["spec"]["template"])[0];
            let mut known = env_names(&rendered, init);
            known.extend(derived.map(str::to_owned));
            for path in templates {
                let missing: Vec<String> = template(path).difference(&known).cloned().collect();
                assert!(
                    missing.is_empty(),
                    "{overlay}: {set}'s init container cannot render {path}: {missing:?} unset"
                );
            }
        }
    }
}

#[test]
fn the_rendered_prometheus_and_alertmanager_configs_pass_promtool_and_amtool() {
    let promtool = tool("EVERGREEN_KUBERNETES_PROMTOOL", "promtool");
    let compose_jobs = scrape_jobs(
        &fs::read_to_string(repo_root().join("prometheus/prometheus.yml")).expect("prometheus.yml"),
    );
    for rendered in overlays() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = rendered.config_map("prometheus-config");
        fs::create_dir(dir.path().join("rules")).expect("rules/");
        for (key, text) in rendered.config_map("prometheus-rules") {
            fs::write(dir.path().join("rules").join(key), text).expect("write rules");
        }
        fs::write(dir.path().join("prometheus.yml"), &config["prometheus.yml"]).expect("write");
        let (ok, output) = run(Command::new(&promtool)
            .args(["check", "config"])
            .arg(dir.path().join("prometheus.yml")));
        assert!(
            ok,
            "overlays/{}: promtool check config: {output}",
            rendered.overlay
        );
        assert!(output.contains("1 rule files found"), "{output}");

        // The alert rules select by job: the same jobs must exist.
        assert_eq!(
            scrape_jobs(&config["prometheus.yml"]),
            compose_jobs,
            "overlays/{}: the scrape jobs the rules rely on",
            rendered.overlay
        );

        let alertmanager = rendered.config_map("alertmanager-config");
        let file = dir.path().join("alertmanager.yml");
        fs::write(&file, &alertmanager["alertmanager.yml"]).expect("write");
        let (ok, output) = run(Command::new("amtool").arg("check-config").arg(&file));
        assert!(
            ok,
            "overlays/{}: amtool check-config: {output}",
            rendered.overlay
        );
        let receiver = alertmanager["alertmanager.yml"].contains("http://alert-webhook:9095/");
        assert!(
            receiver && rendered.find("Service", "alert-webhook").is_some(),
            "the webhook receiver Alertmanager sends to is deployed"
        );
    }
}

fn scrape_jobs(prometheus_yml: &str) -> BTreeSet<String> {
    let config: Value = serde_norway::from_str(prometheus_yml).expect("Prometheus config is YAML");
    config["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|job| job["job_name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn production_spreads_the_data_tier_over_nodes_and_budgets_every_disruption() {
    let production = Rendered::overlay("production");
    for set in ["redis", "sentinel"] {
        let object = production.get("StatefulSet", set);
        let required = &object["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(required["topologyKey"], "kubernetes.io/hostname", "{set}");
        assert_eq!(
            required["labelSelector"]["matchLabels"]["app.kubernetes.io/name"], set,
            "{set}: apart from its own kind"
        );
    }
    for tier in ["api", "nginx", "redis", "sentinel"] {
        assert!(
            production.of_kind("PodDisruptionBudget").any(|b| {
                b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == tier
            }),
            "production: a PodDisruptionBudget for {tier}"
        );
    }
    assert_eq!(
        production.get("Service", "nginx")["spec"]["type"],
        "LoadBalancer"
    );
    let dev = Rendered::overlay("dev");
    assert_eq!(dev.get("Service", "nginx")["spec"]["type"], "NodePort");
    for rendered in [&production, &dev] {
        let namespace = rendered.get(
            "Namespace",
            if rendered.overlay == "dev" {
                "evergreen-dev"
            } else {
                "evergreen"
            },
        );
        assert_eq!(
            labels(namespace).get("pod-security.kubernetes.io/enforce"),
            Some(&"restricted".to_owned())
        );
        assert!(
            rendered
                .objects
                .iter()
                .filter(|o| o["kind"] != "Namespace")
                .all(|o| { o["metadata"]["namespace"] == namespace["metadata"]["name"] }),
            "{}: every object in the overlay's namespace",
            rendered.overlay
        );
    }
}

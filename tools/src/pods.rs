//! Pods on Docker: the workloads of a rendered overlay ([`Rendered`]) run as
//! containers, standing in for a cluster where none can run (no kubelet, no
//! node images, no registry here). It does what a kubelet, kube-proxy and the
//! cluster DNS would do with the rendered objects, and no more:
//!
//! - **A pod** is a "pause" container that holds the pod's network namespace,
//!   hostname and IP (a fresh one for every pod, never reused in a run, as a
//!   rescheduled pod gets), then its init containers in order (one that fails
//!   runs again 2 s later, as kubelet retries it), then its containers, all in
//!   that namespace. From the manifests: image, `command` / `args`, env
//!   (values, `$(VAR)` references, `fieldRef` name and namespace, ConfigMap and
//!   Secret keys, `envFrom`), ConfigMap volumes (files), `emptyDir`, the
//!   volumes of `volumeClaimTemplates` (Docker volumes that outlive the pod,
//!   like its PVC), the security context (user, `fsGroup` ownership, read-only
//!   root, no capabilities, no privilege escalation), readiness probes (exec,
//!   httpGet, tcpSocket) and the `preStop` sleep.
//! - **Cluster DNS**: dnsmasq on the network's gateway address answers
//!   `<service>.<namespace>.svc.cluster.local` (a ClusterIP Service: its VIP;
//!   a headless one: its ready pods, or all running ones with
//!   `publishNotReadyAddresses`), StatefulSet pod names and `kube-dns` itself.
//!   Pods search `<namespace>.svc.cluster.local` as in a cluster. A name of
//!   the cluster domain without an address is NXDOMAIN, as CoreDNS answers
//!   for a headless Service none of whose pods is ready.
//! - **ClusterIP Services**: kube-proxy's old userspace mode. Each Service
//!   gets a VIP, an address added to the network's bridge, on which this
//!   process accepts connections and forwards each one to a pod behind the
//!   Service (round-robin); with no pod behind it, the connection is closed
//!   at once, as kube-proxy's REJECT refuses it.
//! - **Deleting a pod**: out of DNS and the Services' endpoints at once, then
//!   the `preStop` sleep, SIGTERM, the rest of the grace period, then kill.
//!
//! Not emulated: liveness and startup probes restarting containers,
//! scheduling and nodes, resource limits, the HorizontalPodAutoscaler,
//! NetworkPolicies.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::compose::free_subnet_prefix;
use evergreen_tests::gateway::{dnsmasq, replace_hosts};
use evergreen_tests::kubernetes::{Rendered, containers, name_of, selects, string_map};
use evergreen_tests::wait;

/// The image of the pause containers (anything with `sleep` will do).
const PAUSE_IMAGE: &str = "redis:7.0.15-bookworm";
const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long an init container may keep failing before the pod counts as
/// broken.
const INIT_DEADLINE: Duration = Duration::from_secs(90);

/// One emulated pod.
#[derive(Debug, Clone)]
struct Pod {
    /// `StatefulSet/redis`, `Deployment/api`.
    owner: String,
    ip: Ipv4Addr,
    labels: BTreeMap<String, String>,
    template: Value,
    ready: bool,
    terminating: bool,
    /// Docker names of its containers (the pause container first).
    containers: Vec<String>,
    /// Volumes that end with the pod (emptyDir).
    volumes: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    next_host: u8,
    /// Counts the pods of each Deployment ever made, for their names.
    made: BTreeMap<String, usize>,
}

/// A ClusterIP Service's VIP.
#[derive(Debug, Clone)]
pub struct ServiceAddress {
    pub name: String,
    pub vip: Ipv4Addr,
}

/// The pods, Services and DNS of one rendered overlay on a Docker network of
/// its own, removed (containers, volumes, network) when dropped.
#[derive(Debug)]
pub struct Cluster {
    pub rendered: Rendered,
    pub namespace: String,
    /// Prefix of every Docker object of this run, and its network's name.
    run: String,
    prefix: String,
    gateway: Ipv4Addr,
    dir: tempfile::TempDir,
    hosts: PathBuf,
    dns: Mutex<Child>,
    state: Arc<Mutex<State>>,
    services: Vec<ServiceAddress>,
    proxies: Vec<JoinHandle<()>>,
}

fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn docker_async(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)
    })
    .await
    .expect("docker task")
}

impl Cluster {
    /// A Docker network, dnsmasq on its gateway and a VIP with its forwarder
    /// for every ClusterIP Service of `rendered`. No pod runs yet.
    pub async fn start(rendered: Rendered) -> Self {
        let namespace = rendered
            .of_kind("Namespace")
            .next()
            .map(|n| name_of(n).to_owned())
            .expect("the overlay creates its namespace");
        let run = format!("k8s-emulation-{}", std::process::id());
        let prefix = free_subnet_prefix();
        let gateway: Ipv4Addr = format!("{prefix}.1").parse().expect("gateway");
        docker(&[
            "network",
            "create",
            "--subnet",
            &format!("{prefix}.0/24"),
            "--gateway",
            &gateway.to_string(),
            "--label",
            &format!("evergreen-pods={run}"),
            &run,
        ])
        .expect("docker network create");
        let id = docker(&["network", "inspect", "--format", "{{.Id}}", &run]).expect("network id");
        let bridge = format!("br-{}", &id[..12]);

        let dir = tempfile::tempdir().expect("temporary directory");
        let (dns, hosts) = dnsmasq(dir.path(), &gateway.to_string(), 53, Some(CLUSTER_DOMAIN));

        let mut cluster = Self {
            rendered,
            namespace,
            run,
            prefix,
            gateway,
            dir,
            hosts,
            dns: Mutex::new(dns),
            state: Arc::new(Mutex::new(State {
                next_host: 100,
                ..State::default()
            })),
            services: Vec::new(),
            proxies: Vec::new(),
        };

        let services: Vec<Value> = cluster
            .rendered
            .of_kind("Service")
            .filter(|s| s["spec"]["clusterIP"] != "None")
            .cloned()
            .collect();
        for (n, service) in services.into_iter().enumerate() {
            let vip: Ipv4Addr = format!("{}.{}", cluster.prefix, 10 + n)
                .parse()
                .expect("VIP");
            let status = Command::new("ip")
                .args(["addr", "add", &format!("{vip}/32"), "dev", &bridge])
                .status()
                .expect("ip (iproute2)");
            assert!(status.success(), "ip addr add {vip} dev {bridge}");
            for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                let listen = SocketAddr::from((vip, port["port"].as_u64().expect("port") as u16));
                let listener = TcpListener::bind(listen)
                    .await
                    .unwrap_or_else(|e| panic!("listen on the VIP {listen}: {e}"));
                cluster.proxies.push(tokio::spawn(forward(
                    listener,
                    cluster.state.clone(),
                    service.clone(),
                    port["targetPort"].clone(),
                )));
            }
            cluster.services.push(ServiceAddress {
                name: name_of(&service).to_owned(),
                vip,
            });
        }
        cluster.republisher()();
        cluster
    }

    /// The VIP of a ClusterIP Service.
    pub fn vip(&self, service: &str) -> Ipv4Addr {
        self.services
            .iter()
            .find(|s| s.name == service)
            .unwrap_or_else(|| panic!("no ClusterIP Service {service}"))
            .vip
    }

    pub fn pod_ip(&self, pod: &str) -> Option<Ipv4Addr> {
        self.state.lock().expect("lock").pods.get(pod).map(|p| p.ip)
    }

    pub fn pods_of(&self, workload: &str) -> Vec<String> {
        let state = self.state.lock().expect("lock");
        state
            .pods
            .iter()
            .filter(|(_, p)| p.owner.ends_with(&format!("/{workload}")) && !p.terminating)
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn is_ready(&self, pod: &str) -> bool {
        let state = self.state.lock().expect("lock");
        state
            .pods
            .get(pod)
            .is_some_and(|p| p.ready && !p.terminating)
    }

    /// Creates the pods of StatefulSet `set` named in `pods` at once
    /// (`podManagementPolicy: Parallel`), and returns when all run their
    /// containers (not necessarily ready).
    pub async fn start_stateful_pods(&self, set: &str, pods: &[&str]) {
        let owner = format!("StatefulSet/{set}");
        futures_util::future::join_all(pods.iter().map(|pod| self.start_pod(&owner, pod))).await;
    }

    /// One more pod of Deployment `deployment`; returns its name.
    pub async fn add_deployment_pod(&self, deployment: &str) -> String {
        let name = {
            let mut state = self.state.lock().expect("lock");
            let made = state.made.entry(deployment.to_owned()).or_default();
            *made += 1;
            format!("{deployment}-{made}")
        };
        self.start_pod(&format!("Deployment/{deployment}"), &name)
            .await;
        name
    }

    /// Waits until `pod` passes its readiness probes.
    pub async fn wait_ready(&self, pod: &str, deadline: Duration) {
        wait::until(&format!("pod {pod} to be ready"), deadline, || async {
            self.is_ready(pod)
                .then_some(())
                .ok_or_else(|| self.describe(pod))
        })
        .await;
    }

    fn describe(&self, pod: &str) -> String {
        let state = self.state.lock().expect("lock");
        match state.pods.get(pod) {
            None => "not created".to_owned(),
            Some(p) => {
                let logs: Vec<String> = p.containers[1..]
                    .iter()
                    .map(|c| {
                        let log = docker(&["logs", "--tail", "5", c]).unwrap_or_else(|e| e);
                        format!("{c}: {log}")
                    })
                    .collect();
                format!("ip {}, not ready; {}", p.ip, logs.join("; "))
            }
        }
    }

    async fn start_pod(&self, owner: &str, name: &str) {
        let (kind, workload) = owner.split_once('/').expect("Kind/name");
        let object = self.rendered.get(kind, workload);
        let template = object["spec"]["template"].clone();
        let ip: Ipv4Addr = {
            let mut state = self.state.lock().expect("lock");
            let host = state.next_host;
            assert!(host < 254, "out of pod addresses");
            state.next_host += 1;
            format!("{}.{host}", self.prefix).parse().expect("pod IP")
        };
        let pause = format!("{}-{name}-pause", self.run);
        let domain = format!("{}.svc.{CLUSTER_DOMAIN}", self.namespace);
        docker_async(
            [
                "run",
                "-d",
                "--name",
                &pause,
                "--label",
                &format!("evergreen-pods={}", self.run),
                "--network",
                &self.run,
                "--ip",
                &ip.to_string(),
                "--hostname",
                name,
                "--dns",
                &self.gateway.to_string(),
                "--dns-search",
                &domain,
                "--dns-search",
                &format!("svc.{CLUSTER_DOMAIN}"),
                "--dns-search",
                CLUSTER_DOMAIN,
                "--entrypoint",
                "sleep",
                PAUSE_IMAGE,
                "infinity",
            ]
            .map(str::to_owned)
            .to_vec(),
        )
        .await
        .unwrap_or_else(|e| panic!("pod {name}: {e}"));

        let mut pod = Pod {
            owner: owner.to_owned(),
            ip,
            labels: string_map(&template["metadata"]["labels"]),
            template: template.clone(),
            ready: false,
            terminating: false,
            containers: vec![pause.clone()],
            volumes: Vec::new(),
        };
        if kind == "StatefulSet" {
            pod.labels.insert(
                "statefulset.kubernetes.io/pod-name".to_owned(),
                name.to_owned(),
            );
        }
        let mounts = self.volumes(object, name, &mut pod).await;
        self.state
            .lock()
            .expect("lock")
            .pods
            .insert(name.to_owned(), pod);
        self.republisher()();

        for (container, spec, init) in containers(&template) {
            let args = self.container_args(name, &pause, container, spec, &template, &mounts);
            if init {
                self.run_init(name, container, args).await;
            } else {
                let mut detached = vec!["run".to_owned(), "-d".to_owned()];
                detached.extend(args);
                docker_async(detached)
                    .await
                    .unwrap_or_else(|e| panic!("pod {name}/{container}: {e}"));
                let docker_name = format!("{}-{name}-{container}", self.run);
                let mut state = self.state.lock().expect("lock");
                if let Some(pod) = state.pods.get_mut(name) {
                    pod.containers.push(docker_name);
                }
            }
        }
        self.watch_readiness(name);
    }

    async fn run_init(&self, pod: &str, container: &str, args: Vec<String>) {
        let started = Instant::now();
        loop {
            let mut attempt = vec!["run".to_owned(), "--rm".to_owned()];
            attempt.extend(args.iter().cloned());
            match docker_async(attempt).await {
                Ok(output) => {
                    println!(
                        "pod {pod}: init {container}: {}",
                        output.lines().last().unwrap_or("")
                    );
                    return;
                }
                Err(why) if started.elapsed() < INIT_DEADLINE => {
                    println!(
                        "pod {pod}: init {container} failed, again in 2 s: {}",
                        why.lines().last().unwrap_or("")
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(why) => panic!("pod {pod}: init {container} kept failing: {why}"),
            }
        }
    }

    /// `-v` options per volume name; creates the volumes.
    async fn volumes(
        &self,
        object: &Value,
        pod_name: &str,
        pod: &mut Pod,
    ) -> BTreeMap<String, String> {
        let spec = &object["spec"]["template"]["spec"];
        let fs_group = spec["securityContext"]["fsGroup"].as_u64();
        let mut mounts = BTreeMap::new();
        let mut owned_volumes = Vec::new();
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let name = volume["name"].as_str().expect("volume name").to_owned();
            if let Some(config_map) = volume["configMap"]["name"].as_str() {
                let dir = self.dir.path().join(pod_name).join(&name);
                fs::create_dir_all(&dir).expect("ConfigMap directory");
                let data = string_map(&self.rendered.get("ConfigMap", config_map)["data"]);
                for (key, text) in data {
                    fs::write(dir.join(key), text).expect("ConfigMap file");
                }
                mounts.insert(name, dir.display().to_string());
            } else if volume.get("emptyDir").is_some() {
                let docker_volume = format!("{}-{pod_name}-{name}", self.run);
                pod.volumes.push(docker_volume.clone());
                owned_volumes.push(docker_volume.clone());
                mounts.insert(name, docker_volume);
            } else {
                panic!("pod {pod_name}: volume {name}: only configMap and emptyDir are emulated");
            }
        }
        for claim in object["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = name_of(claim).to_owned();
            // Named like Kubernetes names the claim: it outlives the pod.
            let docker_volume = format!("{}-{name}-{pod_name}", self.run);
            owned_volumes.push(docker_volume.clone());
            mounts.insert(name, docker_volume);
        }
        for volume in owned_volumes {
            docker_async(
                [
                    "volume",
                    "create",
                    "--label",
                    &format!("evergreen-pods={}", self.run),
                    &volume,
                ]
                .map(str::to_owned)
                .to_vec(),
            )
            .await
            .expect("docker volume create");
            if let Some(group) = fs_group {
                // What kubelet does for fsGroup: the volume belongs to the group.
                docker_async(
                    [
                        "run",
                        "--rm",
                        "-v",
                        &format!("{volume}:/volume"),
                        "--entrypoint",
                        "sh",
                        PAUSE_IMAGE,
                        "-c",
                        &format!("chown -R {group}:{group} /volume && chmod -R g+rwX /volume"),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                )
                .await
                .expect("fsGroup ownership");
            }
        }
        mounts
    }

    /// `docker run` options and arguments for one container of a pod.
    fn container_args(
        &self,
        pod: &str,
        pause: &str,
        container: &str,
        spec: &Value,
        template: &Value,
        mounts: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let pod_security = &template["spec"]["securityContext"];
        let security = &spec["securityContext"];
        let mut args = vec![
            "--name".to_owned(),
            format!("{}-{pod}-{container}", self.run),
            "--label".to_owned(),
            format!("evergreen-pods={}", self.run),
            "--network".to_owned(),
            format!("container:{pause}"),
        ];
        let user = security["runAsUser"]
            .as_u64()
            .or(pod_security["runAsUser"].as_u64());
        let group = security["runAsGroup"]
            .as_u64()
            .or(pod_security["runAsGroup"].as_u64());
        if let Some(user) = user {
            args.extend([
                "--user".to_owned(),
                format!("{user}:{}", group.unwrap_or(user)),
            ]);
        }
        if let Some(fs_group) = pod_security["fsGroup"].as_u64() {
            args.extend(["--group-add".to_owned(), fs_group.to_string()]);
        }
        if security["readOnlyRootFilesystem"] == true {
            args.push("--read-only".to_owned());
        }
        if security["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
        {
            args.extend(["--cap-drop".to_owned(), "ALL".to_owned()]);
        }
        if security["allowPrivilegeEscalation"] == false {
            args.extend(["--security-opt".to_owned(), "no-new-privileges".to_owned()]);
        }
        for (name, value) in self.environment(pod, spec) {
            args.extend(["--env".to_owned(), format!("{name}={value}")]);
        }
        for mount in spec["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().expect("mount name");
            let source = mounts
                .get(volume)
                .unwrap_or_else(|| panic!("pod {pod}/{container}: no volume {volume}"));
            let mut options = Vec::new();
            if mount["readOnly"] == true {
                options.push("ro");
            }
            // A Kubernetes volume starts empty: Docker would fill a new named
            // volume with the image's files at that path (and their owner).
            if !source.starts_with('/') {
                options.push("nocopy");
            }
            let path = mount["mountPath"].as_str().expect("mountPath");
            let spec = if options.is_empty() {
                format!("{source}:{path}")
            } else {
                format!("{source}:{path}:{}", options.join(","))
            };
            args.extend(["-v".to_owned(), spec]);
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let command = strings(&spec["command"]);
        if let Some(entrypoint) = command.first() {
            args.extend(["--entrypoint".to_owned(), entrypoint.clone()]);
        }
        args.push(spec["image"].as_str().expect("image").to_owned());
        args.extend(command.into_iter().skip(1));
        args.extend(strings(&spec["args"]));
        args
    }

    /// A container's environment as Kubernetes builds it: `envFrom` first,
    /// then `env` in order, `$(VAR)` referring to variables defined before.
    fn environment(&self, pod: &str, spec: &Value) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        };
        for source in spec["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                for (k, v) in string_map(&self.rendered.get("ConfigMap", name)["data"]) {
                    set(&mut env, k, v);
                }
            }
            if let Some(name) = source["secretRef"]["name"].as_str() {
                for k in string_map(&self.rendered.get("Secret", name)["data"]).into_keys() {
                    let v = self.secret_value(name, &k);
                    set(&mut env, k, v);
                }
            }
        }
        for var in spec["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().expect("env name").to_owned();
            let from = &var["valueFrom"];
            let value = if let Some(value) = var["value"].as_str() {
                let mut expanded = value.to_owned();
                for (n, v) in &env {
                    expanded = expanded.replace(&format!("$({n})"), v);
                }
                expanded
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => pod.to_owned(),
                    "metadata.namespace" => self.namespace.clone(),
                    other => panic!("fieldRef {other} is not emulated"),
                }
            } else if let Some(secret) = from["secretKeyRef"]["name"].as_str() {
                self.secret_value(secret, from["secretKeyRef"]["key"].as_str().expect("key"))
            } else if let Some(map) = from["configMapKeyRef"]["name"].as_str() {
                let key = from["configMapKeyRef"]["key"].as_str().expect("key");
                string_map(&self.rendered.get("ConfigMap", map)["data"])
                    .remove(key)
                    .unwrap_or_else(|| panic!("ConfigMap {map} has no {key}"))
            } else {
                panic!("env {name}: this source is not emulated: {var}")
            };
            set(&mut env, name, value);
        }
        env
    }

    /// A key of the overlay's Secret: the value the test's secrets.env held.
    fn secret_value(&self, secret: &str, key: &str) -> String {
        assert!(
            self.rendered.get("Secret", secret)["data"]
                .get(key)
                .is_some(),
            "Secret {secret} has no key {key}"
        );
        self.rendered
            .secrets
            .get(key)
            .unwrap_or_else(|| panic!("secrets.env has no {key}"))
            .clone()
    }

    /// Runs the pod's readiness probes in the background, as kubelet does,
    /// and republishes DNS when the pod's readiness changes.
    fn watch_readiness(&self, pod: &str) {
        let state = self.state.clone();
        let probes: Vec<(String, Value, Value)> = {
            let state = state.lock().expect("lock");
            let p = state.pods.get(pod).expect("pod");
            containers(&p.template)
                .into_iter()
                .filter(|(_, _, init)| !init)
                .map(|(name, spec, _)| {
                    (
                        format!("{}-{pod}-{name}", self.run),
                        spec["readinessProbe"].clone(),
                        spec["ports"].clone(),
                    )
                })
                .collect()
        };
        let pod = pod.to_owned();
        let notify = self.republisher();
        tokio::spawn(async move {
            let mut failures = vec![0_u64; probes.len()];
            let mut passed = vec![false; probes.len()];
            loop {
                let ip = {
                    let state = state.lock().expect("lock");
                    match state.pods.get(&pod) {
                        Some(p) if !p.terminating => p.ip,
                        _ => return,
                    }
                };
                for (i, (container, probe, ports)) in probes.iter().enumerate() {
                    let ok = probe_once(container, probe, ports, ip).await;
                    let threshold = probe["failureThreshold"].as_u64().unwrap_or(3);
                    if ok {
                        failures[i] = 0;
                        passed[i] = true;
                    } else {
                        failures[i] += 1;
                        if failures[i] >= threshold || !passed[i] {
                            passed[i] = false;
                        }
                    }
                }
                let ready = passed.iter().all(|p| *p);
                let changed = {
                    let mut state = state.lock().expect("lock");
                    match state.pods.get_mut(&pod) {
                        Some(p) if p.ready != ready => {
                            p.ready = ready;
                            true
                        }
                        _ => false,
                    }
                };
                if changed {
                    notify();
                }
                let period = probes
                    .iter()
                    .filter_map(|(_, p, _)| p["periodSeconds"].as_u64())
                    .min()
                    .unwrap_or(10);
                tokio::time::sleep(Duration::from_secs(period)).await;
            }
        });
    }

    /// A closure that rewrites the hosts file dnsmasq answers from (the
    /// pods' current state) and has dnsmasq read it again.
    fn republisher(&self) -> impl Fn() + Send + 'static {
        let (state, hosts, rendered_dns) =
            (self.state.clone(), self.hosts.clone(), self.dns_inputs());
        let pid = self.dns.lock().expect("lock").id();
        move || {
            let state = state.lock().expect("lock");
            replace_hosts(&hosts, &rendered_dns.lines(&state));
            let _ = Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status();
        }
    }

    fn dns_inputs(&self) -> DnsInputs {
        DnsInputs {
            domain: format!("{}.svc.{CLUSTER_DOMAIN}", self.namespace),
            gateway: self.gateway,
            services: self.services.clone(),
            headless: self
                .rendered
                .of_kind("Service")
                .filter(|s| s["spec"]["clusterIP"] == "None")
                .cloned()
                .collect(),
            governing: self
                .rendered
                .of_kind("StatefulSet")
                .map(|s| {
                    (
                        name_of(s).to_owned(),
                        s["spec"]["serviceName"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect(),
        }
    }

    /// `kubectl delete pod`: out of every endpoint and DNS answer at once,
    /// then each container's preStop sleep, SIGTERM, and a kill when the
    /// grace period is over; the pod's emptyDir volumes go with it.
    pub async fn delete_pod(&self, pod: &str) {
        let terminating = self.mark_terminating(pod);
        self.republisher()();
        let template = &terminating.template;
        let grace = template["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        let stops = containers(template)
            .into_iter()
            .filter(|(_, _, init)| !init)
            .map(|(name, spec, _)| {
                let docker_name = format!("{}-{pod}-{name}", self.run);
                let sleep = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
                    .as_u64()
                    .unwrap_or(0);
                async move {
                    tokio::time::sleep(Duration::from_secs(sleep)).await;
                    let left = grace.saturating_sub(sleep).to_string();
                    let _ = docker_async(vec!["stop".into(), "-t".into(), left, docker_name]).await;
                }
            });
        futures_util::future::join_all(stops).await;
        self.remove(pod, &terminating).await;
    }

    /// A pod lost at once (its node died, `delete --force --grace-period=0`):
    /// every container killed, no preStop.
    pub async fn kill_pod(&self, pod: &str) {
        let terminating = self.mark_terminating(pod);
        let mut kill = vec!["kill".to_owned()];
        kill.extend(terminating.containers.iter().skip(1).cloned());
        let _ = docker_async(kill).await;
        self.republisher()();
        self.remove(pod, &terminating).await;
    }

    /// Marks `pod` terminating (out of every endpoint from the next DNS
    /// publication on) and returns it as it was.
    fn mark_terminating(&self, pod: &str) -> Pod {
        let mut state = self.state.lock().expect("lock");
        let p = state
            .pods
            .get_mut(pod)
            .unwrap_or_else(|| panic!("no pod {pod}"));
        p.terminating = true;
        p.clone()
    }

    /// Its containers and pod-lifetime volumes gone, the pod forgotten.
    async fn remove(&self, name: &str, pod: &Pod) {
        let mut rm = vec!["rm".to_owned(), "-f".to_owned()];
        rm.extend(pod.containers.iter().cloned());
        let _ = docker_async(rm).await;
        for volume in &pod.volumes {
            let _ = docker_async(vec!["volume".into(), "rm".into(), volume.clone()]).await;
        }
        self.state.lock().expect("lock").pods.remove(name);
        self.republisher()();
    }

    /// Deletes the PersistentVolumeClaim `claim` of StatefulSet pod `pod`
    /// (its data with it), as when a pod moves to a node its volume cannot
    /// follow and the operator gives it a new one.
    pub async fn delete_claim(&self, claim: &str, pod: &str) {
        docker_async(vec![
            "volume".into(),
            "rm".into(),
            format!("{}-{claim}-{pod}", self.run),
        ])
        .await
        .expect("docker volume rm");
    }

    /// StatefulSet controller: (re)creates pod `pod` of `set`.
    pub async fn recreate_stateful_pod(&self, set: &str, pod: &str) {
        self.start_pod(&format!("StatefulSet/{set}"), pod).await;
    }

    /// `kubectl exec` into the first container of `pod` named `container`.
    pub fn exec(&self, pod: &str, container: &str, args: &[&str]) -> Result<String, String> {
        let name = format!("{}-{pod}-{container}", self.run);
        let mut full = vec!["exec", name.as_str()];
        full.extend(args);
        docker(&full)
    }

    /// `kubectl logs`.
    pub fn logs(&self, pod: &str, container: &str) -> String {
        let name = format!("{}-{pod}-{container}", self.run);
        let output = Command::new("docker")
            .args(["logs", &name])
            .stdin(Stdio::null())
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

/// What the DNS hosts file is made from, apart from the pods' state.
#[derive(Debug, Clone)]
struct DnsInputs {
    domain: String,
    gateway: Ipv4Addr,
    services: Vec<ServiceAddress>,
    headless: Vec<Value>,
    /// StatefulSet name → its governing Service.
    governing: BTreeMap<String, String>,
}

impl DnsInputs {
    fn lines(&self, state: &State) -> String {
        let domain = &self.domain;
        let mut lines = vec![format!(
            "{} kube-dns.kube-system.svc.{CLUSTER_DOMAIN}",
            self.gateway
        )];
        for service in &self.services {
            lines.push(format!("{} {}.{domain}", service.vip, service.name));
        }
        for service in &self.headless {
            for pod in endpoints(state, service) {
                lines.push(format!("{} {}.{domain}", pod.ip, name_of(service)));
            }
        }
        for (name, pod) in &state.pods {
            let governing = pod
                .owner
                .strip_prefix("StatefulSet/")
                .and_then(|set| self.governing.get(set));
            if let (Some(governing), false) = (governing, pod.terminating) {
                lines.push(format!("{} {name}.{governing}.{domain}", pod.ip));
            }
        }
        lines.join("\n") + "\n"
    }
}

/// The pods behind `service`: selected, not terminating, and ready (or just
/// running, with `publishNotReadyAddresses`).
fn endpoints<'a>(state: &'a State, service: &Value) -> Vec<&'a Pod> {
    let selector = string_map(&service["spec"]["selector"]);
    let not_ready_too = service["spec"]["publishNotReadyAddresses"] == true;
    state
        .pods
        .values()
        .filter(|p| selects(&selector, &p.labels) && !p.terminating && (p.ready || not_ready_too))
        .collect()
}

/// A Service port's `targetPort` on `pod`: a number, or a container port's name.
fn target_port(pod: &Pod, target: &Value) -> Option<u16> {
    if let Some(number) = target.as_u64() {
        return u16::try_from(number).ok();
    }
    containers(&pod.template).into_iter().find_map(|(_, c, _)| {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == *target)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
    })
}

/// kube-proxy for one Service port: each connection to the VIP goes to the
/// next pod behind the Service; with none, it is closed at once.
async fn forward(listener: TcpListener, state: Arc<Mutex<State>>, service: Value, target: Value) {
    let turn = AtomicUsize::new(0);
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let destination = {
            let state = state.lock().expect("lock");
            let pods = endpoints(&state, &service);
            if pods.is_empty() {
                None
            } else {
                let pod = pods[turn.fetch_add(1, Ordering::Relaxed) % pods.len()];
                target_port(pod, &target).map(|port| SocketAddr::from((pod.ip, port)))
            }
        };
        tokio::spawn(async move {
            let Some(destination) = destination else {
                return;
            };
            if let Ok(Ok(mut outbound)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(destination)).await
            {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// One readiness probe of a container at the pod's address.
async fn probe_once(container: &str, probe: &Value, ports: &Value, ip: Ipv4Addr) -> bool {
    if probe.is_null() {
        return docker_async(vec![
            "inspect".into(),
            "--format".into(),
            "{{.State.Running}}".into(),
            container.to_owned(),
        ])
        .await
        .is_ok_and(|running| running == "true");
    }
    let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
    let port = |port: &Value| -> u16 {
        port.as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .or_else(|| {
                ports
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == *port)
                    .and_then(|p| p["containerPort"].as_u64())
                    .and_then(|p| u16::try_from(p).ok())
            })
            .expect("probe port")
    };
    let attempt = async {
        if let Some(command) = probe["exec"]["command"].as_array() {
            let mut args = vec!["exec".to_owned(), container.to_owned()];
            args.extend(command.iter().filter_map(|c| c.as_str().map(str::to_owned)));
            docker_async(args).await.is_ok()
        } else if probe["httpGet"].is_object() {
            let url = format!(
                "http://{ip}:{}{}",
                port(&probe["httpGet"]["port"]),
                probe["httpGet"]["path"].as_str().unwrap_or("/")
            );
            reqwest::get(url)
                .await
                .is_ok_and(|r| r.status().is_success())
        } else if probe["tcpSocket"].is_object() {
            TcpStream::connect((ip, port(&probe["tcpSocket"]["port"])))
                .await
                .is_ok()
        } else {
            panic!("probe not emulated: {probe}")
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.abort();
        }
        let label = format!("label=evergreen-pods={}", self.run);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &label]) {
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let mut rm = vec!["rm", "-f"];
                rm.extend(ids);
                let _ = docker(&rm);
            }
        }
        if let Ok(volumes) = docker(&["volume", "ls", "-q", "--filter", &label]) {
            let volumes: Vec<&str> = volumes.lines().collect();
            if !volumes.is_empty() {
                let mut rm = vec!["volume", "rm", "-f"];
                rm.extend(volumes);
                let _ = docker(&rm);
            }
        }
        let _ = docker(&["network", "rm", &self.run]);
        if let Ok(mut dns) = self.dns.lock() {
            let _ = dns.kill();
            let _ = dns.wait();
        }
    }
}

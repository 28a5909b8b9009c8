//! A real `modvisor up` process on a loopback port with its own data directory, and a
//! small HTTP client for the tests.

use modvisor_control_plane_api::types::{PowerState, VmSpec};
use modvisor_control_plane_api::ApiClient;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::fixtures::{
    bench_output, guest_release, metric_value, real_module, sign, wait_for, wait_until,
};

/// The binary under test.
pub fn modvisor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modvisor"))
}

/// One control plane process (`modvisor up`).
pub struct Plane {
    pub dir: tempfile::TempDir,
    up_args: Vec<String>,
    child: Option<Child>,
    pub base: String,
    pub http: Client,
    /// The lines the current process printed on stdout so far.
    stdout: Arc<Mutex<Vec<String>>>,
}

/// A response: status, headers and JSON body (`Null` when empty or not JSON).
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The problem `type` slug of an error response.
    pub fn problem_slug(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:modvisor:problem:"))
            .unwrap_or("")
    }

    /// The content type without parameters.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
    }

    /// Asserts the status and, for errors, that the body is problem+json with that status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        if status >= 400 {
            assert_eq!(
                self.content_type(),
                "application/problem+json",
                "{}",
                self.body
            );
            assert_eq!(self.body["status"], status, "{}", self.body);
            assert_eq!(
                self.headers
                    .get("x-content-type-options")
                    .and_then(|v| v.to_str().ok()),
                Some("nosniff"),
                "a problem response without X-Content-Type-Options: nosniff"
            );
        }
        self
    }
}

impl Plane {
    /// Starts `modvisor up` (no node agents, empty catalog) in a fresh data directory.
    pub fn start() -> Plane {
        Self::start_plus(&[])
    }

    /// [`Plane::start`] with `extra` arguments.
    pub fn start_plus(extra: &[&str]) -> Plane {
        let mut args = vec![
            "--nodes",
            "0",
            "--catalog",
            "none",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Self::start_with(&args)
    }

    /// Starts `modvisor up` with these arguments (besides `--data-dir`).
    pub fn start_with(args: &[&str]) -> Plane {
        modvisor_node_api::tls::install_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Plane {
            dir,
            up_args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            stdout: Default::default(),
            base: String::new(),
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
        };
        p.spawn();
        p
    }

    /// `modvisor up` with one node agent (and `extra` arguments), jailing VMs under a
    /// cgroup parent of this test's own (`/modvisor-e2e-<tag>-<pid>`) with per-VM uids from
    /// `uid_base`; the cleanup removes what the node leaves behind (drop it after the VMs
    /// are done with, as declaring it second does).
    pub fn with_node(
        tag: &str,
        uid_base: u32,
        extra: &[&str],
    ) -> (Plane, crate::host::HostCleanup) {
        let parent = format!("/modvisor-e2e-{tag}-{}", std::process::id());
        let uids = uid_base.to_string();
        let mut args = vec![
            "--nodes",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--jail-cgroup-parent",
            &parent,
            "--jail-uid-base",
            &uids,
        ];
        args.extend_from_slice(extra);
        let p = Plane::start_with(&args);
        let cleanup = crate::host::HostCleanup {
            dir: p.dir.path().to_path_buf(),
            cgroup_parent: parent.clone(),
        };
        (p, cleanup)
    }

    /// Waits (up to 240 s) until VM `id` runs; fails the test if it fails. The VM.
    pub fn wait_running(&self, token: &str, id: &str) -> Value {
        wait_for(&format!("VM {id} Running"), 240, || {
            let v = self.get(token, &format!("/v1/vms/{id}")).expect(200).body;
            assert_ne!(v["status"]["phase"], "Failed", "{v}");
            (v["status"]["phase"] == "Running").then_some(v)
        })
    }

    /// A control plane started by other means, whose data directory is `dir/data` and
    /// whose API is at `base`; this handle does not own its process.
    pub fn attach(dir: tempfile::TempDir, base: String) -> Plane {
        modvisor_node_api::tls::install_provider();
        Plane {
            dir,
            up_args: Vec::new(),
            child: None,
            stdout: Default::default(),
            base,
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let addr_file = self.data_dir().join("control-plane.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut child = modvisor()
            .arg("up")
            .args(&self.up_args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("MODVISOR_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn modvisor up");
        let out = child.stdout.take().expect("up's stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        self.stdout = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().expect("stdout lines").push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                self.base = format!("http://{}", a.trim());
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("modvisor up exited: {status}");
            }
            assert!(Instant::now() < deadline, "modvisor up did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The address file is written once bound; wait until requests are served.
        while self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .is_err()
        {
            assert!(Instant::now() < deadline, "modvisor up did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the CLI against this plane as `who` (a token file of `up`'s); its output.
    pub fn cli(&self, who: &str, args: &[&str]) -> std::process::Output {
        modvisor()
            .args(args)
            .env("MODVISOR_API", &self.base)
            .env("MODVISOR_TOKEN_FILE", self.token_file(who))
            .env("MODVISOR_CONFIG", self.dir.path().join("no-config.toml"))
            .output()
            .expect("run modvisor")
    }

    /// [`Plane::cli`] that must succeed; its stdout.
    #[track_caller]
    pub fn cli_ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.cli(who, args);
        assert!(
            out.status.success(),
            "modvisor {args:?}: {}\nstdout: {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Waits up to `secs` for the current `up` to print a line starting with `start`.
    pub fn wait_stdout_line(&self, start: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let printed = self.stdout.lock().expect("stdout lines").clone();
            if let Some(line) = printed.iter().find(|l| l.starts_with(start)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "up never printed {start:?}; it printed {printed:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (no chance to flush anything).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("wait");
        }
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
            c.wait().expect("wait");
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits up to `within` for the process to end; its status.
    pub fn interrupt(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("a process this handle started");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                c.kill().expect("kill -9");
                c.wait().expect("wait");
                panic!("modvisor up did not end within {within:?} of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Leaves `arg` out of the next starts.
    pub fn drop_arg(&mut self, arg: &str) {
        self.up_args.retain(|a| a != arg);
    }

    /// Starts the process again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again after [`Plane::kill9`].
    pub fn respawn(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// Whether the process is still running.
    /// The pid of the `modvisor up` process.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("a process this handle started")
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// A token written by `modvisor up` (`admin`, `tenant-a`, `tenant-b`).
    pub fn token(&self, who: &str) -> String {
        std::fs::read_to_string(self.data_dir().join("tokens").join(format!("{who}.jwt")))
            .expect("token file")
            .trim()
            .to_string()
    }

    /// The path of a token file.
    pub fn token_file(&self, who: &str) -> PathBuf {
        self.data_dir().join("tokens").join(format!("{who}.jwt"))
    }

    /// A token signed offline with this plane's key: `modvisor token issue ARGS`.
    pub fn offline_token(&self, args: &[&str]) -> String {
        let out = modvisor()
            .args(["token", "issue"])
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("modvisor token issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// GET with a token, expecting 200 and a text body; the body.
    pub fn get_text(&self, token: &str, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.text().expect("a text body")
    }

    /// A bootstrap token signed offline with this plane's key (`modvisor token issue`).
    pub fn offline_bootstrap_token(&self) -> String {
        let out = modvisor()
            .args(["token", "issue", "--role", "bootstrap", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("modvisor token issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Registers a node agent's name at `address` with `token` over the internal API, as a
    /// node agent would (nothing listens there: the control plane's side only).
    pub fn register_node(&self, token: &str, name: &str, address: &str) -> Resp {
        let key = rcgen::KeyPair::generate().expect("a key");
        let csr = rcgen::CertificateParams::new(vec![name.to_string()])
            .and_then(|p| p.serialize_request(&key))
            .and_then(|r| r.pem())
            .expect("a certificate request");
        let reg = serde_json::json!({
            "name": name, "address": address,
            "capacity": {"vcpus": 2, "memory_mib": 2048},
            "driver": "qemu", "hardware_virtualization": false, "kernel_release": guest_release(),
            "features": ["networking"], "csr_pem": csr
        });
        self.internal_call(Method::POST, token, "/v1/nodes/register", Some(&reg))
    }

    /// The signing key's PEM.
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("keys/jwt-ed25519.pem")).expect("key")
    }

    /// Sends a request with optional token, JSON body and extra headers.
    pub fn call(
        &self,
        method: Method,
        token: Option<&str>,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        send(
            self.http.request(method, format!("{}{}", self.base, path)),
            token,
            body,
            headers,
        )
    }

    /// POST JSON to the internal API with a node's (or bootstrap) token.
    pub fn node_post(&self, token: &str, path: &str, body: &Value) -> Resp {
        self.internal_call(Method::POST, token, path, Some(body))
    }

    /// GET from the internal API with a node's token.
    pub fn node_get(&self, token: &str, path: &str) -> Resp {
        self.internal_call(Method::GET, token, path, None)
    }

    /// The internal (node-facing) API's base URL, as the control plane wrote it.
    pub fn internal_base(&self) -> String {
        let addr = std::fs::read_to_string(self.data_dir().join("control-plane-internal.addr"))
            .expect("the internal API's address");
        format!("https://{}", addr.trim())
    }

    /// The control plane's CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("keys/ca.pem")).expect("the CA")
    }

    /// Sends a request to the internal API over TLS, trusting only the control plane's CA
    /// and only a certificate naming the control plane, as a node agent does.
    pub fn internal_call(
        &self,
        method: Method,
        token: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Resp {
        let tls = modvisor_node_api::tls::client_config(
            &self.ca_pem(),
            modvisor_node_api::tls::CONTROL_PLANE_NAME,
        )
        .expect("TLS to the control plane");
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_backend_preconfigured(tls)
            .build()
            .expect("client");
        send(
            client.request(method, format!("{}{}", self.internal_base(), path)),
            Some(token),
            body,
            &[],
        )
    }

    /// GET with a token.
    pub fn get(&self, token: &str, path: &str) -> Resp {
        self.call(Method::GET, Some(token), path, None, &[])
    }

    /// POST JSON with a token.
    pub fn post(&self, token: &str, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, Some(token), path, Some(body), &[])
    }

    /// PUT JSON with a token.
    pub fn put(&self, token: &str, path: &str, body: &Value) -> Resp {
        self.call(Method::PUT, Some(token), path, Some(body), &[])
    }

    /// DELETE with a token.
    pub fn delete(&self, token: &str, path: &str) -> Resp {
        self.call(Method::DELETE, Some(token), path, None, &[])
    }

    /// The typed client of this control plane, calling with `token`. Tests of the API's
    /// own HTTP behaviour (status codes, problem types, headers, hostile input) speak HTTP
    /// themselves through [`Plane::call`]; everything else goes through this client.
    pub fn api(&self, token: &str) -> ApiClient {
        ApiClient::new(&self.base, token, Duration::from_secs(30)).expect("client")
    }

    /// Creates a VM for the token's tenant and returns its id.
    pub fn create_vm(&self, token: &str, name: &str) -> String {
        let spec = VmSpec {
            name: name.into(),
            kernel_mode: Default::default(),
            vcpus: 1,
            memory_mib: 128,
            modules: Vec::new(),
            power_state: PowerState::Running,
            user_data: None,
            network: None,
        };
        self.api(token).create_vm(&spec).expect("create a VM").id
    }

    /// Publishes `bytes` as module `name` for the guest kernel's release (as admin), with
    /// `force`: a plane without node agents has no node that runs it.
    pub fn publish(&self, name: &str, bytes: &[u8]) -> Resp {
        self.publish_for(name, &guest_release(), true, bytes)
    }

    /// Publishes `bytes` as module `name` for `release` (as admin), forced or not.
    pub fn publish_for(&self, name: &str, release: &str, force: bool, bytes: &[u8]) -> Resp {
        let resp = self
            .http
            .put(format!(
                "{}/v1/admin/modules/{name}?kernel_release={release}&force={force}",
                self.base
            ))
            .bearer_auth(self.token("admin"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .expect("publish");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = serde_json::from_slice(&resp.bytes().expect("body")).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // What node agents under its directory kept (they keep them across restarts).
        crate::host::remove_namespaces(self.dir.path());
    }
}

/// Sends `r` with optional token, JSON body and extra headers; the answer as a [`Resp`].
fn send(
    mut r: reqwest::blocking::RequestBuilder,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Resp {
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(serde_json::to_vec(b).expect("json"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

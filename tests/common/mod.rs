//! Helpers for integration tests: real `drover serve` processes on loopback
//! ports chosen by the OS, and polling with a deadline instead of sleeping.
#![allow(dead_code)]

pub mod load;
pub mod raw_grpc;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover::api::types::{
    DigestBody, EnqueuedBody, ErrorBody, JobBody, MembersBody, PoliciesBody, StatsBody, WorkersBody,
};
use drover::client::admin::{AdminClient, AdminError};

pub struct TestNode {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub extra_config: String,
    /// The gRPC listen address: port 0 for a lone node, a fixed port for a
    /// cluster member (its peers must know it).
    pub grpc_addr: String,
    /// Set in the node's environment (NOTIFY_SOCKET...).
    pub env: Vec<(String, String)>,
    /// Where the node's log goes (appended); the test's stderr if None.
    pub log_file: Option<PathBuf>,
    /// More `drover serve` arguments.
    pub args: Vec<String>,
    pub grpc: String,
    pub http: String,
}

impl TestNode {
    /// Starts a node whose config is the defaults plus `extra` (TOML).
    pub fn start(extra: &str) -> TestNode {
        Self::start_at("127.0.0.1:0", extra)
    }

    /// Starts a node listening for gRPC on `grpc_addr`.
    pub fn start_at(grpc_addr: &str, extra: &str) -> TestNode {
        let mut node = Self::prepare(grpc_addr, extra);
        node.spawn();
        node
    }

    /// A node with its temp dir, not started yet.
    pub fn prepare(grpc_addr: &str, extra: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        TestNode {
            child: None,
            dir,
            extra_config: extra.to_string(),
            grpc_addr: grpc_addr.to_string(),
            env: Vec::new(),
            log_file: None,
            args: Vec::new(),
            grpc: String::new(),
            http: String::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)starts the process on the same data dir, on new ports.
    pub fn spawn(&mut self) {
        let mut child = self
            .serve_command()
            .stdout(Stdio::piped())
            .stderr(match &self.log_file {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("open the node's log file"),
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("spawn drover serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("node did not print its ready line; got {line:?}"))
                .to_string()
        };
        self.grpc = format!("http://{}", field("grpc="));
        self.http = format!("http://{}", field("http="));
        self.child = Some(child);
    }

    /// `drover serve` on this node's config (written now) and data dir,
    /// with its args and environment; stdio left to the caller.
    pub fn serve_command(&self) -> Command {
        let config = self.write_config();
        let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(&self.args)
            // A test runner under systemd must not hear from test nodes.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(self.env.iter().cloned());
        command
    }

    /// Writes the node's config file (the defaults, its addresses and
    /// `extra_config`); returns its path. SIGHUP makes a running node read
    /// it again.
    pub fn write_config(&self) -> PathBuf {
        let config = self.dir.path().join("node.toml");
        // Top-level keys must precede the tables the extra config may open.
        let (top, tables) = match self.extra_config.find('[') {
            Some(i) => self.extra_config.split_at(i),
            None => (self.extra_config.as_str(), ""),
        };
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\ngrpc_addr = {:?}\nhttp_addr = \"127.0.0.1:0\"\n{top}\n[log]\nlevel = \"info,raft=warn\"\nformat = \"text\"\n{tables}\n",
                self.data_dir(),
                self.grpc_addr
            ),
        )
        .expect("write config");
        config
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The process's exit status if it has stopped by itself (it is then
    /// no longer running); None while it runs.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    /// Waits for the process to stop by itself; its exit status. Panics
    /// if it still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the node has logged so far: its `log_file`, which must be set
    /// before it starts; empty before the file exists.
    pub fn log_text(&self) -> String {
        let path = self
            .log_file
            .as_ref()
            .expect("set the node's log_file before it starts to read its log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// How many times the node's log holds `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// Waits until the node's log holds `needle` more than `before` times
    /// (take `before` from [`TestNode::log_count`] before causing it), for
    /// up to 20 s; the log then.
    pub async fn wait_logged(&self, needle: &str, before: usize) -> String {
        wait_for(
            &format!("{needle} in the node's log (seen {before} times before)"),
            Duration::from_secs(20),
            || async {
                let text = self.log_text();
                if text.matches(needle).count() > before {
                    Ok(text)
                } else {
                    Err(text.lines().last().unwrap_or("").to_string())
                }
            },
        )
        .await
    }

    /// The typed admin client of this node (its HTTP address), with no
    /// token: the client the CLI uses.
    pub fn admin(&self) -> AdminClient {
        self.admin_as("")
    }

    /// [`TestNode::admin`] with `token` (empty: none).
    pub fn admin_as(&self, token: &str) -> AdminClient {
        let credentials =
            drover::client::Credentials::new(Some(token), None).expect("a token a header carries");
        AdminClient::new(&self.http, &credentials, "").expect("an admin client")
    }

    /// `GET path` (`/api/v1/...`) on this node, its answer read as `T`;
    /// panics naming the error if the node refuses or answers another body.
    pub async fn body<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.admin()
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.http))
    }

    /// `GET path` on this node as `T`, or the error it answered (a refusal,
    /// another body) as text; panics if the node cannot be reached at all,
    /// as [`get_json`] does. For polls that wait through refusals.
    pub async fn try_body<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        match self.admin().get(path).await {
            Ok(body) => Ok(body),
            Err(e @ AdminError::Unreachable { .. }) => panic!("GET {path}: {e}"),
            Err(e) => Err(e.to_string()),
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), libc::SIGTERM);
        wait_child(&mut c, Duration::from_secs(30))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Waits for a child to exit, killing it if it has not within `limit`.
pub fn wait_child(c: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = c.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("process {} did not exit within {limit:?}", c.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 20 ms until it returns Some, or panics after `limit`
/// with the last thing it saw.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match cond().await {
            Ok(v) => return v,
            Err(seen) => {
                if Instant::now() > deadline {
                    panic!("timed out after {limit:?} waiting for {what}; last saw: {seen}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET url`: its status and its body as raw JSON (Null if it is not
/// JSON). For the bodies no type describes: error answers to hostile
/// input, the exact field names of the API contract, the OpenAPI document.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("http get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// `GET url`, which must be refused: its status and its error body, typed;
/// panics if the answer is not drover's error body.
pub async fn get_error(url: &str) -> (u16, ErrorBody) {
    let resp = reqwest::get(url).await.expect("http get");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("http body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("GET {url}: {status} {text} is not an error body: {e}"));
    (status, body)
}

/// A node's `/metrics` page.
pub async fn metrics_text(node: &TestNode) -> String {
    reqwest::get(format!("{}/metrics", node.http))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// `GET path` on `node` through its admin client, the answer read as `T`;
/// panics naming the error if it is refused or not a `T`.
pub async fn get_body<T: serde::de::DeserializeOwned>(node: &TestNode, path: &str) -> T {
    node.body(path).await
}

/// A job as `GET /api/v1/jobs/{id}` shows it, raw (its error body if there
/// is no such job): for tests of the JSON itself.
pub async fn job_json(node: &TestNode, id: u64) -> serde_json::Value {
    get_json(&format!("{}/api/v1/jobs/{id}", node.http)).await.1
}

/// A job as `GET /api/v1/jobs/{id}` shows it, typed; panics if there is no
/// such job.
pub async fn job_body(node: &TestNode, id: u64) -> JobBody {
    node.body(&format!("/api/v1/jobs/{id}")).await
}

/// A job as `GET /api/v1/jobs/{id}` shows it, or the refusal as text (no
/// such job yet, no leader).
pub async fn try_job(node: &TestNode, id: u64) -> Result<JobBody, String> {
    node.try_body(&format!("/api/v1/jobs/{id}")).await
}

/// The value of one series (its name and labels, as the page writes them:
/// `drover_queue_workers{queue="q"}`) on a `/metrics` page.
pub fn metric_value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The state of a job, read over HTTP (`?` if the node refuses: no such
/// job).
pub async fn job_state(node: &TestNode, id: u64) -> String {
    match try_job(node, id).await {
        Ok(j) => j.state.as_str().to_string(),
        Err(_) => "?".to_string(),
    }
}

/// Waits up to `limit` until job `id` is in state `want` on `node`; the job
/// as then read.
pub async fn wait_state_within(node: &TestNode, id: u64, want: &str, limit: Duration) -> JobBody {
    wait_for(&format!("job {id} {want}"), limit, || async {
        match try_job(node, id).await {
            Ok(j) if j.state.as_str() == want => Ok(j),
            Ok(j) => Err(j.state.as_str().to_string()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// [`wait_state_within`] 20 s.
pub async fn wait_state(node: &TestNode, id: u64, want: &str) -> JobBody {
    wait_state_within(node, id, want, Duration::from_secs(20)).await
}

/// [`wait_state_within`], the job read raw: for the clock tests, which
/// read it as JSON.
pub async fn wait_state_json_within(
    node: &TestNode,
    id: u64,
    want: &str,
    limit: Duration,
) -> serde_json::Value {
    wait_for(&format!("job {id} {want}"), limit, || async {
        let j = job_json(node, id).await;
        if j["state"] == want {
            Ok(j)
        } else {
            Err(format!("{}", j["state"]))
        }
    })
    .await
}

/// The connected workers of the cluster, as `GET /api/v1/workers` on `node`
/// lists them.
pub async fn workers_body(node: &TestNode) -> WorkersBody {
    node.body("/api/v1/workers").await
}

pub fn new_job(queue: &str, payload: &str) -> drover::proto::v1::NewJob {
    drover::proto::v1::NewJob {
        queue: queue.into(),
        payload: payload.to_string().into(),
        ..Default::default()
    }
}

/// A port nothing listens on, for a node to bind later. Taken below Linux's
/// ephemeral range (32768 and up): a port the kernel picked with bind(:0)
/// could be handed to some outgoing connection (raft streams reconnect
/// often) before the node bound it. A counter keeps this binary's tests on
/// distinct ports; its start depends on the process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 1000) * 10;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(LOW + (base + n) % SPAN).expect("port range fits u16");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// Real node processes forming one cluster on loopback.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    /// `[[peers]]` tables of the initial members.
    pub peers: String,
}

impl TestCluster {
    /// Starts `n` nodes, ids 1..=n, each with `extra` config (TOML, top-level
    /// keys first).
    pub fn start(n: usize, extra: &str) -> TestCluster {
        let mut c = Self::prepare(n, extra);
        for node in &mut c.nodes {
            node.spawn();
        }
        c
    }

    /// [`TestCluster::start`] without starting the nodes (to set their
    /// environment first).
    pub fn prepare(n: usize, extra: &str) -> TestCluster {
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[peers]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                TestNode::prepare(
                    a,
                    &format!(
                        "node_id = {}\ncluster_id = \"test\"\n{extra}\n{peers}",
                        i + 1
                    ),
                )
            })
            .collect();
        TestCluster { nodes, peers }
    }

    /// Starts one more node (id = count + 1) that joins rather than
    /// bootstraps; returns its index. Add it with `drover cluster add`.
    pub fn start_joining(&mut self, extra: &str) -> usize {
        let id = self.nodes.len() + 1;
        let addr = format!("127.0.0.1:{}", free_port());
        let node = TestNode::start_at(
            &addr,
            &format!(
                "node_id = {id}\ncluster_id = \"test\"\njoin = true\n{extra}\n{}",
                self.peers
            ),
        );
        self.nodes.push(node);
        id - 1
    }

    /// All nodes' gRPC addresses, comma separated, for clients.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.grpc.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node that every running node agrees leads.
    pub async fn leader(&self) -> usize {
        wait_for(
            "a leader all running nodes agree on",
            Duration::from_secs(20),
            || async {
                let mut seen = Vec::new();
                for n in self.nodes.iter().filter(|n| n.is_running()) {
                    let s = n.try_body::<StatsBody>("/api/v1/stats?stale=ok").await;
                    seen.push(s.map_or(0, |s| s.node.leader_id));
                }
                match seen.first() {
                    Some(&l)
                        if l != 0
                            && seen.iter().all(|&x| x == l)
                            && self.nodes[l as usize - 1].is_running() =>
                    {
                        Ok(l as usize - 1)
                    }
                    _ => Err(format!("leader ids {seen:?}")),
                }
            },
        )
        .await
    }

    /// Waits until every running node has applied the same index and has
    /// the same machine digest; returns that index.
    /// Waits until node `i` has applied as far as the others had when
    /// asked: caught up, even while load goes on (see `converged` for a
    /// still cluster).
    pub async fn caught_up(&self, i: usize) {
        async fn applied(n: &TestNode) -> u64 {
            n.try_body::<DigestBody>("/api/v1/debug/digest")
                .await
                .map_or(0, |d| d.applied_index)
        }
        let mut target = 0;
        for (j, n) in self.nodes.iter().enumerate() {
            if j != i && n.is_running() {
                target = target.max(applied(n).await);
            }
        }
        wait_for(
            &format!("node {} to apply up to {target}", i + 1),
            Duration::from_secs(30),
            || async {
                let at = applied(&self.nodes[i]).await;
                if at >= target {
                    Ok(())
                } else {
                    Err(format!("at {at}"))
                }
            },
        )
        .await;
    }

    /// Saves a snapshot of the cluster (through its leader) into node 1's
    /// temp dir, then kills every node and empties its data dir: the
    /// starting point of a restore. Returns the file.
    pub async fn save_and_wipe(&mut self) -> String {
        let leader = self.leader().await;
        let file = self.nodes[0].dir.path().join("backup.bin");
        let file = file.to_str().expect("a UTF-8 temp path").to_string();
        drover_ok(&["snapshot", "save", &file], &self.nodes[leader].grpc);
        for n in &mut self.nodes {
            n.kill();
            std::fs::remove_dir_all(n.data_dir()).expect("empty the data dir");
        }
        file
    }

    /// Waits until node `leader` reports member `id` unreachable.
    pub async fn wait_unreachable(&self, leader: usize, id: u64) {
        let node = &self.nodes[leader];
        wait_for(
            &format!("the leader to notice node {id} is down"),
            Duration::from_secs(20),
            || async {
                let m = node
                    .try_body::<MembersBody>("/api/v1/cluster/members")
                    .await?;
                let down = m
                    .members
                    .iter()
                    .any(|x| x.id == id && x.reachable == Some(false));
                if down {
                    Ok(())
                } else {
                    Err(format!("{m:?}"))
                }
            },
        )
        .await;
    }

    pub async fn converged(&self) -> u64 {
        wait_for(
            "all running nodes to hold the same state",
            Duration::from_secs(30),
            || async {
                let mut seen = Vec::new();
                for n in self.nodes.iter().filter(|n| n.is_running()) {
                    let d = n.try_body::<DigestBody>("/api/v1/debug/digest").await;
                    seen.push(match d {
                        Ok(d) => (d.applied_index, d.digest),
                        Err(e) => (0, e),
                    });
                }
                if seen.len() > 1 && seen.iter().all(|s| *s == seen[0]) {
                    Ok(seen[0].0)
                } else {
                    Err(format!("(applied, digest) per node: {seen:?}"))
                }
            },
        )
        .await
    }
}

/// A TCP proxy on loopback that can cut the link it carries: while cut, it
/// drops its open connections and closes new ones at once, as a partition
/// with resets would.
pub struct Proxy {
    pub addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, k) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                k.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            cut,
            conns,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl TestCluster {
    /// Like [`TestCluster::start`], but every peer link goes through its own
    /// proxy (`proxies[(from, to)]`, node indexes), so links can be cut.
    pub async fn start_with_proxies(
        n: usize,
        extra: &str,
    ) -> (
        TestCluster,
        std::collections::HashMap<(usize, usize), Proxy>,
    ) {
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut proxies = std::collections::HashMap::new();
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                proxies.insert((from, to), Proxy::start(addrs[to].clone()).await);
            }
        }
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let peers: String = (0..n)
                .map(|j| {
                    let a = if j == i {
                        addr.clone()
                    } else {
                        proxies[&(i, j)].addr.clone()
                    };
                    format!("[[peers]]\nid = {}\naddr = \"{a}\"\n", j + 1)
                })
                .collect();
            nodes.push(TestNode::start_at(
                addr,
                &format!(
                    "node_id = {}\ncluster_id = \"test\"\n{extra}\n{peers}",
                    i + 1
                ),
            ));
        }
        (
            TestCluster {
                nodes,
                peers: String::new(),
            },
            proxies,
        )
    }
}

/// Runs the `drover` CLI against `server` (as DROVER_SERVER) with `token`
/// (as DROVER_TOKEN, if not empty), as an operator would.
pub fn drover_cli(args: &[&str], server: &str, token: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    cmd.args(args)
        .env("DROVER_SERVER", server)
        .env("RUST_BACKTRACE", "0");
    if !token.is_empty() {
        cmd.env("DROVER_TOKEN", token);
    }
    cmd.output().expect("run drover")
}

/// Waits until the node applies the policies its config asked for:
/// `applied` holds of `GET /api/v1/policies` (`what` names it).
pub async fn wait_for_policy(node: &TestNode, what: &str, applied: impl Fn(&PoliciesBody) -> bool) {
    wait_for(
        &format!("policy {what} in the log"),
        Duration::from_secs(10),
        || async {
            let p = node.try_body::<PoliciesBody>("/api/v1/policies").await?;
            if applied(&p) {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    )
    .await;
}

/// Enqueues `n` jobs into `queue` through the CLI; their ids.
pub fn enqueue_n(server: &str, queue: &str, n: usize) -> Vec<u64> {
    let jobs: Vec<EnqueuedBody> = drover_body(
        &[
            "enqueue",
            "--queue",
            queue,
            "--count",
            &n.to_string(),
            "--json",
        ],
        server,
    );
    jobs.iter().map(|j| j.id).collect()
}

/// Runs the CLI against `server` with no token; its output, success or not.
pub fn drover(args: &[&str], server: &str) -> std::process::Output {
    drover_cli(args, server, "")
}

/// Runs the CLI with `args` alone, setting no server or token (for commands
/// that name their target or work on local files: `snapshot save --http`,
/// `snapshot restore`); it must succeed. Its output.
pub fn drover_local(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .expect("run drover");
    assert!(
        out.status.success(),
        "drover {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the CLI, which must succeed; its `--json` output read as `T` (the
/// admin API's body the command prints).
pub fn drover_body<T: serde::de::DeserializeOwned>(args: &[&str], server: &str) -> T {
    let out = drover_cli(args, server, "");
    assert!(
        out.status.success(),
        "drover {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drover {args:?} printed {}, not the body expected: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `drover ARGS` (an `enqueue ... --json`), which must succeed; the
/// id of the first job it printed.
pub fn enqueued_id(args: &[&str], server: &str) -> u64 {
    drover_body::<Vec<EnqueuedBody>>(args, server)
        .first()
        .unwrap_or_else(|| panic!("drover {args:?} printed no job"))
        .id
}

/// Runs the CLI, which must succeed (the test fails with its stderr).
pub fn drover_ok(args: &[&str], server: &str) {
    let out = drover_cli(args, server, "");
    assert!(
        out.status.success(),
        "drover {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// POSTs `body`, as it is, with a JSON content type (for bodies no typed
/// client would send).
pub async fn post_raw_json(
    client: &reqwest::Client,
    url: String,
    body: &'static str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

/// Runs the CLI, which must succeed; its `--json` output (Null if none).
pub fn drover_json(args: &[&str], server: &str) -> serde_json::Value {
    let out = drover_cli(args, server, "");
    assert!(
        out.status.success(),
        "drover {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A child process killed and reaped when dropped.
pub struct Reap(pub Child);

/// A `drover worker --exec SCRIPT` serving `queue` as worker `id`.
pub fn exec_worker(server: &str, queue: &str, id: &str, script: &str) -> Reap {
    exec_worker_with(server, queue, id, script, &[])
}

/// [`exec_worker`] with more `drover worker` arguments.
pub fn exec_worker_with(server: &str, queue: &str, id: &str, script: &str, more: &[&str]) -> Reap {
    Reap(
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["worker", "--server", server, "--queue", queue, "--id", id])
            .args(["--exec", script])
            .args(more)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn drover worker"),
    )
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

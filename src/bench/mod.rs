//! `drover bench`: the workloads of BENCH.md against a node it starts (a
//! child `drover serve` on loopback with a temp data dir) or one given with
//! `--server`. Every throughput figure is reported over several runs (median,
//! min, max) and as a ratio to the no-op RPC ceiling measured in the same
//! session, since the machine is shared and absolute figures drift.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::client::worker::{self, WorkerOptions};
use crate::client::{ClientError, Producer};
use crate::proto::v1 as pb;

/// `drover bench`'s options: which workloads, how large, against which nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// gRPC address of a running node, or of several cluster members
    /// separated by commas (clients spread over them); by default a fresh
    /// node is started per run.
    #[arg(long, alias = "servers")]
    pub server: Option<String>,
    /// Start a fresh 3-node cluster on loopback per run instead of one node.
    #[arg(long, conflicts_with = "server")]
    pub cluster: bool,
    /// Jobs per throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: u64,
    /// Runs per figure.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Concurrent producers (each with its own connection).
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// Workers in the end-to-end workload.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs each worker runs at once in the end-to-end workload.
    #[arg(long, default_value_t = 64)]
    pub worker_concurrency: u32,
    /// Jobs pending when RSS is read; 0 skips that figure.
    #[arg(long, default_value_t = 1_000_000)]
    pub rss_jobs: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Only these workloads (comma separated): ping,enq,enqs,e2e,e2es,lat,batch,rss.
    /// enqs and e2es are enq and e2e with each producer on one enqueue stream.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Config file for the nodes bench starts (its data dir and addresses are
    /// replaced by a temp dir and free loopback ports).
    #[arg(long)]
    pub node_config: Option<std::path::PathBuf>,
    /// A scenario instead of the workloads: `mixed` (priorities, weighted
    /// tenants, failures, a concurrency key), `deep` (dispatch rate with
    /// 10,000 and with 1,000,000 ready jobs), `soak` (--jobs e2e with a
    /// short retention: RSS and data dir at every million jobs),
    /// `tenants` (a backlog over 1, 20,000 and 100,000 tenants, drained) or
    /// `large` (500 payloads of 1,000,000 bytes, or --jobs of
    /// --payload-bytes, then drained: MB/s against the disk's sequential
    /// write speed, and the peak RSS and data dir of every node).
    #[arg(long, value_parser = ["mixed", "deep", "soak", "tenants", "large"])]
    pub scenario: Option<String>,
    /// Config a scenario adds to the nodes it starts.
    #[arg(skip)]
    pub extra_config: String,
    /// A second drover binary (another build): every workload runs on
    /// fresh nodes of this binary and of that one in turn, run by run, and
    /// both are printed with their ratios, so a change is judged in one
    /// window of this noisy machine. Build it in a target dir of its own.
    #[arg(long, conflicts_with_all = ["server", "scenario"])]
    pub baseline: Option<std::path::PathBuf>,
    /// The binary the nodes of a run are started from (this one when None).
    #[arg(skip)]
    pub exe: Option<std::path::PathBuf>,
}

mod large;
mod scenarios;
mod soak;

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A node for it could not be started, or did not say it was ready.
    #[error("cannot start a node for the benchmark: {0}")]
    Spawn(String),
    /// A producer's or worker's call to the node failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A node started for one run; killed when dropped.
struct LocalNode {
    child: Child,
    grpc: String,
    dir: tempfile::TempDir,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalNode {
    /// Starts a node; `member` makes it (id, gRPC address, `[[peers]]`
    /// tables) a member of a local cluster.
    fn start(
        exe: Option<&Path>,
        base_config: Option<&Path>,
        member: Option<(u64, String, String)>,
        extra: &str,
    ) -> Result<LocalNode, BenchError> {
        let dir = tempfile::tempdir().map_err(|e| BenchError::Spawn(e.to_string()))?;
        let config = match (base_config, &member) {
            (Some(path), None) => path.to_path_buf(),
            _ => {
                let path = dir.path().join("bench.toml");
                let text = match &member {
                    Some((id, _, peers)) => format!(
                        "node_id = {id}\ncluster_id = \"bench\"\n[log]\nlevel = \"error\"\n{peers}{extra}"
                    ),
                    None => format!("[log]\nlevel = \"error\"\n{extra}"),
                };
                std::fs::write(&path, text).map_err(|e| BenchError::Spawn(e.to_string()))?;
                path
            }
        };
        let grpc_addr = member
            .as_ref()
            .map_or("127.0.0.1:0".to_string(), |m| m.1.clone());
        let exe = match exe {
            Some(exe) => exe.to_path_buf(),
            None => std::env::current_exe().map_err(|e| BenchError::Spawn(e.to_string()))?,
        };
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--grpc-addr", &grpc_addr, "--http-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Spawn(e.to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Spawn("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| BenchError::Spawn(e.to_string()))?;
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .ok_or_else(|| {
                BenchError::Spawn(format!("node printed {line:?} instead of its ready line"))
            })?;
        Ok(LocalNode {
            grpc: format!("http://{grpc}"),
            child,
            dir,
        })
    }

    fn rss_bytes(&self) -> Option<u64> {
        crate::resources::rss_of(self.child.id())
    }

    /// Bytes of the node's data dir on disk.
    fn data_bytes(&self) -> Option<u64> {
        Some(crate::metrics::disk_usage(&self.dir.path().join("data")))
    }

    /// CPU seconds the node has used so far (user and system).
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (ticks > 0).then(|| (utime + stime) / ticks as f64)
    }
}

/// CPU seconds (user and system) this process has used so far: the load
/// generator's here, and `cargo bench`'s.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds used so far by this process (the load generator) and by the
/// nodes it started (none when targeting `--server`).
#[derive(Clone, Copy)]
struct CpuMark {
    client: f64,
    nodes: Option<f64>,
}

impl CpuMark {
    fn now(target: &Target) -> CpuMark {
        let client = process_cpu_seconds();
        let nodes = (!target.nodes.is_empty())
            .then(|| {
                target
                    .nodes
                    .iter()
                    .map(LocalNode::cpu_seconds)
                    .sum::<Option<f64>>()
            })
            .flatten();
        CpuMark { client, nodes }
    }

    /// Microseconds of CPU per operation since `start`: (nodes, client).
    fn per_op_since(self, start: CpuMark, ops: u64) -> Cpu {
        let per = |a: f64, b: f64| (a - b) * 1e6 / ops.max(1) as f64;
        Cpu {
            nodes: self.nodes.zip(start.nodes).map(|(a, b)| per(a, b)),
            client: per(self.client, start.client),
        }
    }
}

/// CPU per operation of one run, in microseconds. On this shared machine it
/// moves far less from run to run than the rate does, so it is what tells
/// whether a change made the work cheaper.
#[derive(Clone, Copy)]
struct Cpu {
    nodes: Option<f64>,
    client: f64,
}

/// What a throughput run measured.
struct Run {
    rate: f64,
    cpu: Cpu,
}

/// What one run talks to: the given servers, or nodes it started.
struct Target {
    servers: Vec<String>,
    nodes: Vec<LocalNode>,
}

impl Target {
    /// The servers list rotated to start at `i`, so client `i` connects to
    /// node `i mod n` and falls back to the others.
    fn url(&self, i: usize) -> String {
        let n = self.servers.len().max(1);
        (0..self.servers.len())
            .map(|k| self.servers[(i + k) % n].clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Starts the local node, or the nodes of a local cluster.
async fn start_nodes(args: &BenchArgs) -> Result<Vec<LocalNode>, BenchError> {
    let config = args.node_config.clone();
    let members: Vec<Option<(u64, String, String)>> = if args.cluster {
        let addrs: Vec<String> = (0..3)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.to_string())
                    .map_err(|e| BenchError::Spawn(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[peers]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Some((i as u64 + 1, a.clone(), peers.clone())))
            .collect()
    } else {
        vec![None]
    };
    let mut nodes = Vec::new();
    for member in members {
        let config = config.clone();
        let extra = args.extra_config.clone();
        let exe = args.exe.clone();
        nodes.push(
            tokio::task::spawn_blocking(move || {
                LocalNode::start(exe.as_deref(), config.as_deref(), member, &extra)
            })
            .await
            .map_err(|e| BenchError::Spawn(e.to_string()))??,
        );
    }
    Ok(nodes)
}

/// A target for one run: a fresh local node or cluster, or the given servers.
async fn target(args: &BenchArgs) -> Result<Target, BenchError> {
    if let Some(s) = &args.server {
        return Ok(Target {
            servers: crate::client::server_list(s),
            nodes: Vec::new(),
        });
    }
    // A cluster's ports are picked before its nodes bind them, so another
    // socket can take one in between: start again on fresh ports.
    let mut attempt = 0;
    let nodes = loop {
        attempt += 1;
        match start_nodes(args).await {
            Ok(nodes) => break nodes,
            Err(e) if args.cluster && attempt < 3 => {
                eprintln!("bench: {e}; starting the cluster again on other ports");
            }
            Err(e) => return Err(e),
        }
    };
    let target = Target {
        servers: nodes.iter().map(|n| n.grpc.clone()).collect(),
        nodes,
    };
    // Wait for a leader: the client retries while there is none.
    let mut p = Producer::connect(&target.url(0)).await?;
    p.enqueue(vec![job("bench-warmup", &Bytes::from_static(b"x"))])
        .await?;
    Ok(target)
}

fn job(queue: &str, payload: &Bytes) -> pb::NewJob {
    pb::NewJob {
        queue: queue.into(),
        payload: payload.clone(),
        ..Default::default()
    }
}

/// One producer per client, each with its own connection.
async fn producers(target: &Target, clients: usize) -> Result<Vec<Producer>, BenchError> {
    let mut producers = Vec::with_capacity(clients);
    for i in 0..clients {
        producers.push(Producer::connect(&target.url(i)).await?);
    }
    Ok(producers)
}

/// Runs `op` from one task per client until `total` operations are done;
/// returns operations per second. `op` takes the client's state (a producer,
/// a stream) and gives it back with the operations it did.
async fn drive<S, F, Fut>(
    target: &Target,
    clients: Vec<S>,
    total: u64,
    op: F,
) -> Result<Run, BenchError>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(S, u64), ClientError>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu_start = CpuMark::now(target);
    let mut tasks = Vec::new();
    for client in clients {
        let next = next.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let done = next.load(Ordering::Relaxed);
                if done >= total {
                    return Ok::<(), ClientError>(());
                }
                let (back, step) = op(client).await?;
                client = back;
                next.fetch_add(step, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Spawn(e.to_string()))??;
    }
    let done = next.load(Ordering::Relaxed);
    Ok(Run {
        rate: done as f64 / start.elapsed().as_secs_f64(),
        cpu: CpuMark::now(target).per_op_since(cpu_start, done),
    })
}

async fn ping(args: &BenchArgs) -> Result<Run, BenchError> {
    let target = target(args).await?;
    let clients = producers(&target, args.producers).await?;
    drive(&target, clients, args.jobs, |mut p| async move {
        p.ping().await?;
        Ok((p, 1))
    })
    .await
}

async fn enqueue(args: &BenchArgs, per_request: usize, via: Via) -> Result<Run, BenchError> {
    let target = target(args).await?;
    produce(&target, args, "bench", per_request, args.jobs, via).await
}

/// How producers send their requests.
#[derive(Clone, Copy)]
enum Via {
    /// One call each.
    Calls,
    /// Messages on one enqueue stream per producer; each producer still
    /// waits for every reply.
    Streams,
}

/// Enqueues `total` jobs to `queue` from `args.producers` producers, each
/// request holding `per_request` jobs.
async fn produce(
    target: &Target,
    args: &BenchArgs,
    queue: &'static str,
    per_request: usize,
    total: u64,
    via: Via,
) -> Result<Run, BenchError> {
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let clients = producers(target, args.producers).await?;
    let op = move |mut client: Enqueuer| {
        let jobs = vec![job(queue, &payload); per_request];
        async move {
            client.enqueue(jobs).await?;
            Ok((client, per_request as u64))
        }
    };
    match via {
        Via::Calls => {
            drive(
                target,
                clients.into_iter().map(Enqueuer::Calls).collect(),
                total,
                op,
            )
            .await
        }
        Via::Streams => {
            let mut streams = Vec::with_capacity(clients.len());
            for p in clients {
                streams.push(Enqueuer::Stream(p.enqueue_stream().await?));
            }
            drive(target, streams, total, op).await
        }
    }
}

/// A producer's way of sending, as [`Via`] picks it.
enum Enqueuer {
    Calls(Producer),
    Stream(crate::client::EnqueueStream),
}

impl Enqueuer {
    async fn enqueue(&mut self, jobs: Vec<pb::NewJob>) -> Result<(), ClientError> {
        match self {
            Enqueuer::Calls(p) => p.enqueue_call(jobs).await.map(drop),
            Enqueuer::Stream(s) => s.enqueue(jobs).await.map(drop),
        }
    }
}

/// Producers and workers at once; a job counts when its completion is
/// acknowledged.
async fn end_to_end(args: &BenchArgs, via: Via) -> Result<Run, BenchError> {
    end_to_end_on(&target(args).await?, args, via).await
}

/// The end-to-end workload on `target`'s queue `bench-e2e`.
async fn end_to_end_on(target: &Target, args: &BenchArgs, via: Via) -> Result<Run, BenchError> {
    let total = args.jobs;
    let run_count = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let start = Instant::now();
    let cpu_start = CpuMark::now(target);
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let opts = WorkerOptions::new(
            target.url(i),
            format!("bench-{i}"),
            vec!["bench-e2e".into()],
            args.worker_concurrency,
        );
        let run_count = run_count.clone();
        let stop_tx = stop_tx.clone();
        let handler = move |_job: crate::client::worker::Job| {
            if run_count.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                stop_tx.send_replace(true);
            }
            async { Ok(Bytes::new()) }
        };
        workers.push(tokio::spawn(worker::run(opts, handler, stop.clone())));
    }
    produce(target, args, "bench-e2e", 1, total, via).await?;
    let completed = join_workers(workers).await?;
    Ok(Run {
        rate: completed as f64 / start.elapsed().as_secs_f64(),
        cpu: CpuMark::now(target).per_op_since(cpu_start, completed),
    })
}

/// Waits for workers to stop; answers the jobs they completed.
async fn join_workers(
    workers: Vec<tokio::task::JoinHandle<Result<worker::WorkerReport, ClientError>>>,
) -> Result<u64, BenchError> {
    let mut completed = 0;
    for w in workers {
        completed += w
            .await
            .map_err(|e| BenchError::Spawn(e.to_string()))??
            .completed;
    }
    Ok(completed)
}

/// One producer, one job per request: (p50, p99) in milliseconds.
async fn latency(args: &BenchArgs) -> Result<(f64, f64), BenchError> {
    let target = target(args).await?;
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let mut p = Producer::connect(&target.url(0)).await?;
    let n = (args.jobs / 10).max(100);
    let mut samples = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        p.enqueue_call(vec![job("bench-lat", &payload)]).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3
    };
    Ok((at(0.50), at(0.99)))
}

async fn rss(args: &BenchArgs) -> Result<Option<u64>, BenchError> {
    if args.server.is_some() {
        return Ok(None);
    }
    let target = target(args).await?;
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let clients = producers(&target, 4).await?;
    drive(&target, clients, args.rss_jobs, move |mut p| {
        const BATCH: usize = crate::config::DEFAULT_MAX_JOBS_PER_REQUEST;
        let jobs = vec![job("bench-rss", &payload); BATCH];
        async move {
            p.enqueue(jobs).await?;
            Ok((p, BATCH as u64))
        }
    })
    .await?;
    // Let the nodes settle (sled's cache and allocator) before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // In a cluster every node holds every job: the largest is the figure.
    Ok(target.nodes.iter().filter_map(|n| n.rss_bytes()).max())
}

struct Figure {
    median: f64,
    min: f64,
    max: f64,
}

fn figure(mut v: Vec<f64>) -> Figure {
    v.sort_by(|a, b| a.total_cmp(b));
    Figure {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// The runs of one workload: rates, and the median CPU per operation.
struct Figures {
    rate: Figure,
    nodes_cpu: Option<f64>,
    client_cpu: f64,
}

async fn repeat<F, Fut>(runs: usize, f: F) -> Result<Figures, BenchError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Run, BenchError>>,
{
    let mut done = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        done.push(f().await?);
    }
    Ok(figures(&done))
}

fn figures(done: &[Run]) -> Figures {
    let nodes: Option<Vec<f64>> = done.iter().map(|r| r.cpu.nodes).collect();
    Figures {
        rate: figure(done.iter().map(|r| r.rate).collect()),
        nodes_cpu: nodes.map(|v| figure(v).median),
        client_cpu: figure(done.iter().map(|r| r.cpu.client).collect()).median,
    }
}

/// A throughput workload of `drover bench`.
#[derive(Clone, Copy)]
enum Workload {
    Ping,
    Enq,
    Enqs,
    E2e,
    E2es,
    Batch,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::Ping,
        Workload::Enq,
        Workload::Enqs,
        Workload::E2e,
        Workload::E2es,
        Workload::Batch,
    ];

    /// Its name in `--only`.
    fn name(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Enq => "enq",
            Workload::Enqs => "enqs",
            Workload::E2e => "e2e",
            Workload::E2es => "e2es",
            Workload::Batch => "batch",
        }
    }

    /// Its name in the output.
    fn label(self) -> &'static str {
        match self {
            Workload::Batch => "batch100",
            w => w.name(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Ping => "calls/s",
            _ => "jobs/s ",
        }
    }

    async fn run(self, args: &BenchArgs) -> Result<Run, BenchError> {
        match self {
            Workload::Ping => ping(args).await,
            Workload::Enq => enqueue(args, 1, Via::Calls).await,
            Workload::Enqs => enqueue(args, 1, Via::Streams).await,
            Workload::E2e => end_to_end(args, Via::Calls).await,
            Workload::E2es => end_to_end(args, Via::Streams).await,
            Workload::Batch => enqueue(args, 100, Via::Calls).await,
        }
    }
}

/// `--baseline`: each wanted workload on this binary's nodes and the
/// baseline's in turn, run by run, so both see the same moments of a noisy
/// machine; prints both, each against its own no-op ceiling, and the ratios.
async fn compare(args: &BenchArgs) -> Result<(), BenchError> {
    let want = |w: Workload| args.only.is_empty() || args.only.iter().any(|o| o == w.name());
    let base = BenchArgs {
        exe: args.baseline.clone(),
        ..args.clone()
    };
    println!(
        "  (A/B: \"this\" is this binary, \"base\" is {}; lat and rss are not compared)",
        args.baseline
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let mut ceilings: Option<(f64, f64)> = None;
    for w in Workload::ALL.into_iter().filter(|w| want(*w)) {
        let (mut this, mut other) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            this.push(w.run(args).await?);
            other.push(w.run(&base).await?);
        }
        let (this, other) = (figures(&this), figures(&other));
        print_rate(
            &format!("{} this", w.label()),
            &this,
            w.unit(),
            ceilings.map(|c| c.0),
        );
        print_rate(
            &format!("{} base", w.label()),
            &other,
            w.unit(),
            ceilings.map(|c| c.1),
        );
        let cpu = match (this.nodes_cpu, other.nodes_cpu) {
            (Some(a), Some(b)) if b > 0.0 => format!(", node cpu/op {:.2}", a / b),
            _ => String::new(),
        };
        println!(
            "{:<10} this/base: rate {:.2}{cpu}, client cpu/op {:.2}",
            "",
            this.rate.median / other.rate.median.max(f64::MIN_POSITIVE),
            this.client_cpu / other.client_cpu.max(f64::MIN_POSITIVE)
        );
        if let Workload::Ping = w {
            ceilings = Some((this.rate.median, other.rate.median));
        }
    }
    Ok(())
}

fn print_rate(name: &str, f: &Figures, unit: &str, ceiling: Option<f64>) {
    let ratio = ceiling
        .map(|c| format!("  {:.2} of the no-op ceiling", f.rate.median / c))
        .unwrap_or_default();
    let nodes = f
        .nodes_cpu
        .map(|n| format!("nodes {n:.0} + "))
        .unwrap_or_default();
    println!(
        "{name:<10} {:>9.0} {unit}  (min {:.0}, max {:.0}){ratio}  cpu/op {nodes}client {:.0} us",
        f.rate.median, f.rate.min, f.rate.max, f.client_cpu
    );
}

/// What the runs talk to, for the heading: `per` follows a fresh node or
/// cluster (" per run" when each run starts its own).
fn what_runs(args: &BenchArgs, per: &str) -> String {
    match (&args.server, args.cluster) {
        (Some(s), _) => format!("servers {s}"),
        (None, true) => format!("a fresh local 3-node cluster{per}"),
        (None, false) => format!("a fresh local node{per}"),
    }
}

/// Runs the workloads (or the scenario) `args` asks for and prints each
/// figure as it is measured.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    match args.scenario.as_deref() {
        Some("mixed") => return scenarios::mixed(args).await,
        Some("deep") => return scenarios::deep(args).await,
        Some("soak") => return soak::soak(args).await,
        Some("tenants") => return scenarios::tenants(args).await,
        Some("large") => return large::large(args).await,
        _ => {}
    }
    let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!(
        "drover bench: {} jobs of {} bytes per run, {} runs, {} producers, {}",
        args.jobs,
        args.payload_bytes,
        args.runs,
        args.producers,
        what_runs(&args, " per run")
    );
    if args.baseline.is_some() {
        return compare(&args).await;
    }
    let mut ceiling = None;
    for w in [
        Workload::Ping,
        Workload::Enq,
        Workload::Enqs,
        Workload::E2e,
        Workload::E2es,
    ] {
        if want(w.name()) {
            let f = repeat(args.runs, || w.run(&args)).await?;
            print_rate(w.label(), &f, w.unit(), ceiling);
            if let Workload::Ping = w {
                ceiling = Some(f.rate.median);
            }
        }
    }
    if want("lat") {
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for _ in 0..args.runs.max(1) {
            let (a, b) = latency(&args).await?;
            p50.push(a);
            p99.push(b);
        }
        let (a, b) = (figure(p50), figure(p99));
        println!(
            "lat        p50 {:.3} ms (min {:.3}, max {:.3})  p99 {:.3} ms (min {:.3}, max {:.3})",
            a.median, a.min, a.max, b.median, b.min, b.max
        );
    }
    if want("batch") {
        let f = repeat(args.runs, || Workload::Batch.run(&args)).await?;
        print_rate(Workload::Batch.label(), &f, Workload::Batch.unit(), ceiling);
    }
    if want("rss") && args.rss_jobs > 0 {
        match rss(&args).await? {
            Some(b) => println!(
                "rss        {:.0} MB with {} jobs pending",
                b as f64 / 1e6,
                args.rss_jobs
            ),
            None => println!("rss        not measured (needs a local node)"),
        }
    }
    Ok(())
}

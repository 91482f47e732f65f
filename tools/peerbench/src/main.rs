//! `drover bench`'s workloads against the peers drover is measured with:
//! Redis (a list per queue, every write fsync'd), RabbitMQ (quorum queues,
//! publisher confirms) and NATS JetStream (a work-queue stream, R1 and R3).
//!
//! The shapes are drover bench's (BENCH.md): 256-byte jobs, one per request,
//! every producer on its own connection waiting for each acknowledgement;
//! e2e adds 4 workers of 64 jobs at once and counts a job when its
//! completion is acknowledged; lat is one producer's p50 and p99. Every run
//! starts fresh servers on loopback with a temp dir and stops them after,
//! so figures of one run do not carry into the next. `run.sh` beside this
//! file runs `drover bench` and this in one window for README's table.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Peers to run, comma separated: redis, rabbitmq, rabbitmq3, jetstream, jetstream3.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "redis,rabbitmq,jetstream,jetstream3",
        value_parser = ["redis", "rabbitmq", "rabbitmq3", "jetstream", "jetstream3"]
    )]
    peers: Vec<String>,
    /// Workloads, comma separated: enq, e2e, lat.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "enq,e2e,lat",
        value_parser = ["enq", "e2e", "lat"]
    )]
    only: Vec<String>,
    /// Jobs per throughput run (lat runs a tenth of it).
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Runs per figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 16)]
    producers: usize,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Jobs each worker has in hand at once.
    #[arg(long, default_value_t = 64)]
    worker_concurrency: usize,
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
}

/// The peer systems, each as a server set this program starts.
#[derive(Clone, Copy, Debug)]
enum Peer {
    Redis,
    Rabbit { nodes: usize },
    JetStream { nodes: usize },
}

impl Peer {
    fn parse(s: &str) -> Result<Peer> {
        Ok(match s {
            "redis" => Peer::Redis,
            "rabbitmq" => Peer::Rabbit { nodes: 1 },
            "rabbitmq3" => Peer::Rabbit { nodes: 3 },
            "jetstream" => Peer::JetStream { nodes: 1 },
            "jetstream3" => Peer::JetStream { nodes: 3 },
            other => bail!(
                "unknown peer {other:?}: use redis, rabbitmq, rabbitmq3, jetstream or jetstream3"
            ),
        })
    }

    fn label(self) -> &'static str {
        match self {
            Peer::Redis => "Redis 7, appendfsync always",
            Peer::Rabbit { nodes: 1 } => "RabbitMQ quorum queue, 1 node",
            Peer::Rabbit { .. } => "RabbitMQ quorum queue, 3 nodes",
            Peer::JetStream { nodes: 1 } => "NATS JetStream, 1 server (R1)",
            Peer::JetStream { .. } => "NATS JetStream, 3 servers (R3)",
        }
    }
}

/// Running servers of one peer; killed when dropped.
struct Servers {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
    /// Names of RabbitMQ nodes, for `rabbitmqctl stop` (its beam outlives a kill of the script).
    rabbit_nodes: Vec<String>,
    rabbit_env: Vec<(String, String)>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for node in &self.rabbit_nodes {
            let _ = Command::new(RABBITMQCTL)
                .args(["-n", node, "stop"])
                .envs(self.rabbit_env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // RabbitMQ's beam is a child of its start script: kill every
        // descendant, not just the processes started here.
        let roots: Vec<u32> = self.children.iter().map(|c| c.id()).collect();
        for (pid, _) in process_tree(&roots) {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Servers {
    /// CPU seconds of every server process and its descendants (RabbitMQ's
    /// beam runs under a shell script).
    fn cpu_seconds(&self) -> f64 {
        let roots: Vec<u32> = self.children.iter().map(|c| c.id()).collect();
        process_tree(&roots).iter().map(|(_, cpu)| cpu).sum()
    }
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(Stdio::from(std::fs::File::create(dir.join(name))?))
}

async fn start(peer: Peer) -> Result<Servers> {
    let mut s = Servers {
        children: Vec::new(),
        ports: Vec::new(),
        _dir: tempfile::tempdir()?,
        rabbit_nodes: Vec::new(),
        rabbit_env: Vec::new(),
    };
    let root = s._dir.path().to_path_buf();
    let dir = root.as_path();
    match peer {
        Peer::Redis => {
            let port = free_port()?;
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .arg("--dir")
                .arg(dir)
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .args(["--save", "", "--daemonize", "no"])
                .stdout(log_file(dir, "redis.log")?)
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server (apt install redis-server)")?;
            s.children.push(child);
            s.ports.push(port);
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
            until(Duration::from_secs(20), || async {
                let mut c = client.get_multiplexed_async_connection().await?;
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            })
            .await?;
        }
        Peer::JetStream { nodes } => {
            let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect::<Result<_>>()?;
            let routes: Vec<u16> = (0..nodes).map(|_| free_port()).collect::<Result<_>>()?;
            for i in 0..nodes {
                let store = dir.join(format!("js{i}"));
                let mut conf = format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: {:?} }}\n",
                    ports[i], store
                );
                if nodes > 1 {
                    let others: Vec<String> = routes
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                        .collect();
                    conf += &format!(
                        "cluster {{ name: bench, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                        routes[i],
                        others.join(", ")
                    );
                }
                let path = dir.join(format!("n{i}.conf"));
                std::fs::write(&path, conf)?;
                let child = Command::new("nats-server")
                    .arg("-c")
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(log_file(dir, &format!("n{i}.log"))?)
                    .spawn()
                    .context("starting nats-server (apt install nats-server)")?;
                s.children.push(child);
            }
            s.ports = ports;
            // The stream is made here: with R3 that also waits for the
            // cluster to have a JetStream leader.
            let url = format!("nats://127.0.0.1:{}", s.ports[0]);
            until(Duration::from_secs(60), || async {
                let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
                js.get_or_create_stream(stream_config(nodes)).await?;
                Ok(())
            })
            .await?;
        }
        Peer::Rabbit { nodes } => {
            let home = dir.join("home");
            std::fs::create_dir_all(&home)?;
            std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
            let env = vec![
                ("HOME".to_string(), home.display().to_string()),
                ("ERL_EPMD_ADDRESS".to_string(), "127.0.0.1".to_string()),
            ];
            s.rabbit_env = env.clone();
            for i in 0..nodes {
                let port = free_port()?;
                let node = format!("peerbench{i}-{}@localhost", std::process::id());
                let base = dir.join(format!("r{i}"));
                std::fs::create_dir_all(&base)?;
                let child = Command::new(RABBIT_BIN)
                    .envs(env.iter().cloned())
                    .env("RABBITMQ_NODENAME", &node)
                    .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                    .env("RABBITMQ_NODE_PORT", port.to_string())
                    .env("RABBITMQ_DIST_PORT", free_port()?.to_string())
                    .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", base.join("log"))
                    .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq"))
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                    .stdout(log_file(dir, &format!("r{i}.out"))?)
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting rabbitmq-server (apt install rabbitmq-server)")?;
                s.children.push(child);
                s.ports.push(port);
                s.rabbit_nodes.push(node);
            }
            for &port in &s.ports {
                until(Duration::from_secs(90), || async {
                    rabbit_channel(port).await?;
                    Ok(())
                })
                .await?;
            }
            for node in s.rabbit_nodes.iter().skip(1) {
                for step in [
                    vec!["stop_app"],
                    vec!["join_cluster", s.rabbit_nodes[0].as_str()],
                    vec!["start_app"],
                ] {
                    let out = Command::new(RABBITMQCTL)
                        .arg("-n")
                        .arg(node)
                        .args(&step)
                        .envs(env.iter().cloned())
                        .output()?;
                    if !out.status.success() {
                        bail!(
                            "rabbitmqctl {step:?} on {node}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
            }
            let ch = rabbit_channel(s.ports[0]).await?;
            let mut args = lapin::types::FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                lapin::types::AMQPValue::LongString("quorum".into()),
            );
            if nodes > 1 {
                args.insert(
                    "x-quorum-initial-group-size".into(),
                    lapin::types::AMQPValue::LongInt(nodes as i32),
                );
            }
            ch.queue_declare(
                "jobs",
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        }
    }
    Ok(s)
}

fn stream_config(replicas: usize) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: "jobs".into(),
        subjects: vec!["jobs.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

async fn rabbit_channel(port: u16) -> Result<lapin::Channel> {
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    Ok(conn.create_channel().await?)
}

/// Retries `f` until it succeeds or `limit` passes.
async fn until<F, Fut>(limit: Duration, f: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > limit => return Err(e.context("server not ready")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One producer connection.
enum Producer {
    Redis(redis::aio::MultiplexedConnection),
    Rabbit(lapin::Channel),
    Js(async_nats::jetstream::Context),
}

impl Producer {
    async fn connect(servers: &Servers, peer: Peer, i: usize) -> Result<Producer> {
        let port = servers.ports[i % servers.ports.len()];
        Ok(match peer {
            Peer::Redis => Producer::Redis(
                redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
                    .get_multiplexed_async_connection()
                    .await?,
            ),
            Peer::Rabbit { .. } => {
                let ch = rabbit_channel(port).await?;
                ch.confirm_select(Default::default()).await?;
                Producer::Rabbit(ch)
            }
            Peer::JetStream { .. } => Producer::Js(async_nats::jetstream::new(
                async_nats::connect(format!("nats://127.0.0.1:{port}")).await?,
            )),
        })
    }

    /// Enqueues one job and waits for the server's acknowledgement that it
    /// is durable (as durable as the peer makes it).
    async fn enqueue(&mut self, payload: &Bytes) -> Result<()> {
        match self {
            Producer::Redis(c) => {
                let _: i64 = redis::cmd("LPUSH")
                    .arg("jobs")
                    .arg(payload.as_ref())
                    .query_async(c)
                    .await?;
            }
            Producer::Rabbit(ch) => {
                let confirm = ch
                    .basic_publish(
                        "",
                        "jobs",
                        Default::default(),
                        payload.as_ref(),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                if !confirm.is_ack() {
                    bail!("RabbitMQ refused a publish: {confirm:?}");
                }
            }
            Producer::Js(js) => {
                js.publish("jobs.q", payload.clone()).await?.await?;
            }
        }
        Ok(())
    }
}

/// `producers` connections enqueue `total` jobs between them, each waiting
/// for every acknowledgement.
async fn produce(servers: &Servers, peer: Peer, args: &Args, total: u64) -> Result<()> {
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..args.producers {
        let mut p = Producer::connect(servers, peer, i).await?;
        let next = next.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                p.enqueue(&payload).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// One worker: takes jobs with up to `concurrency` in hand and acknowledges
/// each as done, until `done` reaches `total`.
async fn work(
    servers: &Servers,
    peer: Peer,
    i: usize,
    concurrency: usize,
    done: Arc<AtomicU64>,
    total: u64,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let port = servers.ports[i % servers.ports.len()];
    Ok(match peer {
        Peer::Redis => {
            // The reliable-queue pattern of the runbooks: BLMOVE into a
            // processing list, LREM it when done. A blocking call holds its
            // connection, so each job in hand has one.
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
            let mut loops = Vec::new();
            for _ in 0..concurrency {
                let mut c = client.get_multiplexed_async_connection().await?;
                let done = done.clone();
                let processing = format!("processing-{i}");
                loops.push(async move {
                    while done.load(Ordering::Relaxed) < total {
                        let job: Option<Vec<u8>> = redis::cmd("BLMOVE")
                            .arg("jobs")
                            .arg(&processing)
                            .arg("RIGHT")
                            .arg("LEFT")
                            .arg(0.2)
                            .query_async(&mut c)
                            .await?;
                        if let Some(job) = job {
                            let _: i64 = redis::cmd("LREM")
                                .arg(&processing)
                                .arg(1)
                                .arg(job)
                                .query_async(&mut c)
                                .await?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok::<(), anyhow::Error>(())
                });
            }
            tokio::spawn(async move {
                futures::future::try_join_all(loops).await?;
                Ok(())
            })
        }
        Peer::Rabbit { .. } => {
            let ch = rabbit_channel(port).await?;
            ch.basic_qos(concurrency as u16, Default::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    "jobs",
                    &format!("w{i}"),
                    Default::default(),
                    Default::default(),
                )
                .await?;
            // AMQP has no reply to an ack: a job counts once its ack is sent.
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < total {
                    let next =
                        tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
                    match next {
                        Ok(Some(d)) => {
                            d?.ack(Default::default()).await?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => bail!("RabbitMQ closed the consumer"),
                        Err(_) => {}
                    }
                }
                let _ = ch.close(200, "done").await;
                Ok(())
            })
        }
        Peer::JetStream { .. } => {
            let js = async_nats::jetstream::new(
                async_nats::connect(format!("nats://127.0.0.1:{port}")).await?,
            );
            let stream = js.get_stream("jobs").await?;
            let consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    "workers",
                    async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some("workers".into()),
                        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                        max_ack_pending: 100_000,
                        ..Default::default()
                    },
                )
                .await?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(concurrency)
                .heartbeat(Duration::from_millis(500))
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            // A double ack waits for the server to confirm the ack: the
            // completion is acknowledged, as drover's is.
            tokio::spawn(async move {
                let mut acks = messages
                    .map(|m| async move {
                        m.map_err(|e| anyhow::anyhow!("{e}"))?
                            .double_ack()
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))
                    })
                    .buffer_unordered(concurrency);
                while done.load(Ordering::Relaxed) < total {
                    match tokio::time::timeout(Duration::from_millis(200), acks.next()).await {
                        Ok(Some(r)) => {
                            r?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => bail!("JetStream closed the consumer"),
                        Err(_) => {}
                    }
                }
                Ok(())
            })
        }
    })
}

struct Run {
    rate: f64,
    cpu_us: f64,
}

async fn enq(peer: Peer, args: &Args) -> Result<Run> {
    let servers = start(peer).await?;
    let cpu = servers.cpu_seconds();
    let t = Instant::now();
    produce(&servers, peer, args, args.jobs).await?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Run {
        rate: args.jobs as f64 / secs,
        cpu_us: (servers.cpu_seconds() - cpu) * 1e6 / args.jobs as f64,
    })
}

async fn e2e(peer: Peer, args: &Args) -> Result<Run> {
    let servers = start(peer).await?;
    let done = Arc::new(AtomicU64::new(0));
    let cpu = servers.cpu_seconds();
    let t = Instant::now();
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(
            work(
                &servers,
                peer,
                i,
                args.worker_concurrency,
                done.clone(),
                args.jobs,
            )
            .await?,
        );
    }
    produce(&servers, peer, args, args.jobs).await?;
    for w in workers {
        w.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    Ok(Run {
        rate: n as f64 / secs,
        cpu_us: (servers.cpu_seconds() - cpu) * 1e6 / n as f64,
    })
}

/// (p50, p99) in ms of one producer's acknowledged enqueues.
async fn lat(peer: Peer, args: &Args) -> Result<(f64, f64)> {
    let servers = start(peer).await?;
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let mut p = Producer::connect(&servers, peer, 0).await?;
    let n = (args.jobs / 10).max(100);
    let mut samples = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        p.enqueue(&payload).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3
    };
    Ok((at(0.50), at(0.99)))
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn print_rate(what: &str, runs: Vec<Run>) {
    let cpu = median(runs.iter().map(|r| r.cpu_us).collect()).0;
    let (m, lo, hi) = median(runs.into_iter().map(|r| r.rate).collect());
    println!("  {what:<4} {m:>9.0} jobs/s  (min {lo:.0}, max {hi:.0})  server CPU {cpu:.0} us/job");
}

/// The processes under `roots` (themselves included) with their CPU seconds.
fn process_tree(roots: &[u32]) -> Vec<(u32, f64)> {
    // ppid and utime+stime of every process, then the sum over the roots'
    // descendants.
    let tick = 100.0; // USER_HZ on Linux
    let mut procs = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) =
                std::fs::read_to_string(PathBuf::from("/proc").join(pid.to_string()).join("stat"))
            else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let (Some(ppid), Some(ut), Some(st)) = (f.get(1), f.get(11), f.get(12)) else {
                continue;
            };
            let ppid: u32 = ppid.parse().unwrap_or(0);
            let cpu = ut.parse::<f64>().unwrap_or(0.0) + st.parse::<f64>().unwrap_or(0.0);
            procs.push((pid, ppid, cpu / tick));
        }
    }
    let mut inside: Vec<u32> = roots.to_vec();
    let mut grew = true;
    while grew {
        grew = false;
        for &(pid, ppid, _) in &procs {
            if !inside.contains(&pid) && inside.contains(&ppid) {
                inside.push(pid);
                grew = true;
            }
        }
    }
    procs
        .into_iter()
        .filter(|(pid, _, _)| inside.contains(pid))
        .map(|(pid, _, c)| (pid, c))
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let peers: Vec<Peer> = args
        .peers
        .iter()
        .map(|p| Peer::parse(p))
        .collect::<Result<_>>()?;
    println!(
        "peerbench: {} jobs of {} bytes per run, {} runs, {} producers, e2e with {} workers of {}",
        args.jobs,
        args.payload_bytes,
        args.runs,
        args.producers,
        args.workers,
        args.worker_concurrency
    );
    for peer in peers {
        println!("{}", peer.label());
        for what in ["enq", "e2e"] {
            if !args.only.iter().any(|o| o == what) {
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..args.runs {
                let run = match what {
                    "enq" => enq(peer, &args).await,
                    _ => e2e(peer, &args).await,
                };
                runs.push(run.with_context(|| format!("{what} on {}", peer.label()))?);
            }
            print_rate(what, runs);
        }
        if args.only.iter().any(|o| o == "lat") {
            let (p50, p99) = lat(peer, &args).await?;
            println!("  lat  p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
    }
    Ok(())
}

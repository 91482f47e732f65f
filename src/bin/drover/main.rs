//! The `drover` binary: the command line, one module per command family,
//! each calling into the library (a node, the Rust clients, the typed
//! admin client).

mod audit;
mod backups;
mod breakers;
mod canary;
mod chaos;
mod cluster;
mod dead;
mod jobs;
mod local;
mod policies;
mod queues;
mod runs;
mod scale;
mod schedules;
mod serve;
mod snapshot;
mod status;
mod target;
mod tenants;
mod versions;
mod worker;
mod workers;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "A job queue in one binary: Raft-replicated, sled-backed, gRPC workers."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node. With no config file it uses the defaults of config/drover.toml.
    Serve(serve::ServeArgs),
    /// Enqueue jobs and print their ids.
    Enqueue(jobs::EnqueueArgs),
    /// Run a worker that executes a shell command once per job.
    Worker(worker::WorkerArgs),
    /// Show the node, its queues and connected workers.
    Status(target::Target),
    /// List queues; pause, drain and resume them.
    Queues {
        #[command(subcommand)]
        command: queues::QueuesCmd,
    },
    /// Recurring jobs: list, pause, resume, trigger.
    Schedules {
        #[command(subcommand)]
        command: schedules::SchedulesCmd,
    },
    /// List tenants; pause, drain and resume them.
    Tenants {
        #[command(subcommand)]
        command: tenants::TenantsCmd,
    },
    /// Circuit breakers: list, reset.
    Breakers {
        #[command(subcommand)]
        command: breakers::BreakersCmd,
    },
    /// Runs: their jobs, budgets and overrides.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCmd,
    },
    /// Tenants' run limits and daily cost caps.
    Budgets {
        #[command(subcommand)]
        command: runs::BudgetsCmd,
    },
    /// What jobs cost, by tenant, run, queue and job type.
    Costs(runs::CostsArgs),
    /// The dead letters: list, show, replay, purge.
    Dead {
        #[command(subcommand)]
        command: dead::DeadCmd,
    },
    /// Read and cancel jobs.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCmd,
    },
    /// Inspect and change the cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCmd,
    },
    /// The scheduled backups of every member, and where each lies.
    Backups {
        #[command(subcommand)]
        command: backups::BackupsCmd,
    },
    /// Back up and restore the state.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCmd,
    },
    /// List the cluster's workers, or ask them to stop.
    Workers {
        #[command(subcommand)]
        command: workers::WorkersCmd,
    },
    /// One step of a scaler: start or stop systemd worker instances to
    /// match a queue's desired workers (run it from drover-scale@.timer).
    Scale(scale::ScaleArgs),
    /// Fault injection, to prove a fleet recovers (needs [chaos] allowed).
    Chaos {
        #[command(subcommand)]
        command: chaos::ChaosCmd,
    },
    /// Canary rules: a share of a queue's jobs for one worker version.
    Canary {
        #[command(subcommand)]
        command: canary::CanaryCmd,
    },
    /// Worker versions: switch one off for a queue, a tenant or all.
    Versions {
        #[command(subcommand)]
        command: versions::VersionsCmd,
    },
    /// The policies in effect (retries, leases, retention).
    Policies {
        #[command(subcommand)]
        command: policies::PoliciesCmd,
    },
    /// Who changed what through the admin API, when and why.
    Audit(audit::AuditArgs),
    /// Measure throughput and latency (see BENCH.md).
    Bench(drover::bench::BenchArgs),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: local::ConfigCmd,
    },
    /// Make encryption keys for payloads, results and error messages at
    /// rest (`[storage] encryption_key_file`).
    Key {
        #[command(subcommand)]
        command: local::KeyCmd,
    },
    /// Make bearer tokens.
    Token {
        #[command(subcommand)]
        command: local::TokenCmd,
    },
}

/// mimalloc: about 8% more enqueues/s than glibc's malloc in `drover bench`
/// (10.6k vs 9.8k, same session), same RSS; the hot path allocates per request.
/// The `system-alloc` feature leaves it out, for heap profilers.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An error ends the command with its message and its causes on one line
/// (no backtrace, whatever RUST_BACKTRACE says: an operator wants the
/// reason, not our stack) and exit status 1.
/// `drover serve`'s exit status when the node was removed from its cluster
/// (systemd/drover.service does not restart it).
const EXIT_REMOVED: u8 = 3;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            // A gRPC call's failure does not name its address; the fix for
            // a TLS mismatch is the same whatever the command.
            let chain = format!("{e:#}");
            let hinted = chain.contains("cannot reach") || chain.contains("cannot connect");
            if !hinted && !chain.contains("failed on the way") {
                if let Some(fix) =
                    drover::wire::connection_hint(None, &chain, drover::wire::ca_in_use())
                {
                    eprintln!("hint: {fix}");
                }
            }
            // A removed node must not be restarted into the same refusal:
            // the unit's RestartPreventExitStatus names this code.
            match e.downcast_ref::<drover::Error>() {
                Some(drover::Error::Removed { .. }) => std::process::ExitCode::from(EXIT_REMOVED),
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Serve(_) | Cmd::Worker(_)) {
        // A command piped into `head` ends quietly when the pipe closes,
        // as other command-line tools do, instead of failing on the write.
        // Not by SIGPIPE's default action: that would also kill the command
        // when a node closes a connection it writes to (a TLS node called
        // over http://). A print to a closed stdout panics; this ends it.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.to_string();
            if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
                std::process::exit(0);
            }
            default_hook(info);
        }));
    }
    // One crypto provider for every TLS user (server, tonic, reqwest).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Serve(a) => serve::run(a).await,
            Cmd::Enqueue(a) => jobs::enqueue(a).await,
            Cmd::Worker(a) => worker::run(a).await,
            Cmd::Status(t) => status::run(t).await,
            Cmd::Jobs { command } => jobs::run(command).await,
            Cmd::Dead { command } => dead::run(command).await,
            Cmd::Breakers { command } => breakers::run(command).await,
            Cmd::Runs { command } => runs::run(command).await,
            Cmd::Budgets { command } => runs::budgets(command).await,
            Cmd::Costs(a) => runs::costs(a).await,
            Cmd::Queues { command } => queues::run(command).await,
            Cmd::Tenants { command } => tenants::run(command).await,
            Cmd::Schedules { command } => schedules::run(command).await,
            Cmd::Cluster { command } => cluster::run(command).await,
            Cmd::Snapshot { command } => snapshot::run(command).await,
            Cmd::Backups { command } => backups::run(command).await,
            Cmd::Audit(a) => audit::run(a).await,
            Cmd::Workers { command } => workers::run(command).await,
            Cmd::Scale(a) => scale::run(a).await,
            Cmd::Versions { command } => versions::run(command).await,
            Cmd::Canary { command } => canary::run(command).await,
            Cmd::Chaos { command } => chaos::run(command).await,
            Cmd::Policies { command } => policies::run(command).await,
            Cmd::Bench(a) => {
                serve::init_tracing("text", "warn");
                drover::bench::run(a).await.map_err(Into::into)
            }
            Cmd::Config { command } => local::config(command),
            Cmd::Token { command } => local::token(command),
            Cmd::Key { command } => local::key(command),
        }
    })
}

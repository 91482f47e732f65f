//! `drover snapshot save|restore`: consistent backups of a running node,
//! and seeding a new node from one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use drover::Config;

use crate::target::Target;

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Write a consistent snapshot of a running node's state to FILE.
    Save {
        file: PathBuf,
        /// Save what this node has applied without first catching up with
        /// the leader: for a node that has lost its quorum. Without it the
        /// snapshot holds everything acknowledged before the command.
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Seed a new node's data dir from a snapshot file. With --config, the
    /// node the file describes (its data_dir, node_id) is restored with its
    /// [[peers]] as the members: restore the same file on every member and
    /// start them all. Without peers (or with --data-dir and --node-id
    /// alone) it is a one-voter cluster, to which the others join.
    Restore {
        file: PathBuf,
        /// The config file of the node to restore: where its data lives,
        /// its id, and the cluster's members.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The data dir to restore into (overrides the config's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The id the restored node will run as (overrides the config's;
        /// 1 without a config).
        #[arg(long)]
        node_id: Option<u64>,
    },
}

pub async fn run(cmd: SnapshotCmd) -> Result<()> {
    match cmd {
        SnapshotCmd::Save {
            file,
            stale,
            target,
        } => save(&file, stale, &target).await,
        SnapshotCmd::Restore {
            file,
            config,
            data_dir,
            node_id,
        } => restore(&file, config.as_deref(), data_dir, node_id),
    }
}

/// Restores `file` for the node `config` (or the flags) describe, and
/// prints the commands to run next.
fn restore(
    file: &Path,
    config_path: Option<&Path>,
    data_dir: Option<PathBuf>,
    node_id: Option<u64>,
) -> Result<()> {
    let mut config = match config_path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    match (data_dir, config_path) {
        (Some(d), _) => config.data_dir = d,
        (None, Some(_)) => {}
        (None, None) => {
            bail!("say where to restore: --config FILE (the node's config), or --data-dir DIR")
        }
    }
    if let Some(id) = node_id {
        config.node_id = id;
    }
    config.validate()?;
    let voters = config.initial_voters();
    if !voters.contains(&config.node_id) {
        bail!(
            "node {} is not among the members {voters:?} in {}'s [[peers]]; restore with that node's own config",
            config.node_id,
            config_path.map_or("the config".into(), |p| p.display().to_string())
        );
    }
    let meta = drover::restore::restore(
        file,
        &config.data_dir,
        voters.clone(),
        config.storage.cache_capacity_bytes,
    )?;
    let id = config.node_id;
    println!(
        "restored {} (index {}, term {}) into {} as node {id}, with members {voters:?}",
        file.display(),
        meta.index,
        meta.term,
        config.data_dir.display(),
    );
    let serve = match config_path {
        Some(p) => format!("drover serve --config {}", p.display()),
        None => format!(
            "drover serve --data-dir {} --node-id {id}",
            config.data_dir.display()
        ),
    };
    println!("next:");
    if voters.len() > 1 {
        println!("  1. restore the same file on every other member, each with its own config:");
        println!(
            "       drover snapshot restore {} --config THAT_NODE.toml",
            file.display()
        );
        println!("  2. start every member: {serve}   (and the same on each)");
        println!("  3. check they agree: drover cluster members");
    } else {
        println!("  1. start it: {serve}");
        println!("  2. start each other node on an empty data dir, to join: drover serve --config THAT_NODE.toml --join");
        println!(
            "  3. add each from here: drover cluster add ID ADDR --server http://THIS_NODE:PORT"
        );
    }
    Ok(())
}

async fn save(file: &Path, stale: bool, target: &Target) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let path = if stale {
        "/api/v1/snapshot?stale=ok"
    } else {
        "/api/v1/snapshot"
    };
    let mut resp = target.admin()?.download(path).await?;
    let tmp = file.with_extension("partial");
    let written = async {
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .context("the snapshot download broke off")?
        {
            out.write_all(&chunk)
                .await
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        out.sync_all()
            .await
            .with_context(|| format!("cannot sync {}", tmp.display()))
    }
    .await;
    if let Err(e) = written {
        // A full disk or a broken download leaves no half file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let meta = match drover::snapshot::verify(&tmp) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "the downloaded snapshot does not verify ({e}); nothing was written to {}",
                file.display()
            );
        }
    };
    std::fs::rename(&tmp, file)?;
    println!(
        "saved a snapshot at index {} (term {}) to {}",
        meta.index,
        meta.term,
        file.display()
    );
    Ok(())
}

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
        #[command(flatten)]
        target: Target,
    },
    /// Seed a new node's data dir from a snapshot file, as a one-voter
    /// cluster; start it with `drover serve --data-dir DIR --node-id N`.
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// The id the restored node will run as.
        #[arg(long, default_value_t = 1)]
        node_id: u64,
    },
}

pub async fn run(cmd: SnapshotCmd) -> Result<()> {
    match cmd {
        SnapshotCmd::Save { file, target } => save(&file, &target).await,
        SnapshotCmd::Restore {
            file,
            data_dir,
            node_id,
        } => {
            let cache = Config::default().storage.cache_capacity_bytes;
            let meta = drover::restore::restore(&file, &data_dir, node_id, cache)?;
            println!(
                "restored {} at index {} (term {}) into {} as node {node_id}; start it with: drover serve --data-dir {} --node-id {node_id}",
                file.display(),
                meta.index,
                meta.term,
                data_dir.display(),
                data_dir.display()
            );
            Ok(())
        }
    }
}

async fn save(file: &Path, target: &Target) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut resp = target.admin()?.download("/api/v1/snapshot").await?;
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

//! `drover policies show`: the policies the cluster applies, as config TOML,
//! for review and backup; `drover policies diff FILE`: what a config file
//! would change of them, before a reload.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use drover::api::types::{PoliciesBody, PoliciesDiffBody, PoliciesDiffRequest};

use crate::target::Target;

#[derive(Subcommand)]
pub enum PoliciesCmd {
    /// Print the policies in effect as TOML (with --json, as JSON).
    Show(Target),
    /// What a config file's policies would change of those the cluster
    /// applies, value by value, before you reload (SIGHUP) the leader with
    /// it; the audit record of the reload names the same keys.
    Diff {
        /// The config file (drover.toml).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: PoliciesCmd) -> Result<()> {
    match cmd {
        PoliciesCmd::Show(target) => {
            let p: PoliciesBody = target.admin()?.get("/api/v1/policies").await?;
            let text = toml::to_string(&p)?;
            target.print(&p, |_| {
                println!(
                    "# the policies the cluster applies (set from the leader's config)\n{text}"
                );
            })
        }
        PoliciesCmd::Diff { file, target } => {
            let config = drover::config::Config::from_file(&file)
                .and_then(|c| c.validate().map(|()| c))
                .with_context(|| format!("{}: fix the file, then diff it again", file.display()))?;
            let policies = serde_json::from_slice(&config.policies().to_record())?;
            let d: PoliciesDiffBody = target
                .admin()?
                .post("/api/v1/policies/diff", &PoliciesDiffRequest { policies })
                .await?;
            target.print(&d, |d| {
                if d.changes.is_empty() {
                    println!(
                        "no changes: the cluster applies the policies {} sets",
                        file.display()
                    );
                    return;
                }
                println!(
                    "{} would change {} value(s) of the cluster's policies:",
                    file.display(),
                    d.changes.len()
                );
                for c in &d.changes {
                    println!("  {c}");
                }
            })
        }
    }
}

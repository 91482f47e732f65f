//! `drover policies show`: the policies the cluster applies, as config TOML,
//! for review and backup.

use anyhow::Result;
use clap::Subcommand;
use drover::api::types::PoliciesBody;

use crate::target::Target;

#[derive(Subcommand)]
pub enum PoliciesCmd {
    /// Print the policies in effect as TOML (with --json, as JSON).
    Show(Target),
}

pub async fn run(cmd: PoliciesCmd) -> Result<()> {
    let PoliciesCmd::Show(target) = cmd;
    let p: PoliciesBody = target.admin()?.get("/api/v1/policies").await?;
    let text = toml::to_string(&p)?;
    target.print(&p, |_| {
        println!("# the policies the cluster applies (set from the leader's config)\n{text}");
    })
}

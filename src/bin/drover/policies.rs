//! `drover policies show`: the policies in effect, as config TOML, for
//! review and backup.

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
    #[derive(serde::Serialize)]
    struct File<'a> {
        jobs: &'a drover::api::types::JobPoliciesBody,
    }
    let text = toml::to_string(&File { jobs: &p.jobs })?;
    target.print(&p, |p| {
        println!("# policies in effect ({})\n{text}", p.source);
    })
}

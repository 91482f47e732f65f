//! `drover audit`: who changed what through the admin API, newest first.

use anyhow::Result;
use clap::Args;
use drover::api::types::AuditPageBody;

use crate::target::{table, Target};

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    target: Target,
    /// Records to show.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Show records older than this cursor (the `next` a page printed).
    #[arg(long)]
    before: Option<String>,
}

pub async fn run(a: AuditArgs) -> Result<()> {
    let mut path = format!("/api/v1/audit?limit={}", a.limit);
    if let Some(b) = &a.before {
        path.push_str(&format!("&before={b}"));
    }
    let page: AuditPageBody = a.target.admin()?.get(&path).await?;
    a.target.print(&page, |page| {
        let mut t = table(&["WHEN", "WHO", "ACTION", "TARGET", "OUTCOME", "REASON"]);
        for r in &page.records {
            t.add_row(vec![
                crate::jobs::at(r.at_ms),
                format!(
                    "{} ({})",
                    r.who,
                    if r.role.is_empty() { "-" } else { &r.role }
                ),
                r.action.clone(),
                r.target.clone(),
                r.outcome.clone(),
                r.reason.clone(),
            ]);
        }
        println!("{t}");
        if let Some(next) = &page.next {
            println!("\nolder: drover audit --before {next}");
        }
    })
}

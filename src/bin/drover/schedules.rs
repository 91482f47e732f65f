//! `drover schedules list|pause|resume|trigger`.

use anyhow::Result;
use clap::Subcommand;
use drover::api::types::{ScheduleActionBody, SchedulesBody};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum SchedulesCmd {
    /// Every schedule: expression, queue, last and next slot, jobs fired.
    List(Target),
    /// Let NAME's slots pass without jobs.
    Pause {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Fire NAME again from its next slot.
    Resume {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Enqueue NAME's job now.
    Trigger {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: SchedulesCmd) -> Result<()> {
    let (action, name, target) = match cmd {
        SchedulesCmd::List(target) => {
            let s: SchedulesBody = target.admin()?.get("/api/v1/schedules").await?;
            return target.print(&s, print);
        }
        SchedulesCmd::Pause { name, target } => ("pause", name, target),
        SchedulesCmd::Resume { name, target } => ("resume", name, target),
        SchedulesCmd::Trigger { name, target } => ("trigger", name, target),
    };
    let done: ScheduleActionBody = target
        .admin()?
        .post_empty(&format!("/api/v1/schedules/{name}/{action}"))
        .await?;
    target.print(&done, |d| match d.job_id {
        Some(id) => println!("{action}: schedule {name} enqueued job {id}"),
        None if d.changed => println!("{action}: schedule {name}"),
        None => println!("{action}: schedule {name} was already so"),
    })
}

fn print(s: &SchedulesBody) {
    let mut t = table(&[
        "SCHEDULE", "CRON", "TZ", "QUEUE", "LAST", "NEXT", "FIRED", "STATE",
    ]);
    let at = |ms: u64| {
        if ms == 0 {
            "-".to_string()
        } else {
            crate::jobs::at(ms)
        }
    };
    for x in &s.schedules {
        t.add_row(vec![
            x.name.clone(),
            x.cron.clone(),
            x.timezone.clone(),
            x.queue.clone(),
            at(x.last_slot_ms),
            x.next_slot_ms.map_or("-".into(), at),
            x.fired.to_string(),
            if x.paused {
                "paused".into()
            } else {
                String::new()
            },
        ]);
    }
    println!("{t}");
}

//! Where a command goes and what it shows there: one address per node (any
//! of them, or several separated by commas), the token, the CA for TLS,
//! and `--json`. Every command that talks to a node flattens [`Target`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use drover::client::{ClientTls, Credentials, Producer};

use drover::client::admin::AdminClient;

#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Address of any node (gRPC and HTTP share it), or several separated
    /// by commas: calls move on when one is down or has no leader.
    #[arg(
        long,
        visible_alias = "http",
        env = "DROVER_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// Bearer token, when the node has [[tokens]].
    #[arg(long, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA that signed the nodes' certificates, for https:// addresses.
    #[arg(long, env = "DROVER_CA")]
    pub ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Why: written to the audit log with the change a command makes.
    #[arg(long, default_value = "")]
    pub reason: String,
}

impl Target {
    pub fn credentials(&self) -> Result<Credentials> {
        let tls = match &self.ca {
            None => None,
            Some(path) => Some(ClientTls {
                ca: std::fs::read(path)
                    .with_context(|| format!("cannot read --ca {}", path.display()))?,
                identity: None,
            }),
        };
        Credentials::new(self.token.as_deref(), tls).map_err(anyhow::Error::msg)
    }

    pub fn admin(&self) -> Result<AdminClient> {
        Ok(AdminClient::new(
            &self.server,
            &self.credentials()?,
            &self.reason,
        )?)
    }

    pub async fn producer(&self) -> Result<Producer> {
        Ok(Producer::connect_with(&self.server, &self.credentials()?).await?)
    }

    /// Prints `value` as JSON with `--json`, else as `table` renders it.
    pub fn print<T: serde::Serialize>(&self, value: &T, table: impl FnOnce(&T)) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            table(value);
        }
        Ok(())
    }
}

/// A table with a header row, in the terminal's plain style.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    t
}

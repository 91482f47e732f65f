//! Commands that need no node: `drover config check`, `drover token new`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use drover::config::Role;
use drover::Config;

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Check FILE as `drover serve --config FILE` would, without starting a
    /// node: exits non-zero naming the key that is wrong.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Print a fresh token (once: it is not stored anywhere) and the
    /// [[tokens]] entry that lets it in.
    New {
        /// Who holds it; shown in the audit log and in refusals.
        #[arg(long)]
        name: String,
        /// read, operate, admin, producer, worker or peer.
        #[arg(long)]
        role: Role,
    },
}

pub fn config(cmd: ConfigCmd) -> Result<()> {
    let ConfigCmd::Check { file } = cmd;
    let c = Config::from_file(&file)?;
    c.validate()?;
    c.peer_credentials()?;
    if let Some(tls) = &c.tls {
        drover::api::listen::server_config(tls)?;
    }
    println!(
        "{} is valid: node {} of cluster {:?}, address {} (and {}), data in {}, {} peers, {} tokens{}",
        file.display(),
        c.node_id,
        c.cluster_id,
        c.grpc_addr,
        c.http_addr,
        c.data_dir.display(),
        c.peers.len(),
        c.tokens.len(),
        if c.tls.is_some() { ", TLS" } else { "" }
    );
    Ok(())
}

pub fn token(cmd: TokenCmd) -> Result<()> {
    let TokenCmd::New { name, role } = cmd;
    let (token, hash) = drover::token::generate().context("the system gave no random bytes")?;
    let entry = format!(
        "[[tokens]]\nname = {}\nrole = \"{}\"\nhash = \"{hash}\"",
        toml::Value::String(name),
        role.as_str()
    );
    println!("token (shown once; give it to its holder, e.g. as DROVER_TOKEN):\n\n  {token}\n");
    println!("add to the config of every node:\n\n{entry}");
    if role == Role::Peer {
        println!("\nand, since this is the peer token, on every node:\n\npeer_token = \"{token}\"");
    }
    Ok(())
}

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
pub enum KeyCmd {
    /// Write a fresh key to FILE (mode 0600; an existing file is never
    /// overwritten). Copy the same file to every node and set `[storage]
    /// encryption_key_file` to it.
    New {
        /// Where to write it.
        file: std::path::PathBuf,
    },
}

pub fn key(cmd: KeyCmd) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let KeyCmd::New { file } = cmd;
    let text = drover::sealing::new_key_text()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key file is never overwritten)",
                file.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))?;
    let keys = drover::sealing::Keys::load(Some(&file), &[])?;
    println!(
        "wrote key {} to {} (mode 0600). Copy it to every node, and set in each config:\n\n[storage]\nencryption_key_file = {:?}\n\nKeep a copy offline: without it, what it sealed cannot be read, backups included.",
        keys.current_id().unwrap_or_default(),
        file.display(),
        file.display().to_string()
    );
    Ok(())
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
    let expiry = match &c.tls {
        Some(tls) => {
            drover::api::certs::server_config(tls)?;
            Some(drover::api::certs::file_expiry(tls)?)
        }
        None => None,
    };
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
    let keys = c.sealing_keys()?;
    if let Some(id) = keys.current_id() {
        println!(
            "payloads, results and error messages are sealed with key {id} ({} old keys to open older records)",
            c.storage.encryption_old_keys.len()
        );
    }
    if let Some((node, ca)) = expiry {
        let now = drover::clock::now_ms() as i64 / 1000;
        for (what, at) in [("the node's certificate", node), ("the CA", ca)] {
            let days = (at - now).div_euclid(86_400);
            let when = drover::api::certs::rfc3339(at);
            if at <= now {
                println!("warning: {what} expired at {when}");
            } else if days < 14 {
                println!("warning: {what} expires at {when}, in {days} days");
            } else {
                println!("{what} expires at {when}, in {days} days");
            }
        }
    }
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

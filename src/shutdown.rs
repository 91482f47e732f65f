//! The signals that stop a process: `drover serve` and `drover worker`
//! alike finish what they hold and exit on them.

use std::future::Future;

/// SIGTERM or ctrl-c. SIGTERM is handled from this call on, not from the
/// first poll, so a caller may say it is ready right after.
pub fn terminated() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

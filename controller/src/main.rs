use clap::Parser;
use understudy::{
    cli::{Cli, Command},
    crd, reconcile, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(&cli.log, cli.log_format == "json")?;
            let client = kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("connect to Kubernetes (KUBECONFIG or in-cluster): {e}"))?;
            let instance = args.instance.unwrap_or_else(|| {
                std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "understudy".into())
            });
            let opts = reconcile::Options { namespace: args.namespace, instance, identity: args.site };
            tracing::info!(version = env!("CARGO_PKG_VERSION"), namespace = ?opts.namespace, "understudy starting");
            reconcile::run(client, opts, shutdown_signal()).await;
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}

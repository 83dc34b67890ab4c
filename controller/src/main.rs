use clap::Parser;
use understudy::{
    admin,
    cli::{Cli, Command},
    crd, metrics, reconcile, replica_lease, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { reference } => {
            if reference {
                print!("{}", crd::reference_markdown());
            } else {
                print!("{}", crd::crd_yaml()?);
            }
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
            let metrics = metrics::Metrics::default();
            let health = admin::Health::default();
            health.alive.store(true, std::sync::atomic::Ordering::SeqCst);
            if args.metrics_addr != "off" {
                let listener = tokio::net::TcpListener::bind(&args.metrics_addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("--metrics-addr {}: {e}", args.metrics_addr))?;
                tokio::spawn(admin::serve(listener, metrics.clone(), health.clone()));
            }
            let leadership = if args.leader_elect {
                let ns = args
                    .lease_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "default".into());
                let l = replica_lease::Leadership::default();
                let m = metrics.clone();
                tokio::spawn(replica_lease::run(
                    client.clone(),
                    ns,
                    args.lease_name.clone(),
                    instance.clone(),
                    l.clone(),
                    move |lead| {
                        m.is_leader.set(i64::from(lead));
                    },
                ));
                l
            } else {
                metrics.is_leader.set(1);
                replica_lease::Leadership::always()
            };
            let opts = reconcile::Options {
                namespace: args.namespace,
                instance,
                identity: args.site,
                metrics,
                leadership,
                ready: Some(health.ready.clone()),
            };
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

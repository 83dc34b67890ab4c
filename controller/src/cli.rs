//! The command line: `understudy run` and `understudy crd`.

use clap::{Parser, Subcommand};

/// understudy: active/passive disaster recovery for PostgreSQL-backed applications on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "understudy", version, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, env = "UNDERSTUDY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter in `RUST_LOG` syntax.
    #[arg(long, global = true, env = "UNDERSTUDY_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (kubeconfig from KUBECONFIG or ~/.kube/config, else in-cluster).
    Run(RunArgs),
    /// Print the CustomResourceDefinition as YAML (or, with --reference, a Markdown field reference).
    Crd {
        /// Print the Markdown reference of every field instead.
        #[arg(long)]
        reference: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Watch pairs in this namespace only (default: all namespaces).
    #[arg(long, env = "UNDERSTUDY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of this instance, reported on Events (defaults to the host name).
    #[arg(long, env = "UNDERSTUDY_INSTANCE")]
    pub instance: Option<String>,
    /// The site this controller runs at (`east`, `west`): its identity in the journal and in etcd.
    /// Defaults to the instance name.
    #[arg(long, env = "UNDERSTUDY_SITE")]
    pub site: Option<String>,
    /// Address of the admin endpoint (`/metrics`, `/healthz`, `/readyz`); `off` disables it.
    #[arg(long, env = "UNDERSTUDY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Elect one leader among replicas with a coordination.k8s.io Lease; followers stand by.
    #[arg(long, env = "UNDERSTUDY_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "UNDERSTUDY_LEASE_NAME", default_value = "understudy")]
    pub lease_name: String,
    /// Namespace of the Lease (defaults to the pod's namespace, else `default`).
    #[arg(long, env = "UNDERSTUDY_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
}

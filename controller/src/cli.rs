//! The command line: `understudy run` and `understudy crd`.

use clap::{Parser, Subcommand};

/// understudy: active/passive disaster recovery for PostgreSQL-backed applications on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "understudy", version)]
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
    /// Print the CustomResourceDefinition as YAML.
    Crd,
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
}

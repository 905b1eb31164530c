//! The `berth` command line: the standalone mode, no Kubernetes needed.
//!
//! Every command that reads files validates all of them before the first Docker call; an
//! input error exits with status 1 and touches no host.
//!
//! Exit codes: 0 success (for `plan`: converged), 1 error, 2 (`plan` only) changes pending.

mod apply;
mod build;
mod history;
mod logs;
mod progress;
mod render;
mod status;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Converge Docker hosts to declared containers, the immutable way: containers are replaced,
/// never mutated; the same input twice changes nothing.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Converge the hosts to the files: create, replace and remove containers.
    Apply(ApplyArgs),
    /// Show what `apply` would change, and change nothing. Exit 0: converged, 2: changes pending.
    Plan(PlanArgs),
    /// Show the declared sets' containers on every host.
    Status(StatusArgs),
    /// Remove the declared sets' containers (named volumes stay unless --volumes).
    Delete(DeleteArgs),
    /// Print the logs of every container of a set, each line prefixed with host and container.
    Logs(LogsArgs),
    /// Keep the files' hosts converged: apply, then again whenever a file changes or a managed
    /// container is changed behind berth's back (the engines' events), until Ctrl-C.
    Watch(WatchArgs),
    /// List a set's revisions: number, hash, outcome, time, image, where each runs.
    History(HistoryArgs),
    /// Return a set to an earlier revision (default: the last one that was ready everywhere).
    Rollback(RollbackArgs),
    /// Build the input's Images whose inputs changed (the content tag is the cache), and print
    /// each one's tag and image id.
    Build(BuildArgs),
    /// List the input's Images: input digest, tag, and the hosts that have it.
    Images(ImagesArgs),
    /// Print the CustomResourceDefinitions (berth.dev/v1alpha1) as YAML.
    Crd,
    /// Run the in-cluster controller (KUBECONFIG, or the pod's service account).
    Operator(OperatorArgs),
}

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all).
    #[arg(long)]
    pub namespace: Vec<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,
    /// The Lease replicas compete for; only its holder touches hosts.
    #[arg(long, default_value = "berth-operator")]
    pub lease_name: String,
    /// The Lease's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "berth-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the pod name, else the hostname).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease claim holds without renewal.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_seconds: u64,
}

#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// YAML files or folders (multi-document; folders are read recursively).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Push Images that declare a repository (apply pushes them anyway, to distribute).
    #[arg(long)]
    pub push: bool,
    /// Build even when an image of the same inputs exists, without the engine's layer cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Also remove berth's containers of sets in the input's namespaces that the input no
    /// longer declares.
    #[arg(long)]
    pub prune: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Concurrent container operations per host.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// YAML files or folders to keep converged (re-read when they change).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Also remove berth's containers of sets the files no longer declare (in their namespaces).
    #[arg(long)]
    pub prune: bool,
    /// A full pass at least this often, whatever the events say.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub resync_seconds: u64,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The set: `NAME` (namespace `default`) or `NAMESPACE/NAME`.
    pub set: String,
    /// Files declaring the set and its hosts (standalone). Without them, the set is read from
    /// the Kubernetes API (KUBECONFIG) and its ControllerRevisions listed.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Print the records as JSON.
    #[arg(long = "json")]
    pub output_json: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The set: `NAME` (namespace `default`) or `NAMESPACE/NAME`.
    pub set: String,
    /// Files declaring the set and its hosts (standalone: the revision is applied to them).
    /// Without them, the revision's template is written back to the ContainerSet in the
    /// cluster (KUBECONFIG), where GitOps tools see the change and the operator rolls it out.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The revision number to return to (see `berth history`).
    #[arg(long)]
    pub to_revision: Option<u64>,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Include removals of undeclared sets in the input's namespaces, as `apply --prune` would.
    #[arg(long)]
    pub prune: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(short = 'o', long, value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Also delete the named volumes the sets mount (only volumes no container uses).
    #[arg(long)]
    pub volumes: bool,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The set: `NAME` (namespace `default`) or `NAMESPACE/NAME`.
    pub set: String,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this host (a DockerHost name, or `local`).
    #[arg(long)]
    pub host: Option<String>,
    /// Lines from the end of each container's log (default: all).
    #[arg(long)]
    pub tail: Option<u32>,
    /// Files declaring the hosts; without them, the local engine.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
}

async fn operator(a: OperatorArgs) -> anyhow::Result<ExitCode> {
    let identity = a.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("berth-{}", std::process::id()))
    });
    let client =
        kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?;
    let opts = crate::controller::Options {
        namespaces: a.namespace,
        http_addr: a.http_addr,
        lease: crate::controller::leader::LeaseConfig {
            name: a.lease_name,
            namespace: a.lease_namespace,
            identity,
            duration: std::time::Duration::from_secs(a.lease_seconds),
        },
    };
    crate::controller::run(client, opts).await?;
    Ok(ExitCode::SUCCESS)
}

/// Parse arguments and run. Errors are printed here; the exit code says how it went.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Apply(a) => apply::apply(a).await,
        Command::Plan(a) => apply::plan(a).await,
        Command::Delete(a) => apply::delete(a).await,
        Command::Status(a) => status::status(a).await,
        Command::Logs(a) => logs::logs(a).await,
        Command::Watch(a) => watch::watch(a).await,
        Command::History(a) => history::history(a).await,
        Command::Rollback(a) => history::rollback(a).await,
        Command::Operator(a) => operator(a).await,
        Command::Build(a) => build::build(a).await,
        Command::Images(a) => build::images(a).await,
        Command::Crd => {
            print!("{}", berth_crd::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<crate::input::InputErrors>() {
                Some(list) => {
                    for item in &list.0 {
                        eprintln!("error: {item}");
                    }
                    eprintln!("{} problem(s) in the input; no host was touched.", list.0.len());
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

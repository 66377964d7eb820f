//! `rampart agent` and `rampart controller`: the long-running processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::admin::{connect, unix_now, StoreArgs};
use super::{EXIT_ERROR, EXIT_OK};
use crate::agent::local::LocalResources;
use crate::agent::runtime::{self as agent, AgentOptions, AgentStats, Event};
use crate::api::{self, metric, status, Served};
use crate::controller::{self, ControllerOptions, ControllerStats};
use crate::drivers::fence::RealFencer;
use crate::drivers::sim::{SimHost, SimShared};
use crate::drivers::store_sim::{power_off_key, StoreSimFencer};
use crate::drivers::Drivers;
use crate::model::Desired;
use crate::simulator::{SimNode, SimWorld};
use crate::source::sync::{self as gitsync, AppliedRevision, GitSync, SyncOptions};
use crate::source::webhook::{self, WebhookConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    /// Simulated host and power control (for tests and trials; nothing real is touched).
    Sim,
    /// The real drivers: drbd-utils, libvirt, netlink, fence agents.
    Real,
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("rampart: cannot start the runtime: {e}");
            EXIT_ERROR
        })
}

/// Send the library's log (a refused revision, a refused webhook call, a failed fetch) to
/// stderr: warnings and errors by default, more with `RUST_LOG` (e.g. `RUST_LOG=rampart=debug`).
/// Events (what the agent did, what the controller decided) are printed on stdout already.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn print_events(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) {
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            tracing::info!(source = %e.source, "{}", e.message);
            println!("{} {}", e.source, e.message);
        }
    });
}

async fn serve(listen: Option<SocketAddr>, router: axum::Router) -> Result<(), u8> {
    let Some(addr) = listen else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        eprintln!("rampart: cannot listen on {addr}: {e}");
        EXIT_ERROR
    })?;
    println!(
        "api listening on {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's name (metadata.name of its Node manifest).
    #[arg(long)]
    pub node: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum)]
    pub drivers: DriverKind,
    /// Serve /healthz, /status and /metrics here.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Answer the controller's heartbeat probes on this UDP address (the node's address on
    /// the cluster network, e.g. 10.0.0.11:7712). Used when the Cluster sets
    /// `timing.heartbeatTimeout`; without it the node is found lost by its lease alone.
    #[arg(long, value_name = "ADDR")]
    pub heartbeat: Option<SocketAddr>,
    /// Wait this long for the controller to publish the cluster's settings.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait_for_controller: Duration,
    /// With `--drivers real`: simulate this part of the host instead (repeatable). For hosts
    /// without it, such as test machines without the DRBD kernel module.
    #[arg(long, value_enum, value_name = "PART")]
    pub simulate: Vec<HostPart>,
    /// The libvirt connection of this node's hypervisor.
    #[arg(long, value_name = "URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,
    /// Where DRBD resource files are written.
    #[arg(long, value_name = "DIR", default_value = crate::render::drbd::RES_DIR)]
    pub drbd_res_dir: PathBuf,
    /// With real drivers: do not feed the watchdog the Node manifest names.
    #[arg(long)]
    pub no_watchdog: bool,
}

/// A part of a host that `--simulate` can stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostPart {
    Drbd,
    Vms,
    Addresses,
}

/// The drivers an agent runs with: real ones, with `--simulate`d parts from a simulated host.
async fn host_drivers(args: &AgentArgs, shared: &SimShared) -> Result<(Drivers, String), String> {
    let sim = SimHost::drivers(shared, &args.node);
    if args.drivers == DriverKind::Sim {
        return Ok((sim, "SIMULATED host".into()));
    }
    let config = sim.config.clone();
    let changed = sim.changed.clone();
    let simulated = |p: HostPart| args.simulate.contains(&p);
    let mut parts = Vec::new();
    let drbd: Arc<dyn crate::drivers::Drbd> = if simulated(HostPart::Drbd) {
        parts.push("DRBD SIMULATED".to_string());
        sim.drbd.clone()
    } else {
        use crate::drivers::drbd::{
            ConfigFile, DrbdAdm, DrbdAdmOptions, Events2Observer, Events2Options,
        };
        let mut opts = DrbdAdmOptions {
            res_dir: args.drbd_res_dir.clone(),
            ..Default::default()
        };
        if args.drbd_res_dir != Path::new(crate::render::drbd::RES_DIR) {
            opts.config = ConfigFile::Generated(args.drbd_res_dir.join("rampart-drbd.conf"));
        }
        // DRBD state changes wake the agent at once.
        let observer = Arc::new(Events2Observer::spawn(Events2Options::default()));
        let mut rx = observer.subscribe();
        let ch = changed.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                ch.notify_one();
            }
        });
        parts.push(format!(
            "DRBD via drbd-utils ({})",
            args.drbd_res_dir.display()
        ));
        Arc::new(DrbdAdm::new(opts, config.clone()).with_observer(observer))
    };
    let vms: Arc<dyn crate::drivers::Vms> = if simulated(HostPart::Vms) {
        parts.push("VMs SIMULATED".to_string());
        sim.vms.clone()
    } else {
        #[cfg(feature = "libvirt")]
        {
            use crate::drivers::libvirt::{LibvirtOptions, LibvirtVms};
            let v =
                LibvirtVms::connect(LibvirtOptions::with_uri(&args.libvirt_uri), config.clone())
                    .await
                    .map_err(|e| {
                        format!("cannot connect to libvirt at {}: {e}", args.libvirt_uri)
                    })?;
            let mut rx = v.events();
            let ch = changed.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    ch.notify_one();
                }
            });
            parts.push(format!("VMs via libvirt ({})", args.libvirt_uri));
            Arc::new(v)
        }
        #[cfg(not(feature = "libvirt"))]
        {
            return Err("this rampart was built without the libvirt driver: build it with `--features production` (or `libvirt`), or run with `--simulate vms`".into());
        }
    };
    let addresses: Arc<dyn crate::drivers::Addresses> = if simulated(HostPart::Addresses) {
        parts.push("addresses SIMULATED".to_string());
        sim.addresses.clone()
    } else {
        parts.push("addresses via netlink".to_string());
        Arc::new(crate::drivers::net::NetlinkAddresses::new(config.clone()))
    };
    Ok((
        Drivers {
            drbd,
            vms,
            addresses,
            config,
            changed,
        },
        parts.join(", "),
    ))
}

struct AgentServed(Arc<Mutex<AgentStats>>);

impl Served for AgentServed {
    fn healthy(&self) -> Result<(), String> {
        if self.0.lock().unwrap().lease_healthy {
            Ok(())
        } else {
            Err("the agent cannot renew its lease".into())
        }
    }
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0.lock().unwrap()).unwrap_or_default()
    }
    fn metrics(&self) -> String {
        let s = self.0.lock().unwrap();
        let l = format!("node=\"{}\"", s.node);
        let mut out = String::new();
        metric(
            &mut out,
            "rampart_agent_lease_healthy",
            "gauge",
            "1 while the agent holds a live lease.",
            &[(l.clone(), f64::from(u8::from(s.lease_healthy)))],
        );
        metric(
            &mut out,
            "rampart_agent_generation",
            "gauge",
            "Generation of the assignment the agent holds.",
            &[(l.clone(), s.held_generation as f64)],
        );
        metric(
            &mut out,
            "rampart_agent_reconciles_total",
            "counter",
            "Reconcile passes.",
            &[(l.clone(), s.reconciles as f64)],
        );
        metric(
            &mut out,
            "rampart_agent_actions_total",
            "counter",
            "Actions carried out on the host.",
            &[(l.clone(), s.actions as f64)],
        );
        metric(
            &mut out,
            "rampart_agent_failed_actions_total",
            "counter",
            "Reconcile passes that stopped at a failed action.",
            &[(l.clone(), s.failed_actions as f64)],
        );
        metric(
            &mut out,
            "rampart_agent_self_demotions_total",
            "counter",
            "Times the agent stopped everything because it could not renew its lease.",
            &[(l, s.self_demotions as f64)],
        );
        out
    }
}

/// A Desired that knows nothing: a standalone simulated host makes only local checks.
fn empty_desired() -> Desired {
    Desired {
        cluster: crate::model::ClusterPolicy {
            name: String::new(),
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
            fence_timeout: Duration::from_secs(60),
            heartbeat_timeout: None,
            no_quorum: Default::default(),
            failback: Default::default(),
            maintenance: false,
            fencing: Default::default(),
        },
        nodes: Default::default(),
        volumes: Default::default(),
        vms: Default::default(),
        vips: Default::default(),
    }
}

pub fn agent(args: AgentArgs) -> u8 {
    init_logging();
    if args.drivers == DriverKind::Sim && !args.simulate.is_empty() {
        eprintln!("rampart agent: --simulate picks parts to simulate among real drivers; with --drivers sim everything is simulated already");
        return EXIT_ERROR;
    }
    if let Some(a) = args
        .heartbeat
        .filter(|a| a.ip().is_unspecified() || a.port() == 0)
    {
        eprintln!("rampart agent: --heartbeat {a}: give this node's own address on the cluster network and a fixed port (e.g. 10.0.0.11:7712); the controller probes the address the agent publishes, and {a} is nowhere it can reach");
        return EXIT_ERROR;
    }
    let cs = match connect(&args.store.store) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart agent: {e}");
            return EXIT_ERROR;
        }
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(c) => return c,
    };
    rt.block_on(async move {
        // Heartbeats first: an agent restarted after a crash answers again as soon as it can
        // (its node's old lease, if still alive, names the same address).
        let heartbeat = match args.heartbeat {
            None => None,
            Some(addr) => match tokio::net::UdpSocket::bind(addr).await {
                Ok(socket) => {
                    let local = socket.local_addr().unwrap_or(addr);
                    tokio::spawn(crate::agent::heartbeat::answer(socket, args.node.clone()));
                    Some(local)
                }
                Err(e) => {
                    eprintln!("rampart agent: cannot answer heartbeats on {addr}: {e}");
                    return EXIT_ERROR;
                }
            },
        };
        // The node boots: a simulated power-off from before is over.
        let off = power_off_key(&cs, &args.node);
        let _ = cs.store.delete(&off).await;
        // The controller publishes the lease timing and the addresses of floating IPs.
        let start = tokio::time::Instant::now();
        let res: LocalResources = loop {
            match cs.get::<LocalResources>(&cs.resources_key()).await {
                Ok(Some(r)) if r.lease_ttl_ms > 0 => break r,
                Ok(_) | Err(_) if start.elapsed() < args.wait_for_controller => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(_) => {
                    eprintln!("rampart agent: no controller has published the cluster's settings after {:?}; is a controller running?", args.wait_for_controller);
                    return EXIT_ERROR;
                }
                Err(e) => {
                    eprintln!("rampart agent: cannot read the store: {e}");
                    return EXIT_ERROR;
                }
            }
        };
        let lease_ttl = Duration::from_millis(res.lease_ttl_ms);
        let renew_interval = Duration::from_millis(res.renew_interval_ms.max(10));
        let mut world = SimWorld::default();
        world.nodes.insert(args.node.clone(), SimNode::fresh());
        let shared = SimShared {
            world: Arc::new(Mutex::new(world)),
            desired: Arc::new(empty_desired()),
            resources: Arc::new(res.clone()),
        };
        let stats = Arc::new(Mutex::new(AgentStats::default()));
        if let Err(c) = serve(args.listen, api::router(Arc::new(AgentServed(stats.clone())))).await {
            return c;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        print_events(rx);
        let (stop_tx, stop_rx) = watch::channel(false);
        let opts = AgentOptions {
            node: args.node.clone(),
            lease_ttl,
            renew_interval,
            tick: (renew_interval / 4).max(Duration::from_millis(20)),
            poll: renew_interval,
            watchdog: args.drivers == DriverKind::Real && !args.no_watchdog,
            heartbeat,
        };
        let (drivers, what) = match host_drivers(&args, &shared).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("rampart agent: {e}");
                return EXIT_ERROR;
            }
        };
        println!("agent {} started ({what}), lease TTL {lease_ttl:?}", args.node);
        let task = tokio::spawn(agent::run(cs.clone(), drivers, res, opts.clone(), unix_now, Some(tx), stats, stop_rx));
        // Simulated power control: a fence request powers this simulated node off.
        loop {
            tokio::select! {
                _ = shutdown_signal() => {
                    println!("agent {} stopping", args.node);
                    // A stop in order is no alarm: the lease no longer names a heartbeat
                    // address, so the controller stops probing before the agent goes.
                    if heartbeat.is_some() {
                        withdraw_heartbeat(&cs, &args.node).await;
                    }
                    let _ = stop_tx.send(true);
                    let _ = task.await;
                    return EXIT_OK;
                }
                _ = tokio::time::sleep(opts.tick) => {
                    if let Ok(Some(_)) = cs.store.get(&off).await {
                        shared.world.lock().unwrap().power_off(&args.node);
                        println!("agent {}: simulated power-off by a fence request", args.node);
                        return EXIT_OK;
                    }
                }
            }
        }
    })
}

/// SIGINT or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Rewrite the node's lease key without its heartbeat address (same lease, and only if the
/// key is as read: a lease granted meanwhile is left alone).
async fn withdraw_heartbeat(cs: &crate::store::cluster::ClusterStore, node: &str) {
    use crate::store::{Compare, CompareOp, Txn};
    let key = cs.lease_key(node);
    let Ok(Some(kv)) = cs.store.get(&key).await else {
        return;
    };
    let Some(lease) = kv.lease else { return };
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key,
            CompareOp::Equal,
            kv.mod_revision,
        )])
        .and_then([cs.lease_op(node, None, lease)]);
    let _ = cs.store.txn(txn).await;
}

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// This controller's name (default: the host name).
    #[arg(long)]
    pub id: Option<String>,
    /// The manifests' git repository: a path or a URL.
    #[arg(long, value_name = "GIT_URL_OR_PATH")]
    pub source: String,
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The manifests' directory inside the repository.
    #[arg(long, default_value = "manifests")]
    pub path: PathBuf,
    /// Fetch this often (a webhook makes it immediate).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Where the controller keeps its mirror of the repository.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// User name for an https:// or ssh:// source [default: the one in the URL, else `git`].
    #[arg(long, value_name = "NAME")]
    pub git_username: Option<String>,
    /// The https:// source's password or access token, alone in a root-only file (or
    /// RAMPART_GIT_TOKEN). Never put it in the URL.
    #[arg(long, value_name = "FILE")]
    pub git_token_file: Option<PathBuf>,
    /// The ssh:// source's private (deploy) key [default: the keys of the ssh-agent].
    #[arg(long, value_name = "FILE")]
    pub git_ssh_key: Option<PathBuf>,
    /// A root-only file holding the passphrase of --git-ssh-key, if it has one.
    #[arg(long, value_name = "FILE", requires = "git_ssh_key")]
    pub git_ssh_passphrase_file: Option<PathBuf>,
    /// Check the ssh:// server's host key against this known_hosts file [default:
    /// ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts]. Unknown host keys are refused.
    #[arg(long, value_name = "FILE")]
    pub git_known_hosts: Option<PathBuf>,
    /// Serve /healthz, /status, /metrics and the webhook here.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The webhook's shared secret, from a root-only file (or RAMPART_WEBHOOK_SECRET).
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub fence: DriverKind,
    /// With `--fence sim`: make this simulated fence device fail. Repeatable.
    #[arg(long, value_name = "DEVICE")]
    pub sim_fence_fails: Vec<String>,
}

struct ControllerServed {
    stats: Arc<Mutex<ControllerStats>>,
    status: Arc<Mutex<serde_json::Value>>,
    applied: Arc<Mutex<Option<String>>>,
}

impl Served for ControllerServed {
    fn healthy(&self) -> Result<(), String> {
        if self.stats.lock().unwrap().store_reachable {
            Ok(())
        } else {
            Err("the controller cannot reach the store".into())
        }
    }
    fn status(&self) -> serde_json::Value {
        self.status.lock().unwrap().clone()
    }
    fn metrics(&self) -> String {
        let s = self.stats.lock().unwrap();
        let mut out = String::new();
        metric(
            &mut out,
            "rampart_controller_leader",
            "gauge",
            "1 while this controller leads.",
            &[(String::new(), f64::from(u8::from(s.leader)))],
        );
        metric(
            &mut out,
            "rampart_controller_rounds_total",
            "counter",
            "Planning rounds.",
            &[(String::new(), s.rounds as f64)],
        );
        metric(
            &mut out,
            "rampart_controller_round_seconds_sum",
            "counter",
            "Time spent in planning rounds.",
            &[(String::new(), s.round_seconds)],
        );
        metric(
            &mut out,
            "rampart_controller_round_seconds_count",
            "counter",
            "Planning rounds timed.",
            &[(String::new(), s.rounds as f64)],
        );
        metric(
            &mut out,
            "rampart_fence_actions_total",
            "counter",
            "Fence actions by result.",
            &[
                ("result=\"ok\"".into(), s.fence_ok as f64),
                ("result=\"failed\"".into(), s.fence_failed as f64),
            ],
        );
        metric(
            &mut out,
            "rampart_failovers_total",
            "counter",
            "VMs moved off a lost node.",
            &[(String::new(), s.failovers as f64)],
        );
        metric(
            &mut out,
            "rampart_invariant_violations_total",
            "counter",
            "Safety-rule violations found in plans (should stay 0).",
            &[(String::new(), s.violations.len() as f64)],
        );
        if let Some(c) = self.applied.lock().unwrap().as_ref() {
            metric(
                &mut out,
                "rampart_applied_revision_info",
                "gauge",
                "The git commit the cluster runs.",
                &[(format!("commit=\"{c}\""), 1.0)],
            );
        }
        out
    }
}

pub fn controller(args: ControllerArgs) -> u8 {
    init_logging();
    let cs = match connect(&args.store.store) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart controller: {e}");
            return EXIT_ERROR;
        }
    };
    let id = args.id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "controller".into())
    });
    let webhook_cfg = match &args.webhook_secret_file {
        Some(f) => match WebhookConfig::from_file(f) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("rampart controller: webhook secret {}: {e}", f.display());
                return EXIT_ERROR;
            }
        },
        None => WebhookConfig::from_env("RAMPART_WEBHOOK_SECRET").ok(),
    };
    let sync = match GitSync::new(
        &args.source,
        &args.state_dir,
        SyncOptions {
            branch: args.branch.clone(),
            path: args.path.clone(),
            credentials: crate::source::credentials::GitCredentials {
                username: args.git_username.clone(),
                token: crate::source::credentials::TokenSource::file_or_env(
                    args.git_token_file.clone(),
                ),
                ssh_key: args.git_ssh_key.clone(),
                ssh_passphrase_file: args.git_ssh_passphrase_file.clone(),
                known_hosts: args.git_known_hosts.clone(),
            },
            ..Default::default()
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rampart controller: {e}");
            return EXIT_ERROR;
        }
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(c) => return c,
    };
    rt.block_on(async move {
        let trigger = Arc::new(Notify::new());
        let mut revisions = sync.subscribe();
        let mut source_status = sync.subscribe_status();
        let (stop_tx, stop_rx) = watch::channel(false);
        let sync_task = tokio::spawn(gitsync::run(
            sync,
            args.poll,
            trigger.clone(),
            stop_rx.clone(),
        ));
        let stats = Arc::new(Mutex::new(ControllerStats::default()));
        let status_doc = Arc::new(Mutex::new(serde_json::Value::Null));
        let applied = Arc::new(Mutex::new(None));
        let mut router = api::router(Arc::new(ControllerServed {
            stats: stats.clone(),
            status: status_doc.clone(),
            applied: applied.clone(),
        }));
        if let Some(cfg) = webhook_cfg {
            router = router.merge(webhook::router(cfg, trigger.clone()));
        }
        if let Err(c) = serve(args.listen, router).await {
            return c;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        print_events(rx);
        // Publish the source's status, and keep a status document for the API. Only the
        // leader publishes: the status must name the revision the cluster runs, not whatever
        // a standby controller (behind on its fetches, or unable to fetch) has seen.
        {
            let cs = cs.clone();
            let applied = applied.clone();
            let status_doc = status_doc.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                // What this controller last wrote while leading; written again when it
                // changes or when this controller (re)gains the lead.
                let mut published = None;
                let mut last_view = tokio::time::Instant::now() - Duration::from_secs(1);
                loop {
                    let st = source_status.borrow_and_update().clone();
                    *applied.lock().unwrap() = st.applied.as_ref().map(|a| a.commit.clone());
                    if !stats.lock().unwrap().leader {
                        published = None;
                    } else if published.as_ref() != Some(&st)
                        && cs.put(&cs.source_status_key(), &st, None).await.is_ok()
                    {
                        published = Some(st);
                    }
                    if last_view.elapsed() >= Duration::from_secs(1) {
                        last_view = tokio::time::Instant::now();
                        if let Ok(view) = cs.view().await {
                            *status_doc.lock().unwrap() =
                                serde_json::to_value(status::from_view(&view)).unwrap_or_default();
                        }
                    }
                    tokio::select! {
                        r = source_status.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            });
        }
        // Wait for the first valid revision: nothing is planned from an invalid one (S5).
        let first = loop {
            if let Some(r) = revisions.borrow_and_update().clone() {
                break r;
            }
            println!(
                "controller {id}: waiting for a valid revision of {} ({})",
                args.source, args.branch
            );
            tokio::select! {
                r = revisions.changed() => if r.is_err() { return EXIT_ERROR },
                _ = tokio::signal::ctrl_c() => return EXIT_OK,
            }
        };
        println!("controller {id}: applying revision {}", first.commit);
        let to_revision = |r: &AppliedRevision| {
            Arc::new(controller::Revision {
                desired: Arc::new(r.desired.clone()),
                hosts: r.hosts.clone(),
            })
        };
        let revision_updates = revisions.clone();
        let (desired_tx, desired_rx) = watch::channel(to_revision(&first));
        tokio::spawn(async move {
            while revisions.changed().await.is_ok() {
                if let Some(r) = revisions.borrow_and_update().clone() {
                    println!("controller: applying revision {}", r.commit);
                    let _ = desired_tx.send(to_revision(&r));
                }
            }
        });
        let d = first.desired.clone();
        let fencer: Arc<dyn crate::drivers::Fencer> = match args.fence {
            DriverKind::Sim => Arc::new(StoreSimFencer {
                cs: cs.clone(),
                failing: args.sim_fence_fails.iter().cloned().collect(),
            }),
            DriverKind::Real => {
                // Fence agents and Redfish, with the devices of each applied revision.
                let mut real = RealFencer::new((*first.fence_devices).clone())
                    .with_default_timeout(d.cluster.fence_timeout);
                if d.nodes.contains_key(&id) {
                    real = real.with_local_node(id.clone());
                }
                let real = Arc::new(real);
                let mut updates = revision_updates;
                let r2 = real.clone();
                tokio::spawn(async move {
                    while updates.changed().await.is_ok() {
                        if let Some(r) = updates.borrow_and_update().clone() {
                            r2.set_devices((*r.fence_devices).clone());
                        }
                    }
                });
                real
            }
        };
        let ctl = tokio::spawn(controller::run(
            cs.clone(),
            desired_rx,
            fencer,
            ControllerOptions {
                id: id.clone(),
                lease_ttl: d.cluster.lease_ttl,
                tick: (d.cluster.renew_interval / 4).max(Duration::from_millis(20)),
                fence_timeout: d.cluster.fence_timeout,
            },
            unix_now,
            Some(tx),
            stats,
            stop_rx,
        ));
        let _ = tokio::signal::ctrl_c().await;
        println!("controller {id} stopping");
        let _ = stop_tx.send(true);
        let _ = ctl.await;
        let _ = sync_task.await;
        EXIT_OK
    })
}

//! Day-to-day operations without editing git: maintenance mode, draining a node, confirming a
//! manual fence, and `rampart status`. Operations are cluster state in the store; they freeze
//! or empty nodes but never override what the manifests say.

use std::time::Duration;

use super::{print_json, EXIT_ERROR, EXIT_OK};
use crate::api::status;
use crate::model::{FenceAttempt, Operations, Time};
use crate::store::cluster::ClusterStore;
use crate::store::{Compare, CompareOp, Op, Txn};

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    #[arg(long, value_name = "URL", env = "RAMPART_STORE")]
    pub store: String,
}

/// Connect to the store named by a URL.
pub fn connect(url: &str) -> Result<ClusterStore, String> {
    #[cfg(feature = "etcd")]
    {
        crate::store::etcd::connect_cluster(url)
    }
    #[cfg(not(feature = "etcd"))]
    {
        Err(format!(
            "cannot reach `{url}`: this rampart was built without etcd support; build it with `cargo build --release --features etcd` (needs protobuf-compiler)"
        ))
    }
}

pub fn unix_now() -> Time {
    Time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Change the operations record with a compare-and-swap, so two admins can't lose each
/// other's change.
async fn update_operations(
    cs: &ClusterStore,
    f: impl Fn(&mut Operations),
) -> Result<Operations, String> {
    let key = cs.operations_key();
    for _ in 0..10 {
        let current = cs.store.get(&key).await.map_err(|e| e.to_string())?;
        let (mut ops, guard) = match &current {
            Some(kv) => (
                serde_json::from_slice::<Operations>(&kv.value).map_err(|e| format!("the operations record in the store does not decode ({e}); fix or delete key {}", String::from_utf8_lossy(&key)))?,
                Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision),
            ),
            None => (Operations::default(), Compare::absent(key.clone())),
        };
        f(&mut ops);
        let txn = Txn::new()
            .when([guard])
            .and_then([Op::put(key.clone(), serde_json::to_vec(&ops).unwrap())]);
        if cs
            .store
            .txn(txn)
            .await
            .map_err(|e| e.to_string())?
            .succeeded
        {
            return Ok(ops);
        }
    }
    Err("the operations record kept changing under us; try again".into())
}

#[derive(Debug, clap::Args)]
pub struct MaintenanceArgs {
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn maintenance(args: MaintenanceArgs) -> u8 {
    let on = args.state == "on";
    run_ops(
        &args.store.store,
        move |o| o.maintenance = on,
        if on {
            "maintenance mode on: placement frozen"
        } else {
            "maintenance mode off"
        },
    )
}

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    pub node: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn drain(args: DrainArgs, on: bool) -> u8 {
    let node = args.node.clone();
    let msg = if on {
        format!("{node} drained: its work moves off")
    } else {
        format!("{node} undrained")
    };
    run_ops(
        &args.store.store,
        move |o| {
            if on {
                o.drained.insert(node.clone());
            } else {
                o.drained.remove(&node);
            }
        },
        &msg,
    )
}

fn run_ops(url: &str, f: impl Fn(&mut Operations) + Send + 'static, msg: &str) -> u8 {
    let cs = match connect(url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart: {e}");
            return EXIT_ERROR;
        }
    };
    match runtime().block_on(update_operations(&cs, f)) {
        Ok(_) => {
            println!("{msg}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("rampart: {e}");
            EXIT_ERROR
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FenceConfirmArgs {
    /// The node an admin has powered off by hand.
    pub node: String,
    /// Confirm that the node is really off. Work will start elsewhere: if the node is still
    /// running, its VMs will run twice and corrupt their disks.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn fence_confirm(args: FenceConfirmArgs) -> u8 {
    if !args.yes {
        eprintln!(
            "rampart fence confirm: this tells the cluster that {} is powered off, so its work may start elsewhere.\n\
             If it is still running, its VMs will run twice and corrupt their disks.\n\
             Check the node is off (at its console or power switch), then run again with --yes.",
            args.node
        );
        return EXIT_ERROR;
    }
    let cs = match connect(&args.store.store) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart: {e}");
            return EXIT_ERROR;
        }
    };
    let node = args.node.clone();
    let r: Result<(), String> = runtime().block_on(async move {
        let key = cs.fence_key(&node);
        if cs.store.get(&cs.lease_key(&node)).await.map_err(|e| e.to_string())?.is_some() {
            return Err(format!("{node} holds a live lease: it is running; a running node cannot be confirmed fenced"));
        }
        let mut attempts: Vec<FenceAttempt> = cs.get(&key).await.map_err(|e| e.to_string())?.unwrap_or_default();
        attempts.push(FenceAttempt {
            level: 0,
            device: "manual".into(),
            at: unix_now(),
            ok: true,
            error: None,
        });
        // Only while the node still has no lease: a node that comes back is not fenced.
        let txn = Txn::new()
            .when([Compare::absent(cs.lease_key(&node))])
            .and_then([Op::put(key, serde_json::to_vec(&attempts).unwrap())]);
        if cs.store.txn(txn).await.map_err(|e| e.to_string())?.succeeded {
            Ok(())
        } else {
            Err(format!("{node} took a lease meanwhile: it is running"))
        }
    });
    match r {
        Ok(()) => {
            println!("{} confirmed fenced by hand", args.node);
            EXIT_OK
        }
        Err(e) => {
            eprintln!("rampart fence confirm: {e}");
            EXIT_ERROR
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum StatusOutput {
    #[default]
    Text,
    Json,
    /// The observed state, usable as `rampart simulate --observed` / `rampart diff --observed`.
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: StatusOutput,
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

pub fn status(args: StatusArgs) -> u8 {
    let cs = match connect(&args.store.store) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart: {e}");
            return EXIT_ERROR;
        }
    };
    runtime().block_on(async move {
        loop {
            let view = match cs.view().await {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("rampart status: cannot read the store: {e}");
                    return EXIT_ERROR;
                }
            };
            match args.output {
                StatusOutput::Text => {
                    if args.watch {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", status::render_text(&status::from_view(&view)));
                }
                StatusOutput::Json => print_json(&status::from_view(&view)),
                StatusOutput::Yaml => {
                    match serde_yaml::to_string(&status::snapshot(&view, unix_now())) {
                        Ok(s) => print!("{s}"),
                        Err(e) => {
                            eprintln!("rampart status: {e}");
                            return EXIT_ERROR;
                        }
                    }
                }
            }
            if !args.watch {
                return EXIT_OK;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

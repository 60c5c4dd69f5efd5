//! One node of a real clustered MQTT broker, for Lepton's fleet tests: rmqtt with its Raft
//! cluster plugin, configured from the command line so a test can start three on loopback.
//!
//! Usage: cluster-broker ID MQTT_ADDR DIR NODES
//!   ID         this node's id (1, 2, 3)
//!   MQTT_ADDR  where clients connect, e.g. 127.0.0.1:18831
//!   DIR        a folder for this node's plugin config
//!   NODES      every node as ID@GRPC_ADDR@RAFT_ADDR, comma-separated (this one included); the
//!              first starts the Raft cluster, the others join it

use anyhow::{bail, Context, Result};
use rmqtt::args::CommandArgs;
use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::node::Node;
use rmqtt::server::MqttServer;
use std::num::NonZeroU16;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [id, mqtt, dir, nodes] = args.as_slice() else {
        bail!("usage: cluster-broker ID MQTT_ADDR DIR ID@GRPC@RAFT,ID@GRPC@RAFT,...");
    };
    let id: u64 = id.parse().context("ID")?;
    let mqtt: std::net::SocketAddr = mqtt.parse().context("MQTT_ADDR")?;
    let mut grpc = vec![];
    let mut raft = vec![];
    let mut own_grpc = None;
    for n in nodes.split(',') {
        let [nid, g, r] = n.split('@').collect::<Vec<_>>()[..] else { bail!("node `{n}`: write ID@GRPC@RAFT") };
        grpc.push(format!("{nid}@{g}"));
        raft.push(format!("{nid}@{r}"));
        if nid.parse::<u64>().ok() == Some(id) {
            own_grpc = Some(g.parse::<std::net::SocketAddr>().context("GRPC address")?);
        }
    }
    let own_grpc = own_grpc.context("NODES does not list this node's ID")?;
    std::fs::create_dir_all(dir)?;
    let quoted = |v: &[String]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        format!("{dir}/rmqtt-cluster-raft.toml"),
        format!(
            "node_grpc_addrs = [{}]\nraft_peer_addrs = [{}]\nnode_grpc_client_timeout = \"3s\"\ntry_lock_timeout = \"3s\"\n\
             [raft]\ngrpc_reuseaddr = true\n",
            quoted(&grpc),
            quoted(&raft)
        ),
    )?;
    // Shared subscriptions ($share/GROUP/FILTER): each message to one member of the group,
    // wherever in the cluster it is connected, in turn.
    std::fs::write(format!("{dir}/rmqtt-shared-subscription.toml"), "strategy = \"round_robin\"\n")?;
    std::fs::write(format!("{dir}/rmqtt-retainer.toml"), "storage.type = \"ram\"\n")?;
    let args = CommandArgs {
        node_id: Some(id),
        plugins_default_startups: None,
        node_grpc_addrs: Some(grpc.iter().map(|s| s.parse()).collect::<Result<_, _>>().context("gRPC addresses")?),
        raft_peer_addrs: Some(raft.iter().map(|s| s.parse()).collect::<Result<_, _>>().context("Raft addresses")?),
        // Nodes started together on one host would each found a cluster of their own: the
        // first listed founds it and the others join.
        raft_leader_id: Some(nodes.split('@').next().unwrap_or("1").parse().context("first node's ID")?),
    };
    let scx = ServerContext::new()
        .args(args)
        .node(Node::new(id, 1000.0, 100.0, Duration::from_secs(2)))
        .plugins_config_dir(dir.as_str())
        .build()
        .await;
    // Address reuse: a test's ports may have served (or been the client side of) a connection
    // still in TIME_WAIT.
    scx.node.start_grpc_server(scx.clone(), own_grpc, true, false);
    rmqtt_cluster_raft::register(&scx, true, true).await.context("the Raft cluster plugin")?;
    rmqtt_shared_subscription::register(&scx, true, false).await.context("the shared subscription plugin")?;
    // Retained messages (devices' status, last will, latest events and snapshots), kept in RAM;
    // without it the node refuses a CONNECT whose will is retained.
    rmqtt_retainer::register(&scx, true, false).await.context("the retainer plugin")?;
    let listener = Builder::new()
        .name("external/tcp")
        .laddr(mqtt)
        .max_inflight(NonZeroU16::new(128).unwrap())
        .max_mqueue_len(100_000)
        .reuseaddr(Some(true))
        .bind()
        .context("binding MQTT_ADDR")?
        .tcp()?;
    MqttServer::new(scx).listener(listener).build().start();
    eprintln!("cluster-broker: node {id} serving MQTT on {mqtt}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    std::process::exit(0)
}

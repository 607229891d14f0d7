//! Issue 15: client connections end where their role says after every failover path. A
//! promotion closes the new master's clients (replica-role connections there must reconnect);
//! a graceful switchover closes the old masters' clients while writes are still paused, so the
//! writes the pause held are re-sent to the new master instead of failing with `READONLY`.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::util::*;

/// A connection named `name` (as an application's replica client) that has answered a read.
async fn named_reader(a: &str, name: &str) -> MultiplexedConnection {
    let mut con = connect(a).await;
    let () = redis::cmd("CLIENT").arg("SETNAME").arg(name).query_async(&mut con).await.unwrap();
    let _: Option<String> = redis::cmd("GET").arg("k").query_async(&mut con).await.unwrap();
    con
}

async fn client_list(a: &str) -> String {
    let mut con = connect(a).await;
    redis::cmd("CLIENT").arg("LIST").query_async(&mut con).await.unwrap()
}

/// The reader's connection was closed by the server: its next command fails, and the server
/// no longer lists it.
async fn assert_closed(reader: &mut MultiplexedConnection, a: &str, name: &str) {
    let next = redis::cmd("GET").arg("k").query_async::<Option<String>>(reader).await;
    assert!(next.is_err(), "the replica-role connection on {a} is still open: {next:?}");
    let list = client_list(a).await;
    assert!(!list.contains(&format!("name={name} ")), "{a} still lists {name}:\n{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_after_a_room_loss_closes_the_new_masters_replica_clients() {
    let mut lab = lab(27000).await;
    let head = at(2, 27001);
    let mut reader = named_reader(&head, "app-replica").await;
    let mut other = named_reader(&at(2, 27002), "app-replica-2").await;
    let c = Controller::start(&lab).await;
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        wait_until(Duration::from_secs(10), || async { is_master(&head).await && is_master(&at(2, 27002)).await })
            .await,
        "room 2's heads were not promoted: {}",
        c.report_text()
    );
    assert_closed(&mut reader, &head, "app-replica").await;
    assert_closed(&mut other, &at(2, 27002), "app-replica-2").await;
    // The promoted master answers and keeps its replica (a replication link is not a normal
    // client).
    let mut con = connect(&head).await;
    let () = redis::cmd("SET").arg("after").arg(1).query_async(&mut con).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { replicates(&at(2, 27003), &head).await }).await);
    c.stop().await;
}

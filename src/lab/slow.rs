//! Latency and jitter between this host and a room, for the soak and the fault matrix (row 1).
//! The kernel here has no `netem`, so each instance of the room is reached through a TCP proxy
//! that holds some replies back, and an iptables DNAT rule sends this host's new connections
//! (from 127.0.0.1: the controllers, the clients) to it. Replication between rooms is not
//! delayed (the instances connect from their own addresses), and connections opened before the
//! rule keep their direct path until they reconnect.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket},
    task::JoinHandle,
};

use super::{Lab, LabError, add_iptables_rule, delete_iptables_owner, delete_iptables_rule};

/// Removes its proxies and rules when dropped.
pub struct SlowRoom {
    rules: Vec<Vec<String>>,
    proxies: Vec<JoinHandle<()>>,
}

impl Drop for SlowRoom {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.abort();
        }
        for rule in &self.rules {
            delete_iptables_rule(rule);
        }
    }
}

impl Lab {
    /// Until the guard is dropped, one reply in three from the room's instances to this host
    /// waits a random time up to `max_delay` (`seed` makes the delays repeatable).
    pub async fn slow_room(&self, room: usize, max_delay: Duration, seed: u64) -> Result<SlowRoom, LabError> {
        let t = self.topology();
        let mut slow = SlowRoom { rules: Vec::new(), proxies: Vec::new() };
        for id in t.room_members(room) {
            let addr = t.addr(id);
            let proxy_error = |why: String| LabError::Proxy { addr: addr.clone(), why };
            let target: SocketAddr = format!("{}:{}", addr.host, addr.port)
                .parse()
                .map_err(|_| proxy_error("the lab's address is not an IP address".into()))?;
            let (port, proxy) = jitter_proxy(target, max_delay, seed ^ u64::from(addr.port))
                .await
                .map_err(|e| proxy_error(e.to_string()))?;
            slow.proxies.push(proxy);
            let owner = format!("roomguard slow {addr}");
            delete_iptables_owner("nat", &owner);
            let (dport, to) = (addr.port.to_string(), format!("127.0.0.1:{port}"));
            let rule = ["-s", "127.0.0.1", "-d", &addr.host, "-p", "tcp", "--dport", &dport, "-j", "DNAT"];
            let rule = [&rule[..], &["--to-destination", &to]].concat();
            match add_iptables_rule("nat", &owner, &rule) {
                Ok(full) => slow.rules.push(full),
                // `slow` is dropped here: what was set up so far is removed.
                Err(why) => return Err(LabError::Iptables { ip: addr.host.clone(), rule: rule.join(" "), why }),
            }
        }
        Ok(slow)
    }
}

/// A TCP proxy to `target`, listening on 127.0.0.1: it connects from 127.0.0.2 (so the DNAT
/// rule, which matches 127.0.0.1, does not catch its own connections) and holds one reply in
/// three back for a random time up to `max_delay`.
async fn jitter_proxy(target: SocketAddr, max_delay: Duration, seed: u64) -> std::io::Result<(u16, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        // The connections' tasks belong to this one: aborting it ends them all.
        let mut connections = tokio::task::JoinSet::new();
        let mut seed = seed | 1;
        loop {
            let mut client = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, _)) => client,
                    Err(_) => return,
                },
                Some(_) = connections.join_next() => continue,
            };
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut rng = seed;
            connections.spawn(async move {
                let Ok(socket) = TcpSocket::new_v4() else { return };
                if socket.bind("127.0.0.2:0".parse().expect("address")).is_err() {
                    return;
                }
                let Ok(mut server) = socket.connect(target).await else { return };
                let (mut client_read, mut client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                let downstream = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = server_read.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        // xorshift: one reply in three waits up to `max_delay`.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        if rng.is_multiple_of(3) {
                            tokio::time::sleep(max_delay.mul_f64((rng >> 11) as f64 / (1u64 << 53) as f64)).await;
                        }
                        client_write.write_all(&buf[..n]).await?;
                    }
                };
                let _ = tokio::try_join!(upstream, downstream);
            });
        }
    });
    Ok((port, task))
}

//! The soak's etcd (`--etcd`): three `etcd` members on the room addresses (127.0.0.11, .12,
//! .13: room 1, room 2, a third site; with two rooms the third member is the third site's),
//! clients on `port`, peers on `port + 1`, data in `dir`, killed with the soak (they run
//! under `setpriv --pdeathsig KILL`). A killed member restarts from its data dir and rejoins.
//!
//! Smaller than `tests/etcd.rs`'s `EtcdCluster` (which an example cannot import): every member
//! runs as the soak's own user, since the soak cuts no member from the others (the Redis
//! faults' iptables rules cover the lab's ports only, so they never touch etcd).

use std::{
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

pub const MEMBER_IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

pub struct Etcd {
    port: u16,
    dir: PathBuf,
    members: Vec<Option<Child>>,
}

impl Etcd {
    /// Starts the three members and waits until each takes a put and a linearizable get.
    pub async fn start(port: u16, dir: PathBuf) -> Result<Etcd, String> {
        let binary = std::env::var_os("ROOMGUARD_ETCD").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from);
        if !binary.is_file() {
            return Err(format!("etcd is not installed at {} (scripts/ensure-deps)", binary.display()));
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut etcd = Etcd { port, dir, members: (0..MEMBER_IPS.len()).map(|_| None).collect() };
        for i in 0..MEMBER_IPS.len() {
            etcd.start_member(i)?;
        }
        etcd.wait_healthy(Duration::from_secs(30)).await?;
        Ok(etcd)
    }

    pub fn endpoints(&self) -> Vec<String> {
        MEMBER_IPS.iter().map(|ip| format!("http://{ip}:{}", self.port)).collect()
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("member-{}.log", i + 1))
    }

    fn start_member(&mut self, i: usize) -> Result<(), String> {
        let peer = |j: usize| format!("http://{}:{}", MEMBER_IPS[j], self.port + 1);
        let client = format!("http://{}:{}", MEMBER_IPS[i], self.port);
        let initial: Vec<String> = (0..MEMBER_IPS.len()).map(|j| format!("m{}={}", j + 1, peer(j))).collect();
        let binary = std::env::var_os("ROOMGUARD_ETCD").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from);
        let mut cmd = roomguard::lab::etcd_member(
            &binary,
            &format!("m{}", i + 1),
            &self.dir.join(format!("member-{}", i + 1)),
            &client,
            &peer(i),
            &initial,
            &format!("roomguard-chaos-{}", self.port),
        );
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).map_err(|e| e.to_string())?;
        cmd.stderr(log);
        let child =
            roomguard::lab::spawn_child(cmd).map_err(|e| format!("etcd member {} does not start: {e}", i + 1))?;
        self.members[i] = Some(child);
        Ok(())
    }

    /// SIGKILL member `i` (0-based).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` if it is killed (from its data dir: it rejoins).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].is_none() { self.start_member(i) } else { Ok(()) }
    }

    /// A member that exited on its own (a crash) is `false`.
    pub fn running(&mut self, i: usize) -> bool {
        self.members[i].as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits until every member takes a put and a linearizable get through a client of its
    /// own; the error names the last failure.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let give_up = Instant::now() + timeout;
        for (i, endpoint) in self.endpoints().into_iter().enumerate() {
            loop {
                let attempt = async {
                    let options = etcd_client::ConnectOptions::new()
                        .with_timeout(Duration::from_secs(1))
                        .with_connect_timeout(Duration::from_secs(1))
                        .with_require_leader(true);
                    let mut client = etcd_client::Client::connect([endpoint.as_str()], Some(options)).await?;
                    client.put("chaos/health", "ok", None).await?;
                    client.get("chaos/health", None).await.map(|_| ())
                };
                let why = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within 3 s".into(),
                };
                if Instant::now() >= give_up {
                    return Err(format!("etcd member {} ({endpoint}) not healthy after {timeout:?}: {why}", i + 1));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

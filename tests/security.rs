//! Row 11: Redis security. ACL users (with the minimal ACL the README documents), TLS with a
//! throwaway CA (failover over TLS; a wrong CA is a typed `tls` error and no action), and
//! per-room / per-instance credentials; secrets never appear in what operators see.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use roomguard::{
    config::{Config, RedisSettings},
    info::{ReplicationInfo, Role},
    lab::{Lab, LabSpec, LabTls},
    observe::ProbeErrorKind,
    probe,
};

use crate::util::*;

/// The ACL the README recommends for roomguard's user: `INFO`, `REPLICAOF`, the two `CLIENT`
/// subcommands of a graceful failover, `CLIENT KILL` (a demoted master's clients), `CLIENT
/// SETNAME` (naming its connections) and `CONFIG GET` (the settings audit). No keys, no
/// channels, nothing else.
const MINIMAL_ACL: &[&str] = &[
    "-@all",
    "+info",
    "+replicaof",
    "+client|pause",
    "+client|unpause",
    "+client|kill",
    "+client|setname",
    "+config|get",
];

/// A raw client of `a` (default user, `password`) that sent `command` and read its reply.
async fn raw_client(a: &str, password: &str, command: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(format!("AUTH {password}\r\n{command}\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !(got.starts_with(b"+OK\r\n") && got.len() > 5 && got.ends_with(b"\r\n")) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "{a} closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// Whether the server closed `s` (reads to the end, within a generous deadline).
async fn closed_by_server(mut s: tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await, Ok(Ok(_)) | Ok(Err(_)))
}

async fn info_with(a: &str, settings: &RedisSettings) -> Option<ReplicationInfo> {
    probe::probe_once(&addr(a), settings, Duration::from_secs(1)).await.ok()
}

async fn is_master_with(a: &str, settings: &RedisSettings) -> bool {
    info_with(a, settings).await.is_some_and(|i| i.role == Role::Master)
}

async fn replicates_with(a: &str, master: &str, settings: &RedisSettings) -> bool {
    info_with(a, settings)
        .await
        .and_then(|i| i.master)
        .is_some_and(|l| l.link_up && format!("{}:{}", l.host, l.port) == master)
}

/// Everything an operator sees, to check that no secret shows.
async fn operator_views(c: &Controller, config: &Path) -> Vec<(&'static str, String)> {
    let (_, topology) = http_get(c.http, "/topology").await;
    let (_, page) = http_get(c.http, "/").await;
    let config = config.to_str().unwrap();
    let status = run(roomguard(&["status", "--config", config])).await;
    let check = run(roomguard(&["check-config", "--config", config])).await;
    assert!(check.status.success(), "check-config: {}", String::from_utf8_lossy(&check.stderr));
    vec![
        ("/topology", topology),
        ("/", page),
        ("/metrics", c.metrics()),
        ("status", format!("{}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr))),
        (
            "check-config",
            format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr)),
        ),
        ("config Debug", format!("{:?}", c.shared.config)),
        ("report", c.report_text()),
    ]
}

/// An ACL user limited to [`MINIMAL_ACL`] (the default user has another password, used for
/// replication) is enough for everything roomguard does: probing, a graceful failover
/// through the CLI (`CLIENT PAUSE`/`UNPAUSE`, `REPLICAOF`), and the controller following it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_acl_user_with_minimal_permissions() {
    const PASSWORD: &str = "acl-pass-for-roomguard-22550";
    let mut redis_args: Vec<String> = ["--user", "roomguard", "on", &format!(">{PASSWORD}")].map(String::from).to_vec();
    redis_args.extend(MINIMAL_ACL.iter().map(|s| s.to_string()));
    let spec = LabSpec {
        base_port: port(22550),
        http_listen: "127.0.0.1:0".into(),
        password: Some("default-user-pass-22550".into()),
        redis_section: Some(format!("username = \"roomguard\"\npassword = \"{PASSWORD}\"")),
        redis_args,
        ..LabSpec::default()
    };
    let lab = Lab::start(&spec).await.unwrap();
    let config = config_path(&lab);
    std::fs::write(&config, spec.config_toml()).unwrap();
    let user = RedisSettings::password(Some("roomguard"), PASSWORD);

    // The ACL is in force: the user can read INFO but not touch data.
    let mut con = probe::connect(&addr(&at(1, 22551)), &user, Duration::from_secs(1)).await.unwrap();
    let denied = redis::cmd("SET").arg("k").arg("v").query_async::<()>(&mut con).await.unwrap_err();
    assert_eq!(probe::classify(&denied).kind, ProbeErrorKind::Auth, "{denied}");

    let c = Controller::start(&lab).await;
    assert!(c.wait_healthy_primary("1", Duration::from_secs(10)).await, "{}", c.report_text());
    // An application's connection and a subscriber on the master that will be demoted.
    let app = raw_client(&at(1, 22551), "default-user-pass-22550", "PING").await;
    let subscriber = raw_client(&at(1, 22551), "default-user-pass-22550", "SUBSCRIBE news").await;
    let out = run(roomguard(&["failover", "--room", "2", "--config", config.to_str().unwrap()])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failover: {stdout}\n{stderr}");
    assert!(stdout.contains("graceful failover"), "{stdout}");
    // `CLIENT KILL` is allowed: the demoted master's clients were disconnected, both kinds.
    assert!(!stderr.contains("could not disconnect") && !stdout.contains("could not disconnect"), "{stdout}\n{stderr}");
    assert!(closed_by_server(app).await, "the demoted master's client is still connected");
    assert!(closed_by_server(subscriber).await, "the demoted master's subscriber is still connected");
    for (head, tail) in [(22551, 22553), (22552, 22554)] {
        assert!(is_master_with(&at(2, head), &user).await);
        assert!(replicates_with(&at(1, head), &at(2, tail), &user).await);
    }
    assert!(c.wait_healthy_primary("2", Duration::from_secs(10)).await, "{}", c.report_text());
    assert_eq!(c.metric("roomguard_probe_errors_total", &["kind=\"auth\""]), 0.0);
    for (what, text) in operator_views(&c, &config).await {
        assert!(!text.contains(PASSWORD), "{what} shows the password");
    }
    c.stop().await;
}

/// Throwaway PKI for a TLS lab, written to `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here: trusting it must fail.
    other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(dir: &Path) -> Pki {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let issuer = ca("roomguard test CA");
    let other = ca("some other CA");
    // One certificate for every instance (IP SANs of both rooms); Redis also presents it as
    // a client when it replicates (`tls-replication yes` with `tls-auth-clients yes`).
    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(["127.0.0.11", "127.0.0.12", "redis.internal"].map(String::from).to_vec()).unwrap();
    server.distinguished_name.push(DnType::CommonName, "redis");
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "roomguard");
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca: write("ca.pem", issuer.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        other_ca: write("other-ca.pem", other.pem()),
    }
}

fn tls_section(ca: &Path, pki: &Pki) -> String {
    format!(
        "tls = true\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    )
}

/// A TLS-only lab (`tls-auth-clients yes`, replication over TLS): a controller trusting
/// another CA gets typed `tls` errors and does nothing; the right one fails over when room 1
/// is killed, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_tls_failover_and_wrong_ca() {
    let files = tempfile::tempdir().unwrap();
    let pki = pki(files.path());
    let spec = LabSpec {
        base_port: port(22560),
        http_listen: "127.0.0.1:0".into(),
        redis_section: Some(tls_section(&pki.ca, &pki)),
        tls: Some(LabTls {
            ca_file: pki.ca.clone(),
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            auth_clients: true,
        }),
        ..LabSpec::default()
    };
    let mut lab = Lab::start(&spec).await.unwrap();
    let config = config_path(&lab);
    std::fs::write(&config, spec.config_toml()).unwrap();
    let tls = lab.config.redis.default.clone();

    // Plain TCP to a TLS port is refused, typed, and harmless.
    let plain =
        probe::probe_once(&addr(&at(1, 22561)), &RedisSettings::default(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(plain.kind, ProbeErrorKind::Io | ProbeErrorKind::Protocol), "{plain}");
    // Without the client certificate, `tls-auth-clients yes` refuses the connection.
    let no_cert = format!("tls = true\nca_file = \"{}\"", pki.ca.display());
    let no_cert = LabSpec { redis_section: Some(no_cert), ..spec.clone() };
    let no_cert = Config::from_toml(&no_cert.config_toml(), "no-cert.toml", lab.dir()).unwrap();
    // A generous timeout: the server closes the connection at once, and a loaded host must not
    // turn that into a timeout.
    let refused = probe::probe_once(&addr(&at(1, 22561)), no_cert.redis.instance(0), Duration::from_secs(5)).await;
    // TLS 1.3 finishes the client's handshake before the server checks its certificate, so
    // the refusal arrives as a reset or an alert on the first command.
    let refused = refused.unwrap_err();
    assert!(matches!(refused.kind, ProbeErrorKind::Io | ProbeErrorKind::Tls), "{refused}");

    // `server_name`: the name verified instead of the instance's address.
    for (name, ok) in [("redis.internal", true), ("elsewhere.internal", false)] {
        let named = format!("{}\nserver_name = \"{name}\"", tls_section(&pki.ca, &pki));
        let named = LabSpec { redis_section: Some(named), ..spec.clone() };
        let named = Config::from_toml(&named.config_toml(), "named.toml", lab.dir()).unwrap();
        let probed = probe::probe_once(&addr(&at(2, 22561)), named.redis.instance(0), Duration::from_secs(5)).await;
        match probed {
            Ok(_) => assert!(ok, "{name} is not in the certificate"),
            Err(e) => assert!(!ok && e.kind == ProbeErrorKind::Tls, "{name}: {e}"),
        }
    }

    // The wrong CA: every probe fails with kind=tls, and nothing is done.
    let wrong_spec = LabSpec { redis_section: Some(tls_section(&pki.other_ca, &pki)), ..spec.clone() };
    let wrong = Config::from_toml(&wrong_spec.config_toml(), "wrong-ca.toml", lab.dir()).unwrap();
    let direct = probe::probe_once(&addr(&at(1, 22561)), wrong.redis.instance(0), Duration::from_secs(1)).await;
    let err = direct.unwrap_err();
    assert_eq!(err.kind, ProbeErrorKind::Tls, "{err}");
    assert!(err.message.contains("certificate"), "{err}");
    let mut wrong_config = wrong;
    wrong_config.controller.state_file = lab.dir().join("wrong-ca-state.json");
    let c = Controller::start_with(wrong_config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in &lab.topology().instances {
        let instance = format!("instance=\"{}\"", i.addr);
        assert!(c.metric("roomguard_probe_errors_total", &[&instance, "kind=\"tls\""]) > 0.0, "{}", c.metrics());
    }
    assert_eq!(c.metric("roomguard_actions_total", &[]), 0.0);
    assert_no_replicaof(&lab, "a controller that trusts another CA").await;
    c.stop().await;

    // The right CA: healthy, then room 1 is killed and room 2 takes over, over TLS.
    let c = Controller::start(&lab).await;
    assert!(c.wait_healthy_primary("1", Duration::from_secs(10)).await, "{}", c.report_text());
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        c.wait_one_failover_to("2", Duration::from_secs(15)).await,
        "failover over TLS:\n{}\n{}",
        c.metrics(),
        c.report_text()
    );
    for (head, tail) in [(22561, 22563), (22562, 22564)] {
        assert!(is_master_with(&at(2, head), &tls).await);
        assert!(
            wait_until(Duration::from_secs(10), || {
                let (tail, head, tls) = (at(2, tail), at(2, head), tls.clone());
                async move { replicates_with(&tail, &head, &tls).await }
            })
            .await,
            "room 2's tail replicates its head over TLS"
        );
    }
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    let key_body = key.lines().nth(1).unwrap().to_string();
    for (what, text) in operator_views(&c, &config).await {
        assert!(!text.contains(&key_body), "{what} shows the client key");
    }
    c.stop().await;
}

/// Deployments differ: room 2 has its own password and one instance yet another. The
/// overrides are used for each instance's probes and actions, and no password shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_per_room_and_per_instance_passwords() {
    const ROOM1: &str = "room-one-pass-22580";
    const ROOM2: &str = "room-two-pass-22580";
    const ODD: &str = "odd-instance-pass-22580";
    let mut lab = lab(22580).await;
    let odd = at(2, 22584);
    let set = |a: String, key: &'static str, value: &'static str| async move {
        let mut con = connect(&a).await;
        redis::cmd("CONFIG").arg("SET").arg(key).arg(value).query_async::<()>(&mut con).await.unwrap();
    };
    // masterauth first (for reconnects), then the passwords. Room 2's heads replicate room 1.
    for p in [22583, 22584] {
        set(at(1, p), "masterauth", ROOM1).await;
    }
    for p in [22581, 22582] {
        set(at(2, p), "masterauth", ROOM1).await;
    }
    for p in [22583, 22584] {
        set(at(2, p), "masterauth", ROOM2).await;
    }
    for p in [22581, 22582, 22583, 22584] {
        set(at(1, p), "requirepass", ROOM1).await;
        if at(2, p) != odd {
            set(at(2, p), "requirepass", ROOM2).await;
        }
    }
    set(odd.clone(), "requirepass", ODD).await;

    let spec = LabSpec { base_port: port(22580), http_listen: "127.0.0.1:0".into(), ..LabSpec::default() };
    let redis = format!(
        "password = \"{ROOM1}\"\n[redis.room.\"2\"]\npassword = \"{ROOM2}\"\n[redis.instance.\"{odd}\"]\npassword = \"{ODD}\""
    );
    let spec = LabSpec { redis_section: Some(redis), ..spec };
    let config_file = config_path(&lab);
    std::fs::write(&config_file, spec.config_toml()).unwrap();
    let config = Config::load(&config_file).unwrap();
    lab.config = config.clone();

    let c = Controller::start_with(config).await;
    assert!(c.wait_healthy_primary("1", Duration::from_secs(10)).await, "{}", c.report_text());
    assert_eq!(c.metric("roomguard_probe_errors_total", &[]), 0.0, "every instance is probed with its password");
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(
        c.wait_one_failover_to("2", Duration::from_secs(15)).await,
        "failover with per-room passwords:\n{}\n{}",
        c.metrics(),
        c.report_text()
    );
    let room2 = RedisSettings::password(None, ROOM2);
    assert!(is_master_with(&at(2, 22581), &room2).await && is_master_with(&at(2, 22582), &room2).await);
    let views = operator_views(&c, &config_file).await;
    let check = &views.iter().find(|(w, _)| *w == "check-config").unwrap().1;
    assert!(check.contains(&format!("redis for {odd}: password")), "check-config lists the override: {check}");
    for (what, text) in views {
        for secret in [ROOM1, ROOM2, ODD] {
            assert!(!text.contains(secret), "{what} shows a password");
        }
    }
    c.stop().await;
}

/// A room's password can come from the environment (`ROOMGUARD_REDIS__ROOM__2__PASSWORD`),
/// `check-config` lists the override without showing it, and an override naming an unknown
/// room is bad input (exit 2, the key named).
#[tokio::test]
async fn row11_check_config_shows_overrides_not_secrets() {
    const SECRET: &str = "room-two-from-env-0123";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("controller.toml");
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/controller.toml")).unwrap();
    std::fs::write(&config, &seed).unwrap();
    let out = run({
        let mut cmd = roomguard(&["check-config", "--config", config.to_str().unwrap()]);
        cmd.env("ROOMGUARD_REDIS__ROOM__2__PASSWORD", SECRET);
        cmd
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("redis: no authentication, plain TCP"), "{stdout}");
    assert!(stdout.contains("redis for 192.168.99.12:6401: password, plain TCP"), "{stdout}");
    assert!(!stdout.contains("redis for 192.168.99.11:6401"), "room 1 has no override: {stdout}");
    assert!(!stdout.contains(SECRET));

    std::fs::write(&config, format!("{seed}\n[redis.room.\"9\"]\npassword = \"{SECRET}\"\n")).unwrap();
    let out = run(roomguard(&["check-config", "--config", config.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`redis.room.\"9\"` names a room that is not in `rooms`"), "{stderr}");
    assert!(!stderr.contains(SECRET));
}

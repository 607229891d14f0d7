//! Secrets from files (`password_file`, `admin_token_file`) against a password-protected lab:
//! the file's password is the one used (a wrong one fails to authenticate), systemd's
//! credentials directory (`LoadCredential=`) wins over the file beside the config, and a bad
//! file is bad input naming the key and the file, with nothing sent to Redis.

use std::time::Duration;

use roomguard::{config::Config, lab::LabSpec};

use crate::util::*;

const PASSWORD: &str = "password-from-a-file-25030";
const TOKEN: &str = "admin-token-from-a-file-25030";

async fn cli(args: &[&str], credentials: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = roomguard(args);
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    if let Some(dir) = credentials {
        cmd.env("CREDENTIALS_DIRECTORY", dir);
    }
    let out = run(cmd).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_files_and_systemd_credentials() {
    let mut lab = lab_with(LabSpec { base_port: 25030, password: Some(PASSWORD.into()), ..LabSpec::default() }).await;
    let dir = lab.dir().to_path_buf();
    let spec = LabSpec {
        base_port: port(25030),
        http_listen: format!("127.0.0.1:{}", port(25039)),
        redis_section: Some("password_file = \"redis.password\"".into()),
        ..LabSpec::default()
    };
    let toml = spec.config_toml().replace("[http]\n", "[http]\nadmin_token_file = \"admin.token\"\n");
    let config_file = dir.join("controller.toml");
    std::fs::write(&config_file, &toml).unwrap();
    let config = config_file.to_str().unwrap();
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();

    // Bad files first: bad input (exit 2) naming the key and the file; nothing sent to Redis.
    let (code, out) = cli(&["check-config", "--config", config], None).await;
    assert_eq!(code, 2, "{out}");
    let missing = dir.join("redis.password");
    assert!(
        out.contains(&format!("[redis]: `password_file` = \"redis.password\": cannot read {}", missing.display())),
        "{out}"
    );
    std::fs::write(&missing, "\n").unwrap();
    let (code, out) = cli(&["status", "--config", config], None).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("`password_file`") && out.contains("is empty"), "{out}");
    let both = toml.replace("password_file = ", "password = \"x\"\npassword_file = ");
    std::fs::write(&config_file, &both).unwrap();
    let (code, out) = cli(&["failover", "--room", "2", "--config", config], None).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("[redis]: `password` and `password_file` are both set"), "{out}");
    assert_no_replicaof(&lab, "after bad input").await;
    std::fs::write(&config_file, &toml).unwrap();

    // A wrong password in the file: the instances refuse it.
    std::fs::write(&missing, "not-the-password\n").unwrap();
    let (code, out) = cli(&["status", "--config", config], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not answer: auth (Password authentication failed"), "{out}");
    // The right one in systemd's credentials directory wins over the file beside the config
    // (as for a unit with LoadCredential=redis.password:...).
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("redis.password"), format!("{PASSWORD}\n")).unwrap();
    let (code, out) = cli(&["status", "--config", config], Some(credentials.path())).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HEALTHY"), "{out}");
    // And from the file beside the config.
    std::fs::write(&missing, format!("{PASSWORD}\n")).unwrap();
    let (code, out) = cli(&["check-config", "--config", config], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(PASSWORD) && !out.contains(TOKEN), "check-config shows a secret: {out}");

    // A controller with those settings fails over room 1 (authenticated probes and actions),
    // and its admin API takes the token from its file.
    let loaded = Config::load(&config_file).unwrap();
    assert_eq!(loaded.redis.default.password.as_ref().unwrap().expose(), PASSWORD);
    lab.config = loaded.clone();
    let c = Controller::start_with(loaded).await;
    assert_eq!(c.metric("roomguard_probe_errors_total", &[]), 0.0, "{}", c.metrics());
    let (status, body) = http_post(c.http, "/pause", Some("wrong-token-wrong-token")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_post(c.http, "/pause", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_post(c.http, "/resume", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    for id in lab.room(0) {
        lab.servers[id].kill();
    }
    assert!(c.wait_one_failover_to("2", Duration::from_secs(15)).await, "{}\n{}", c.metrics(), c.report_text());
    c.stop().await;
}

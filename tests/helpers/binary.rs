//! The `ragbox` binary as a child process: the CLI run to completion, and `ragbox
//! serve` started on a config file of the test's.

use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;

use super::eventually;
use super::models::model_dir;
use super::server::ADMIN_TOKEN;

/// The binary, with none of the caller's `RAGBOX*` or `RUST_LOG` settings.
pub fn ragbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragbox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RAGBOX") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Writes a config file for a data dir inside `dir` and returns its path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n[models]\nembedding_dir = \"{}\"\n{extra}",
            dir.join("data").display(),
            model_dir().display()
        ),
    )
    .unwrap();
    path
}

/// Runs the CLI to completion.
pub fn run(args: &[&str], config: &Path) -> Output {
    run_with_input(args, config, "")
}

/// Runs the CLI with `input` on its standard input.
pub fn run_with_input(args: &[&str], config: &Path, input: &str) -> Output {
    let mut child = ragbox()
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if super::log::enabled() {
        eprint!(
            "[ragbox {}] {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Starts `ragbox serve` and returns the child and the address it listens on.
pub fn serve(config: &Path) -> (Child, String) {
    let (child, base, _) = serve_logged(config);
    (child, base)
}

/// What a `ragbox serve` child logs, line by line.
pub struct ServerLog {
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
}

impl ServerLog {
    /// How many lines logged so far carry `message`.
    pub fn count(&self, message: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .count()
    }

    /// The whole log, once the server has exited (its end of the pipe is closed).
    pub fn after_exit(self) -> String {
        self.reader.join().unwrap();
        self.lines.lock().unwrap().join("\n")
    }
}

/// As `serve`, also keeping every line the server logs.
pub fn serve_logged(config: &Path) -> (Child, String, ServerLog) {
    spawn_logged(config, &["serve"])
}

/// Starts `ragbox worker` and returns the child, the address of its probes and its log.
pub fn worker_logged(config: &Path) -> (Child, String, ServerLog) {
    spawn_logged(config, &["worker"])
}

/// Starts a long-running command that logs `listening` with its address once it
/// listens; keeps every line it logs.
fn spawn_logged(config: &Path, args: &[&str]) -> (Child, String, ServerLog) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    let mut child = ragbox()
        .args(["--config"])
        .arg(config)
        .args(["--log-format", "json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let echo = super::log::enabled();
    let pid = child.id();
    let name = args.join(" ");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[ragbox {name} {pid}] {line}");
            }
            keep.lock().unwrap().push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the process did not log its address");
    let log = ServerLog { lines, reader };
    (child, format!("http://{addr}"), log)
}

/// Sends SIGTERM and asserts a clean exit.
pub async fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(child).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Waits up to 10 s for the child to exit; kills it and fails the test if it does
/// not.
pub async fn wait_exit(child: &mut Child) -> ExitStatus {
    let exited = eventually(Duration::from_secs(10), "the server to exit", || {
        let status = child.try_wait();
        async move { status.unwrap().ok_or("still running") }
    });
    match AssertUnwindSafe(exited).catch_unwind().await {
        Ok(status) => status,
        Err(failed) => {
            let _ = child.kill();
            std::panic::resume_unwind(failed)
        }
    }
}

/// The ids of the processes whose parent is `pid` (from `/proc`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

/// The parent of `pid`: the field after the state in `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

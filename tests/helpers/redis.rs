//! Redis for the scale-out tests: the shared server on 6379 under a key prefix of the
//! test's own, or a `redis-server` of the test's own on a free port, for tests that
//! stop it (the shared one stays up for everyone).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

/// The shared Redis of this machine.
pub const SHARED_URL: &str = "redis://127.0.0.1:6379";

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("ragbox-test-{}", uuid::Uuid::new_v4().simple())
}

/// A `redis-server` of the test's own, keeping nothing on disk: stopping it loses
/// every job it held.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.restart().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): whatever it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "redis-server to answer",
            || async move {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

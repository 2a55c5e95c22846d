//! A private `redis-server` for a test: on a unix socket in a temporary directory and on a free
//! loopback port, with no persistence; killed when the guard is dropped (also when the test panics).
//! Tests never use a system Redis on 6379.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private redis-server.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its unix socket.
    pub socket: PathBuf,
    /// Its loopback TCP port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one and waits (at most 60 s, a hang guard) until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        // A free loopback port: the kernel picks one, we release it and redis binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-deps.sh installs it)");
        let mut s = RedisServer { child: Some(child), dir, socket, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = s.try_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return s;
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited at start-up: {:?}", st);
            }
            assert!(Instant::now() < deadline, "redis-server did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `unix://` address of its socket.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Its `127.0.0.1:PORT` address.
    pub fn tcp(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(redis::ConnectionAddr::Unix(self.socket.clone()))?.get_connection()
    }

    /// A connection to it (for the test's own checks).
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().expect("connect to the private redis-server")
    }

    /// Every key matching `pattern` (SCAN, a glob).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut c = self.connection();
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query(&mut c).unwrap();
            out.extend(keys);
            cursor = next;
            if cursor == 0 {
                return out;
            }
        }
    }

    /// DBSIZE.
    pub fn dbsize(&self) -> usize {
        redis::cmd("DBSIZE").query(&mut self.connection()).unwrap()
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The `redis` transformer: values go into a Redis server and travel as keys; and `proxystore`,
//! the Python suite's ProxyStore transformer configured with a Redis connector, as the same thing.
//!
//! Every key of a run is `PREFIX:RUN-ID:KIND:UUID` (a value over 2 MiB is stored in [pieces], the
//! keys `…:UUID:0`, `…:UUID:1`, …): the run id is new for each run, so two runs
//! (or a user's own keys under the same prefix) never collide, and the driver removes exactly its
//! run's keys at the end ([`close`](Transformer::close), which the engine calls after an
//! interrupted run too). Before that:
//! * an argument's key (`a`: stored by the driver when it dispatches the task) is read and deleted
//!   in one step (`GETDEL`) by the task that takes it — nothing else ever reads it, and a task
//!   re-sent after a lost worker had not read it yet;
//! * a result's key (`r`) stays while something may read it — the driver may resolve it any
//!   number of times and children submitted later read it too — and is deleted when the engine
//!   [releases](Transformer::release) it: its task's futures are dropped and every child that takes
//!   it finished.
//!
//! Each process holds a few connections (one per thread using it at once), reused across values.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::data::{Role, Transformer, TransformerConfig};
use crate::options::{FieldSpec, OptValue, Options, Validate};
use crate::task::{DataRef, TaskError};

crate::options! {
    /// `redis`: values go through a Redis server every worker can reach.
    pub(crate) struct RedisOptions {
        /// Redis server: host:port, redis://host:port/db, a unix socket path, or unix:///path.
        address: String = "127.0.0.1:6379".into(),
        /// Namespace of the run's keys (PREFIX:RUN-ID:...); the run id keeps runs apart.
        prefix: String = "taps".into(),
        /// Seconds to wait for Redis to connect or answer before a task fails.
        timeout: f64 = 30.0,
    }
}

impl Validate for RedisOptions {
    fn validate(&self) -> Result<(), String> {
        crate::options::check_seconds("engine.transformer.timeout", self.timeout, crate::options::MAX_SECONDS)?;
        if self.timeout == 0.0 {
            return Err("engine.transformer.timeout must be more than 0 seconds".into());
        }
        if self.prefix.is_empty() {
            return Err("engine.transformer.prefix must not be empty".into());
        }
        Address::parse(&self.address).map(|_| ())
    }
}

impl TransformerConfig for RedisOptions {
    /// A new run id under `prefix`; workers get the run's whole namespace as their prefix.
    fn get_transformer(&self, run_dir: &Path) -> Result<(Box<dyn Transformer>, toml::Table), String> {
        let run = run_dir.file_name().unwrap_or_default().to_string_lossy();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let namespace = format!("{}:{}-{}", self.prefix, run, &id[..8]);
        let t = RedisTransformer::new(self, namespace.clone(), true)?;
        let worker = RedisOptions { prefix: namespace, ..self.clone() };
        Ok((Box::new(t), Options::to_table(&worker)))
    }

    fn attach(&self) -> Result<Box<dyn Transformer>, String> {
        Ok(Box::new(RedisTransformer::new(self, self.prefix.clone(), false)?))
    }

    /// Redis answers `PING` at the address.
    fn preflight(&self) -> Result<(), String> {
        let addr = Address::parse(&self.address)?;
        let fail = |e: redis::RedisError| {
            format!(
                "engine.transformer.address {}: cannot reach Redis there ({}); start redis-server or name a running \
                 one (host:port, redis://host:port/db, a unix socket path or unix:///path)",
                addr.shown, e
            )
        };
        let mut c = connect(&addr.client, secs(self.timeout)).map_err(fail)?;
        redis::cmd("PING").query::<String>(&mut c).map_err(fail)?;
        Ok(())
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Values above this size travel in pieces of this size, one key each, all written (and read) in
/// one pipeline. Redis's allocator gives a value of 8 MiB or more fresh pages every time it is
/// stored (jemalloc's `oversize_threshold`), and faulting them in was most of what a 10 MB value
/// cost: as 2 MiB pieces, the server takes 55× fewer page faults and a third of the CPU, and the
/// four transfers of a task's 10 MB go 3× faster. A value may then also exceed the server's
/// `proto-max-bulk-len`.
const PIECE: usize = 2 << 20;

/// The keys of a value of `size` bytes stored under `key`, with the bytes each holds: `key`
/// itself for a value of at most one piece, else `key:0`, `key:1`, … (inside the run's namespace,
/// so the end of the run removes them like any other key).
fn pieces(key: &str, size: usize) -> Vec<(String, std::ops::Range<usize>)> {
    if size <= PIECE {
        return vec![(key.to_string(), 0..size)];
    }
    (0..size.div_ceil(PIECE)).map(|i| (format!("{}:{}", key, i), i * PIECE..((i + 1) * PIECE).min(size))).collect()
}

/// The keys alone of [`pieces`].
fn piece_keys(key: &str, size: usize) -> Vec<String> {
    pieces(key, size).into_iter().map(|(k, _)| k).collect()
}

/// What reading a value found instead of the value.
enum Missing {
    /// This key is gone.
    Gone(String),
    /// This key holds so many bytes, not the expected number.
    Holds(String, usize, usize),
}

/// Puts the replies to reading `parts` (a value's pieces) together into the value.
fn assemble(parts: &[(String, std::ops::Range<usize>)], replies: Vec<Option<Vec<u8>>>) -> Result<Vec<u8>, Missing> {
    let size = parts.last().map_or(0, |(_, r)| r.end);
    let mut value = Vec::with_capacity(size);
    for ((k, r), got) in parts.iter().zip(replies) {
        match got {
            None => return Err(Missing::Gone(k.clone())),
            Some(v) if v.len() != r.len() => return Err(Missing::Holds(k.clone(), v.len(), r.len())),
            Some(v) => value.extend_from_slice(&v),
        }
    }
    Ok(value)
}

/// A parsed `address`: the client, and the address as shown in messages.
struct Address {
    client: redis::Client,
    shown: String,
}

impl Address {
    /// `redis://…`, `unix://…`, `redis+unix://…` URLs; a path (with a `/`) is a unix socket;
    /// `host:port`, `[v6]:port` or `host` (port 6379) is TCP.
    fn parse(s: &str) -> Result<Address, String> {
        let bad = |why: String| {
            format!(
                "engine.transformer.address {:?}: {}; expected host:port, redis://host:port/db, a unix socket path \
                 or unix:///path",
                s, why
            )
        };
        let s = s.trim();
        if s.contains("://") {
            let client = redis::Client::open(s).map_err(|e| bad(e.to_string()))?;
            return Ok(Address { client, shown: s.to_string() });
        }
        if s.contains('/') {
            let path = std::path::absolute(s).map_err(|e| bad(e.to_string()))?;
            let client =
                redis::Client::open(redis::ConnectionAddr::Unix(path.clone())).map_err(|e| bad(e.to_string()))?;
            return Ok(Address { client, shown: format!("unix://{}", path.display()) });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || (h.starts_with('[') && h.ends_with(']')) => {
                let port =
                    p.parse::<u16>().map_err(|_| bad(format!("port {:?} is not a number from 0 to 65535", p)))?;
                (h.trim_start_matches('[').trim_end_matches(']').to_string(), port)
            }
            _ => (s.to_string(), 6379),
        };
        if host.is_empty() {
            return Err(bad("no host".into()));
        }
        let shown = format!("{}:{}", host, port);
        let client = redis::Client::open(redis::ConnectionAddr::Tcp(host, port)).map_err(|e| bad(e.to_string()))?;
        Ok(Address { client, shown })
    }
}

/// A connection with read and write timeouts.
fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

/// A plain connection for the values themselves: `SET` and `GET`/`GETDEL` written and read in
/// Redis's protocol straight from and into the value's buffer. The redis crate's connection copies
/// a value into its command buffer and parses a reply through a small buffered reader, which made
/// a 10 MB value cost about 3× the bytes' own trip through the socket.
struct Raw {
    stream: std::io::BufReader<Stream>,
}

/// A Unix or TCP stream to Redis.
enum Stream {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl std::io::Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(b),
            Stream::Tcp(s) => s.read(b),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(b),
            Stream::Tcp(s) => s.write(b),
        }
    }
    fn write_vectored(&mut self, b: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(b),
            Stream::Tcp(s) => s.write_vectored(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends the command `args` in Redis's protocol to `out`; with `more`, the count announces one
/// more argument, which the caller writes after.
fn command(out: &mut Vec<u8>, args: &[&[u8]], more: bool) {
    out.extend_from_slice(format!("*{}\r\n", args.len() + usize::from(more)).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A Redis error reply or a broken protocol, as an I/O error.
fn protocol(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

impl Raw {
    /// Connects to `info`'s server (TCP or Unix; TLS is left to the redis crate: `None`), logs in
    /// and selects its database.
    fn connect(info: &redis::ConnectionInfo, timeout: Duration) -> Option<std::io::Result<Raw>> {
        let stream = match info.addr() {
            redis::ConnectionAddr::Unix(path) => std::os::unix::net::UnixStream::connect(path).and_then(|s| {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Ok(Stream::Unix(s))
            }),
            redis::ConnectionAddr::Tcp(host, port) => {
                use std::net::ToSocketAddrs;
                (host.as_str(), *port).to_socket_addrs().and_then(|mut addrs| {
                    let a = addrs.next().ok_or_else(|| protocol(format!("{} has no address", host)))?;
                    let s = std::net::TcpStream::connect_timeout(&a, timeout)?;
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(timeout))?;
                    s.set_write_timeout(Some(timeout))?;
                    Ok(Stream::Tcp(s))
                })
            }
            _ => return None,
        };
        Some(stream.and_then(|s| {
            let mut raw = Raw { stream: std::io::BufReader::with_capacity(1 << 16, s) };
            let r = info.redis_settings();
            if let Some(pass) = r.password() {
                match r.username() {
                    Some(user) => raw.simple(&[b"AUTH", user.as_bytes(), pass.as_bytes()])?,
                    None => raw.simple(&[b"AUTH", pass.as_bytes()])?,
                }
            }
            if r.db() != 0 {
                raw.simple(&[b"SELECT", r.db().to_string().as_bytes()])?;
            }
            Ok(raw)
        }))
    }

    /// Writes a command whose last argument is `value` (not copied).
    fn send(&mut self, args: &[&[u8]], value: Option<&[u8]>) -> std::io::Result<()> {
        use std::io::Write;
        let mut head = Vec::new();
        command(&mut head, args, value.is_some());
        let s = self.stream.get_mut();
        match value {
            None => s.write_all(&head),
            Some(v) => {
                head.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                let mut parts =
                    [std::io::IoSlice::new(&head), std::io::IoSlice::new(v), std::io::IoSlice::new(b"\r\n")];
                let mut parts = &mut parts[..];
                while !parts.is_empty() {
                    let n = s.write_vectored(parts)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    std::io::IoSlice::advance_slices(&mut parts, n);
                }
                Ok(())
            }
        }
    }

    /// The next reply line, without its CRLF.
    fn line(&mut self) -> std::io::Result<String> {
        use std::io::BufRead;
        let mut l = String::new();
        if self.stream.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match l.strip_suffix("\r\n") {
            Some(body) => Ok(body.to_string()),
            None => Err(protocol(format!("a reply line without CRLF: {:?}", l))),
        }
    }

    /// A command answered `+OK`-like (a simple string).
    fn simple(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        self.send(args, None)?;
        self.expect_simple()
    }

    fn expect_simple(&mut self) -> std::io::Result<()> {
        let l = self.line()?;
        match l.as_bytes().first() {
            Some(b'+') => Ok(()),
            Some(b'-') => Err(protocol(l[1..].to_string())),
            _ => Err(protocol(format!("unexpected reply {:?}", l))),
        }
    }

    /// `SET` of each of the value's pieces, in one pipeline.
    fn set(&mut self, key: &str, value: &[u8]) -> std::io::Result<()> {
        let parts = pieces(key, value.len());
        for (k, r) in &parts {
            self.send(&[b"SET", k.as_bytes()], Some(&value[r.clone()]))?;
        }
        // Every reply read, so that the connection stays in step; the first error returned.
        let mut first = Ok(());
        for _ in &parts {
            let r = self.expect_simple();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// `op` (`GET` or `GETDEL`) of each of the value's pieces, in one pipeline, each read straight
    /// into its place in the value.
    fn get(&mut self, op: &str, key: &str, size: usize) -> std::io::Result<Result<Vec<u8>, Missing>> {
        use std::io::{Read, Write};
        let parts = pieces(key, size);
        let mut asks = Vec::new();
        for (k, _) in &parts {
            command(&mut asks, &[op.as_bytes(), k.as_bytes()], false);
        }
        self.stream.get_mut().write_all(&asks)?;
        let mut value = vec![0u8; size];
        let mut missing = None;
        for (k, r) in &parts {
            let l = self.line()?;
            let n = match l.as_bytes().first() {
                Some(b'$') => l[1..].parse::<i64>().map_err(|_| protocol(format!("unexpected reply {:?}", l)))?,
                Some(b'-') => return Err(protocol(l[1..].to_string())),
                _ => return Err(protocol(format!("unexpected reply {:?}", l))),
            };
            if n < 0 {
                missing.get_or_insert(Missing::Gone(k.clone()));
                continue;
            }
            let n = n as usize;
            if n == r.len() {
                self.stream.read_exact(&mut value[r.clone()])?;
            } else {
                std::io::copy(&mut (&mut self.stream).take(n as u64), &mut std::io::sink())?;
                missing.get_or_insert(Missing::Holds(k.clone(), n, r.len()));
            }
            let mut crlf = [0u8; 2];
            self.stream.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(protocol("a value not followed by CRLF".into()));
            }
        }
        Ok(match missing {
            Some(m) => Err(m),
            None => Ok(value),
        })
    }
}

/// [`Raw::set`] through the redis crate (TLS).
fn set_pieces(c: &mut redis::Connection, key: &str, value: &[u8]) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    for (k, r) in pieces(key, value.len()) {
        p.cmd("SET").arg(k).arg(&value[r]).ignore();
    }
    p.query(c)
}

/// [`Raw::get`] through the redis crate (TLS).
fn get_pieces(
    c: &mut redis::Connection,
    op: &str,
    key: &str,
    size: usize,
) -> redis::RedisResult<Result<Vec<u8>, Missing>> {
    let parts = pieces(key, size);
    let mut p = redis::pipe();
    for (k, _) in &parts {
        p.cmd(op).arg(k);
    }
    Ok(assemble(&parts, p.query(c)?))
}

/// What Redis itself costs one task's values through the `redis` transformer, for `taps bench`:
/// the transformer's four transfers of `bytes` (the driver stores the argument, the task takes it,
/// the task stores its result, the driver reads it) as two `SET` + `GETDEL` pairs from one plain
/// connection, `reps` times after one warm-up; the milliseconds of each repetition.
pub(crate) fn floor_ms(address: &str, bytes: usize, reps: u64) -> Result<Vec<f64>, String> {
    let addr = Address::parse(address)?;
    let mut raw = match Raw::connect(addr.client.get_connection_info(), secs(30.0)) {
        Some(r) => r.map_err(|e| format!("Redis at {}: {}", addr.shown, e))?,
        None => return Err(format!("Redis at {}: a TLS address has no plain connection to measure", addr.shown)),
    };
    let key = format!("taps-bench-floor:{}", uuid::Uuid::new_v4().simple());
    let value: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut times = Vec::new();
    let mut measure = || -> Result<(), String> {
        for rep in 0..=reps {
            let mut took = 0.0;
            for _ in 0..2 {
                let t = std::time::Instant::now();
                raw.set(&key, &value).map_err(|e| format!("Redis at {}: SET: {}", addr.shown, e))?;
                let got =
                    raw.get("GETDEL", &key, bytes).map_err(|e| format!("Redis at {}: GETDEL: {}", addr.shown, e))?;
                took += t.elapsed().as_secs_f64() * 1e3;
                // Checked off the clock: the value came back whole.
                if got.ok().as_deref() != Some(value.as_slice()) {
                    return Err(format!("Redis at {}: GETDEL did not return the value just stored", addr.shown));
                }
            }
            if rep > 0 {
                times.push(took);
            }
        }
        Ok(())
    };
    if let Err(e) = measure() {
        // The key of a SET whose GETDEL failed stays in the user's Redis: removed on a fresh
        // connection, as far as the server still answers.
        if let Ok(mut c) = addr.client.get_connection_with_timeout(secs(5.0)) {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(piece_keys(&key, bytes)).query(&mut c);
        }
        return Err(e);
    }
    Ok(times)
}

/// Values stored under one run's namespace in a Redis server.
pub(crate) struct RedisTransformer {
    addr: Address,
    namespace: String,
    timeout: Duration,
    /// Idle connections, reused by whichever thread needs one next.
    idle: Mutex<Vec<redis::Connection>>,
    /// Idle plain connections for values (see [`Raw`]).
    idle_raw: Mutex<Vec<Raw>>,
    /// The driver's: removes the namespace at close.
    owner: bool,
    /// Set at close (under the write lock); stores hold the read lock, so none runs after it.
    closed: RwLock<bool>,
    /// A store or read failed for lack of a connection (its message says so once per process).
    unreachable: AtomicBool,
}

impl RedisTransformer {
    fn new(o: &RedisOptions, namespace: String, owner: bool) -> Result<Self, String> {
        Ok(RedisTransformer {
            addr: Address::parse(&o.address)?,
            namespace,
            timeout: secs(o.timeout),
            idle: Mutex::new(Vec::new()),
            idle_raw: Mutex::new(Vec::new()),
            owner,
            closed: RwLock::new(false),
            unreachable: AtomicBool::new(false),
        })
    }

    /// Runs `f` on an idle connection (or a new one); a connection that failed is dropped.
    fn with<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> redis::RedisResult<T> {
        let reused = self.idle.lock().unwrap().pop();
        let mut c = match reused {
            Some(c) => c,
            None => connect(&self.addr.client, self.timeout)?,
        };
        let out = f(&mut c)?;
        self.idle.lock().unwrap().push(c);
        Ok(out)
    }

    /// Runs `f` on an idle plain connection (or a new one), else through the redis crate
    /// (`fallback`: TLS); a connection that failed is dropped.
    fn with_raw<T>(
        &self,
        f: impl FnOnce(&mut Raw) -> std::io::Result<T>,
        fallback: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let reused = self.idle_raw.lock().unwrap().pop();
        let mut c = match reused {
            Some(c) => c,
            None => match Raw::connect(self.addr.client.get_connection_info(), self.timeout) {
                Some(c) => c.map_err(|e| e.to_string())?,
                None => return self.with(fallback).map_err(|e| e.to_string()),
            },
        };
        let out = f(&mut c).map_err(|e| e.to_string())?;
        self.idle_raw.lock().unwrap().push(c);
        Ok(out)
    }

    /// The task error for a failed Redis operation (`e` says why).
    fn raw_error(&self, what: &str, e: String) -> TaskError {
        self.unreachable.store(true, Ordering::Relaxed);
        TaskError::new("RedisError", format!("Redis at {}: cannot {}: {}", self.addr.shown, what, e))
    }

    /// The task error for a failed Redis operation.
    fn error(&self, what: &str, e: redis::RedisError) -> TaskError {
        self.unreachable.store(true, Ordering::Relaxed);
        TaskError::new("RedisError", format!("Redis at {}: cannot {}: {}", self.addr.shown, what, e))
    }

    /// Whether `key` is an argument's (read once, by the task that takes it).
    fn is_argument(&self, key: &str) -> bool {
        key.strip_prefix(self.namespace.as_str()).is_some_and(|k| k.starts_with(":a:"))
    }
}

impl Transformer for RedisTransformer {
    fn put(&self, bytes: &[u8], role: Role) -> Result<DataRef, TaskError> {
        let closed = self.closed.read().unwrap();
        if *closed {
            return Err(TaskError::new("RedisError", "the run's Redis store was closed at the end of the run"));
        }
        let kind = match role {
            Role::Argument => "a",
            Role::Result => "r",
        };
        let key = format!("{}:{}:{}", self.namespace, kind, uuid::Uuid::new_v4().simple());
        self.with_raw(|c| c.set(&key, bytes), |c| set_pieces(c, &key, bytes))
            .map_err(|e| self.raw_error(&format!("store {}", key), e))?;
        Ok(DataRef { key, size: bytes.len() as u64 })
    }

    /// An argument's value is deleted as it is read; a result's stays until the end of the run.
    fn get(&self, r: &DataRef) -> Result<bytes::Bytes, TaskError> {
        let op = if self.is_argument(&r.key) { "GETDEL" } else { "GET" };
        let v = self
            .with_raw(|c| c.get(op, &r.key, r.size as usize), |c| get_pieces(c, op, &r.key, r.size as usize))
            .map_err(|e| self.raw_error(&format!("read {}", r.key), e))?;
        match v {
            Ok(v) => Ok(bytes::Bytes::from(v)),
            Err(Missing::Holds(key, has, expected)) => Err(TaskError::new(
                "DataMissing",
                format!("Redis at {}: key {} holds {} bytes, expected {}", self.addr.shown, key, has, expected),
            )),
            Err(Missing::Gone(key)) => Err(TaskError::new(
                "DataMissing",
                format!(
                    "Redis at {}: key {} is gone (deleted or evicted behind the run's back, or Redis restarted)",
                    self.addr.shown, key
                ),
            )),
        }
    }

    /// Deletes a result's key of this run (as long as the store is open).
    fn release(&self, r: &DataRef) {
        let closed = self.closed.read().unwrap();
        if *closed || self.is_argument(&r.key) || !r.key.starts_with(self.namespace.as_str()) {
            return;
        }
        let keys = piece_keys(&r.key, r.size as usize);
        if let Err(e) = self.with(|c| redis::cmd("UNLINK").arg(keys).query::<usize>(c)) {
            tracing::debug!(target: "taps.engine.transform", "Redis at {}: cannot delete {}: {}", self.addr.shown, r.key, e);
        }
    }

    /// Deletes every key of the run (driver only); workers remove nothing.
    fn close(&self) -> Result<(), TaskError> {
        if !self.owner {
            return Ok(());
        }
        *self.closed.write().unwrap() = true;
        let pattern = format!("{}:*", glob_escape(&self.namespace));
        let removed = self.with(|c| {
            let mut cursor: u64 = 0;
            let mut n = 0usize;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(c)?;
                if !keys.is_empty() {
                    n += redis::cmd("UNLINK").arg(&keys).query::<usize>(c)?;
                }
                cursor = next;
                if cursor == 0 {
                    return Ok(n);
                }
            }
        });
        let n = removed.map_err(|e| self.error(&format!("remove the run's keys ({})", pattern), e))?;
        tracing::debug!(target: "taps.engine.transform", "Removed {} key(s) of the run from Redis at {}", n, self.addr.shown);
        Ok(())
    }
}

/// `s` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// `proxystore`: the Python suite's ProxyStore transformer. Only its Redis connector is
/// supported; it runs as the [`redis`](RedisOptions) transformer. The ProxyStore flags
/// (`async_resolve`, `cache_size`, `extract_target`, `metrics`, `populate_target`) are accepted
/// and kept in `config.toml`: taps always resolves a value once, on the worker, before the task
/// runs. Other keys (ProxyStore `Store` arguments) are accepted and kept too.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProxyStoreOptions {
    /// The `connector` table (`kind`, `options`).
    pub connector: toml::Table,
    /// The Redis transformer it runs as.
    pub redis: RedisOptions,
    /// Every other key, as given.
    pub rest: toml::Table,
}

/// ProxyStore keys taps accepts and ignores, with their defaults (help only).
const PROXYSTORE_FLAGS: &[(&str, &str, &str, &str)] = &[
    (
        "async_resolve",
        "true|false",
        "false",
        "ProxyStore: resolve proxies asynchronously (taps resolves before the task runs)",
    ),
    ("cache_size", "non-negative integer", "16", "ProxyStore: Store cache size (taps reads each value once)"),
    ("extract_target", "true|false", "false", "ProxyStore: pass the target, not the proxy (what taps always does)"),
    ("metrics", "true|false", "false", "ProxyStore: Store metrics (taps records bytes_by_reference per task instead)"),
    ("populate_target", "true|false", "true", "ProxyStore: proxies carry their target locally"),
];

impl ProxyStoreOptions {
    /// The Redis transformer's options from the connector table.
    fn from_connector(c: &toml::Table, prefix: String) -> Result<RedisOptions, String> {
        let sec = "engine.transformer.connector";
        let kind = match c.get("kind") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => return Err(format!("{}.kind: expected string, got {}", sec, crate::options::describe(v))),
            None => return Err(crate::options::required_error(sec, "kind", "string")),
        };
        let short = kind.rsplit('.').next().unwrap_or_default().to_ascii_lowercase();
        if short != "redis" && short != "redisconnector" {
            return Err(format!(
                "{}.kind {:?}: taps supports only the redis connector of ProxyStore (kind = \"redis\"); for files use \
                 --engine.transformer file",
                sec, kind
            ));
        }
        let empty = toml::Table::new();
        let opts = match c.get("options") {
            None => &empty,
            Some(toml::Value::Table(t)) => t,
            Some(v) => return Err(format!("{}.options: expected a table, got {}", sec, crate::options::describe(v))),
        };
        let known = ["hostname", "port", "clear", "kwargs"];
        if let Some(k) = opts.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(crate::options::unknown_key(&format!("{}.options", sec), k, &known));
        }
        let kwargs = match opts.get("kwargs") {
            None => empty.clone(),
            Some(v) => toml::Table::from_toml(v).map_err(|e| format!("{}.options.kwargs: {}", sec, e))?,
        };
        let kw_known = ["unix_socket_path", "db"];
        if let Some(k) = kwargs.keys().find(|k| !kw_known.contains(&k.as_str())) {
            return Err(crate::options::unknown_key(&format!("{}.options.kwargs", sec), k, &kw_known));
        }
        let get = |t: &toml::Table, k: &str| t.get(k).map(|v| crate::options::render(v).trim_matches('"').to_string());
        let db = get(&kwargs, "db");
        let address = match get(&kwargs, "unix_socket_path") {
            Some(path) => {
                let path =
                    PathBuf::from_cli(&path).map_err(|e| format!("{}.options.kwargs.unix_socket_path: {}", sec, e))?;
                let url = format!("unix://{}", path.display());
                db.map_or(url.clone(), |d| format!("{}?db={}", url, d))
            }
            None => {
                let host = get(opts, "hostname").unwrap_or_else(|| "127.0.0.1".into());
                let port = match opts.get("port") {
                    None => 6379,
                    Some(v) => i64::from_toml(v).ok().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| {
                        format!(
                            "{}.options.port: expected a port from 0 to 65535, got {}",
                            sec,
                            crate::options::describe(v)
                        )
                    })?,
                };
                let host = if host.contains(':') { format!("[{}]", host) } else { host };
                format!("redis://{}:{}/{}", host, port, db.unwrap_or_else(|| "0".into()))
            }
        };
        let r = RedisOptions { address, prefix, ..RedisOptions::default() };
        r.validate().map_err(|e| format!("{}: {}", sec, e))?;
        Ok(r)
    }
}

impl Options for ProxyStoreOptions {
    fn fields() -> Vec<FieldSpec> {
        let mut f = vec![
            FieldSpec {
                name: "connector",
                ty: toml::Table::type_name(),
                default: None,
                doc: "ProxyStore connector: {kind = \"redis\", options = {hostname, port}}",
                parse_cli: crate::options::parse_cli_value::<toml::Table>,
            },
            FieldSpec {
                name: "connector.kind",
                ty: "string".into(),
                default: None,
                doc: "ProxyStore connector kind: only \"redis\" is supported",
                parse_cli: crate::options::parse_cli_value::<String>,
            },
            FieldSpec {
                name: "connector.options",
                ty: toml::Table::type_name(),
                default: Some("{}".into()),
                doc: "Redis connector options: hostname, port, kwargs.unix_socket_path, kwargs.db",
                parse_cli: crate::options::parse_cli_value::<toml::Table>,
            },
            FieldSpec {
                name: "prefix",
                ty: "string".into(),
                default: Some("\"taps\"".into()),
                doc: "taps: namespace of the run's keys (PREFIX:RUN-ID:...)",
                parse_cli: crate::options::parse_cli_value::<String>,
            },
        ];
        for &(name, ty, default, doc) in PROXYSTORE_FLAGS {
            let parse_cli = if ty == "true|false" {
                crate::options::parse_cli_value::<bool>
            } else {
                crate::options::parse_cli_value::<u64>
            };
            f.push(FieldSpec { name, ty: ty.into(), default: Some(default.into()), doc, parse_cli });
        }
        f
    }

    /// `connector.kind` / `connector.options` keys (as CLI flags set them) merge into `connector`.
    fn from_table(t: &toml::Table, section: &str) -> Result<Self, String> {
        let mut connector = match t.get("connector") {
            None => toml::Table::new(),
            Some(v) => toml::Table::from_toml(v).map_err(|e| format!("{}.connector: {}", section, e))?,
        };
        let mut rest = toml::Table::new();
        let mut prefix = RedisOptions::default().prefix;
        for (k, v) in t {
            match k.as_str() {
                "name" | "connector" => {}
                "connector.kind" | "connector.options" => {
                    let key = k.trim_start_matches("connector.").to_string();
                    let v = match (connector.remove(&key), v) {
                        (Some(toml::Value::Table(mut a)), toml::Value::Table(b)) => {
                            a.extend(b.clone());
                            toml::Value::Table(a)
                        }
                        (_, v) => v.clone(),
                    };
                    connector.insert(key, v);
                }
                "prefix" => prefix = String::from_toml(v).map_err(|e| format!("{}.prefix: {}", section, e))?,
                _ => {
                    if let Some(&(name, ty, _, _)) = PROXYSTORE_FLAGS.iter().find(|f| f.0 == k) {
                        let ok = if ty == "true|false" {
                            bool::from_toml(v).map(|_| ())
                        } else {
                            u64::from_toml(v).map(|_| ())
                        };
                        ok.map_err(|e| format!("{}.{}: {}", section, name, e))?;
                    }
                    rest.insert(k.clone(), v.clone());
                }
            }
        }
        if connector.is_empty() {
            return Err(format!(
                "{}.connector is required: set it with --{}.connector.kind redis --{}.connector.options \
                 '{{\"hostname\": \"HOST\", \"port\": PORT}}' or in the [{}.connector] table",
                section, section, section, section
            ));
        }
        let flag = |k: &str| rest.get(k).and_then(|v| bool::from_toml(v).ok()).unwrap_or(false);
        if flag("async_resolve") && flag("extract_target") {
            return Err(format!(
                "{}: Options async_resolve and extract_target cannot be enabled at the same time.",
                section
            ));
        }
        let redis = Self::from_connector(&connector, prefix)?;
        Ok(ProxyStoreOptions { connector, redis, rest })
    }

    fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("connector".into(), toml::Value::Table(self.connector.clone()));
        if self.redis.prefix != RedisOptions::default().prefix {
            t.insert("prefix".into(), toml::Value::String(self.redis.prefix.clone()));
        }
        t.extend(self.rest.clone());
        t
    }
}

impl TransformerConfig for ProxyStoreOptions {
    fn get_transformer(&self, run_dir: &Path) -> Result<(Box<dyn Transformer>, toml::Table), String> {
        let (t, worker) = self.redis.get_transformer(run_dir)?;
        let mut w = self.to_table();
        w.insert("prefix".into(), worker.get("prefix").cloned().unwrap_or(toml::Value::String(String::new())));
        Ok((t, w))
    }

    fn attach(&self) -> Result<Box<dyn Transformer>, String> {
        self.redis.attach()
    }

    fn preflight(&self) -> Result<(), String> {
        if self.rest.get("metrics").and_then(|v| bool::from_toml(v).ok()).unwrap_or(false) {
            tracing::warn!(target: "taps.run", "engine.transformer.metrics: ProxyStore metrics are not written by taps; tasks.jsonl records bytes_by_reference per task");
        }
        self.redis.preflight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn addresses_parse_to_tcp_or_unix() {
        for (a, shown) in [
            ("127.0.0.1:7000", "127.0.0.1:7000"),
            ("localhost", "localhost:6379"),
            ("[::1]:7001", "::1:7001"),
            ("/tmp/r.sock", "unix:///tmp/r.sock"),
            ("redis://h:1/2", "redis://h:1/2"),
            ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
        ] {
            assert_eq!(Address::parse(a).unwrap().shown, shown, "{}", a);
        }
        for bad in ["h:port", ":1", "http://x:1"] {
            let e = Address::parse(bad).err().unwrap();
            assert!(e.contains("expected host:port"), "{}", e);
        }
    }

    /// A private redis-server on a unix socket (with `extra` arguments), stopped when dropped
    /// (also when an assertion fails).
    struct Server {
        child: std::process::Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl Server {
        fn start(extra: &[&str]) -> (Server, redis::Connection) {
            let dir = tempfile::tempdir().unwrap();
            let sock = dir.path().join("r.sock");
            let child = std::process::Command::new("redis-server")
                .args(["--port", "0", "--unixsocket"])
                .arg(&sock)
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .args(extra)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (scripts/install-deps.sh installs it)");
            let server = Server { child, url: format!("unix://{}", sock.display()), _dir: dir };
            let client = redis::Client::open(server.url.as_str()).unwrap();
            let t = std::time::Instant::now();
            loop {
                match client.get_connection() {
                    Ok(c) => return (server, c),
                    Err(e) if t.elapsed() > Duration::from_secs(30) => panic!("redis-server did not start: {}", e),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn keys(c: &mut redis::Connection) -> Vec<String> {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
        k.sort();
        k
    }

    /// A measurement that fails between `SET` and `GETDEL` (a real Redis without `GETDEL`)
    /// leaves no key behind, of a value in one piece or in several.
    #[test]
    fn a_failed_floor_measurement_leaves_no_key() {
        let (server, mut c) = Server::start(&["--rename-command", "GETDEL", ""]);
        for bytes in [1000, PIECE + 1] {
            let e = floor_ms(&server.url, bytes, 2).unwrap_err();
            assert!(e.contains("GETDEL"), "{}", e);
            assert_eq!(keys(&mut c), Vec::<String>::new());
        }
    }

    /// A value over one piece is stored as its pieces (`KEY:0`, `KEY:1`, … holding consecutive
    /// slices), read back whole by both paths (plain connection and redis crate), deleted piece
    /// by piece as an argument is read and as a result is released; a piece that vanished fails
    /// the read naming that piece's key.
    #[test]
    fn a_large_value_travels_in_pieces_and_every_piece_is_removed() {
        let (server, mut c) = Server::start(&[]);
        let o = RedisOptions { address: server.url.clone(), ..Default::default() };
        let t = RedisTransformer::new(&o, "taps:unit".into(), true).unwrap();
        let value: Vec<u8> = (0..2 * PIECE + 12_345).map(|i| (i % 251) as u8).collect();
        let arg = t.put(&value, Role::Argument).unwrap();
        let stored = keys(&mut c);
        assert_eq!(stored, (0..3).map(|i| format!("{}:{}", arg.key, i)).collect::<Vec<_>>());
        let tail: Vec<u8> = redis::cmd("GET").arg(&stored[2]).query(&mut c).unwrap();
        assert_eq!(tail, value[2 * PIECE..]);
        assert_eq!(&t.get(&arg).unwrap()[..], &value[..]);
        assert_eq!(keys(&mut c), Vec::<String>::new(), "GETDEL leaves no piece");

        // A result is read as often as asked, by the plain path and the redis crate's alike.
        let res = t.put(&value, Role::Result).unwrap();
        assert_eq!(&t.get(&res).unwrap()[..], &value[..]);
        assert_eq!(get_pieces(&mut c, "GET", &res.key, value.len()).unwrap().ok().unwrap(), value);
        set_pieces(&mut c, "taps:unit:r:crate", &value).unwrap();
        let by_crate = DataRef { key: "taps:unit:r:crate".into(), size: value.len() as u64 };
        assert_eq!(&t.get(&by_crate).unwrap()[..], &value[..]);
        t.release(&by_crate);
        t.release(&res);
        assert_eq!(keys(&mut c), Vec::<String>::new(), "release leaves no piece");

        let arg = t.put(&value, Role::Argument).unwrap();
        let gone = format!("{}:1", arg.key);
        redis::cmd("DEL").arg(&gone).query::<()>(&mut c).unwrap();
        let e = t.get(&arg).unwrap_err();
        assert_eq!(e.kind, "DataMissing");
        assert!(e.message.contains(&format!("key {} is gone", gone)), "{}", e.message);
        let res = t.put(&value, Role::Result).unwrap();
        redis::cmd("SET").arg(format!("{}:2", res.key)).arg("short").query::<()>(&mut c).unwrap();
        let e = t.get(&res).unwrap_err();
        assert!(e.message.contains(&format!("key {}:2 holds 5 bytes, expected 12345", res.key)), "{}", e.message);
        // The plain connection stayed in step: the next read works.
        assert_eq!(&t.get(&DataRef { size: 5, key: format!("{}:2", res.key) }).unwrap()[..], b"short");
        t.close().unwrap();
        assert_eq!(keys(&mut c), Vec::<String>::new(), "close leaves no piece");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn proxystore_with_a_redis_connector_is_the_redis_transformer() {
        let o = ProxyStoreOptions::from_table(
            &table("connector = { kind = \"redis\", options = { hostname = \"h\", port = 7000 } }\nregister = false"),
            "engine.transformer",
        )
        .unwrap();
        assert_eq!(o.redis.address, "redis://h:7000/0");
        assert_eq!(ProxyStoreOptions::from_table(&o.to_table(), "engine.transformer").unwrap(), o);
        let flags =
            table("\"connector.kind\" = \"redis\"\n\"connector.options\" = { kwargs = { unix_socket_path = \"/s\" } }");
        assert_eq!(ProxyStoreOptions::from_table(&flags, "e").unwrap().redis.address, "unix:///s");
        let file = table("connector = { kind = \"file\", options = { store_dir = \"x\" } }");
        let e = ProxyStoreOptions::from_table(&file, "engine.transformer").unwrap_err();
        assert!(e.contains("only the redis connector"), "{}", e);
        let both = table("connector = { kind = \"redis\" }\nasync_resolve = true\nextract_target = true");
        let e = ProxyStoreOptions::from_table(&both, "engine.transformer").unwrap_err();
        assert!(e.contains("cannot be enabled at the same time"), "{}", e);
    }
}

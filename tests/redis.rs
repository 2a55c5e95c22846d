//! The `redis` transformer (and `proxystore` with a Redis connector) through the real `taps` CLI,
//! against a private redis-server each test starts (unix socket + loopback port) and kills at the
//! end: values arrive intact on every executor, records count the bytes moved by reference, no
//! key of the run is left in Redis afterwards (also after Ctrl-C), and a Redis that is down, a
//! key deleted behind a task's back and a Redis killed mid-run each end in a clear error.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_bad_input, check_record_invariants, records, run_ok, show, the_run_dir, wait_for, wait_or_kill};
use redis_server::RedisServer;

const TAPS: &str = env!("CARGO_BIN_EXE_taps");

/// `taps run` of the synthetic app through Redis at `address` on `executor`.
fn synthetic(address: &str, executor: &str, structure: &str, tasks: u64, bytes: u64) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--app", "synthetic", "--app.structure", structure, "--app.task-count"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend([tasks.to_string(), "--app.task-data-bytes".into(), bytes.to_string()]);
    a.extend(["--engine.executor".into(), executor.into()]);
    match executor {
        "process-pool" => a.extend(["--engine.executor.max-processes".into(), "2".into()]),
        "mpi" => a.extend(["--engine.executor.ranks".into(), "3".into()]),
        _ => a.extend(["--engine.executor.max-threads".into(), "2".into()]),
    }
    if structure == "bag" {
        a.extend(["--app.bag-max-running".into(), "2".into()]);
    }
    a.extend(["--engine.filter", "object-size", "--engine.filter.min-size", "1000"].map(String::from));
    a.extend(["--engine.transformer".into(), "redis".into(), "--engine.transformer.address".into(), address.into()]);
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A `taps` command in `dir` with the environment mpirun needs as root.
fn taps_cmd(dir: &Path, args: &[String]) -> Command {
    let mut c = Command::new(TAPS);
    c.args(args)
        .current_dir(dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
        .env_remove("TAPS_WORKER");
    c
}

/// Waits until the run in `dir` has written `n` records (its keys come and go too fast to watch:
/// a result's key is deleted once the app dropped its future).
fn wait_for_records(dir: &Path, n: usize) {
    wait_for(|| {
        let run = common::run_dirs(dir).pop()?;
        let have = std::fs::read_to_string(run.join("tasks.jsonl")).ok()?.lines().count();
        (have >= n).then_some(())
    });
}

fn run_ok_env(dir: &Path, args: &[String]) -> std::path::PathBuf {
    let out = taps_cmd(dir, args).output().unwrap();
    assert!(out.status.success(), "taps {:?}: {}", args, show(&out));
    the_run_dir(dir)
}

#[test]
fn synthetic_moves_values_through_redis_on_every_executor_and_leaves_no_key() {
    let redis = RedisServer::start();
    // 100 kB values in one key each; 5 MB values in three pieces (2 MiB, 2 MiB, the rest) across
    // processes.
    for (executor, bytes) in
        [("thread-pool", 100_000), ("process-pool", 100_000), ("mpi", 100_000), ("process-pool", 5_000_000)]
    {
        let dir = tempfile::tempdir().unwrap();
        // 4 + 2 tasks: the first's result goes to 4 children, whose results go to the last.
        let args = synthetic(&redis.unix_url(), executor, "diamond", 4, bytes);
        let run = run_ok_env(dir.path(), &args);
        let recs = records(&run);
        assert_eq!(recs.len(), 6, "{}", executor);
        check_record_invariants(&recs);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{}: {:?}", executor, recs);
        // Every task returns its value by reference; the 5 children also received theirs so.
        assert!(recs.iter().all(|r| r.bytes_by_reference >= bytes), "{}: {:?}", executor, recs);
        let by_ref: u64 = recs.iter().map(|r| r.bytes_by_reference).sum();
        assert!(by_ref >= (6 + 8) * bytes, "{}: {} bytes by reference", executor, by_ref);
        assert_eq!(redis.dbsize(), 0, "{}: keys left in Redis: {:?}", executor, redis.keys("*"));
    }
}

#[test]
fn the_tcp_address_and_a_unix_socket_path_work_too() {
    let redis = RedisServer::start();
    for address in [redis.tcp(), redis.socket.display().to_string()] {
        let dir = tempfile::tempdir().unwrap();
        let run = run_ok(dir.path(), &strs(&synthetic(&address, "process-pool", "reduce", 3, 5_000)));
        let recs = records(&run);
        assert_eq!(recs.len(), 4);
        assert!(recs.iter().all(|r| r.success == Some(true) && r.bytes_by_reference >= 5_000), "{:?}", recs);
        assert_eq!(redis.dbsize(), 0, "{}: {:?}", address, redis.keys("*"));
    }
}

/// The database of a `redis://host:port/DB` address holds the values (the plain connections for
/// values select it too): a run killed mid-way leaves its keys in database 3, none in 0.
#[test]
fn values_go_to_the_database_the_address_names() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let address = format!("redis://{}/3", redis.tcp());
    // One thread, four tasks in flight: three wait with their argument keys stored.
    let args = synthetic(&address, "thread-pool", "bag", 40, 5_000)
        .join(" ")
        .replace("--engine.executor.max-threads 2", "--engine.executor.max-threads 1")
        .replace("--app.bag-max-running 2", "--app.bag-max-running 4 --app.task-sleep 0.5");
    let args: Vec<String> = args.split(' ').map(String::from).collect();
    let mut child = taps_cmd(dir.path(), &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut db3 = redis.connection();
    redis::cmd("SELECT").arg(3).query::<()>(&mut db3).unwrap();
    let keys = |c: &mut redis::Connection| redis::cmd("DBSIZE").query::<usize>(c).unwrap();
    wait_for(|| (keys(&mut db3) > 0).then_some(()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(keys(&mut db3) > 0);
    assert_eq!(redis.dbsize(), 0, "database 0 holds {:?}", redis.keys("*"));
}

/// 600 × 600 tiles (2.9 MB): each travels in two pieces, and the factor still reproduces A.
#[test]
fn cholesky_through_redis_on_process_pool_gives_the_true_factor() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/apps/cholesky/config.toml", env!("CARGO_MANIFEST_DIR"));
    let run = run_ok(
        dir.path(),
        &[
            "run",
            "--config",
            &config,
            "--app.matrix-size",
            "1200",
            "--app.block-size",
            "600",
            "--app.output",
            "none",
            "--engine.executor",
            "process-pool",
            "--engine.executor.max-processes",
            "2",
            "--engine.transformer",
            "redis",
            "--engine.transformer.address",
            &redis.unix_url(),
        ],
    );
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let line = log.lines().find(|l| l.contains("Residual ||L*L^T - A||_F / ||A||_F = ")).expect("residual line");
    let r: f64 = line.split(" = ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(r < 1e-14, "{}", line);
    let recs = records(&run);
    check_record_invariants(&recs);
    assert!(recs.iter().all(|r| r.success == Some(true)));
    // A tile is 600 × 600 × 8 bytes, more than one 2 MiB piece.
    assert!(recs.iter().all(|r| r.bytes_by_reference >= 2_880_000), "a tile did not go through Redis: {:?}", recs);
    assert_eq!(redis.dbsize(), 0, "{:?}", redis.keys("*"));
}

/// Two runs at once under the same prefix: each removes only its own keys; a user's key under
/// the prefix is never touched.
#[test]
fn runs_never_share_keys_and_a_users_keys_are_left_alone() {
    let redis = RedisServer::start();
    let mut c = redis.connection();
    redis::cmd("SET").arg("taps:mine").arg("x").query::<()>(&mut c).unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = synthetic(&redis.unix_url(), "process-pool", "bag", 6, 20_000);
    let (mut r1, mut r2) = (taps_cmd(d1.path(), &a).spawn().unwrap(), taps_cmd(d2.path(), &a).spawn().unwrap());
    assert!(wait_or_kill(&mut r1, 120, "run 1").success());
    assert!(wait_or_kill(&mut r2, 120, "run 2").success());
    assert_eq!(redis.keys("*"), vec!["taps:mine".to_string()]);
}

/// An argument's key is deleted as soon as its task read it, a result's as soon as the app
/// dropped its future (the bag app checks each result and drops it): with 2 tasks in flight,
/// never more than 2 argument keys and a few result keys exist, whatever the number of tasks.
#[test]
fn argument_keys_are_deleted_once_their_task_read_them() {
    let redis = Arc::new(RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    let mut args = synthetic(&redis.unix_url(), "process-pool", "bag", 16, 20_000);
    args.extend(["--app.task-sleep", "0.1"].map(String::from));
    let mut child = taps_cmd(dir.path(), &args).stdout(Stdio::null()).spawn().unwrap();
    let (done, most, results, samples) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let watcher = {
        let (redis, done, most, results, samples) =
            (redis.clone(), done.clone(), most.clone(), results.clone(), samples.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(redis.keys("taps:*:a:*").len(), Ordering::SeqCst);
                results.fetch_max(redis.keys("taps:*:r:*").len(), Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let status = wait_or_kill(&mut child, 120, "taps run");
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert!(status.success(), "{:?}", status);
    // The keys come and go within milliseconds: the watcher need not see one, but it watched
    // the whole run (which takes at least 0.8 s) — before, the 16 result keys piled up.
    assert!(samples.load(Ordering::SeqCst) >= 5, "the watcher did not watch the run");
    let results = results.load(Ordering::SeqCst);
    assert!(results <= 4, "{} result keys at once: results are not released", results);
    assert!(most.load(Ordering::SeqCst) <= 2, "{} argument keys at once", most.load(Ordering::SeqCst));
    assert_eq!(redis.dbsize(), 0, "{:?}", redis.keys("*"));
    assert_eq!(records(&the_run_dir(dir.path())).len(), 16);
}

/// Ctrl-C in the middle of a run: every task has a record, and the run's keys are gone.
#[test]
fn an_interrupted_run_leaves_no_key() {
    let redis = RedisServer::start();
    for executor in ["process-pool", "thread-pool"] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = synthetic(&redis.unix_url(), executor, "bag", 20, 50_000);
        args.extend(["--app.task-sleep", "0.5"].map(String::from));
        let mut child = taps_cmd(dir.path(), &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        wait_for_records(dir.path(), 2);
        // SAFETY: plain syscall on the process this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_or_kill(&mut child, 120, "interrupted taps run");
        assert_eq!(status.code(), Some(130), "{}", executor);
        let recs = records(&the_run_dir(dir.path()));
        check_record_invariants(&recs);
        assert!(recs.iter().any(|r| r.success == Some(false)), "{}: nothing was interrupted", executor);
        assert_eq!(redis.dbsize(), 0, "{}: keys left: {:?}", executor, redis.keys("*"));
    }
}

#[test]
fn the_proxystore_config_with_a_redis_connector_runs_as_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxystore.toml");
    std::fs::write(
        &config,
        format!(
            "[app]\nname = \"synthetic\"\nstructure = \"reduce\"\ntask_count = 3\ntask_data_bytes = 10000\n\n\
             [engine.executor]\nname = \"process-pool\"\nmax_processes = 2\n\n\
             [engine.filter]\nname = \"object-size\"\nmin_size = 1000\n\n\
             [engine.transformer]\nname = \"proxystore\"\nextract_target = true\ncache_size = 16\n\n\
             [engine.transformer.connector]\nkind = \"redis\"\n\n\
             [engine.transformer.connector.options]\nhostname = \"127.0.0.1\"\nport = {}\n",
            redis.port
        ),
    )
    .unwrap();
    let run = run_ok(dir.path(), &["run", "--config", config.to_str().unwrap()]);
    let recs = records(&run);
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r.success == Some(true) && r.bytes_by_reference >= 10_000), "{:?}", recs);
    assert_eq!(redis.dbsize(), 0, "{:?}", redis.keys("*"));
    // config.toml feeds back as it was given.
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(written.contains("name = \"proxystore\"") && written.contains("kind = \"redis\""), "{}", written);
    let again = tempfile::tempdir().unwrap();
    run_ok(again.path(), &["run", "--config", run.join("config.toml").to_str().unwrap()]);

    // The same through flags, with the connector's unix socket.
    let flags = tempfile::tempdir().unwrap();
    let options = format!("{{\"kwargs\": {{\"unix_socket_path\": \"{}\"}}}}", redis.socket.display());
    run_ok(
        flags.path(),
        &[
            "run",
            "--app",
            "synthetic",
            "--app.structure",
            "reduce",
            "--app.task-count",
            "2",
            "--app.task-data-bytes",
            "2000",
            "--engine.transformer",
            "proxystore",
            "--engine.transformer.connector.kind",
            "redis",
            "--engine.transformer.connector.options",
            &options,
        ],
    );
    assert_eq!(redis.dbsize(), 0, "{:?}", redis.keys("*"));
}

#[test]
fn bad_addresses_a_redis_that_is_down_and_other_connectors_are_one_line_errors() {
    let redis = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    let base = ["run", "--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "1"];
    let with = |extra: &[&str]| [&base[..], extra].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let nothing = d.path().join("nothing.sock");
    let nothing = nothing.to_str().unwrap();
    for (extra, needles) in [
        (
            vec!["--engine.transformer", "redis", "--engine.transformer.address", nothing],
            vec!["cannot reach Redis", nothing],
        ),
        (
            vec!["--engine.transformer", "redis", "--engine.transformer.address", "127.0.0.1:port"],
            vec!["port \"port\"", "host:port"],
        ),
        (
            vec!["--engine.transformer", "proxystore", "--engine.transformer.connector.kind", "file"],
            vec!["only the redis connector", "\"file\""],
        ),
        (vec!["--engine.transformer", "proxystore"], vec!["engine.transformer.connector is required"]),
    ] {
        assert_bad_input(d.path(), &strs(&with(&extra)), &needles);
    }
    // A stopped Redis on a real address: the same one line.
    let mut stopped = RedisServer::start();
    let url = stopped.unix_url();
    stopped.kill();
    assert_bad_input(
        d.path(),
        &strs(&with(&["--engine.transformer", "redis", "--engine.transformer.address", &url])),
        &["cannot reach Redis"],
    );
    assert_eq!(redis.dbsize(), 0);
}

/// Keys deleted behind the run's back: the task that needed one fails with an error naming it
/// (never a hang), and the run ends.
#[test]
fn a_value_that_vanished_fails_its_task_naming_the_key() {
    let redis = Arc::new(RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    // One worker, 3 tasks dispatched at once: two wait 3 s behind the first, their values in Redis.
    let mut args = synthetic(&redis.unix_url(), "process-pool", "bag", 3, 20_000);
    for (k, v) in [("--engine.executor.max-processes", "1"), ("--app.bag-max-running", "3"), ("--app.task-sleep", "3")]
    {
        let i = args.iter().position(|a| a == k);
        match i {
            Some(i) => args[i + 1] = v.into(),
            None => args.extend([k.to_string(), v.to_string()]),
        }
    }
    let mut child = taps_cmd(dir.path(), &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let (done, deleted) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::<String>::new())));
    let janitor = {
        let (redis, done, deleted) = (redis.clone(), done.clone(), deleted.clone());
        std::thread::spawn(move || {
            let mut c = redis.connection();
            while !done.load(Ordering::SeqCst) {
                for k in redis.keys("taps:*:a:*") {
                    if redis::cmd("DEL").arg(&k).query::<usize>(&mut c).unwrap() == 1 {
                        deleted.lock().unwrap().push(k);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let status = wait_or_kill(&mut child, 120, "taps run with vanishing keys");
    done.store(true, Ordering::SeqCst);
    janitor.join().unwrap();
    assert_eq!(status.code(), Some(1), "{:?}", status);
    let recs = records(&the_run_dir(dir.path()));
    check_record_invariants(&recs);
    let deleted = deleted.lock().unwrap();
    let missing: Vec<_> =
        recs.iter().filter_map(|r| r.exception.as_ref()).filter(|e| e.kind == "DataMissing").collect();
    assert!(!missing.is_empty(), "no task failed for its vanished value: {:?}", recs);
    for e in missing {
        assert!(deleted.iter().any(|k| e.message.contains(k.as_str())), "{} names none of {:?}", e.message, deleted);
    }
    assert_eq!(redis.dbsize(), 0, "{:?}", redis.keys("*"));
}

/// redis-server killed while tasks sleep: they fail with a clear Redis error, every task has a
/// record, and the run ends saying why.
#[test]
fn a_redis_that_dies_mid_run_fails_the_tasks_and_the_run_ends() {
    for executor in ["process-pool", "thread-pool"] {
        let mut redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut args = synthetic(&redis.unix_url(), executor, "bag", 6, 20_000);
        args.extend(["--app.task-sleep", "1"].map(String::from));
        let child = taps_cmd(dir.path(), &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_for_records(dir.path(), 1);
        redis.kill();
        let pid = child.id();
        let out = std::thread::spawn(move || child.wait_with_output().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !out.is_finished() {
            if std::time::Instant::now() > deadline {
                // SAFETY: plain syscall on the process this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("{}: the run hung after Redis died", executor);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = out.join().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {}", executor, show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot clean up the data layer") && stderr.contains("Redis at"), "{}", stderr);
        let recs = records(&the_run_dir(dir.path()));
        check_record_invariants(&recs);
        let failed: Vec<_> = recs.iter().filter_map(|r| r.exception.as_ref()).collect();
        assert!(!failed.is_empty(), "{}: no task failed", executor);
        assert!(
            failed.iter().all(|e| e.kind == "RedisError" && e.message.contains(&redis.unix_url())),
            "{}: {:?}",
            executor,
            failed
        );
    }
}

/// A result's key lives while something can read it: a future of its task (clones included,
/// `result()` any number of times) or a child that takes it and has not finished. Then the engine
/// deletes it, while the run goes on: a fan-out keeps its parent's key until the parent's last
/// future is dropped, a chain whose futures are dropped as it is built keeps only its last result.
#[test]
fn a_results_key_is_deleted_once_its_futures_are_dropped_and_its_children_finished() {
    use taps::data::{DataLayer, DataSpec};
    use taps::engine::{Engine, builtin::Echo};
    let redis = RedisServer::start();
    let prefix = "taps-release";
    let options = format!("address = {:?}\nprefix = {:?}\n", redis.unix_url(), prefix);
    let spec = DataSpec { transformer: Some(("redis".into(), options)), ..Default::default() };
    let data = DataLayer::from_spec(spec).unwrap();
    let engine = Engine::builder(Box::new(taps::executor::thread_pool::ThreadPool::new(2))).data(data).build();
    let results = || redis.keys(&format!("{}:r:*", prefix)).len();
    let value = bytes::Bytes::from(vec![7u8; 100_000]);

    let parent = engine.submit::<Echo>((value.clone().into(),));
    let copy = parent.clone();
    let children: Vec<_> = (0..3).map(|_| engine.submit::<Echo>(((&parent).into(),))).collect();
    for c in &children {
        assert_eq!(c.result().unwrap(), value);
    }
    assert_eq!(parent.result().unwrap(), value);
    assert_eq!(parent.result().unwrap(), value, "a result can be read again");
    assert_eq!(results(), 4, "the parent's and the children's results: their futures are held");
    drop(parent);
    assert_eq!(copy.result().unwrap(), value, "a clone keeps the result");
    assert_eq!(results(), 4);
    drop(copy);
    wait_for(|| (results() == 3).then_some(()));

    let mut last = engine.submit::<Echo>((value.clone().into(),));
    for _ in 0..10 {
        last = engine.submit::<Echo>(((&last).into(),));
    }
    assert_eq!(last.result().unwrap(), value);
    wait_for(|| (results() == 4).then_some(()));
    drop(children);
    drop(last);
    wait_for(|| redis.keys(&format!("{}:*", prefix)).is_empty().then_some(()));
    let summary = engine.shutdown();
    assert_eq!((summary.records, summary.failed), (15, 0), "{:?}", summary);
}

/// `taps bench --redis` puts Redis's own cost beside the `redis` rows: the same four transfers
/// from one client (a real server, a positive time per size), and it leaves no key behind.
#[test]
fn bench_reports_what_redis_alone_costs_beside_the_redis_rows() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let args: Vec<String> = [
        "bench",
        "--executor",
        "thread-pool",
        "--latency-tasks",
        "0",
        "--throughput-tasks",
        "0",
        "--data-sizes",
        "10k,1M",
        "--data-tasks",
        "3",
        "--redis",
        &redis.unix_url(),
        "--out",
        out.to_str().unwrap(),
        "--",
        "--engine.executor.max-threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = taps_cmd(dir.path(), &args).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("| thread-pool | redis | 1000000 + 1000000 |"), "{}", md);
    assert!(md.contains("Redis alone"), "{}", md);
    let json = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a bench json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let floor = v["redis_floor_ms"].as_array().expect("redis_floor_ms");
    let sizes: Vec<u64> = floor.iter().map(|f| f["bytes"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [10_000, 1_000_000]);
    for f in floor {
        let ms = f["ms"]["median"].as_f64().unwrap();
        assert!(ms > 0.0 && ms.is_finite(), "{}", v["redis_floor_ms"]);
    }
    assert_eq!(redis.dbsize(), 0, "keys left in Redis: {:?}", redis.keys("*"));
}

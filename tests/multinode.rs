//! The mpi executor across "nodes" simulated on this machine by `scripts/sim-nodes.sh`: each node
//! is a network + UTS namespace with its own hostname and address on a private bridge
//! (10.77.0.0/24), all sharing this machine's filesystem. `taps run` runs on the head node, as a
//! user would on a login node: mpirun reads a hostfile (`engine.executor.launcher-args`) and starts
//! the ranks of the other nodes through an ssh stand-in (`OMPI_MCA_plm_rsh_agent`), so rank 0 and
//! its workers, each on its own node, talk over TCP. `taps submit --nodes 2` runs the same way on a
//! two-node Slurm cluster made of such nodes (`slurm/nodes.sh`: one slurmd per node). Every test
//! removes its nodes, also when it fails, and checks that no process, namespace, interface or
//! mount is left.
//! Needs root and permission to make namespaces (skipped otherwise, saying so).
#![cfg(feature = "mpi")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use taps::record::TaskRecord;

mod common;
use common::{show, the_run_dir};

const TAPS: &str = env!("CARGO_BIN_EXE_taps");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sim-nodes.sh");

/// One simulated node, as `sim-nodes.sh up` lists it.
struct Node {
    name: String,
    net: String,
    uts: String,
}

/// Simulated nodes in a temporary directory (`cluster/` for the script's state, `work/` for
/// runs); dropping it removes the nodes and every process on them.
struct Nodes {
    tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    links_before: BTreeSet<String>,
    netns_before: String,
}

fn sim(args: &[&str]) -> Output {
    sim_with(args, 1)
}

/// [`sim`] with `slots` MPI slots per node in the hostfile.
fn sim_with(args: &[&str], slots: usize) -> Output {
    Command::new(SCRIPT)
        .args(args)
        .env("SIM_NODES_SLOTS", slots.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("sim-nodes.sh runs")
}

/// Whether this process may make network and UTS namespaces (root, and not in a container that
/// forbids it); says why not on stderr.
fn can_simulate_nodes() -> bool {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: simulated nodes need root");
        return false;
    }
    let ok = Command::new("unshare").args(["--net", "--uts", "true"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: `unshare --net --uts true` fails here (a container without CAP_SYS_ADMIN?)");
    }
    ok
}

/// Names of this namespace's network interfaces.
fn host_links() -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap().to_string()))
        .collect()
}

fn netns_list() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().expect("ip runs").stdout).into()
}

/// `/proc/PID/ns/KIND` of `pid`.
fn ns(pid: u32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{}/ns/{}", pid, kind)).ok().map(|p| p.to_string_lossy().into_owned())
}

impl Nodes {
    /// Makes nodes `names` (the first is the head node), or None when not root.
    fn up(names: &[&str]) -> Option<Nodes> {
        Nodes::up_with_slots(names, 1)
    }

    /// [`up`](Self::up) with `slots` MPI slots per node in the hostfile.
    fn up_with_slots(names: &[&str], slots: usize) -> Option<Nodes> {
        if !can_simulate_nodes() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("work")).unwrap();
        let (links_before, netns_before) = (host_links(), netns_list());
        let dir = tmp.path().join("cluster");
        let mut nodes = Nodes { tmp, nodes: Vec::new(), links_before, netns_before };
        let out = sim_with(&[&["up", dir.to_str().unwrap()], names].concat(), slots);
        assert!(out.status.success(), "sim-nodes.sh up failed: {}", show(&out));
        let list = std::fs::read_to_string(dir.join("nodes")).unwrap();
        nodes.nodes = list
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Node { name: f[0].into(), net: f[3].into(), uts: f[4].into() }
            })
            .collect();
        assert_eq!(nodes.nodes.len(), names.len() + 1, "the switch and each node: {}", list);
        Some(nodes)
    }

    fn cluster(&self) -> PathBuf {
        self.tmp.path().join("cluster")
    }

    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// Processes on node `name` (in its network and UTS namespaces): (pid, command name).
    fn processes_on(&self, name: &str) -> Vec<(u32, String)> {
        let n = self.node(name);
        common::processes()
            .into_iter()
            .filter(|&(p, _, st)| {
                st != 'Z' && ns(p, "net").as_ref() == Some(&n.net) && ns(p, "uts").as_ref() == Some(&n.uts)
            })
            .map(|(p, _, _)| {
                (p, std::fs::read_to_string(format!("/proc/{}/comm", p)).unwrap_or_default().trim().into())
            })
            .collect()
    }

    /// The pid of the taps worker that is MPI rank `rank` on node `name`, once it runs (not the
    /// `true` of taps's probe of the launch command, which has a rank too).
    fn rank_on(&self, name: &str, rank: u32) -> u32 {
        let is_worker = |p: u32| {
            std::fs::read(format!("/proc/{}/cmdline", p)).is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"--run-dir"))
        };
        common::wait_for(|| {
            self.processes_on(name).into_iter().map(|(p, _)| p).find(|&p| rank_of(p) == Some(rank) && is_worker(p))
        })
    }

    /// `taps run` on the head node `head` with the mpi executor on `ranks` ranks, mpirun placing
    /// them by the hostfile and starting them through the ssh stand-in; output goes to files.
    fn taps_run(&self, head: &str, ranks: usize, args: &[&str]) -> Command {
        let cluster = self.cluster();
        let mut c = Command::new(SCRIPT);
        c.args(["exec", cluster.to_str().unwrap(), head, TAPS, "run", "--engine.executor", "mpi"])
            .args(["--engine.executor.ranks", &ranks.to_string()])
            .args(["--engine.executor.launcher-args", &format!("--hostfile {}", cluster.join("hostfile").display())])
            .args(args)
            .current_dir(self.work())
            .env("OMPI_MCA_plm_rsh_agent", cluster.join("rsh"))
            // OpenMPI's session directories (mpirun's and each node's daemon's) go with the
            // test: a node's daemon killed by a test cannot remove its own from /tmp.
            .env("OMPI_MCA_orte_tmpdir_base", self.tmp.path().join("ompi"))
            .env_remove("TAPS_WORKER")
            .stdin(Stdio::null())
            .stdout(File::create(self.tmp.path().join("stdout")).unwrap())
            .stderr(File::create(self.tmp.path().join("stderr")).unwrap());
        c
    }

    /// The output of the last [`taps_run`](Self::taps_run).
    fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.tmp.path().join(f)).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    }

    /// Every process on the nodes, the namespace holders included: (pid, start time).
    fn everything(&self) -> Vec<(u32, String)> {
        let nets: Vec<&String> = self.nodes.iter().map(|n| &n.net).collect();
        common::processes()
            .into_iter()
            .filter(|&(p, _, st)| st != 'Z' && ns(p, "net").is_some_and(|n| nets.contains(&&n)))
            .filter_map(|(p, _, _)| Some((p, started(p)?)))
            .collect()
    }

    /// Removes the nodes and checks that nothing of them is left: none of the processes that
    /// were on them, no interface or named namespace here, no mount under the test's directory,
    /// none of the script's files; a second `down` finds nothing to do.
    fn down(self) {
        let cluster = self.cluster();
        let before = self.everything();
        assert!(before.len() >= self.nodes.len(), "the holders at least: {:?}", before);
        for _ in 0..2 {
            let out = sim(&["down", cluster.to_str().unwrap()]);
            assert!(out.status.success(), "sim-nodes.sh down failed: {}", show(&out));
        }
        assert!(!cluster.exists(), "sim-nodes.sh down removes its state directory");
        assert_gone(&before);
        assert_eq!(host_links(), self.links_before, "interfaces here are as before");
        assert_eq!(netns_list(), self.netns_before, "named network namespaces are as before");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(self.tmp.path().to_str().unwrap()), "{}", mounts);
    }
}

/// The start time of process `pid` (clock ticks since boot), if it runs (zombies don't).
fn started(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid)).ok()?;
    let mut f = stat[stat.rfind(')')? + 1..].split_whitespace();
    if f.next()? == "Z" {
        return None;
    }
    // Fields after the command: state is field 3, start time field 22.
    f.nth(18).map(str::to_string)
}

/// Asserts that none of `procs` (pid, start time) runs any longer.
fn assert_gone(procs: &[(u32, String)]) {
    // The holders are reaped by init, a moment after SIGKILL.
    let left = || procs.iter().filter(|(p, t)| started(*p).as_ref() == Some(t)).collect::<Vec<_>>();
    for _ in 0..100 {
        if left().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("processes left on the nodes: {:?}", left());
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Idempotent: after `down` it finds nothing to do.
        let _ = sim(&["down", self.cluster().to_str().unwrap()]);
    }
}

/// The MPI rank of a process (from its environment), if it is one.
fn rank_of(pid: u32) -> Option<u32> {
    let env = std::fs::read(format!("/proc/{}/environ", pid)).ok()?;
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"OMPI_COMM_WORLD_RANK="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// Hostname of each worker rank in `recs` (asserting a rank ran on one host only).
fn hosts_of_ranks(recs: &[TaskRecord]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for r in recs.iter().filter(|r| r.success == Some(true)) {
        let host = r.execution.as_ref().unwrap().hostname.clone();
        let prev = m.insert(r.worker.clone().unwrap(), host.clone());
        assert!(prev.is_none() || prev == Some(host), "{:?}", r);
    }
    m
}

#[test]
fn a_run_spreads_over_three_nodes_over_tcp_and_moves_data_through_the_shared_filesystem() {
    let Some(nodes) = Nodes::up(&["head", "node1", "node2"]) else { return };
    let bytes = 100_000u64;
    let mut c = nodes.taps_run(
        "head",
        3,
        &[
            "--app",
            "synthetic",
            "--app.structure",
            "bag",
            "--app.task-count",
            "40",
            "--app.bag-max-running",
            "4",
            "--app.task-data-bytes",
            &bytes.to_string(),
            "--engine.transformer",
            "file",
            "--logging.level",
            "DEBUG",
        ],
    );
    let mut child = c.spawn().unwrap();
    let status = common::wait_or_kill(&mut child, 120, "taps run across simulated nodes");
    assert!(status.success(), "{:?}: {}", status, nodes.output());
    // Three ranks on the hostfile's three slots: no oversubscription, though this node has fewer cores.
    let out = nodes.output();
    let launch = out.lines().find(|l| l.contains("Launching MPI job")).unwrap_or_else(|| panic!("{}", out));
    assert!(launch.contains("--hostfile") && !launch.contains("--oversubscribe"), "{}", launch);

    let run = the_run_dir(&nodes.work());
    let mut files: Vec<String> =
        std::fs::read_dir(&run).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    // The file transformer's directory, written by the ranks of the other nodes, is gone.
    assert_eq!(files, ["config.toml", "environment.json", "log.txt", "tasks.jsonl"]);
    let recs = common::records(&run);
    assert_eq!(recs.len(), 40, "one record per task");
    common::check_record_invariants(&recs);
    assert_eq!(recs.iter().map(|r| &r.task_id).collect::<BTreeSet<_>>().len(), 40);
    for r in &recs {
        assert_eq!(r.success, Some(true), "{:?}", r);
        // The synthetic app checks every payload's checksum.
        assert!(r.bytes_by_reference >= 2 * bytes && r.bytes_inline < bytes, "{:?}", r);
    }
    // Rank 0 ran on the head node; rank 1 on node1 and rank 2 on node2 (the hostfile's order,
    // one slot each), and both ran tasks.
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    assert_eq!(env["system"]["hostname"], "head", "{}", env);
    let hosts = hosts_of_ranks(&recs);
    let expected: BTreeMap<String, String> =
        [("rank-1", "node1"), ("rank-2", "node2")].iter().map(|(r, h)| (r.to_string(), h.to_string())).collect();
    assert_eq!(hosts, expected, "{}", nodes.output());
    // Ranks on other nodes: only rank 0's communication thread makes MPI calls (a peer lost
    // over TCP blocks the call that sees it), none of the app's threads.
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let taken = log
        .lines()
        .find_map(|l| l.split_once("mpi: frames from the ranks taken by the communication thread: ").map(|x| x.1))
        .unwrap_or_else(|| panic!("{}", log));
    assert!(taken.ends_with(", by threads waiting for results: 0"), "{}", taken);
    // Nor shared-memory lanes, which only a rank on rank 0's host gets.
    assert!(
        log.contains(
            "mpi: frames from ranks on lanes: 0 through the rings, 0 as announced MPI messages; ranks on lanes: 0;"
        ),
        "{}",
        log
    );
    nodes.down();
}

/// Two slots per node: rank 1 shares rank 0's node and gets a shared-memory lane, ranks 2 and 3
/// on node1 talk MPI over TCP, in the same run; every task comes back whole.
#[test]
fn a_rank_on_rank_0s_node_takes_a_lane_beside_ranks_on_another_node() {
    let Some(nodes) = Nodes::up_with_slots(&["head", "node1"], 2) else { return };
    let args = [
        "--app",
        "synthetic",
        "--app.structure",
        "bag",
        "--app.task-count",
        "60",
        "--app.bag-max-running",
        "6",
        // Tasks that last: the 6 in flight fill the 3 ranks' 2 places each, so the ranks of
        // node1 run tasks however fast rank 1 answers through its lane.
        "--app.task-sleep",
        "0.05",
        "--app.task-data-bytes",
        "1000",
        "--logging.level",
        "DEBUG",
    ];
    let mut child = nodes.taps_run("head", 4, &args).spawn().unwrap();
    let status = common::wait_or_kill(&mut child, 120, "taps run with a lane and remote ranks");
    assert!(status.success(), "{:?}: {}", status, nodes.output());
    let run = the_run_dir(&nodes.work());
    let recs = common::records(&run);
    assert_eq!(recs.len(), 60, "one record per task");
    assert!(recs.iter().all(|r| r.success == Some(true)), "{:?}", recs.iter().find(|r| r.success != Some(true)));
    let expected: BTreeMap<String, String> = [("rank-1", "head"), ("rank-2", "node1"), ("rank-3", "node1")]
        .iter()
        .map(|(r, h)| (r.to_string(), h.to_string()))
        .collect();
    assert_eq!(hosts_of_ranks(&recs), expected, "{}", nodes.output());
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("mpi: rank 1 is on this node: frames go through a shared-memory lane"), "{}", log);
    assert!(!log.contains("mpi: rank 2 is on this node") && !log.contains("mpi: rank 3 is on this node"), "{}", log);
    // Rank 1's Ready and one answer per task it ran came through its lane's ring.
    let on_lane = recs.iter().filter(|r| r.worker.as_deref() == Some("rank-1")).count();
    assert!(on_lane > 0, "rank 1 ran nothing");
    let want = format!(
        "mpi: frames from ranks on lanes: {} through the rings, 0 as announced MPI messages; ranks on lanes: 1;",
        on_lane + 1
    );
    assert!(log.contains(&want), "{}\n{}", want, log);
    nodes.down();
}

#[test]
fn a_node_whose_ranks_are_killed_mid_run_leaves_one_record_per_task() {
    let Some(nodes) = Nodes::up(&["head", "node1", "node2"]) else { return };
    let args = ["--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "12", "--app.task-sleep", "0.4"];
    let mut child = nodes.taps_run("head", 3, &args).spawn().unwrap();
    // Once the tasks are out and node2's rank is at work, kill every rank on node2.
    let rank = nodes.rank_on("node2", 2);
    common::wait_for(|| {
        let run = common::run_dirs(&nodes.work()).pop()?;
        std::fs::read_to_string(run.join("log.txt")).ok()?.contains("Submitted reduce task").then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain syscall on a rank of this test's job.
    assert_eq!(unsafe { libc::kill(rank as i32, libc::SIGKILL) }, 0);
    let status = common::wait_or_kill(&mut child, 120, "taps run losing node2's rank");
    assert_eq!(status.code(), Some(1), "{}", nodes.output());

    let out = nodes.output();
    let named = format!("MPI rank 2 (pid {} on node2) died", rank);
    assert!(out.contains(&format!("The run lost 1 worker rank(s): {}", named)), "{}", out);
    let recs = common::records(&the_run_dir(&nodes.work()));
    assert_eq!(recs.len(), 13, "one record per task: {}", out);
    common::check_record_invariants(&recs);
    let first: Vec<_> = recs.iter().filter(|r| r.parent_task_ids.is_empty()).collect();
    let lost: Vec<_> = first.iter().filter(|r| r.success == Some(false)).collect();
    assert_eq!(lost.len(), 1, "exactly the task running on node2 fails: {:?}", lost);
    let e = lost[0].exception.as_ref().unwrap();
    assert_eq!((e.kind.as_str(), e.message.clone()), ("WorkerLost", format!("{} while running this task", named)));
    // The other tasks ran, node1 taking over node2's queue.
    for r in first.iter().filter(|r| r.success == Some(true)) {
        assert!(["node1", "node2"].contains(&r.execution.as_ref().unwrap().hostname.as_str()), "{:?}", r);
    }
    assert!(
        first.iter().filter(|r| r.success == Some(true)).any(|r| r.execution.as_ref().unwrap().hostname == "node1")
    );
    nodes.down();
}

#[test]
fn a_whole_node_lost_mid_run_still_ends_the_run_with_one_record_per_task() {
    let Some(nodes) = Nodes::up(&["head", "node1", "node2"]) else { return };
    let args = ["--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "12", "--app.task-sleep", "0.4"];
    let mut child = nodes.taps_run("head", 3, &args).spawn().unwrap();
    nodes.rank_on("node2", 2);
    common::wait_for(|| {
        let run = common::run_dirs(&nodes.work()).pop()?;
        std::fs::read_to_string(run.join("log.txt")).ok()?.contains("Submitted reduce task").then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    // The node goes down: its MPI daemon and its rank die at once (its namespace holder stays,
    // as the machine would).
    for (pid, comm) in nodes.processes_on("node2") {
        if comm != "tail" {
            // SAFETY: plain syscall on a process of this test's job.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    // mpirun, having lost a daemon, stops the job; rank 0 records every task as it goes.
    let status = common::wait_or_kill(&mut child, 120, "taps run losing node2");
    assert_eq!(status.code(), Some(1), "a failure, not an interrupt: {}", nodes.output());
    // The last line of rank 0 names the lost node (and, when mpirun then stopped the job with
    // SIGTERM, says so: a failure, not an interrupt).
    let out = nodes.output();
    let lost = out.lines().find(|l| l.contains("The run lost 1 worker rank(s): MPI rank 2 (pid "));
    assert!(lost.is_some_and(|l| l.contains(" on node2) died")), "{}", out);
    let recs = common::records(&the_run_dir(&nodes.work()));
    assert_eq!(recs.len(), 13, "one record per task: {}", nodes.output());
    common::check_record_invariants(&recs);
    assert!(recs.iter().any(|r| r.success == Some(false)), "{:?}", recs);
    // The killed daemon's session directory, which it could not remove, is the test's to remove
    // (it used to stay in /tmp as `ompi.node2.<uid>`).
    let ompi = std::fs::read_dir(nodes.tmp.path().join("ompi")).map(|d| d.flatten().count()).unwrap_or(0);
    assert!(ompi > 0, "no OpenMPI session directory under the test's own directory");
    nodes.down();
}

#[test]
fn the_nodes_and_everything_on_them_are_removed_when_a_test_fails() {
    let mut procs = Vec::new();
    let mut sleeper = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(nodes) = Nodes::up(&["head", "node1"]) else { return };
        // A process on a node, left running.
        let mut c = Command::new(SCRIPT);
        c.args(["exec", nodes.cluster().to_str().unwrap(), "node1", "sleep", "600"]);
        sleeper = Some(c.spawn().unwrap());
        common::wait_for(|| nodes.processes_on("node1").into_iter().find(|(_, c)| c == "sleep"));
        procs = nodes.everything();
        panic!("the test fails here");
    }));
    let Some(mut sleeper) = sleeper else { return };
    assert!(r.is_err());
    // The guard killed it, and everything else on the nodes.
    sleeper.wait().unwrap();
    assert_eq!(procs.len(), 4, "three holders and the sleeper: {:?}", procs);
    assert_gone(&procs);
}

/// A two-node Slurm cluster on simulated nodes (`slurm/nodes.sh`), removed with everything on
/// it when dropped.
struct SlurmNodes {
    tmp: tempfile::TempDir,
}

const SLURM_NODES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/slurm/nodes.sh");

impl SlurmNodes {
    fn cluster(&self) -> PathBuf {
        self.tmp.path().join("cluster")
    }

    /// `CMD...` on the cluster's first node, in `cwd`.
    fn exec(&self, cwd: &Path, cmd: &[&str]) -> Output {
        Command::new(SLURM_NODES)
            .arg("exec")
            .arg(self.cluster())
            .args(cmd)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .expect("slurm/nodes.sh runs")
    }
}

impl Drop for SlurmNodes {
    fn drop(&mut self) {
        let _ = Command::new(SLURM_NODES).arg("down").arg(self.cluster()).output();
    }
}

#[test]
fn taps_submit_nodes_2_runs_ranks_on_both_nodes_of_a_slurm_cluster() {
    if !can_simulate_nodes() {
        return;
    }
    let slurm = SlurmNodes { tmp: tempfile::tempdir().unwrap() };
    let (links_before, netns_before) = (host_links(), netns_list());
    let out = Command::new(SLURM_NODES).arg("up").arg(slurm.cluster()).arg("2").stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "slurm/nodes.sh up failed: {}", show(&out));
    let sim_nodes = std::fs::read_to_string(slurm.cluster().join("sim/nodes")).unwrap();
    let nets: Vec<String> = sim_nodes.lines().map(|l| l.split(' ').nth(3).unwrap().to_string()).collect();
    let work = slurm.tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();

    let submit = [
        "submit",
        "--scheduler",
        "slurm",
        "--nodes",
        "2",
        "--ranks-per-node",
        "2",
        "--walltime",
        "00:05:00",
        "--",
        "--app",
        "synthetic",
        "--app.structure",
        "bag",
        "--app.task-count",
        "40",
        "--app.bag-max-running",
        "6",
        "--app.task-data-bytes",
        "10000",
        // Tasks that last: the 6 in flight fill the 3 workers' 2 places each, so every worker
        // runs tasks however fast one of them answers (rank 1 shares rank 0's node: a lane).
        "--app.task-sleep",
        "0.1",
        "--engine.transformer",
        "file",
        "--engine.executor",
        "mpi",
    ];
    let out = slurm.exec(&work, &[&[TAPS], &submit[..]].concat());
    assert!(out.status.success(), "taps submit: {}", show(&out));
    let run = the_run_dir(&work);
    // The job script writes job.exit when it ends (a hang guard, not a speed check).
    let waited = std::time::Instant::now();
    while !run.join("job.exit").exists() {
        if waited.elapsed() > Duration::from_secs(120) {
            let q = slurm.exec(&work, &["scontrol", "show", "job"]);
            panic!("the job did not end in 120 s: {}", show(&q));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let job_out = std::fs::read_to_string(run.join("job.out")).unwrap_or_default();
    let job_err = std::fs::read_to_string(run.join("job.err")).unwrap_or_default();
    assert_eq!(std::fs::read_to_string(run.join("job.exit")).unwrap(), "0\n", "{}\n{}", job_out, job_err);
    let status = slurm.exec(&work, &[TAPS, "status", run.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&status.stdout).starts_with("finished: slurm job"), "{}", show(&status));

    let recs = common::records(&run);
    assert_eq!(recs.len(), 40, "one record per task: {}", job_out);
    common::check_record_invariants(&recs);
    assert!(recs.iter().all(|r| r.success == Some(true) && r.bytes_by_reference >= 20_000), "{:?}", recs);
    // 2 nodes x 2 ranks: rank 0 (the driver) and rank 1 on the first node, ranks 2 and 3 on
    // the second; every worker ran tasks.
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    assert_eq!(env["system"]["hostname"], "tapsn0", "{}", env);
    let hosts = hosts_of_ranks(&recs);
    let expected: BTreeMap<String, String> = [("rank-1", "tapsn0"), ("rank-2", "tapsn1"), ("rank-3", "tapsn1")]
        .iter()
        .map(|(r, h)| (r.to_string(), h.to_string()))
        .collect();
    assert_eq!(hosts, expected, "{}", job_out);

    // Everything ends with the cluster: the daemons, the nodes, what the script wrote.
    let procs: Vec<(u32, String)> = common::processes()
        .into_iter()
        .filter(|&(p, _, st)| st != 'Z' && ns(p, "net").is_some_and(|n| nets.contains(&n)))
        .filter_map(|(p, _, _)| Some((p, started(p)?)))
        .collect();
    assert!(procs.len() >= 3 + 3, "three holders, slurmctld and two slurmd: {:?}", procs);
    for _ in 0..2 {
        let out = Command::new(SLURM_NODES).arg("down").arg(slurm.cluster()).output().unwrap();
        assert!(out.status.success(), "slurm/nodes.sh down failed: {}", show(&out));
    }
    assert!(!slurm.cluster().exists(), "slurm/nodes.sh down removes what up wrote");
    assert_gone(&procs);
    assert_eq!(host_links(), links_before);
    assert_eq!(netns_list(), netns_before);
}

#[test]
fn a_launcher_that_outlives_rank_0_is_stopped_and_the_run_ends() {
    // mpirun that lost a node's daemon may wait for it for ever after every rank has ended; here
    // a launcher that runs mpirun and then sleeps stands for it (no root needed).
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("lingering-launcher");
    std::fs::write(&wrapper, "#!/bin/sh\nmpirun \"$@\"\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let profile = tmp.path().join("launchers.toml");
    std::fs::write(
        &profile,
        format!(
            "[lingering]\nprogram = {:?}\nargs = [\"{{root_args}}\", \"{{oversubscribe_args}}\", \"-np\", \"{{ranks}}\", \
             \"{{worker}}\", \"{{worker_args}}\"]\nroot_args = [\"--allow-run-as-root\"]\n\
             oversubscribe_args = [\"--oversubscribe\"]\nenv = {{ OMPI_MCA_orte_enable_recovery = \"1\" }}\n\
             oversubscribe_env = {{ OMPI_MCA_mpi_yield_when_idle = \"1\" }}\n",
            wrapper.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(TAPS)
        .current_dir(tmp.path())
        .args(["run", "--engine.executor", "mpi", "--engine.executor.ranks", "3"])
        .args(["--engine.executor.launcher", "lingering", "--engine.executor.launcher-profile"])
        .arg(&profile)
        .args(["--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "4"])
        .env_remove("TAPS_WORKER")
        .stdin(Stdio::null())
        .stdout(File::create(tmp.path().join("stdout")).unwrap())
        .stderr(File::create(tmp.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = common::wait_or_kill(&mut child, 120, "taps run whose launcher outlives rank 0");
    let out = std::fs::read_to_string(tmp.path().join("stdout")).unwrap();
    assert_eq!(status.code(), Some(0), "rank 0's exit status is the run's: {}", out);
    assert!(out.contains("The launcher still runs 10 s after rank 0 ended: stopping it"), "{}", out);
    assert!(common::descendants(pid).is_empty(), "nothing of the job is left");
    let recs = common::records(&the_run_dir(tmp.path()));
    assert_eq!(recs.len(), 5, "one record per task");
    assert!(recs.iter().all(|r| r.success == Some(true)));
}

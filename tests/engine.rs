//! The engine's API on the thread-pool executor: dataflow, failure propagation, panics, wait,
//! as_completed, map, cancellation, and records for every task.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use taps::engine::builtin::{Fail, Panic, Sleep};
use taps::engine::{Completions, Engine, ReturnWhen, as_completed, wait};
use taps::executor::thread_pool::ThreadPool;
use taps::record::{RecordWriter, read_records};
use taps::task::{ErrorKind, Many, Task, TaskError};

struct Add;
impl Task for Add {
    const NAME: &'static str = "test-add";
    type Args = (u64, u64);
    type Output = u64;
    fn run((a, b): (u64, u64)) -> Result<u64, TaskError> {
        Ok(a + b)
    }
}

struct Sum;
impl Task for Sum {
    const NAME: &'static str = "test-sum";
    type Args = (Many<u64>,);
    type Output = u64;
    fn run((xs,): (Many<u64>,)) -> Result<u64, TaskError> {
        Ok(xs.0.iter().sum())
    }
}

static CHILD_RAN: AtomicUsize = AtomicUsize::new(0);

struct AfterUnit;
impl Task for AfterUnit {
    const NAME: &'static str = "test-after-unit";
    type Args = ((),);
    type Output = ();
    fn run(_: ((),)) -> Result<(), TaskError> {
        CHILD_RAN.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn engine_with_records(dir: &std::path::Path, threads: usize) -> Engine {
    Engine::builder(Box::new(ThreadPool::new(threads)))
        .records(RecordWriter::create(&dir.join("tasks.jsonl")).unwrap())
        .build()
}

#[test]
fn futures_as_arguments_are_dependencies() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 2);
    let a = e.submit::<Add>((1.into(), 2.into()));
    let b = e.submit::<Add>(((&a).into(), 10.into()));
    let c = e.submit::<Add>(((&a).into(), (&b).into()));
    let parts: Vec<_> = (0..10).map(|i| e.submit::<Add>((i.into(), 0.into()))).collect();
    let total = e.submit::<Sum>((parts.iter().map(Into::into).collect(),));
    assert_eq!(c.result().unwrap(), 3 + 13);
    assert_eq!(total.result().unwrap(), 45);
    assert_eq!(e.tasks_executed(), 14);
    let s = e.shutdown();
    assert_eq!((s.submitted, s.records, s.failed), (14, 14, 0));
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    let rc = recs.iter().find(|r| r.task_id == c.task_id().to_string()).unwrap();
    assert_eq!(rc.parent_task_ids, vec![a.task_id().to_string(), b.task_id().to_string()]);
    let rt = recs.iter().find(|r| r.task_id == total.task_id().to_string()).unwrap();
    assert_eq!(rt.parent_task_ids.len(), 10);
    assert_eq!(rt.name, "test-sum");
}

#[test]
fn a_failed_parent_fails_its_descendants_without_running_them() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 2);
    let slow = e.submit::<Sleep>((0.05.into(),));
    let bad = e.submit::<Fail>(("boom".to_string().into(),));
    let child = e.submit::<AfterUnit>(((&bad).into(),));
    let grandchild = e.submit::<AfterUnit>(((&child).into(),));
    // Each names its parent and the failure that started the chain.
    let bad_id = bad.task_id();
    let err = child.result().unwrap_err();
    assert_eq!(err.kind, "ParentFailed");
    assert_eq!(err.message, format!("parent task fail ({}) failed: TaskError: boom", bad_id));
    let err = grandchild.result().unwrap_err();
    assert_eq!(err.kind, "ParentFailed");
    let expected = format!(
        "parent task test-after-unit ({}) failed because task fail ({}) failed: TaskError: boom",
        child.task_id(),
        bad_id
    );
    assert_eq!(err.message, expected);
    // Structured: the kind, the direct parent, and the parent's error as the cause, down the chain.
    assert_eq!(err.kind, ErrorKind::ParentFailed);
    let parent = err.parent.as_ref().expect("a ParentFailed error names its parent");
    assert_eq!((parent.task_id, parent.name.as_str()), (child.task_id(), "test-after-unit"));
    let cause = err.cause().expect("the parent's error is the cause");
    assert_eq!(cause, &child.exception().unwrap());
    let root = cause.cause().expect("the chain goes back to the first failure");
    assert_eq!((&root.kind, root.message.as_str()), (&ErrorKind::Task, "boom"));
    assert_eq!(cause.parent.as_ref().map(|p| p.task_id), Some(bad_id));
    let source = std::error::Error::source(&err).expect("source() is the cause").to_string();
    assert!(source.starts_with("ParentFailed: parent task fail ("), "{}", source);
    assert!(slow.result().is_ok());
    e.shutdown();
    assert_eq!(CHILD_RAN.load(Ordering::SeqCst), 0, "a child of a failed task ran");
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 4);
    for f in [&child, &grandchild] {
        let r = recs.iter().find(|r| r.task_id == f.task_id().to_string()).unwrap();
        assert_eq!(r.success, Some(false));
        assert!(r.execution.is_none() && r.worker.is_none(), "it never ran");
        // The record holds the error's type, message and traceback (not its parent and cause).
        let (recorded, err) = (r.exception.as_ref().unwrap(), f.exception().unwrap());
        assert_eq!(recorded.kind, "ParentFailed");
        assert_eq!((&recorded.kind, &recorded.message, &recorded.traceback), (&err.kind, &err.message, &err.traceback));
    }
    let rb = recs.iter().find(|r| r.task_id == bad.task_id().to_string()).unwrap();
    assert_eq!(rb.success, Some(false));
    assert!(rb.execution.is_some(), "the failing task itself ran and has timings");
}

#[test]
fn every_kind_of_parent_failure_is_a_parent_failed_naming_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 1);
    // A panic, a cancellation, and a parent that had already failed when the child was submitted.
    let blocker = e.submit::<Sleep>((0.2.into(),));
    let panicked = e.submit::<Panic>(("kaboom".to_string().into(),));
    let cancelled = e.submit::<Sleep>(((&blocker).into(),));
    e.cancel(&cancelled);
    assert_eq!(panicked.exception().unwrap().kind, "TaskPanic");
    let children = (e.submit::<AfterUnit>(((&panicked).into(),)), e.submit::<Sleep>(((&cancelled).into(),)));
    let (p_id, c_id) = (panicked.task_id(), cancelled.task_id());
    let err = children.0.result().unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.message.clone()),
        ("ParentFailed", format!("parent task panic ({}) failed: TaskPanic: kaboom", p_id))
    );
    assert!(err.traceback.contains("panicked at"), "the parent's traceback is kept: {:?}", err);
    let err = children.1.result().unwrap_err();
    let msg = format!("parent task sleep ({}) failed: Cancelled: the task was cancelled before it started", c_id);
    assert_eq!((err.kind.as_str(), err.message.clone()), ("ParentFailed", msg));
    // Down a long chain the message names the direct parent and the first failure; it does not grow.
    let mut last = children.0.clone();
    for _ in 0..1000 {
        last = e.submit::<AfterUnit>(((&last).into(),));
    }
    let err = last.result().unwrap_err();
    assert!(
        err.message.ends_with(&format!("failed because task panic ({}) failed: TaskPanic: kaboom", p_id)),
        "{}",
        err.message
    );
    assert!(err.message.len() < 200, "{}", err.message);
    let s = e.shutdown();
    assert_eq!((s.submitted, s.records), (1005, 1005));
}

#[test]
fn panics_are_recorded_with_message_and_location() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 1);
    let p = e.submit::<Panic>(("kaboom".to_string().into(),));
    let after = e.submit::<Add>((1.into(), 1.into()));
    let err = p.result().unwrap_err();
    assert_eq!(err.kind, "TaskPanic");
    assert_eq!(err.message, "kaboom");
    assert!(err.traceback.contains("engine.rs"), "{:?}", err);
    assert_eq!(after.result().unwrap(), 2, "the pool keeps serving after a panic");
    e.shutdown();
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    let r = recs.iter().find(|r| r.name == "panic").unwrap();
    assert_eq!(r.exception.as_ref().unwrap().kind, "TaskPanic");
}

#[test]
fn wait_first_completed_and_timeouts() {
    let e = Engine::builder(Box::new(ThreadPool::new(2))).build();
    let fast = e.submit::<Sleep>((0.0.into(),));
    let slow = e.submit::<Sleep>((0.5.into(),));
    let futs = vec![fast.clone(), slow.clone()];
    let w = wait(&futs, None, ReturnWhen::FirstCompleted);
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.done[0].task_id(), fast.task_id());
    let w = wait(&futs, Some(Duration::from_millis(1)), ReturnWhen::AllCompleted);
    assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
    assert!(slow.result_timeout(Duration::from_millis(1)).is_err());
    let w = wait(&futs, None, ReturnWhen::AllCompleted);
    assert_eq!(w.done.len(), 2);
    assert!(wait::<f64>(&[], None, ReturnWhen::AllCompleted).done.is_empty());
}

#[test]
fn as_completed_yields_in_completion_order() {
    let e = Engine::builder(Box::new(ThreadPool::new(3))).build();
    let futs: Vec<_> = [0.3, 0.0, 0.15].iter().map(|s| e.submit::<Sleep>(((*s).into(),))).collect();
    let order: Vec<f64> = as_completed(futs.clone(), None).map(|f| f.unwrap().result().unwrap()).collect();
    assert_eq!(order, vec![0.0, 0.15, 0.3]);
    let mut it = as_completed(vec![e.submit::<Sleep>((1.0.into(),))], Some(Duration::from_millis(5)));
    assert!(it.next().unwrap().is_err(), "timeout is reported");
    assert_eq!(as_completed::<f64>(vec![], None).count(), 0);
}

#[test]
fn map_returns_results_in_input_order() {
    let e = Engine::builder(Box::new(ThreadPool::new(2))).build();
    let futs = e.map::<Add>((0..50u64).map(|i| (i.into(), (i * 2).into())));
    let got: Vec<u64> = futs.iter().map(|f| f.result().unwrap()).collect();
    assert_eq!(got, (0..50u64).map(|i| i * 3).collect::<Vec<_>>());
}

#[test]
fn cancelling_a_waiting_task_records_it_as_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 1);
    let blocker = e.submit::<Sleep>((0.2.into(),));
    let parent_of_cancelled = e.submit::<Sleep>((0.3.into(),));
    let child = e.submit::<Sleep>(((&parent_of_cancelled).into(),));
    let sibling = e.submit::<Sleep>(((&parent_of_cancelled).into(),));
    e.cancel(&child);
    assert_eq!(child.result().unwrap_err().kind, "Cancelled");
    assert!(blocker.result().is_ok() && sibling.result().is_ok(), "only the cancelled task is affected");
    let s = e.shutdown();
    assert_eq!(s.records, s.submitted);
    assert_eq!(s.failed, 1);
}

#[test]
fn completions_queue_and_many_submissions() {
    // 200,000 submissions return at once (a submit never waits for execution) and all complete.
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 2);
    let mut q = Completions::new();
    for i in 0..200_000u64 {
        q.push(e.submit::<Add>((i.into(), 1.into())));
    }
    let mut sum = 0u64;
    for f in q {
        sum += f.result().unwrap();
    }
    assert_eq!(sum, (1..=200_000u64).sum::<u64>());
    let s = e.shutdown();
    assert_eq!((s.submitted, s.records), (200_000, 200_000));
    let text = std::fs::read_to_string(tmp.path().join("tasks.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 200_000);
}

#[test]
fn tasks_pending_at_interrupt_are_recorded_as_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 1);
    let running = e.submit::<Sleep>((0.2.into(),));
    let chain: Vec<_> = (0..5).map(|_| e.submit::<Sleep>(((&running).into(),))).collect();
    std::thread::sleep(Duration::from_millis(20));
    e.interrupt();
    for f in &chain {
        assert_eq!(f.result().unwrap_err().kind, "Interrupted");
    }
    let late = e.submit::<Sleep>((0.0.into(),));
    assert_eq!(late.result().unwrap_err().kind, "Interrupted");
    let s = e.shutdown();
    assert!(s.interrupted);
    assert_eq!(s.records, 7, "every submitted task has exactly one record");
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 7);
}

/// A hook that gives every task an extra parent, as the failures app's dependency injection does.
struct ExtraParent;
impl taps::engine::SubmitHook for ExtraParent {
    fn submit(
        &self,
        base: &Engine,
        def: &'static taps::task::TaskDef,
        name: &'static str,
        mut slots: Vec<taps::task::Slot>,
    ) -> std::sync::Arc<taps::engine::TaskCell> {
        let parent = base.submit::<Sleep>((0.0.into(),));
        // The wrapped task ignores its first argument: use a def that drops it.
        slots.insert(0, taps::task::Slot::Future(parent.cell().clone()));
        let _ = def;
        base.submit_named::<u64>(taps::engine::task_def::<DropFirstAdd>(), name, slots).cell().clone()
    }
}

struct DropFirstAdd;
impl Task for DropFirstAdd {
    const NAME: &'static str = "test-drop-first-add";
    type Args = (f64, u64, u64);
    type Output = u64;
    fn run((_, a, b): (f64, u64, u64)) -> Result<u64, TaskError> {
        Ok(a + b)
    }
}

#[test]
fn a_hooked_view_intercepts_submissions_and_keeps_task_names() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 2);
    let view = e.with_hook(std::sync::Arc::new(ExtraParent));
    let f = view.submit::<Add>((2.into(), 3.into()));
    assert_eq!(f.result().unwrap(), 5);
    assert_eq!(view.shutdown(), taps::engine::EngineSummary::default(), "a view does not shut the engine down");
    drop(view);
    let g = e.submit::<Add>((1.into(), 1.into()));
    assert_eq!(g.result().unwrap(), 2, "the engine still runs after the view is gone");
    let s = e.shutdown();
    assert_eq!(s.records, 3);
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    let hooked = recs.iter().find(|r| r.task_id == f.task_id().to_string()).unwrap();
    assert_eq!(hooked.name, "test-add", "recorded under the intercepted task's name");
    assert_eq!(hooked.parent_task_ids.len(), 1);
}

struct Make;
impl Task for Make {
    const NAME: &'static str = "test-make";
    type Args = (u64,);
    type Output = Vec<u8>;
    fn run((n,): (u64,)) -> Result<Vec<u8>, TaskError> {
        Ok(vec![1; n as usize])
    }
}

struct Holders;
impl Task for Holders {
    const NAME: &'static str = "test-holders";
    type Args = (taps::task::Shared<Vec<u8>>,);
    type Output = u64;
    fn run((v,): (taps::task::Shared<Vec<u8>>,)) -> Result<u64, TaskError> {
        Ok(std::sync::Arc::strong_count(&v.0) as u64)
    }
}

#[test]
fn shared_arguments_are_not_copied_in_process() {
    let e = Engine::builder(Box::new(ThreadPool::new(1))).build();
    let big = e.submit::<Make>((1_000_000.into(),));
    let holders = e.submit::<Holders>(((&big).into(),));
    // The parent's cell and the child hold the same allocation: no copy was made.
    assert!(holders.result().unwrap() >= 2);
    assert_eq!(big.result().unwrap().len(), 1_000_000);
}

/// A value whose copies are counted.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counted(Vec<u8>);
taps::task_arg!(Counted);

static COPIES: AtomicUsize = AtomicUsize::new(0);
static GO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Clone for Counted {
    fn clone(&self) -> Self {
        COPIES.fetch_add(1, Ordering::SeqCst);
        Counted(self.0.clone())
    }
}

/// Makes a `Counted` once the test lets it ([`GO`]).
struct MakeCounted;
impl Task for MakeCounted {
    const NAME: &'static str = "test-make-counted";
    type Args = ();
    type Output = Counted;
    fn run(_: ()) -> Result<Counted, TaskError> {
        common::wait_for(|| GO.load(Ordering::SeqCst).then_some(()));
        Ok(Counted(vec![7; 1 << 20]))
    }
}

/// Takes its argument by value: the copies made to give it one.
struct TakeCounted;
impl Task for TakeCounted {
    const NAME: &'static str = "test-take-counted";
    type Args = (Counted,);
    type Output = u64;
    fn run((c,): (Counted,)) -> Result<u64, TaskError> {
        assert_eq!(c.0.len(), 1 << 20);
        Ok(COPIES.load(Ordering::SeqCst) as u64)
    }
}

/// A child that takes its parent's result by value, once the app dropped the parent's future,
/// gets the value itself: nothing else holds it (cholesky's updates work on their tile in place;
/// a child holding its parent's cell until it finished made each of them copy a tile).
#[test]
fn a_child_takes_a_value_nothing_else_holds_without_a_copy() {
    let e = Engine::builder(Box::new(ThreadPool::new(2))).build();
    let parent = e.submit::<MakeCounted>(());
    let child = e.submit::<TakeCounted>(((&parent).into(),));
    drop(parent);
    GO.store(true, Ordering::SeqCst);
    assert_eq!(child.result().unwrap(), 0, "copies made of the parent's value");
    assert_eq!(e.shutdown().failed, 0);
}

/// The file transformer deletes a result's file as soon as nothing can read it (its futures
/// dropped, its children finished), while the run goes on; a value already read stays intact.
#[test]
fn a_results_file_is_deleted_once_its_futures_are_dropped_and_its_children_finished() {
    use taps::data::{DataLayer, DataSpec};
    use taps::engine::builtin::Echo;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let options = format!("file_dir = {:?}\n", dir.display().to_string());
    let spec = DataSpec { transformer: Some(("file".into(), options)), ..Default::default() };
    let e = Engine::builder(Box::new(ThreadPool::new(2))).data(DataLayer::from_spec(spec).unwrap()).build();
    let files = || std::fs::read_dir(&dir).unwrap().count();
    // Large enough to be mapped from its file rather than read.
    let value = bytes::Bytes::from(vec![3u8; 1 << 20]);
    let parent = e.submit::<Echo>((value.clone().into(),));
    let child = e.submit::<Echo>(((&parent).into(),));
    assert_eq!(child.result().unwrap(), value);
    let read = parent.result().unwrap();
    // The argument's file went when its task finished (no `free/` here to recycle it into).
    assert_eq!(files(), 2);
    drop(parent);
    common::wait_for(|| (files() == 1).then_some(()));
    assert_eq!(read, value, "a value mapped from a deleted file stays intact");
    drop(child);
    common::wait_for(|| (files() == 0).then_some(()));
    assert_eq!(e.shutdown().records, 2);
}

/// Bytes a decoded value reads in place (from a mapped file, with the `file` transformer).
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
struct InPlace(#[serde(deserialize_with = "taps::shm::bytes_in_place")] bytes::Bytes);
taps::task_arg!(InPlace);

/// Returns its argument.
struct EchoInPlace;
impl Task for EchoInPlace {
    const NAME: &'static str = "test-echo-in-place";
    type Args = (InPlace,);
    type Output = InPlace;
    fn run((b,): (InPlace,)) -> Result<InPlace, TaskError> {
        Ok(b)
    }
}

/// The file mapped at `ptr` in this process, from /proc/self/maps.
fn mapped_file(ptr: *const u8) -> Option<String> {
    let p = ptr as usize;
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let (lo, hi) = (usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?);
        (lo <= p && p < hi).then(|| f.nth(4).unwrap_or("").to_string())
    })
}

/// Inodes of the regular files directly in `dir`.
fn inodes(dir: &std::path::Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.ino())
        .collect()
}

#[test]
fn a_recycled_file_is_never_overwritten_while_a_value_is_mapped_from_it() {
    use taps::data::{DataLayer, DataSpec};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let free = dir.join("free");
    // As the driver makes it: the run's directory and its pool of released files.
    std::fs::create_dir_all(&free).unwrap();
    let options = format!("file_dir = {:?}\n", dir.display().to_string());
    let spec = DataSpec { transformer: Some(("file".into(), options)), ..Default::default() };
    let e = Engine::builder(Box::new(ThreadPool::new(1))).data(DataLayer::from_spec(spec).unwrap()).build();
    let value = |k: u8| InPlace((0..1u32 << 20).map(|i| (i as u8) ^ k).collect::<Vec<u8>>().into());

    // A result read in place and kept after its future is dropped: its file goes to free/.
    let a = value(1);
    let fa = e.submit::<EchoInPlace>((a.clone().into(),));
    let held = fa.result().unwrap();
    assert_eq!(held, a);
    let file = mapped_file(held.0.as_ptr()).expect("the value is read in place from a mapping");
    assert!(file.starts_with(&dir.display().to_string()), "mapped from the run's file, not {}", file);
    let [arg_ino] = inodes(&free)[..] else { panic!("the finished task's argument file is in free/") };
    let [held_ino] = inodes(&dir)[..] else { panic!("one live file: the result's") };
    drop(fa);
    common::wait_for(|| (inodes(&free).len() == 2).then_some(()));
    // A file of the run by its inode, wherever it is (free/ or in use), read whole.
    let contents = |ino: u64| {
        use std::os::unix::fs::MetadataExt;
        [&free, &dir]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
            .find(|e| e.metadata().is_ok_and(|m| m.is_file() && m.ino() == ino))
            .map(|e| std::fs::read(e.path()).unwrap())
    };
    let arg_before = contents(arg_ino).expect("the argument's file is in free/");

    // Values stored while it is held reuse the other free file, never the held one. The other
    // is taken by the next argument or result, whichever reads free/ first (directory order),
    // so its reuse is seen by its contents, not by where it is.
    let mut live = Vec::new();
    for k in 2..10u8 {
        let v = value(k);
        let f = e.submit::<EchoInPlace>((v.clone().into(),));
        assert_eq!(f.result().unwrap(), v);
        live.extend(inodes(&dir));
        assert!(inodes(&free).contains(&held_ino), "the held value's file stays in free/");
        assert!(held == a, "a value mapped from a released file stays intact");
    }
    assert!(contents(arg_ino).is_some_and(|c| c != arg_before), "released files are reused");
    assert!(!live.contains(&held_ino));

    // Once unmapped it is reused: tasks whose results are kept drain free/ until it is taken —
    // for an argument (back in free/ once its task finished) or a result (kept in the run's
    // directory), so it is seen by its contents, overwritten with another value.
    let before = contents(held_ino).expect("the held value's file is in free/");
    drop(held);
    let mut kept = Vec::new();
    let mut reused = false;
    for k in 10..40u8 {
        let v = value(k);
        let f = e.submit::<EchoInPlace>((v.clone().into(),));
        assert_eq!(f.result().unwrap(), v);
        kept.push((f, v));
        reused = contents(held_ino).is_some_and(|c| c != before);
        if reused {
            break;
        }
    }
    assert!(reused, "a file no longer mapped is reused");
    for (f, v) in &kept {
        assert!(&f.result().unwrap() == v, "every kept result intact");
    }
    let n = kept.len() as u64;
    drop(kept);
    assert_eq!(e.shutdown().records, 9 + n);
}

#[test]
fn children_submitted_while_their_parents_finish_on_the_workers_all_run() {
    // A thread-pool task is finished on the worker that ran it, while the dispatcher registers a
    // child of it on its own thread: each child is submitted the moment its parent starts, so
    // the two race (a child that missed its parent's outcome would wait forever). The last
    // batch is still running at shutdown, which waits for it.
    let tmp = tempfile::tempdir().unwrap();
    let e = engine_with_records(tmp.path(), 2);
    let mut children = Vec::new();
    for i in 0..4_000u64 {
        let parent = e.submit::<Add>((i.into(), 1.into()));
        children.push((i, e.submit::<Add>(((&parent).into(), (&parent).into()))));
    }
    for (i, c) in children.iter().take(3_000) {
        let r = c.result_timeout(Duration::from_secs(120)).expect("the child ran (no lost wake-up)");
        assert_eq!(r.unwrap(), 2 * (i + 1));
    }
    let s = e.shutdown();
    assert_eq!((s.submitted, s.records, s.failed), (8_000, 8_000, 0));
    for (i, c) in &children {
        assert_eq!(c.result().unwrap(), 2 * (i + 1));
    }
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 8_000);
    // A parent's record comes before its child's.
    let at: std::collections::HashMap<&str, usize> =
        recs.iter().enumerate().map(|(i, r)| (r.task_id.as_str(), i)).collect();
    for (i, r) in recs.iter().enumerate() {
        for p in &r.parent_task_ids {
            assert!(at[p.as_str()] < i, "the record of parent {} comes after its child's", p);
        }
    }
}

//! The conditions a benchmark ran under: was the machine idle? Dispatch figures on a busy machine
//! look better than an idle one's (a blocked thread wakes faster when the core is awake anyway),
//! and worse when other processes take the cores, so `taps bench` reports both the load average
//! and what the rest of the machine and the hypervisor took while it ran.
//!
//! From `/proc/stat` (all CPUs, in clock ticks) and `getrusage` of this process and its waited-for
//! children (the benchmark's own CPU): `others` is the busy time of the whole machine minus the
//! benchmark's own, `steal` the time the hypervisor gave to other guests, both as a share of
//! `cores × elapsed`.

use std::time::Instant;

use serde::Serialize;

/// Idle when other processes took less than this share of the machine's CPU…
const IDLE_OTHERS: f64 = 0.05;
/// …and the hypervisor stole less than this.
const IDLE_STEAL: f64 = 0.02;

/// A reading at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    busy_ticks: u64,
    steal_ticks: u64,
    own_cpu_s: f64,
    load: [f64; 3],
}

/// What happened on the machine between two samples.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Conditions {
    /// Wall time between the samples, seconds.
    pub seconds: f64,
    /// CPUs this process may run on.
    pub cores: usize,
    /// 1, 5 and 15-minute load averages at the start.
    pub load_average_before: [f64; 3],
    /// The same at the end.
    pub load_average_after: [f64; 3],
    /// CPU used by the benchmark itself (its runs, workers and ranks), percent of the machine.
    pub own_cpu_percent: f64,
    /// CPU used by every other process, percent of the machine.
    pub others_cpu_percent: f64,
    /// CPU time the hypervisor gave to other guests, percent of the machine.
    pub steal_percent: f64,
    /// `idle` or `loaded`.
    pub verdict: String,
}

fn proc_stat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    (at(0) + at(1) + at(2) + at(5) + at(6), at(7))
}

fn own_cpu() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the zeroed struct we pass.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

fn load() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text.split_whitespace().filter_map(|x| x.parse().ok());
    [v.next().unwrap_or(0.0), v.next().unwrap_or(0.0), v.next().unwrap_or(0.0)]
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

impl Sample {
    /// Reads the machine now.
    pub fn now() -> Self {
        let (busy_ticks, steal_ticks) = proc_stat();
        Sample { at: Instant::now(), busy_ticks, steal_ticks, own_cpu_s: own_cpu(), load: load() }
    }

    /// What happened between `self` and now.
    pub fn until_now(&self) -> Conditions {
        let end = Sample::now();
        let cores = std::fs::read_to_string("/proc/stat")
            .map(|t| t.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count())
            .unwrap_or(1)
            .max(1);
        between(self, &end, cores, ticks_per_second())
    }
}

fn between(a: &Sample, b: &Sample, cores: usize, hz: f64) -> Conditions {
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    let capacity = (seconds * cores as f64).max(1e-9);
    let busy = b.busy_ticks.saturating_sub(a.busy_ticks) as f64 / hz;
    let steal = b.steal_ticks.saturating_sub(a.steal_ticks) as f64 / hz;
    let own = (b.own_cpu_s - a.own_cpu_s).max(0.0);
    let others = (busy - own).max(0.0) / capacity;
    let steal = steal / capacity;
    let idle = others < IDLE_OTHERS && steal < IDLE_STEAL;
    let pct = |x: f64| (x * 1000.0).round() / 10.0;
    Conditions {
        seconds,
        cores,
        load_average_before: a.load,
        load_average_after: b.load,
        own_cpu_percent: pct(own / capacity),
        others_cpu_percent: pct(others),
        steal_percent: pct(steal),
        verdict: if idle { "idle" } else { "loaded" }.to_string(),
    }
}

impl Conditions {
    /// One line for the report.
    pub fn line(&self) -> String {
        let l = |v: [f64; 3]| format!("{:.2} {:.2} {:.2}", v[0], v[1], v[2]);
        format!(
            "Conditions: {} machine — during the {:.0} s run other processes used {:.1}% of its {} CPUs, the hypervisor stole {:.1}%, taps itself used {:.1}%; load average {} before, {} after",
            self.verdict,
            self.seconds,
            self.others_cpu_percent,
            self.cores,
            self.steal_percent,
            self.own_cpu_percent,
            l(self.load_average_before),
            l(self.load_average_after)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: f64, busy: u64, steal: u64, own: f64) -> Sample {
        let at = Instant::now();
        Sample {
            at: at + std::time::Duration::from_secs_f64(secs),
            busy_ticks: busy,
            steal_ticks: steal,
            own_cpu_s: own,
            load: [0.0; 3],
        }
    }

    #[test]
    fn others_are_the_machines_busy_time_minus_our_own() {
        // 10 s on 2 cores = 20 CPU-seconds; the machine was busy 12 s, 10 of them ours.
        let c = between(&sample(0.0, 0, 0, 1.0), &sample(10.0, 1200, 10, 11.0), 2, 100.0);
        assert_eq!((c.own_cpu_percent, c.others_cpu_percent, c.steal_percent), (50.0, 10.0, 0.5));
        assert_eq!(c.verdict, "loaded");
        let c = between(&sample(0.0, 0, 0, 0.0), &sample(10.0, 1050, 10, 10.0), 2, 100.0);
        assert_eq!((c.others_cpu_percent, c.verdict.as_str()), (2.5, "idle"));
        let c = between(&sample(0.0, 0, 0, 0.0), &sample(10.0, 1000, 100, 10.0), 2, 100.0);
        assert_eq!((c.steal_percent, c.verdict.as_str()), (5.0, "loaded"));
    }

    #[test]
    fn a_busy_loop_elsewhere_makes_the_machine_loaded() {
        // A child process (not ours: it is never waited for before the sample) spinning.
        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let s = Sample::now();
        std::thread::sleep(std::time::Duration::from_millis(600));
        let c = s.until_now();
        let _ = child.kill();
        let _ = child.wait();
        // The spinner alone is a whole CPU when it has one; under load it still gets a fifth.
        assert!(c.others_cpu_percent > 100.0 / c.cores as f64 * 0.2, "{:?}", c);
        assert_eq!(c.verdict, "loaded");
    }
}

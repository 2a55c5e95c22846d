//! Environment capture: `environment.json` and the "Environment:" log block.

use serde_json::{Value, json};

/// The build's git commit (if built from a git checkout) and rustc version.
pub(crate) const GIT_COMMIT: Option<&str> = option_env!("TAPS_GIT_COMMIT");
/// rustc that built this binary.
pub(crate) const RUSTC_VERSION: &str = env!("TAPS_RUSTC_VERSION");

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn os_release() -> String {
    read("/etc/os-release")
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

fn kernel() -> String {
    read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn cpu_model() -> Option<String> {
    read("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
}

fn physical_cores() -> Option<usize> {
    let info = read("/proc/cpuinfo")?;
    let mut ids = std::collections::BTreeSet::new();
    let mut phys = String::new();
    for l in info.lines() {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim() {
                "physical id" => phys = v.trim().to_string(),
                "core id" => {
                    ids.insert((phys.clone(), v.trim().to_string()));
                }
                _ => {}
            }
        }
    }
    (!ids.is_empty()).then_some(ids.len())
}

fn memory_gb() -> Option<f64> {
    let kb: f64 = read("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((kb * 1024.0 / 1e9 * 100.0).round() / 100.0)
}

/// The environment as a JSON object (groups: hardware, software, system).
/// OpenBLAS's configuration, the kernel set in use, and `OPENBLAS_CORETYPE` if set (by the user,
/// or by taps when OpenBLAS fell back to generic kernels).
fn blas() -> Value {
    use crate::apps::cholesky::kernels as k;
    json!({ "config": k::blas_config(), "core": k::blas_core(), "coretype": std::env::var(k::CORETYPE_VAR).ok() })
}

pub fn collect() -> Value {
    let logical = std::thread::available_parallelism().map(|n| n.get()).ok();
    json!({
        "hardware": {
            "architecture": std::env::consts::ARCH,
            "cpu_model": cpu_model(),
            "physical_cores": physical_cores(),
            "logical_cores": logical,
            "memory_capacity": memory_gb(),
        },
        "software": {
            "taps": env!("CARGO_PKG_VERSION"),
            "taps_git_commit": GIT_COMMIT,
            "rustc": RUSTC_VERSION,
            "mpi": crate::executor::mpi_library_version(),
            "blas": blas(),
        },
        "system": {
            "hostname": crate::engine::hostname(),
            "platform": std::env::consts::OS,
            "platform_ext": format!("{} (kernel {})", os_release(), kernel()),
        },
    })
}

/// The human-readable form for the log.
pub(crate) fn pretty(v: &Value) -> String {
    let g = |a: &str, b: &str| match &v[a][b] {
        Value::Null => "unknown".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!(
        "system:\n  hostname: {}\n  os: {} ({})\n  cpu: {} {} ({} cores / {} logical)\n  memory: {} GB\nsoftware:\n  taps: {} (commit {})\n  rustc: {}\n  mpi: {}\n  blas: {} kernels ({})",
        g("system", "hostname"),
        g("system", "platform"),
        g("system", "platform_ext"),
        g("hardware", "architecture"),
        g("hardware", "cpu_model"),
        g("hardware", "physical_cores"),
        g("hardware", "logical_cores"),
        g("hardware", "memory_capacity"),
        g("software", "taps"),
        g("software", "taps_git_commit"),
        g("software", "rustc"),
        g("software", "mpi"),
        v["software"]["blas"]["core"].as_str().unwrap_or("unknown"),
        v["software"]["blas"]["config"].as_str().unwrap_or("unknown"),
    )
}

//! Rank 0's exit status, for the launcher that started the job (`taps run --engine.executor mpi`
//! or a job script of `taps submit`, both through a launch profile): mpirun with recovery
//! enabled exits 0 whatever the ranks return, so rank 0 writes its exit code into the file given
//! by `--status-file`. The launcher creates that file blank before the job starts and rank 0
//! overwrites it in place, so the status arrives even when the run filled its filesystem. And
//! whether the launcher recovers from a lost rank ([`launcher_kills_job`]).

use std::io::Write;
use std::path::Path;

/// Whether this is an OpenMPI job whose mpirun kills every rank when one dies: started by
/// mpirun without recovery (`OMPI_MCA_orte_enable_recovery`, which the launch profiles set).
pub(crate) fn launcher_kills_job() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
        && !std::env::var("OMPI_MCA_orte_enable_recovery").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
}

/// Length of the status record: the exit code, padded with blanks, and a newline.
pub(crate) const STATUS_LEN: usize = 16;

/// Writes rank 0's exit `code` into the status file: in place when the launcher created it blank
/// (no new disk space needed), else as a new file (removed again if it cannot be written whole).
pub(crate) fn write_status(path: &Path, code: i32) -> std::io::Result<()> {
    let record = format!("{:<width$}\n", code, width = STATUS_LEN - 1);
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => f.write_all(record.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(path, record.as_bytes()).inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            })
        }
        Err(e) => Err(e),
    }
}

/// Rank 0's exit code from a status file (`None` while it is blank or missing).
pub(crate) fn read_status(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok())
}

/// Creates the status file blank, for rank 0 to overwrite in place.
pub(crate) fn create_blank(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, format!("{:width$}\n", "", width = STATUS_LEN - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_written_in_place_or_as_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(".taps-mpi-status");
        create_blank(&f).unwrap();
        assert_eq!(read_status(&f), None, "blank until rank 0 writes it");
        write_status(&f, 130).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), STATUS_LEN as u64);
        assert_eq!(read_status(&f), Some(130));
        std::fs::remove_file(&f).unwrap();
        write_status(&f, 1).unwrap();
        assert_eq!(read_status(&f), Some(1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file");
    }
}

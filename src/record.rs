//! Task records: one JSON line per task in `tasks.jsonl`, fields as in the Python suite.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::task::TaskError;

/// Seconds since the Unix epoch, as a float (the record time format).
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Worker-side timing of one execution (the record's `execution` object).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionInfo {
    /// Host the task ran on.
    pub hostname: String,
    /// Worker wrapper entered.
    pub execution_start_time: f64,
    /// Worker wrapper left.
    pub execution_end_time: f64,
    /// Task body started.
    pub task_start_time: f64,
    /// Task body ended.
    pub task_end_time: f64,
    /// Argument resolution (transformer) started.
    pub input_transform_start_time: f64,
    /// Argument resolution ended.
    pub input_transform_end_time: f64,
    /// Result transformation started.
    pub result_transform_start_time: f64,
    /// Result transformation ended.
    pub result_transform_end_time: f64,
}

/// One line of `tasks.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// UUID assigned at submit.
    pub task_id: String,
    /// Task name.
    pub name: String,
    /// Ids of the futures passed as top-level arguments, in order, duplicates kept.
    pub parent_task_ids: Vec<String>,
    /// Driver: when `submit` was called.
    pub submit_time: f64,
    /// Driver: when the completion was processed.
    pub received_time: Option<f64>,
    /// Whether the task returned a value.
    pub success: Option<bool>,
    /// Why it failed.
    pub exception: Option<TaskError>,
    /// Worker-side timings (None if it never ran).
    pub execution: Option<ExecutionInfo>,
    /// Extra: which worker ran it (`thread-N`, `pid-N`, `rank-N`).
    #[serde(default)]
    pub worker: Option<String>,
    /// Extra: bytes of arguments and result moved inline (serialised in messages).
    #[serde(default)]
    pub bytes_inline: u64,
    /// Extra: bytes of arguments and result moved by reference (through a transformer).
    #[serde(default)]
    pub bytes_by_reference: u64,
}

/// Writes records as JSON lines; `flush` after each batch of completions.
pub struct RecordWriter {
    out: Option<BufWriter<File>>,
    written: u64,
}

impl RecordWriter {
    /// Writes to `path` (created, must not exist: runs never share a file).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let f = File::options().write(true).create_new(true).open(path)?;
        Ok(RecordWriter { out: Some(BufWriter::with_capacity(1 << 16, f)), written: 0 })
    }

    /// Discards records (`task_record_file_name = "none"`).
    pub fn null() -> Self {
        RecordWriter { out: None, written: 0 }
    }

    /// Appends one record.
    pub fn write(&mut self, r: &TaskRecord) -> std::io::Result<()> {
        self.written += 1;
        if let Some(out) = &mut self.out {
            serde_json::to_writer(&mut *out, r)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// Number of records written.
    pub fn count(&self) -> u64 {
        self.written
    }
}

/// Reads every record of a `tasks.jsonl` file.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<TaskRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{}:{}: invalid record: {}", path.display(), i + 1, e))
        })
        .collect()
}

/// Counts the records of a `tasks.jsonl` file and the failed ones, reading one line at a time.
pub fn count_records(path: &Path) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    #[derive(Deserialize)]
    struct Outcome {
        success: Option<bool>,
    }
    let (mut total, mut failed) = (0, 0);
    for (i, line) in std::io::BufReader::new(File::open(path)?).lines().enumerate() {
        let o: Outcome = serde_json::from_str(&line?)
            .map_err(|e| anyhow::anyhow!("{}:{}: invalid record: {}", path.display(), i + 1, e))?;
        total += 1;
        if o.success != Some(true) {
            failed += 1;
        }
    }
    Ok((total, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let rec = |ok: bool| TaskRecord {
            task_id: uuid::Uuid::new_v4().to_string(),
            name: "t".into(),
            parent_task_ids: vec![],
            submit_time: 1.0,
            received_time: Some(2.0),
            success: Some(ok),
            exception: (!ok).then(|| TaskError::new("E", "m")),
            execution: None,
            worker: None,
            bytes_inline: 0,
            bytes_by_reference: 0,
        };
        let mut w = RecordWriter::create(&path).unwrap();
        for ok in [true, false, true, false, false] {
            w.write(&rec(ok)).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(count_records(&path).unwrap(), (5, 3));
        assert_eq!(read_records(&path).unwrap().len(), 5);
    }
}

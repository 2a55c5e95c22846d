//! Task records: one JSON line per task in `tasks.jsonl`, fields as in the Python suite.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
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
///
/// The file only ever holds whole lines: if a write fails (a full disk), the file is cut back to
/// its last whole line, what still fits is written line by line, and every later write fails at
/// once with the first error (the caller stops the run).
pub struct RecordWriter {
    out: Option<Out>,
    written: u64,
}

struct Out {
    file: File,
    path: PathBuf,
    /// Whole lines not yet written to the file.
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    /// Bytes of whole lines in the file.
    durable: u64,
    /// The first write error.
    failed: Option<std::io::ErrorKind>,
}

/// Records are buffered up to this size between flushes.
const BUFFER: usize = 1 << 16;

impl RecordWriter {
    /// Writes to `path` (created, must not exist: runs never share a file).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::options().write(true).create_new(true).open(path)?;
        let out =
            Out { file, path: path.to_path_buf(), buf: Vec::with_capacity(BUFFER), lines: 0, durable: 0, failed: None };
        Ok(RecordWriter { out: Some(out), written: 0 })
    }

    /// Discards records (`task_record_file_name = "none"`).
    pub fn null() -> Self {
        RecordWriter { out: None, written: 0 }
    }

    /// Appends one record (written to the file at the next [`flush`](Self::flush) at the latest).
    pub fn write(&mut self, r: &TaskRecord) -> std::io::Result<()> {
        let Some(out) = &mut self.out else {
            self.written += 1;
            return Ok(());
        };
        if let Some(kind) = out.failed {
            return Err(kind.into());
        }
        let len = out.buf.len();
        if let Err(e) = serde_json::to_writer(&mut out.buf, r) {
            out.buf.truncate(len);
            return Err(e.into());
        }
        out.buf.push(b'\n');
        out.lines += 1;
        if out.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Pushes buffered records to the file.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        let Some(out) = &mut self.out else { return Ok(()) };
        if let Some(kind) = out.failed {
            return Err(kind.into());
        }
        if out.buf.is_empty() {
            return Ok(());
        }
        let result = out.file.write_all(&out.buf);
        match &result {
            Ok(()) => {
                out.durable += out.buf.len() as u64;
                self.written += out.lines;
            }
            Err(e) => {
                out.failed = Some(e.kind());
                // Cut a torn line off, then save whole lines one by one while they fit.
                if out.cut_back().is_ok() {
                    for line in out.buf.split_inclusive(|&b| b == b'\n') {
                        if out.file.write_all(line).is_err() {
                            let _ = out.cut_back();
                            break;
                        }
                        out.durable += line.len() as u64;
                        self.written += 1;
                    }
                }
            }
        }
        out.buf.clear();
        out.lines = 0;
        result
    }

    /// The record file, if records are written to one.
    pub fn path(&self) -> Option<&Path> {
        self.out.as_ref().map(|o| o.path.as_path())
    }

    /// Number of records written (in the file once flushed).
    pub fn count(&self) -> u64 {
        self.written
    }
}

impl Out {
    /// Truncates the file to its whole lines and continues writing there.
    fn cut_back(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.durable)?;
        self.file.seek(std::io::SeekFrom::Start(self.durable)).map(|_| ())
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
pub(crate) fn count_records(path: &Path) -> anyhow::Result<(u64, u64)> {
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
            exception: (!ok).then(|| TaskError::exception("E", "m")),
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

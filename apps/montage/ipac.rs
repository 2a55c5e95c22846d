//! Montage's text formats: IPAC tables (`images.tbl`, `diffs.tbl`, `fits.tbl`,
//! `corrections.tbl`) and the `[struct stat="OK", ...]` status line every Montage program prints.
//!
//! An IPAC table has keyword lines (`\key = value`, `\comment`), then one to four header lines
//! starting with `|` (names, then types, units, nulls), whose `|` characters mark the column
//! boundaries, then one data row per line, in fixed-width columns under those boundaries. The
//! Python suite read them with pandas as whitespace-separated text, which mislabelled columns
//! (`|.1`, `cntr2`, `|.2` for plus, minus, diff) and took the first data row of
//! `corrections.tbl` for its header; here columns are found by name.

use std::path::Path;

/// An IPAC table: column names and rows of trimmed text cells.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows; each has one cell per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads and parses the table in `path`.
    pub fn read(path: &Path) -> Result<Table, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {}", path.display(), e))?;
        Table::parse(&text).map_err(|e| format!("{}: {}", path.display(), e))
    }

    /// Parses the text of a table.
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut bounds: Option<Vec<usize>> = None;
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('\\') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with('|') {
                if !rows.is_empty() {
                    return Err(format!("line {}: a header line after data rows", n + 1));
                }
                if bounds.is_none() {
                    let b: Vec<usize> = line.char_indices().filter(|&(_, c)| c == '|').map(|(i, _)| i).collect();
                    columns = b.windows(2).map(|w| line[w[0] + 1..w[1]].trim().to_string()).collect();
                    if columns.is_empty() || columns.iter().any(String::is_empty) {
                        return Err(format!("line {}: a header without column names: {:?}", n + 1, line));
                    }
                    bounds = Some(b);
                }
                continue;
            }
            let b = bounds.as_ref().ok_or_else(|| format!("line {}: data before the `|` header line", n + 1))?;
            // A cell spans from one boundary to the next (the boundary character itself is a space
            // in data rows; a value may run over it by one character, as Montage's right-aligned
            // numbers sometimes do, so a cell ends at the next boundary).
            let cells = b
                .windows(2)
                .map(|w| cell(line, w[0], w[1]))
                .collect::<Result<Vec<String>, String>>()
                .map_err(|e| format!("line {}: {}", n + 1, e))?;
            rows.push(cells);
        }
        if bounds.is_none() {
            return Err("no `|` header line (not an IPAC table)".into());
        }
        Ok(Table { columns, rows })
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Result<usize, String> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("no column {:?} (columns: {})", name, self.columns.join(", ")))
    }

    /// Every cell of column `name`.
    pub fn strings(&self, name: &str) -> Result<Vec<&str>, String> {
        let i = self.column(name)?;
        Ok(self.rows.iter().map(|r| r[i].as_str()).collect())
    }

    /// Every cell of column `name` as a number.
    pub fn numbers<T: std::str::FromStr>(&self, name: &str) -> Result<Vec<T>, String> {
        self.strings(name)?
            .into_iter()
            .enumerate()
            .map(|(row, s)| {
                s.parse().map_err(|_| format!("column {:?}, row {}: {:?} is not a number", name, row + 1, s))
            })
            .collect()
    }
}

/// The text of `line` between byte offsets `start` and `end` (exclusive; clipped to the line), trimmed.
fn cell(line: &str, start: usize, end: usize) -> Result<String, String> {
    let (start, end) = (start.min(line.len()), end.min(line.len()));
    line.get(start..end)
        .map(|s| s.trim().to_string())
        .ok_or_else(|| format!("a non-ASCII character across a column boundary in {:?}", line))
}

/// The status line of a Montage program, `[struct stat="OK", module="mImgtbl", count=4]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// `OK`, `WARNING` or `ERROR`.
    pub stat: String,
    /// The other fields in order, values unquoted.
    pub fields: Vec<(String, String)>,
}

impl Status {
    /// The last status line in `text` (a program's stdout), if any.
    pub fn find(text: &str) -> Option<Status> {
        text.lines().rev().find_map(|l| Status::parse(l.trim()))
    }

    /// Parses one `[struct ...]` line.
    pub fn parse(line: &str) -> Option<Status> {
        let body = line.strip_prefix("[struct ")?.strip_suffix(']')?;
        let mut fields = Vec::new();
        let mut rest = body.trim_start();
        while !rest.is_empty() {
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = &rest[eq + 1..];
            let value = if let Some(q) = rest.strip_prefix('"') {
                // A quoted value ends at the quote followed by a comma or the end.
                let end = q.match_indices('"').map(|(i, _)| i).find(|&i| {
                    let after = q[i + 1..].trim_start();
                    after.is_empty() || after.starts_with(',')
                })?;
                rest = &q[end + 1..];
                q[..end].to_string()
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let v = rest[..end].trim().to_string();
                rest = &rest[end..];
                v
            };
            fields.push((key, value));
            rest = rest.trim_start().strip_prefix(',').unwrap_or(rest).trim_start();
        }
        let stat = fields.iter().position(|(k, _)| k == "stat")?;
        let (_, stat) = fields.remove(stat);
        Some(Status { stat, fields })
    }

    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `stat="OK", count=4, ...` as the program printed it (for logs and errors).
    pub fn describe(&self) -> String {
        std::iter::once(format!("stat={}", self.stat))
            .chain(self.fields.iter().map(|(k, v)| format!("{}={}", k, v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mOverlaps` output as Montage 6.0 writes it (the pandas reading mislabelled these columns).
    const DIFFS: &str = "\
|   cntr1 |   cntr2 |                 plus |                minus |                           diff |
|     int |     int |                 char |                 char |                           char |
        0         1    hdu0_img0_0.fits       hdu0_img0_1.fits       diff.000000.000001.fits
        0         2    hdu0_img0_0.fits       hdu0_img1_0.fits       diff.000000.000002.fits
";

    #[test]
    fn columns_are_found_by_name_under_the_pipes() {
        let t = Table::parse(DIFFS).unwrap();
        assert_eq!(t.columns, ["cntr1", "cntr2", "plus", "minus", "diff"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.strings("minus").unwrap(), ["hdu0_img0_1.fits", "hdu0_img1_0.fits"]);
        assert_eq!(t.strings("diff").unwrap()[1], "diff.000000.000002.fits");
        assert_eq!(t.numbers::<u64>("cntr2").unwrap(), [1, 2]);
        assert!(t.column("fname").unwrap_err().contains("cntr1, cntr2, plus, minus, diff"));
    }

    #[test]
    fn keywords_and_a_single_header_line_are_read_and_every_data_row_kept() {
        // corrections.tbl has one header line; pandas took its first data row for the header.
        let text = "\\datatype=fitshdr\n|   id   |      a       |      b       |      c       |\n        0   -2.43392e-02    5.86995e-03   -4.95861e+01\n        1    1.85134e-02   -1.20649e-02   -1.62032e+01\n";
        let t = Table::parse(text).unwrap();
        assert_eq!(t.columns, ["id", "a", "b", "c"]);
        assert_eq!(t.numbers::<u64>("id").unwrap(), [0, 1]);
        assert_eq!(t.numbers::<f64>("a").unwrap(), [-2.43392e-02, 1.85134e-02]);
        assert_eq!(t.numbers::<f64>("c").unwrap(), [-4.95861e+01, -1.62032e+01]);
        assert!(t.numbers::<f64>("id").is_ok());
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert!(Table::parse("just text\n").unwrap_err().contains("data before"));
        assert!(Table::parse("").unwrap_err().contains("not an IPAC table"));
        assert!(Table::parse("|a|b|\n 1 x\n|c|\n").unwrap_err().contains("header line after data"));
        let t = Table::parse("|  a  |  b  |\n  1     x\n").unwrap();
        assert!(t.numbers::<f64>("b").unwrap_err().contains("\"x\" is not a number"));
    }

    #[test]
    fn status_lines_are_parsed_with_quoted_and_bare_values() {
        let s = Status::find("some text\n[struct stat=\"OK\", module=\"mImgtbl\", count=4, badfits=0]\n").unwrap();
        assert_eq!(s.stat, "OK");
        assert_eq!(s.get("module"), Some("mImgtbl"));
        assert_eq!(s.get("count"), Some("4"));
        assert_eq!(s.describe(), "stat=OK, module=mImgtbl, count=4, badfits=0");
        let e = Status::parse("[struct stat=\"ERROR\", msg=\"File \"a, b.fits\" not found.\"]").unwrap();
        assert_eq!(e.stat, "ERROR");
        assert_eq!(e.get("msg"), Some("File \"a, b.fits\" not found."));
        assert_eq!(Status::find("no status here"), None);
        assert_eq!(Status::parse("[struct module=\"x\"]"), None);
    }
}

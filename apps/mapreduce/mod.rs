//! `mapreduce`: word count over a directory of text files (map tasks over chunks of files, one
//! reduce task summing their counts), optionally over randomly generated files.
//!
//! Unlike the Python suite, every file is counted exactly once and no map task is ever empty:
//! the sorted file list is cut into `min(map_tasks, files)` contiguous, non-empty chunks of
//! near-equal weight (see [`chunk_files`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::app::{App, AppConfig, AppPlugin, Footprint};
use crate::engine::Engine;
use crate::options::Validate;
use crate::task::{Arg, ErrorKind, FilePath, Many, Registry, Shared, Task, TaskError};
use crate::{app_info, task_arg};

crate::options! {
    /// Options of the `mapreduce` app.
    pub(crate) struct MapreduceOptions {
        /// Directory of text files, read recursively (relative paths: against the launch directory).
        data_dir: PathBuf,
        /// Number of map tasks (none = one per file); never more than there are files.
        map_tasks: Option<u64> = Some(32),
        /// Generate random text files into data-dir (which must be missing or empty); removed at the end.
        generate: bool = false,
        /// Number of files to generate.
        generated_files: u64 = 10,
        /// Number of words in each generated file.
        generated_words: u64 = 10_000,
        /// Seed for the generated words (none = a fresh seed each run).
        seed: Option<u64> = None,
    }
}

impl Validate for MapreduceOptions {
    fn validate(&self) -> Result<(), String> {
        if self.map_tasks == Some(0) {
            return Err("app.map_tasks must be at least 1, or none for one map task per file".into());
        }
        if self.generate && self.generated_files == 0 {
            return Err("app.generated_files must be at least 1 when app.generate is true".into());
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        MapreduceOptions,
        "mapreduce",
        "word count over a directory of text files (map + reduce)"
    ),
    register_tasks,
};

/// At least one generated file's words (2 letters and a space each); nothing in the run directory.
fn footprint(o: &MapreduceOptions) -> Footprint {
    let memory_bytes = if o.generate { o.generated_words.saturating_mul(3) } else { 0 };
    let memory_for = format!("app.generated_words = {} words of a generated file", o.generated_words);
    Footprint { memory_bytes, memory_for, files: Vec::new() }
}

fn register_tasks(r: &mut Registry) {
    r.add::<MapTask>().add::<ReduceTask>();
}

/// Before the run directory exists: generate=true needs a missing or empty data-dir,
/// generate=false an existing directory with at least one file in it.
fn preflight(o: &MapreduceOptions) -> Result<(), String> {
    let dir = &o.data_dir;
    if o.generate {
        check_generate_target(dir)
    } else {
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "app.data_dir {} does not exist (give a directory of text files, or set --app.generate true to generate one)",
                dir.display()
            )),
            Err(e) => Err(format!("app.data_dir {}: {}", dir.display(), e)),
            Ok(m) if !m.is_dir() => Err(format!("app.data_dir {} is not a directory", dir.display())),
            Ok(_) => match has_file(dir) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "app.data_dir {} contains no files (give a directory of text files, or set --app.generate true)",
                    dir.display()
                )),
                Err(e) => Err(format!("app.data_dir {}: {}", dir.display(), e)),
            },
        }
    }
}

/// generate=true may only write into a missing or empty directory.
fn check_generate_target(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("app.data_dir {}: {}", dir.display(), e)),
        Ok(m) if !m.is_dir() => Err(format!(
            "app.data_dir {} exists and is not a directory; app.generate true needs a missing or empty directory",
            dir.display()
        )),
        Ok(_) => match std::fs::read_dir(dir).map(|mut r| r.next().is_none()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "app.data_dir {} is not empty; app.generate true needs a missing or empty directory \
                 (files are never written into a directory that holds data)",
                dir.display()
            )),
            Err(e) => Err(format!("app.data_dir {}: {}", dir.display(), e)),
        },
    }
}

impl AppConfig for MapreduceOptions {
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        let opts = self.clone();
        Ok(Box::new(MapreduceApp::new(opts, Some(run_dir))?))
    }

    fn preflight(&self) -> Result<(), String> {
        preflight(self)
    }

    fn footprint(&self) -> Footprint {
        footprint(self)
    }
}

/// Word counts of some files: each distinct whitespace-separated token with how often it
/// occurs, and how many files were read (so the app can check that every file was counted once).
///
/// Compact: the distinct words are concatenated in one string, with their end offsets and
/// counts in two parallel vectors. A count is three allocations whatever the number of words,
/// so it is cheap to send (process-pool serialises it), to clone and to drop.
///
/// The words of a finished count are grouped by [`partition`] (a slice of their hash), so that
/// the reduce can merge one partition of every part at a time, in a table that stays in cache.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "WireCounts")]
pub(crate) struct WordCounts {
    /// The distinct words, concatenated.
    text: String,
    /// End of word `i` in `text` (it starts where word `i - 1` ends).
    ends: Vec<u32>,
    /// Occurrences of word `i`.
    counts: Vec<u64>,
    /// Where each partition's words start ([`PARTITIONS`] + 1 indices, the last = the number of
    /// words), or empty if the words are in no particular order.
    starts: Vec<u32>,
    /// Files read.
    pub files: u64,
}

/// Partitions of a finished [`WordCounts`].
const PARTITIONS: usize = 64;

/// The partition of a word of hash `h` ([`hash_word`]): bits that the hash table uses neither
/// for the bucket (low bits) nor for its tags (top 7 bits).
#[inline]
fn partition(h: u64) -> usize {
    (h >> 40) as usize % PARTITIONS
}

task_arg!(WordCounts);

/// [`WordCounts`] on the wire: the word lengths and the counts as little-endian numbers of the
/// fewest bytes (1, 2, 4 or 8) that hold the largest, in byte strings. Random words make one
/// byte each, and a byte string serialises as one copy (postcard writes a varint per number).
#[derive(Deserialize)]
struct WireCounts {
    text: String,
    lengths: Packed,
    counts: Packed,
    starts: Packed,
    files: u64,
}

/// [`WireCounts`] to serialise, borrowing the text.
#[derive(Serialize)]
struct WireRef<'a> {
    text: &'a str,
    lengths: Packed,
    counts: Packed,
    starts: Packed,
    files: u64,
}

/// Numbers of `width` bytes each, little-endian.
#[derive(Serialize, Deserialize)]
struct Packed {
    width: u8,
    bytes: bytes::Bytes,
}

impl Packed {
    /// Packs `values` in the narrowest width that holds `max`.
    fn new(values: impl ExactSizeIterator<Item = u64>, max: u64) -> Self {
        let width = [1u8, 2, 4, 8].into_iter().find(|&w| w == 8 || max < 1 << (8 * w)).expect("8 fits all");
        let mut bytes = Vec::with_capacity(values.len() * width as usize);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes()[..width as usize]);
        }
        Packed { width, bytes: bytes.into() }
    }

    /// The numbers.
    fn unpack(&self) -> Result<Vec<u64>, String> {
        let w = self.width as usize;
        if ![1, 2, 4, 8].contains(&w) || !self.bytes.len().is_multiple_of(w) {
            return Err(format!("word counts: {} bytes of {}-byte numbers", self.bytes.len(), w));
        }
        Ok(match w {
            1 => self.bytes.iter().map(|&b| b as u64).collect(),
            _ => self
                .bytes
                .chunks_exact(w)
                .map(|c| {
                    let mut le = [0u8; 8];
                    le[..w].copy_from_slice(c);
                    u64::from_le_bytes(le)
                })
                .collect(),
        })
    }
}

impl Serialize for WordCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ends = &self.ends;
        let lengths = (0..ends.len()).map(|i| (ends[i] - if i == 0 { 0 } else { ends[i - 1] }) as u64);
        let max_len = lengths.clone().max().unwrap_or(0);
        let max_count = self.counts.iter().copied().max().unwrap_or(0);
        WireRef {
            text: &self.text,
            lengths: Packed::new(lengths, max_len),
            counts: Packed::new(self.counts.iter().copied(), max_count),
            starts: Packed::new(self.starts.iter().map(|&s| s as u64), self.len() as u64),
            files: self.files,
        }
        .serialize(s)
    }
}

impl TryFrom<WireCounts> for WordCounts {
    type Error = String;
    /// Checks what [`WordCounts::word`] relies on: one count per word, and words that end at
    /// character boundaries, the last at the end of the text.
    fn try_from(w: WireCounts) -> Result<Self, String> {
        let (lengths, counts) = (w.lengths.unpack()?, w.counts.unpack()?);
        if lengths.len() != counts.len() {
            return Err(format!("word counts: {} words but {} counts", lengths.len(), counts.len()));
        }
        let mut ends = Vec::with_capacity(lengths.len());
        let mut end = 0u64;
        for l in lengths {
            end += l;
            if end > w.text.len() as u64 || !w.text.is_char_boundary(end as usize) {
                return Err(format!("word counts: a word ends at byte {} of {}", end, w.text.len()));
            }
            ends.push(end as u32);
        }
        if end != w.text.len() as u64 {
            return Err(format!("word counts: the words end at byte {} of {}", end, w.text.len()));
        }
        let starts = w.starts.unpack()?;
        let n = counts.len() as u64;
        if !starts.is_empty()
            && (starts.len() != PARTITIONS + 1
                || starts[0] != 0
                || starts[PARTITIONS] != n
                || starts.windows(2).any(|s| s[0] > s[1]))
        {
            return Err(format!("word counts: bad partition starts for {} words", n));
        }
        let starts = starts.into_iter().map(|s| s as u32).collect();
        Ok(WordCounts { text: w.text, ends, counts, starts, files: w.files })
    }
}

impl WordCounts {
    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Word `i`.
    fn word(&self, i: usize) -> &str {
        word_at(&self.text, &self.ends, i)
    }

    /// Every (word, count), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        (0..self.len()).map(|i| (self.word(i), self.counts[i]))
    }

    /// The count of `word`, if it occurs (a linear search: for tests).
    #[cfg(test)]
    fn get(&self, word: &str) -> Option<u64> {
        self.iter().find(|(w, _)| *w == word).map(|(_, c)| c)
    }

    /// Total number of tokens.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every (word, count), by count descending then word ascending (sorted in parallel).
    pub fn sorted(&self) -> Vec<(&str, u64)> {
        use rayon::slice::ParallelSliceMut;
        let mut v: Vec<(&str, u64)> = self.iter().collect();
        v.par_sort_unstable_by(by_count_then_word);
        v
    }

    /// The `k` first (word, count) of [`sorted`](Self::sorted), found in one pass without
    /// sorting everything.
    pub fn top(&self, k: usize) -> Vec<(&str, u64)> {
        let mut top: Vec<(&str, u64)> = Vec::with_capacity(k + 1);
        for e in self.iter() {
            if top.len() == k && (k == 0 || by_count_then_word(&e, &top[k - 1]).is_ge()) {
                continue;
            }
            let at = top.partition_point(|t| by_count_then_word(t, &e).is_lt());
            top.insert(at, e);
            top.truncate(k);
        }
        top
    }
}

/// The order of `counts.csv` and of the top words: count descending, then word ascending.
fn by_count_then_word(a: &(&str, u64), b: &(&str, u64)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
}

/// Word `i` of concatenated words `text` ending at `ends`.
#[inline]
fn word_at<'a>(text: &'a str, ends: &[u32], i: usize) -> &'a str {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &text[start..ends[i] as usize]
}

/// The bytes of word `i` (as [`word_at`], without the character-boundary checks).
#[inline]
fn word_bytes<'a>(text: &'a [u8], ends: &[u32], i: usize) -> &'a [u8] {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &text[start..ends[i] as usize]
}

/// The hash of a word (FxHash: fast, and the words are not chosen by an adversary).
#[inline]
fn hash_word(w: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(w);
    h.finish()
}

/// Builds a [`WordCounts`]: an index of its words by hash, so that a word is found or added
/// with one probe and its text is stored once.
#[derive(Default)]
pub(crate) struct Counter {
    counts: WordCounts,
    /// Indices into `counts`, by hash of the word.
    index: hashbrown::HashTable<u32>,
}

impl Counter {
    /// Makes room for `words` distinct words without rehashing, if nothing is counted yet.
    fn reserve_if_empty(&mut self, words: usize) {
        if self.index.is_empty() {
            self.index = hashbrown::HashTable::with_capacity(words);
            self.counts.ends.reserve(words);
            self.counts.counts.reserve(words);
        }
    }

    /// Starts from `counts` (whose words are distinct), indexing its words.
    fn from_counts(counts: WordCounts, room: usize) -> Self {
        let mut index = hashbrown::HashTable::with_capacity(counts.len() + room);
        let (text, ends) = (counts.text.as_bytes(), &counts.ends);
        for i in 0..counts.len() {
            let h = hash_word(word_bytes(text, ends, i));
            index.insert_unique(h, i as u32, |&j| hash_word(word_bytes(text, ends, j as usize)));
        }
        Counter { counts, index }
    }

    /// Adds `n` occurrences of `word`.
    #[inline]
    pub(crate) fn add(&mut self, word: &str, n: u64) {
        let WordCounts { text, ends, counts, .. } = &mut self.counts;
        let bytes = text.as_bytes();
        let h = hash_word(word.as_bytes());
        let found = self.index.entry(
            h,
            |&i| word_bytes(bytes, ends, i as usize) == word.as_bytes(),
            |&i| hash_word(word_bytes(bytes, ends, i as usize)),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(e) => counts[*e.get() as usize] += n,
            hashbrown::hash_table::Entry::Vacant(e) => {
                let i = u32::try_from(counts.len()).expect("fewer than 2^32 distinct words in one count");
                text.push_str(word);
                ends.push(u32::try_from(text.len()).expect("less than 4 GiB of distinct words in one count"));
                counts.push(n);
                e.insert(i);
            }
        }
    }

    /// Counts the tokens of `text` (split on whitespace as Python's `str.split()` does).
    pub(crate) fn add_text(&mut self, text: &str) {
        for_each_word(text, |w| self.add(w, 1));
    }

    /// Reads `path` and counts its tokens; bytes that are not valid UTF-8 are skipped (Python's
    /// `errors='ignore'`).
    pub(crate) fn add_file(&mut self, path: &Path) -> Result<(), TaskError> {
        let bytes = std::fs::read(path)
            .map_err(|e| TaskError::new(ErrorKind::Io, format!("cannot read {}: {}", path.display(), e)))?;
        // Room for one distinct word per 8 bytes (random words average 7 with their space): the
        // first file rarely rehashes, and a repetitive text wastes little.
        self.reserve_if_empty(bytes.len() / 8);
        match std::str::from_utf8(&bytes) {
            Ok(text) => self.add_text(text),
            Err(_) => self.add_text(&bytes.utf8_chunks().map(|c| c.valid()).collect::<String>()),
        }
        self.counts.files += 1;
        Ok(())
    }

    /// Adds another count.
    pub(crate) fn merge(&mut self, other: &WordCounts) {
        self.counts.files += other.files;
        for (w, c) in other.iter() {
            self.add(w, c);
        }
    }

    /// The counts, grouped by partition.
    pub(crate) fn finish(self) -> WordCounts {
        let c = self.counts;
        let n = c.len();
        let bytes = c.text.as_bytes();
        let part: Vec<u8> = (0..n).map(|i| partition(hash_word(word_bytes(bytes, &c.ends, i))) as u8).collect();
        // Counting sort: where each partition's words and bytes start.
        let mut starts = vec![0u32; PARTITIONS + 1];
        let mut byte_starts = vec![0usize; PARTITIONS + 1];
        for (i, &p) in part.iter().enumerate() {
            starts[p as usize + 1] += 1;
            byte_starts[p as usize + 1] += word_bytes(bytes, &c.ends, i).len();
        }
        for p in 0..PARTITIONS {
            starts[p + 1] += starts[p];
            byte_starts[p + 1] += byte_starts[p];
        }
        let (mut next, mut next_byte) = (starts.clone(), byte_starts.clone());
        let mut text = vec![0u8; bytes.len()];
        let (mut ends, mut counts) = (vec![0u32; n], vec![0u64; n]);
        for (i, &p) in part.iter().enumerate() {
            let (w, p) = (word_bytes(bytes, &c.ends, i), p as usize);
            let (j, at) = (next[p] as usize, next_byte[p]);
            text[at..at + w.len()].copy_from_slice(w);
            ends[j] = (at + w.len()) as u32;
            counts[j] = c.counts[i];
            next[p] += 1;
            next_byte[p] += w.len();
        }
        let text = String::from_utf8(text).expect("whole words of a str, rearranged");
        WordCounts { text, ends, counts, starts, files: c.files }
    }
}

/// Python's `str.isspace()`: Unicode whitespace plus the separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Calls `f` on each token of `text` split as Python's `str.split()` splits (on
/// [`is_python_space`]), scanning bytes: ASCII bytes are classified by a table, and only
/// non-ASCII characters are decoded.
fn for_each_word<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    /// Whether each ASCII byte is Python whitespace.
    const ASCII_SPACE: [bool; 128] = {
        let mut t = [false; 128];
        let mut b = 0;
        while b < 128 {
            // \t \n \v \f \r, the separators U+001C..U+001F, and the space.
            t[b] = matches!(b, 9..=13 | 28..=32);
            b += 1;
        }
        t
    };
    let bytes = text.as_bytes();
    // The length of the whitespace character at `i`, or 0 if it starts a token's character.
    let space_at = |i: usize| -> usize {
        let b = bytes[i];
        if b < 0x80 {
            ASCII_SPACE[b as usize] as usize
        } else {
            // `i` is a character boundary: tokens are cut only at whitespace characters.
            let c = text[i..].chars().next().expect("a character starts here");
            if is_python_space(c) { c.len_utf8() } else { 0 }
        }
    };
    let n = bytes.len();
    let mut i = 0;
    while i < n {
        match space_at(i) {
            0 => {
                let start = i;
                i += 1;
                while i < n {
                    let b = bytes[i];
                    if b < 0x80 {
                        if ASCII_SPACE[b as usize] {
                            break;
                        }
                        i += 1;
                    } else if b < 0xc0 {
                        i += 1; // a continuation byte: inside a character of the token
                    } else if space_at(i) > 0 {
                        break;
                    } else {
                        i += 1;
                    }
                }
                f(&text[start..i]);
            }
            len => i += len,
        }
    }
}

/// `map_task(*paths)`: counts the words of the given files.
pub(crate) struct MapTask;

impl Task for MapTask {
    const NAME: &'static str = "map_task";
    type Args = (Many<FilePath>,);
    type Output = WordCounts;
    fn run((paths,): Self::Args) -> Result<WordCounts, TaskError> {
        let mut counts = Counter::default();
        for p in &paths.0 {
            counts.add_file(p)?;
        }
        Ok(counts.finish())
    }
}

/// `reduce_task(*counts)`: sums the map tasks' counts.
pub(crate) struct ReduceTask;

impl Task for ReduceTask {
    const NAME: &'static str = "reduce_task";
    type Args = (Many<Shared<WordCounts>>,);
    type Output = WordCounts;
    fn run((parts,): Self::Args) -> Result<WordCounts, TaskError> {
        let mut parts = parts.0;
        if !parts.is_empty() && parts.iter().all(|p| p.starts.len() == PARTITIONS + 1) {
            return Ok(reduce_by_partition(&parts));
        }
        // Start from the largest part: the fewest insertions. Taking it copies three vectors at
        // most (when the driver still holds it: thread-pool).
        let Some(big) = (0..parts.len()).max_by_key(|&i| parts[i].len()) else {
            return Ok(WordCounts::default());
        };
        let rest: usize = parts.iter().map(|p| p.len()).sum::<usize>() - parts[big].len();
        let mut total = Counter::from_counts(parts.swap_remove(big).into_inner(), rest);
        for p in &parts {
            total.merge(p);
        }
        Ok(total.finish())
    }
}

/// Sums `parts` (all grouped by partition) one partition at a time: each partition's table is
/// small enough to stay in cache, and the partitions are merged in parallel (the map tasks have
/// finished, so their cores are idle), then laid end to end.
fn reduce_by_partition(parts: &[Shared<WordCounts>]) -> WordCounts {
    use rayon::prelude::*;
    let pieces: Vec<WordCounts> = (0..PARTITIONS)
        .into_par_iter()
        .map(|q| {
            let range = |p: &WordCounts| p.starts[q] as usize..p.starts[q + 1] as usize;
            let mut c = Counter::default();
            c.reserve_if_empty(parts.iter().map(|p| range(p).len()).sum());
            for p in parts {
                for i in range(p) {
                    c.add(p.word(i), p.counts[i]);
                }
            }
            c.counts
        })
        .collect();
    let mut out = WordCounts::default();
    out.text.reserve(pieces.iter().map(|p| p.text.len()).sum());
    out.ends.reserve(pieces.iter().map(|p| p.len()).sum());
    out.counts.reserve(out.ends.capacity());
    out.starts.push(0);
    for p in pieces {
        let base = u32::try_from(out.text.len()).expect("less than 4 GiB of distinct words in one count");
        out.text.push_str(&p.text);
        out.ends.extend(p.ends.iter().map(|&e| base.checked_add(e).expect("less than 4 GiB of distinct words")));
        out.counts.extend_from_slice(&p.counts);
        out.starts.push(out.ends.len() as u32);
    }
    out.files = parts.iter().map(|p| p.files).sum();
    out
}

/// What a file weighs when balancing chunks: its size plus this (the cost of opening it), so
/// many empty files still spread evenly.
pub(crate) const FILE_OVERHEAD_BYTES: u64 = 4096;

/// Cuts `files` (path, size in bytes), kept in order, into `min(k, files.len())` contiguous
/// non-empty chunks of near-equal weight (size + [`FILE_OVERHEAD_BYTES`]); every file lands in
/// exactly one chunk. Files of equal size give chunks whose lengths differ by at most one.
/// `k = 0` or no files gives no chunks.
pub(crate) fn chunk_files(files: &[(PathBuf, u64)], k: usize) -> Vec<Vec<PathBuf>> {
    let n = files.len();
    let k = k.min(n);
    let weight = |i: usize| files[i].1 as u128 + FILE_OVERHEAD_BYTES as u128;
    let mut remaining: u128 = (0..n).map(weight).sum();
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for j in 0..k {
        let left = (k - j) as u128; // chunks still to make, this one included
        // Leave at least one file for each later chunk.
        let max_end = n - (k - j - 1);
        let mut end = start + 1;
        let mut w = weight(start);
        // Take the next file while that brings this chunk closer to its share remaining / left,
        // i.e. while w + x/2 <= remaining/left.
        while end < max_end && (2 * w + weight(end)) * left <= 2 * remaining {
            w += weight(end);
            end += 1;
        }
        if j == k - 1 {
            end = n;
            w = remaining;
        }
        out.push(files[start..end].iter().map(|(p, _)| p.clone()).collect());
        remaining -= w;
        start = end;
    }
    out
}

/// Every file under `dir` with its size, recursively, sorted: regular files and symlinks to
/// them; symlinked directories are not followed (no cycles). `skip` (the run directory, when
/// it lies inside `dir`) is left out: its files are being written.
pub(crate) fn list_files(dir: &Path, skip: Option<&Path>) -> std::io::Result<Vec<(PathBuf, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let skip = skip.and_then(|s| std::fs::metadata(s).ok()).map(id);
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                if skip.is_none() || skip != Some(id(e.metadata()?)) {
                    stack.push(path);
                }
            } else if let Ok(m) = std::fs::metadata(&path)
                && m.is_file()
            {
                out.push((path, m.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` holds at least one file (stops at the first).
fn has_file(dir: &Path) -> std::io::Result<bool> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else if std::fs::metadata(e.path()).map(|m| m.is_file()).unwrap_or(false) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Files and directories this app generated, removed by [`Generated::remove`].
#[derive(Debug, Default)]
pub struct Generated {
    /// The data directory.
    pub dir: PathBuf,
    /// Generated files.
    pub files: Vec<PathBuf>,
    /// Directories created for them, outermost first.
    pub created_dirs: Vec<PathBuf>,
}

impl Generated {
    /// Removes the generated files, then the directories created for them if they are empty
    /// (anything else found there is left alone). Returns what could not be removed.
    pub fn remove(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for f in self.files.drain(..) {
            if let Err(e) = std::fs::remove_file(&f)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("{}: {}", f.display(), e));
            }
        }
        for d in self.created_dirs.drain(..).rev() {
            if let Err(e) = std::fs::remove_dir(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("{}: {}", d.display(), e));
            }
        }
        problems
    }
}

/// Writes `files` files `0.txt`, `1.txt`, … into `dir` (missing or empty), each of `words`
/// random lowercase ASCII words of length 2..=10 separated by single spaces (no trailing
/// newline). On error, whatever was written is removed again.
pub(crate) fn generate_files(dir: &Path, files: u64, words: u64, seed: u64) -> anyhow::Result<Generated> {
    check_generate_target(dir).map_err(anyhow::Error::msg)?;
    let mut g = Generated { dir: dir.to_path_buf(), ..Default::default() };
    let result = (|| -> anyhow::Result<()> {
        let mut missing: Vec<PathBuf> = dir.ancestors().take_while(|a| !a.exists()).map(Path::to_path_buf).collect();
        missing.reverse();
        for d in missing {
            std::fs::create_dir(&d).map_err(|e| anyhow::anyhow!("cannot create {}: {}", d.display(), e))?;
            g.created_dirs.push(d);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut word = Vec::with_capacity(10);
        for i in 0..files {
            let path = dir.join(format!("{}.txt", i));
            let f = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {}", path.display(), e))?;
            g.files.push(path.clone());
            let mut out = BufWriter::with_capacity(1 << 16, f);
            for j in 0..words {
                if j > 0 {
                    out.write_all(b" ")?;
                }
                word.clear();
                let len = rng.random_range(2..=10);
                word.extend((0..len).map(|_| rng.random_range(b'a'..=b'z')));
                out.write_all(&word)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all().ok();
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(g),
        Err(e) => {
            g.remove();
            Err(e)
        }
    }
}

/// Decimal digits of `n` in `buf` (faster than `write!` for millions of rows).
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Formats an integer with thousands separators, like Python's `{:,}`.
pub(crate) fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A CSV field: quoted (with doubled quotes) if it holds a comma, quote or line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")).into() } else { s.into() }
}

/// Writes `counts.csv` (`word,count` header, then `rows` in order) atomically: via a temporary
/// file renamed into place.
pub(crate) fn write_counts_csv(path: &Path, rows: &[(&str, u64)]) -> std::io::Result<()> {
    let tmp = path.with_extension("csv.tmp~");
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(b"word,count\n")?;
        let mut num = [0u8; 20];
        for (w, c) in rows {
            out.write_all(csv_field(w).as_bytes())?;
            out.write_all(b",")?;
            out.write_all(format_u64(*c, &mut num))?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The word-count workflow.
pub(crate) struct MapreduceApp {
    opts: MapreduceOptions,
    files: Vec<(PathBuf, u64)>,
    generated: Option<Generated>,
    /// The reduce task's result, until `save` writes it.
    counts: Option<WordCounts>,
}

impl MapreduceApp {
    /// Generates the input files (generate=true) or finds them (generate=false); files inside
    /// `run_dir` are not inputs.
    pub fn new(opts: MapreduceOptions, run_dir: Option<&Path>) -> anyhow::Result<Self> {
        let dir = opts.data_dir.clone();
        let generated = if opts.generate {
            let seed = opts.seed.unwrap_or_else(crate::app::fresh_seed);
            let g = generate_files(&dir, opts.generated_files, opts.generated_words, seed)?;
            app_info!("Generated {} files in {} (seed {})", g.files.len(), dir.display(), seed);
            Some(g)
        } else {
            None
        };
        let mut app = MapreduceApp { opts, files: Vec::new(), generated, counts: None };
        app.files = list_files(&dir, run_dir)
            .map_err(|e| anyhow::anyhow!("cannot read app.data_dir {}: {}", dir.display(), e))?;
        if app.generated.is_none() {
            app_info!("Found {} files in {}", app.files.len(), dir.display());
        }
        anyhow::ensure!(!app.files.is_empty(), "app.data_dir {} contains no files", dir.display());
        Ok(app)
    }

    fn cleanup(&mut self) -> anyhow::Result<()> {
        let Some(mut g) = self.generated.take() else {
            return Ok(());
        };
        let problems = g.remove();
        if problems.is_empty() {
            app_info!("Removed generated files in {}", g.dir.display());
            Ok(())
        } else {
            anyhow::bail!("could not remove all generated files: {}", problems.join("; "))
        }
    }
}

impl App for MapreduceApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        let k = self.opts.map_tasks.map_or(self.files.len(), |m| m.min(self.files.len() as u64) as usize);
        let chunks = chunk_files(&self.files, k);
        let maps: Vec<_> = chunks
            .iter()
            .map(|c| {
                let paths: Vec<Arg<FilePath>> = c.iter().map(|p| p.as_path().into()).collect();
                engine.submit::<MapTask>((paths,))
            })
            .collect();
        let sizes = chunks.iter().map(Vec::len);
        app_info!(
            "Submitted {} map tasks over {} input files ({}..{} files per task)",
            commas(maps.len() as u64),
            commas(self.files.len() as u64),
            sizes.clone().min().unwrap_or(0),
            sizes.max().unwrap_or(0)
        );
        let reduce = engine.submit::<ReduceTask>((maps.iter().map(Arg::from).collect(),));
        app_info!("Submitted reduce task");
        let counts = reduce.result()?;
        app_info!("Reduce task finished");
        anyhow::ensure!(
            counts.files == self.files.len() as u64,
            "the map tasks read {} files, but there are {}",
            counts.files,
            self.files.len()
        );

        // As the reference's most_common(10): a selection, not a sort (counts.csv is sorted in save).
        let top = counts.top(10);
        app_info!("{} most frequent words:", top.len());
        for (w, c) in &top {
            app_info!("{} ({})", w, commas(*c));
        }
        app_info!("Total number of words: {}", commas(counts.total()));
        self.counts = Some(counts);
        Ok(())
    }

    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let Some(counts) = self.counts.take() else { return Ok(()) };
        let t = std::time::Instant::now();
        let sorted = counts.sorted();
        let csv = run_dir.join("counts.csv");
        write_counts_csv(&csv, &sorted).map_err(|e| anyhow::anyhow!("cannot write {}: {}", csv.display(), e))?;
        app_info!(
            "Wrote counts of {} distinct words to {} (elapsed={:.3}s)",
            commas(sorted.len() as u64),
            csv.display(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.cleanup()
    }
}

impl Drop for MapreduceApp {
    /// Generated files go even if the run stops before `close` (e.g. the executor failed to start).
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!("{:#}", e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(sizes: &[u64]) -> Vec<(PathBuf, u64)> {
        sizes.iter().enumerate().map(|(i, &s)| (PathBuf::from(format!("/f{:03}", i)), s)).collect()
    }

    fn check_partition(f: &[(PathBuf, u64)], k: usize) -> Vec<Vec<PathBuf>> {
        let chunks = chunk_files(f, k);
        assert_eq!(chunks.len(), k.min(f.len()), "k={} n={}", k, f.len());
        assert!(chunks.iter().all(|c| !c.is_empty()), "empty chunk for k={} n={}", k, f.len());
        let flat: Vec<PathBuf> = chunks.concat();
        let all: Vec<PathBuf> = if k == 0 { Vec::new() } else { f.iter().map(|(p, _)| p.clone()).collect() };
        assert_eq!(flat, all, "every file exactly once, in order");
        chunks
    }

    #[test]
    fn chunks_cover_every_file_once_and_are_never_empty() {
        for n in 0..40 {
            for k in 0..45 {
                let uniform = files(&vec![100; n]);
                let chunks = check_partition(&uniform, k);
                if let (Some(min), Some(max)) = (chunks.iter().map(Vec::len).min(), chunks.iter().map(Vec::len).max()) {
                    assert!(
                        max - min <= 1,
                        "equal files: lengths {:?}",
                        chunks.iter().map(Vec::len).collect::<Vec<_>>()
                    );
                }
                let skewed: Vec<u64> = (0..n as u64).map(|i| (i * 7919 % 13) * 10_000 + (i % 3) * 1_000_000).collect();
                check_partition(&files(&skewed), k);
                check_partition(&files(&vec![0; n]), k);
            }
        }
    }

    #[test]
    fn chunks_balance_bytes() {
        // One big file among many small ones, anywhere in the list: the two contiguous chunks'
        // weights differ by at most one file's weight.
        for pos in [0, 50, 100] {
            let mut sizes = vec![10_000; 100];
            sizes.insert(pos, 1_000_000);
            let f = files(&sizes);
            let chunks = chunk_files(&f, 2);
            let size: HashMap<&PathBuf, u64> = f.iter().map(|(p, s)| (p, *s + FILE_OVERHEAD_BYTES)).collect();
            let w: Vec<u64> = chunks.iter().map(|c| c.iter().map(|p| size[p]).sum()).collect();
            assert!(w[0].abs_diff(w[1]) <= 1_000_000 + FILE_OVERHEAD_BYTES, "pos {}: weights {:?}", pos, w);
            if pos == 0 {
                assert!(w[0].abs_diff(w[1]) <= 10_000 + FILE_OVERHEAD_BYTES, "big file first: weights {:?}", w);
            }
        }
    }

    #[test]
    fn counts_like_python_split() {
        let mut c = Counter::default();
        c.add_text("a b\ta\n\nc\u{1f}a\u{a0}b  ");
        let c = c.finish();
        assert_eq!(c.get("a"), Some(3));
        assert_eq!(c.get("b"), Some(2));
        assert_eq!(c.get("c"), Some(1));
        assert_eq!(c.len(), 3);
        assert_eq!(c.total(), 6);
        assert_eq!(c.sorted()[0], ("a", 3));
    }

    /// The split of `str.split()`, char by char: what [`for_each_word`] must reproduce.
    fn reference_split(text: &str) -> Vec<&str> {
        text.split(is_python_space).filter(|w| !w.is_empty()).collect()
    }

    #[test]
    fn the_byte_scanner_splits_exactly_as_python() {
        // Every ASCII byte is classified as Python classifies it.
        for b in 0u8..128 {
            let s = format!("x{}y", b as char);
            let mut got = Vec::new();
            for_each_word(&s, |w| got.push(w));
            assert_eq!(got, reference_split(&s), "byte {:#04x}", b);
        }
        // Random strings over ASCII, non-ASCII letters, and whitespace of every width
        // (U+0085, U+00A0, U+1680, U+2000, U+2028, U+3000), plus look-alikes that are not
        // whitespace in Python (U+200B, U+FEFF, U+180E).
        let alphabet: Vec<char> =
            "ab \t\n\r\x0b\x0c\x1c\x1f\u{85}\u{a0}é€😀\u{1680}\u{2000}\u{2028}\u{3000}\u{200b}\u{feff}\u{180e}"
                .chars()
                .collect();
        let mut rng = StdRng::seed_from_u64(12);
        for len in 0..400 {
            let s: String = (0..len % 40).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let mut got = Vec::new();
            for_each_word(&s, |w| got.push(w));
            assert_eq!(got, reference_split(&s), "{:?}", s);
        }
    }

    #[test]
    fn merged_counts_equal_a_plain_count() {
        let mut rng = StdRng::seed_from_u64(3);
        let words = ["a", "bb", "é", "a,b", "x\"y", "zz", "q"];
        let mut expected: HashMap<String, u64> = HashMap::new();
        let mut parts = Vec::new();
        for p in 0..5 {
            let mut c = Counter::default();
            c.reserve_if_empty(2);
            for _ in 0..(p * 37) {
                let w = words[rng.random_range(0..words.len())];
                c.add_text(&format!("{} ", w));
                *expected.entry(w.to_string()).or_default() += 1;
            }
            let mut part = c.finish();
            part.files = 1;
            parts.push(Shared(std::sync::Arc::new(part)));
        }
        let total = ReduceTask::run((Many(parts.clone()),)).unwrap();
        let got: HashMap<String, u64> = total.iter().map(|(w, c)| (w.to_string(), c)).collect();
        assert_eq!(got, expected);
        assert_eq!(total.len(), expected.len(), "each word once");
        assert_eq!(total.files, 5);
        // Parts in no particular order (no partition starts) give the same counts.
        let unordered: Vec<_> = parts
            .iter()
            .map(|p| Shared(std::sync::Arc::new(WordCounts { starts: Vec::new(), ..(*p.0).clone() })))
            .collect();
        let again = ReduceTask::run((Many(unordered),)).unwrap();
        assert_eq!(again.iter().map(|(w, c)| (w.to_string(), c)).collect::<HashMap<_, _>>(), expected);
        assert_eq!((again.len(), again.files), (expected.len(), 5));
        // Finished counts are grouped by partition.
        for c in [&total, &again] {
            assert_eq!(c.starts.len(), PARTITIONS + 1);
            for q in 0..PARTITIONS {
                for i in c.starts[q] as usize..c.starts[q + 1] as usize {
                    assert_eq!(partition(hash_word(c.word(i).as_bytes())), q);
                }
            }
        }
        // A count survives the wire format.
        let back: WordCounts = postcard::from_bytes(&postcard::to_stdvec(&total).unwrap()).unwrap();
        assert_eq!(back, total);
    }

    #[test]
    fn wire_counts_pack_narrowly_and_bad_ones_are_refused() {
        let mut c = Counter::default();
        c.add("é", 1);
        c.add("x".repeat(300).as_str(), 70_000);
        let c = c.finish();
        let bytes = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<WordCounts>(&bytes).unwrap(), c);
        let packed = |max| Packed::new([1u64, max].into_iter(), max);
        assert_eq!([packed(255).width, packed(256).width, packed(70_000).width, packed(1 << 40).width], [1, 2, 4, 8]);
        assert_eq!(packed(1 << 40).unpack().unwrap(), vec![1, 1 << 40]);
        // Offsets inside a character, past the text, or short of it; a count missing.
        let wire = |text: &str, lengths: &[u64], counts: &[u64]| WireCounts {
            text: text.to_string(),
            lengths: Packed::new(lengths.iter().copied(), 255),
            counts: Packed::new(counts.iter().copied(), 255),
            starts: Packed::new(std::iter::empty(), 0),
            files: 0,
        };
        for (bad, why) in [
            (wire("éa", &[1, 2], &[1, 1]), "a word ends at byte 1 of 3"),
            (wire("ab", &[1, 2], &[1, 1]), "a word ends at byte 3 of 2"),
            (wire("abc", &[1, 1], &[1, 1]), "the words end at byte 2 of 3"),
            (wire("ab", &[1, 1], &[1]), "2 words but 1 counts"),
            (
                WireCounts { lengths: Packed { width: 3, bytes: vec![0; 3].into() }, ..wire("", &[], &[]) },
                "3 bytes of 3-byte",
            ),
            (
                WireCounts { starts: Packed::new([0u64, 1].into_iter(), 1), ..wire("a", &[1], &[1]) },
                "bad partition starts",
            ),
            (
                WireCounts {
                    starts: Packed::new((0..PARTITIONS + 1).map(|p| (p as u64).min(2)), 2),
                    ..wire("a", &[1], &[1])
                },
                "bad partition starts for 1 words",
            ),
        ] {
            let e = WordCounts::try_from(bad).unwrap_err();
            assert!(e.contains(why), "{}: {}", why, e);
        }
        // Through the wire format: an error, not a panic.
        let mut bytes = postcard::to_stdvec(&c).unwrap();
        bytes[2] = b'a'; // after the 2-byte length: "é" becomes invalid UTF-8
        assert!(postcard::from_bytes::<WordCounts>(&bytes).is_err());
    }

    #[test]
    fn top_is_the_head_of_sorted() {
        let mut c = Counter::default();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let w = format!("w{}", rng.random_range(0..300) * rng.random_range(0..300) / 300);
            c.add(&w, 1);
        }
        let c = c.finish();
        let sorted = c.sorted();
        for k in [0, 1, 3, 10, 500] {
            assert_eq!(c.top(k), sorted[..k.min(sorted.len())], "k={}", k);
        }
        assert_eq!(WordCounts::default().top(10), vec![]);
    }

    #[test]
    fn invalid_utf8_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        std::fs::write(&p, b"ab\xffcd ef \xc3\xa9t\xe9 \xe2\x82").unwrap();
        let mut c = Counter::default();
        c.add_file(&p).unwrap();
        let c = c.finish();
        let mut got: Vec<_> = c.iter().map(|(w, _)| w.to_string()).collect();
        got.sort();
        assert_eq!(got, vec!["abcd", "ef", "ét"]);
        assert_eq!(c.files, 1);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say\"hi\""), "\"say\"\"hi\"\"\"");
    }

    #[test]
    fn numbers_format_like_display() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 99, 1000, 123456789, u64::MAX] {
            assert_eq!(format_u64(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn commas_group_thousands() {
        assert_eq!(commas(0), "0");
        assert_eq!(commas(999), "999");
        assert_eq!(commas(1000), "1,000");
        assert_eq!(commas(1234567), "1,234,567");
    }

    #[test]
    fn generation_is_seeded_and_removable() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        let mut g = generate_files(&dir, 3, 50, 7).unwrap();
        assert_eq!(g.created_dirs, vec![base.path().join("a"), dir.clone()]);
        let text = std::fs::read_to_string(dir.join("0.txt")).unwrap();
        assert_eq!(text.split(' ').count(), 50);
        assert!(text.split(' ').all(|w| (2..=10).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())));
        assert!(!text.ends_with(' ') && !text.ends_with('\n'));
        let again = tempfile::tempdir().unwrap();
        let mut g2 = generate_files(again.path(), 3, 50, 7).unwrap();
        assert_eq!(std::fs::read(again.path().join("2.txt")).unwrap(), std::fs::read(dir.join("2.txt")).unwrap());
        assert!(g.remove().is_empty());
        assert!(!base.path().join("a").exists());
        assert!(g2.remove().is_empty());
        assert!(again.path().exists(), "a directory we did not create stays");
        assert_eq!(std::fs::read_dir(again.path()).unwrap().count(), 0);
    }

    #[test]
    fn generation_refuses_non_empty_dirs() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("keep.txt"), "x").unwrap();
        let e = generate_files(base.path(), 1, 1, 0).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{}", e);
        assert_eq!(std::fs::read(base.path().join("keep.txt")).unwrap(), b"x");
    }
}

/// Timing of the map and reduce bodies on the configuration (16 files × 50,000 random
/// words): `cargo test --release --lib mapreduce::speed -- --ignored --nocapture`. Not a test of speed.
#[cfg(test)]
mod speed {
    use super::*;

    #[test]
    #[ignore]
    fn map_and_reduce_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = generate_files(dir.path(), 16, 50_000, 1).unwrap();
        for round in 0..5 {
            let t = std::time::Instant::now();
            let parts: Vec<_> =
                g.files.iter().map(|f| MapTask::run((Many(vec![FilePath(f.clone())]),)).unwrap()).collect();
            let map = t.elapsed() / 16;
            let shared: Vec<_> = parts.iter().map(|p| Shared(std::sync::Arc::new(p.clone()))).collect();
            let t = std::time::Instant::now();
            let total = ReduceTask::run((Many(shared),)).unwrap();
            let reduce = t.elapsed();
            let t = std::time::Instant::now();
            let bytes = postcard::to_stdvec(&total).unwrap();
            let back: WordCounts = postcard::from_bytes(&bytes).unwrap();
            let wire = t.elapsed();
            assert_eq!(back.len(), total.len());
            println!(
                "round {}: map {:?} per file, reduce {:?}, result {} words, postcard round trip {:?} ({} bytes)",
                round,
                map,
                reduce,
                total.len(),
                wire,
                bytes.len()
            );
        }
        g.remove();
    }
}
